// Batched generation over the KV cache, and the token choice (lib/model/generate.h).
#include "model/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "base/errors.h"
#include "base/rng.h"

namespace sae {

double sampling_uniform(uint64_t seed, int64_t index, int64_t step) {
  // Rng's sub-streams: (seed, sequence, step) names one independent stream, whose first draw
  // this is.
  return Rng(seed).substream(uint64_t(index)).substream(uint64_t(step)).uniform();
}

int32_t choose_token(const float* logits, int64_t vocab, const Sampling& s, double u) {
  if (s.temperature <= 0) {
    int64_t best = 0;
    for (int64_t i = 1; i < vocab; i++)
      if (logits[i] > logits[best]) best = i;
    return int32_t(best);
  }
  // Most likely first; equal logits by id.
  std::vector<int32_t> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  auto more_likely = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  int64_t keep = vocab;
  if (s.top_k > 0 && s.top_k < vocab) {
    keep = s.top_k;
    std::partial_sort(order.begin(), order.begin() + keep, order.end(), more_likely);
  } else {
    std::sort(order.begin(), order.end(), more_likely);
  }
  // Probabilities of the kept tokens at the temperature, in double.
  std::vector<double> p(static_cast<size_t>(keep));
  const double top = double(logits[order[0]]);
  double sum = 0;
  for (int64_t i = 0; i < keep; i++) sum += p[size_t(i)] = std::exp((double(logits[order[size_t(i)]]) - top) / s.temperature);
  // Nucleus: the shortest prefix whose probability reaches top_p (at least one token).
  if (s.top_p < 1.0) {
    double acc = 0;
    int64_t n = 0;
    while (n < keep && acc < s.top_p * sum) acc += p[size_t(n++)];
    keep = std::max<int64_t>(n, 1);
    sum = 0;
    for (int64_t i = 0; i < keep; i++) sum += p[size_t(i)];
  }
  double target = u * sum, acc = 0;
  for (int64_t i = 0; i < keep; i++) {
    acc += p[size_t(i)];
    if (target < acc) return order[size_t(i)];
  }
  return order[size_t(keep - 1)];  // u * sum rounded up to the total
}

Generation generate(Model& model, const std::vector<std::vector<int32_t>>& prompts, const GenerateOptions& opt) {
  const ModelConfig& c = model.config();
  const int64_t batch = int64_t(prompts.size());
  if (batch == 0) throw UsageError("generate: no prompts");
  if (opt.max_new_tokens < 1) throw UsageError("generate: max_new_tokens must be at least 1");
  int64_t longest = 0;
  for (const auto& p : prompts) {
    if (p.empty()) throw UsageError("generate: an empty prompt (it needs at least its BOS token)");
    longest = std::max<int64_t>(longest, int64_t(p.size()));
  }
  // Left padding: every prompt ends at slot longest - 1, so one step serves all. The pad slots
  // hold the prompt's first token (any valid id would do: they are never attended to).
  std::vector<int32_t> pad(static_cast<size_t>(batch)), tokens(size_t(batch * longest));
  for (int64_t b = 0; b < batch; b++) {
    const auto& p = prompts[size_t(b)];
    pad[size_t(b)] = int32_t(longest - int64_t(p.size()));
    std::fill_n(tokens.begin() + b * longest, pad[size_t(b)], p[0]);
    std::copy(p.begin(), p.end(), tokens.begin() + b * longest + pad[size_t(b)]);
  }
  const int64_t needed = longest - *std::min_element(pad.begin(), pad.end()) + opt.max_new_tokens - 1;
  if (needed > c.max_positions)
    throw InputError("a prompt of " + std::to_string(needed + 1 - opt.max_new_tokens) + " tokens and " +
                     std::to_string(opt.max_new_tokens) + " new tokens need " + std::to_string(needed) +
                     " positions, more than the model's " + std::to_string(c.max_positions) + " (" +
                     c.max_positions_field + ")");
  // The last generated token is never run: the cache needs one slot less than the output.
  KvCache cache = model.make_cache(batch, longest + opt.max_new_tokens - 1, pad);

  Generation g;
  g.tokens.resize(size_t(batch));
  g.ended_at_eos.assign(size_t(batch), false);
  std::vector<bool> done(static_cast<size_t>(batch), false);
  ForwardOptions fo;
  fo.want_logits = true;
  fo.last_row_only = true;
  ForwardResult r;
  const int64_t V = c.vocab;
  int64_t n_new = longest;
  for (int64_t step = 0;; step++) {
    StepRows rows;
    rows.step = step;
    rows.batch = batch;
    rows.n_new = n_new;
    rows.past = cache.length();
    rows.prompt_slots = longest;
    rows.cache = &cache;
    fo.edits = opt.edits ? opt.edits(rows) : std::vector<HookEdit>{};
    model.forward(tokens.data(), batch, n_new, cache, fo, r);
    std::vector<int32_t> next(static_cast<size_t>(batch));
    for (int64_t b = 0; b < batch; b++) {
      next[size_t(b)] = choose_token(r.logits.data() + b * V, V, opt.sampling, sampling_uniform(opt.sampling.seed, b, step));
      if (done[size_t(b)]) continue;
      g.tokens[size_t(b)].push_back(next[size_t(b)]);
      if (opt.stop_at_eos && c.eos_token_id >= 0 && next[size_t(b)] == c.eos_token_id) {
        done[size_t(b)] = true;
        g.ended_at_eos[size_t(b)] = true;
      } else if (int64_t(g.tokens[size_t(b)].size()) == opt.max_new_tokens) {
        done[size_t(b)] = true;
      }
    }
    if (std::all_of(done.begin(), done.end(), [](bool d) { return d; })) break;
    tokens = next;  // a finished sequence keeps running on its own last token, ignored
    n_new = 1;
    g.steps++;
  }
  return g;
}

}  // namespace sae
