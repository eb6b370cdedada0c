// Incremental decoding with the KV cache (Model::forward with a KvCache) against the full
// recompute, for every shared model, alone and in a left-padded batch; the token choice (greedy,
// temperature, top-k, top-p) against its definition; and generate(): determinism, batching, EOS.
//
// Tolerance kCacheTol = 1e-5 of the logits' scale (the bound): the cached pass does the
// same arithmetic on the same values, except that a row's products run in smaller GEMMs and its
// attention over keys copied to the cache, so only the order of f32 sums may differ (measured
// about 1e-7).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <map>

#include "backend/backend.h"
#include "model/generate.h"
#include "model/model.h"
#include "stream/safetensors.h"
#include "support/model_util.h"

using namespace sae;
using namespace model_test;

namespace {

constexpr double kCacheTol = 1e-5;

const char* const kSharedModels[] = {"stories260K",   "gpt2-random",   "tiny-gpt2",    "qwen3-random",
                                     "gemma2-random", "gemma3-random", "pythia-random"};

// max |a - b| over a row range, relative to the largest |b| of the whole reference.
double row_err(const float* a, const float* b, int64_t n, double scale) {
  double e = 0;
  for (int64_t i = 0; i < n; i++) e = std::max(e, std::fabs(double(a[i]) - double(b[i])));
  return e / scale;
}

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, double(std::fabs(x)));
  return m;
}

}  // namespace

// One sequence: the first 3 tokens in one step, then one token per step; every step's logits
// equal the full pass's rows for the same positions.
TEST(KvCache, LogitsEqualFullRecomputeAtEveryStepForEverySharedModel) {
  NEED_SHARED();
  auto be = make_cpu_backend();
  for (const char* name : kSharedModels) {
    Model m(shared_model(name), *be);
    SafeTensors ref(shared_model(name) + "/reference.safetensors");
    const std::vector<int32_t> tok = ref.read_i32("case0.tokens");
    const int64_t T = int64_t(tok.size()), V = m.config().vocab;
    ASSERT_GT(T, 9) << name;  // past gemma2's sliding window of 8
    ForwardOptions full_opt;
    full_opt.want_logits = true;
    const ForwardResult full = m.forward(tok.data(), 1, T, full_opt);
    const double scale = max_abs(full.logits);
    KvCache cache = m.make_cache(1, T);
    ForwardResult r;
    ForwardOptions o;
    o.want_logits = true;
    double worst = 0;
    m.forward(tok.data(), 1, 3, cache, o, r);
    ASSERT_EQ(r.logits.size(), size_t(3 * V));
    worst = std::max(worst, row_err(r.logits.data(), full.logits.data(), 3 * V, scale));
    for (int64_t t = 3; t < T; t++) {
      m.forward(tok.data() + t, 1, 1, cache, o, r);
      worst = std::max(worst, row_err(r.logits.data(), full.logits.data() + t * V, V, scale));
    }
    EXPECT_EQ(cache.length(), T);
    EXPECT_LE(worst, kCacheTol) << name;
    std::printf("[ %s ] cached vs full logits, %lld steps: %.2e of scale\n", name, (long long)(T - 2), worst);
  }
}

// Two prompts of different lengths in one left-padded batch, fed token by token after a shared
// prefill: each sequence's logits equal its own full pass, so the padding is invisible (positions
// count from the first real token, pad slots are never attended to). With last_row_only the
// prefill gives each sequence's last row only.
TEST(KvCache, LeftPaddedBatchEqualsEachSequenceAlone) {
  NEED_SHARED();
  auto be = make_cpu_backend();
  for (const char* name : kSharedModels) {
    Model m(shared_model(name), *be);
    SafeTensors ref(shared_model(name) + "/reference.safetensors");
    const std::vector<int32_t> a = ref.read_i32("case0.tokens"), b = ref.read_i32("case1.tokens");
    const int64_t V = m.config().vocab;
    const int64_t la = 4, lb = 9, steps = std::min<int64_t>(int64_t(a.size()) - la, int64_t(b.size()) - lb);
    ASSERT_GT(steps, 3) << name;
    ForwardOptions fo;
    fo.want_logits = true;
    const ForwardResult fa = m.forward(a.data(), 1, int64_t(a.size()), fo), fb = m.forward(b.data(), 1, int64_t(b.size()), fo);
    const double scale = std::max(max_abs(fa.logits), max_abs(fb.logits));
    // Prompt slots: a is padded by lb - la (with a junk token that must not matter).
    std::vector<int32_t> prompt(size_t(2 * lb), 3);
    std::copy(a.begin(), a.begin() + la, prompt.begin() + (lb - la));
    std::copy(b.begin(), b.begin() + lb, prompt.begin() + lb);
    KvCache cache = m.make_cache(2, lb + steps, {int32_t(lb - la), 0});
    EXPECT_EQ(cache.position(0, lb - la), 0);
    EXPECT_EQ(cache.position(0, 0), 0);  // a pad slot
    EXPECT_EQ(cache.position(1, 5), 5);
    ForwardOptions o;
    o.want_logits = true;
    ForwardResult r;
    {
      // The pad rows' own outputs are not used, but stay finite (a pad query sees only itself).
      KvCache other = m.make_cache(2, lb, {int32_t(lb - la), 0});
      m.forward(prompt.data(), 2, lb, other, o, r);
      for (float v : r.logits) ASSERT_TRUE(std::isfinite(v)) << name;
    }
    o.last_row_only = true;
    m.forward(prompt.data(), 2, lb, cache, o, r);
    ASSERT_EQ(r.logits.size(), size_t(2 * V));
    double worst = row_err(r.logits.data(), fa.logits.data() + (la - 1) * V, V, scale);
    worst = std::max(worst, row_err(r.logits.data() + V, fb.logits.data() + (lb - 1) * V, V, scale));
    o.last_row_only = false;
    for (int64_t s = 0; s < steps; s++) {
      const int32_t next[2] = {a[size_t(la + s)], b[size_t(lb + s)]};
      m.forward(next, 2, 1, cache, o, r);
      worst = std::max(worst, row_err(r.logits.data(), fa.logits.data() + (la + s) * V, V, scale));
      worst = std::max(worst, row_err(r.logits.data() + V, fb.logits.data() + (lb + s) * V, V, scale));
    }
    EXPECT_LE(worst, kCacheTol) << name;
  }
}

TEST(KvCache, BadUseIsRefused) {
  NEED_SHARED();
  auto be = make_cpu_backend();
  Model m(shared_model("stories260K"), *be);  // 512 positions
  EXPECT_THROW(m.make_cache(1, 513), InputError);
  EXPECT_NO_THROW(m.make_cache(2, 514, {2, 5}));  // the padding takes no position
  KvCache cache = m.make_cache(1, 4);
  const int32_t tok[5] = {1, 2, 3, 4, 5};
  ForwardOptions o;
  ForwardResult r;
  m.forward(tok, 1, 4, cache, o, r);
  try {
    m.forward(tok, 1, 1, cache, o, r);
    ADD_FAILURE() << "no exception";
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(), "forward: 5 slots do not fit the KV cache's 4");
  }
  EXPECT_THROW(m.forward(tok, 2, 1, cache, o, r), UsageError);
  o.want_nll = true;
  o.last_row_only = true;
  EXPECT_THROW(m.forward(tok, 1, 2, o), UsageError);
}

// Greedy takes the largest logit, the lowest id on a tie; top_k 1 and a tiny top_p are greedy
// too; sampling at temperature T over a sweep of u reproduces softmax(logits / T) restricted by
// top_k and top_p (an inverse CDF over a sorted list: the share of u values that choose a token
// is its probability, to the sweep's step).
TEST(Sampling, ChoiceFollowsItsDefinition) {
  const std::vector<float> lg = {1.0f, 3.0f, 0.5f, 3.0f, -2.0f, 2.0f};
  const int64_t V = int64_t(lg.size());
  Sampling s;
  EXPECT_EQ(choose_token(lg.data(), V, s, 0.99), 1);
  s.temperature = 1.0;
  s.top_k = 1;
  EXPECT_EQ(choose_token(lg.data(), V, s, 0.99), 1);
  s.top_k = 0;
  s.top_p = 1e-9;
  EXPECT_EQ(choose_token(lg.data(), V, s, 0.99), 1);

  struct Case {
    double temperature, top_p;
    int top_k;
  };
  for (Case c : {Case{1.0, 1.0, 0}, Case{0.5, 1.0, 0}, Case{2.0, 1.0, 3}, Case{1.0, 0.8, 0}}) {
    s.temperature = c.temperature;
    s.top_p = c.top_p;
    s.top_k = c.top_k;
    // The definition: keep by descending logit (ties by id), top_k, then the shortest prefix
    // reaching top_p of the mass.
    std::vector<int> order = {1, 3, 5, 0, 2, 4};
    std::vector<double> p;
    for (int i : order) p.push_back(std::exp((lg[size_t(i)] - 3.0) / c.temperature));
    size_t keep = c.top_k ? size_t(c.top_k) : p.size();
    double total = 0;
    for (size_t i = 0; i < keep; i++) total += p[i];
    if (c.top_p < 1) {
      double acc = 0;
      size_t n = 0;
      while (n < keep && acc < c.top_p * total) acc += p[n++];
      keep = n;
      total = acc;
    }
    std::map<int, double> want, got;
    for (size_t i = 0; i < keep; i++) want[order[i]] = p[i] / total;
    const int steps = 100000;
    for (int i = 0; i < steps; i++) got[choose_token(lg.data(), V, s, (i + 0.5) / steps)] += 1.0 / steps;
    EXPECT_EQ(got.size(), want.size()) << "T " << c.temperature << " top_p " << c.top_p << " top_k " << c.top_k;
    for (const auto& [tok, pr] : want) EXPECT_NEAR(got[tok], pr, 2.0 / steps) << "token " << tok;
  }
}

TEST(Sampling, UniformDrawsAreAFunctionOfSeedIndexAndStep) {
  EXPECT_EQ(sampling_uniform(7, 2, 9), sampling_uniform(7, 2, 9));
  EXPECT_NE(sampling_uniform(7, 2, 9), sampling_uniform(8, 2, 9));
  EXPECT_NE(sampling_uniform(7, 2, 9), sampling_uniform(7, 3, 9));
  EXPECT_NE(sampling_uniform(7, 2, 9), sampling_uniform(7, 2, 10));
  double mean = 0;
  for (int i = 0; i < 10000; i++) {
    const double u = sampling_uniform(1, 0, i);
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    mean += u / 10000;
  }
  EXPECT_NEAR(mean, 0.5, 0.01);  // 4 standard errors (0.0029)
}

// generate(): greedy is what argmax over the full pass would pick, token by token; a batch gives
// each prompt what it gets alone; a seed fixes a sampled run; EOS ends a sequence and is kept.
TEST(Generate, GreedyBatchSeedAndEos) {
  NEED_SHARED();
  auto be = make_cpu_backend();
  Model m(shared_model("stories260K"), *be);
  SafeTensors ref(shared_model("stories260K") + "/reference.safetensors");
  const std::vector<int32_t> c0 = ref.read_i32("case0.tokens"), c1 = ref.read_i32("case1.tokens");
  const std::vector<int32_t> p0(c0.begin(), c0.begin() + 5), p1(c1.begin(), c1.begin() + 11);
  GenerateOptions o;
  o.max_new_tokens = 12;
  o.stop_at_eos = false;
  const Generation g0 = generate(m, {p0}, o), g1 = generate(m, {p1}, o), both = generate(m, {p0, p1}, o);
  ASSERT_EQ(g0.tokens[0].size(), 12u);
  EXPECT_EQ(both.tokens[0], g0.tokens[0]);
  EXPECT_EQ(both.tokens[1], g1.tokens[0]);
  EXPECT_EQ(g0.steps, 11);
  // Greedy against argmax of the full pass over the growing text.
  std::vector<int32_t> text = p0;
  ForwardOptions fo;
  fo.want_logits = true;
  for (int32_t want : g0.tokens[0]) {
    const ForwardResult r = m.forward(text.data(), 1, int64_t(text.size()), fo);
    const int64_t V = m.config().vocab;
    EXPECT_EQ(choose_token(r.logits.data() + (int64_t(text.size()) - 1) * V, V, Sampling{}, 0), want);
    text.push_back(want);
  }
  // Sampling: the seed fixes the tokens; another seed gives others.
  o.sampling.temperature = 1.0;
  o.sampling.top_p = 0.95;
  o.sampling.seed = 11;
  const Generation s1 = generate(m, {p0, p1}, o), s2 = generate(m, {p0, p1}, o);
  EXPECT_EQ(s1.tokens, s2.tokens);
  o.sampling.seed = 12;
  EXPECT_NE(generate(m, {p0, p1}, o).tokens, s1.tokens);
  // EOS: a model whose EOS is the first greedy token stops there.
  TempDir d;
  json cfg = json::parse(std::ifstream(shared_model("stories260K") + "/config.json"));
  cfg["eos_token_id"] = g1.tokens[0][2];
  std::ofstream(d / "config.json") << cfg.dump();
  fs::create_symlink(shared_model("stories260K") + "/model.safetensors", d / "model.safetensors");
  Model me(d.path(), *be);
  GenerateOptions eo;
  eo.max_new_tokens = 12;
  const Generation ge = generate(me, {p0, p1}, eo);
  EXPECT_EQ(ge.tokens[1], std::vector<int32_t>(g1.tokens[0].begin(), g1.tokens[0].begin() + 3));
  EXPECT_TRUE(ge.ended_at_eos[1]);
  EXPECT_LE(ge.tokens[0].size(), 12u);
}

TEST(Generate, PromptAndBudgetMustFitThePositions) {
  NEED_SHARED();
  auto be = make_cpu_backend();
  Model m(shared_model("stories260K"), *be);  // 512 positions
  GenerateOptions o;
  o.max_new_tokens = 500;
  const std::vector<int32_t> prompt(20, 5);
  try {
    generate(m, {prompt}, o);
    ADD_FAILURE() << "no exception";
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()), "a prompt of 20 tokens and 500 new tokens need 519 positions, more than the "
                                     "model's 512 (max_position_embeddings)");
  }
  o.max_new_tokens = 493;  // 20 + 493 - 1 = 512: fits
  o.stop_at_eos = false;
  EXPECT_EQ(generate(m, {prompt}, o).tokens[0].size(), 493u);
}
