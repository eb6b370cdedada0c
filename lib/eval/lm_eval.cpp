// LM-loss metrics with the SAE spliced into the model (lm_eval.h, docs/lm-eval.md).
#include "eval/lm_eval.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

#include "base/cli.h"
#include "tokenizer/documents.h"
#include "tokenizer/tokenizer.h"

namespace sae {

using ojson = nlohmann::ordered_json;

namespace {
// What an SAE's d_in must equal at a hook, for messages: "d_model 64", or for attn.hook_z
// "n_heads x head_dim 4 x 16 = 64 of blocks.1.attn.hook_z", saying too when d_in is not even a
// whole number of heads (an SAE made for a model with other heads).
std::string width_name(const HookPoint& h, const ModelConfig& cfg, int64_t d_in) {
  if (h.kind != HookKind::attn_z) return "d_model " + std::to_string(cfg.d_model);
  std::string s = "n_heads x head_dim " + std::to_string(cfg.n_heads) + " x " + std::to_string(cfg.head_dim) + " = " +
                  std::to_string(hook_width(h, cfg)) + " of " + h.name();
  if (d_in % cfg.n_heads)
    s += " (" + std::to_string(d_in) + " is not a whole number of the " + std::to_string(cfg.n_heads) + " heads)";
  return s;
}
}  // namespace

HookPoint lm_eval_hook(const Sae& sae, const std::string& sae_dir, const ModelConfig& cfg,
                       const std::string& model_dir, const std::string& hook_override, std::string* note) {
  std::string name = sae.hook;
  if (!hook_override.empty()) {
    if (note && !sae.hook.empty() && sae.hook != hook_override)
      *note = "evaluating at --hook " + hook_override + ", not at the SAE's recorded hook " + sae.hook;
    name = hook_override;
  }
  if (name.empty())
    throw UsageError(sae_dir + " records no hook (cfg.json hook_name): give the hook with --hook");
  HookPoint h;
  try {
    h = parse_hook(name, cfg);
  } catch (const UsageError& e) {
    const std::string whose = hook_override.empty() ? sae_dir + ": the SAE's hook " : "--hook ";
    throw InputError(whose + name + " is not a hook of the model " + model_dir + " (" + e.what() + ")");
  }
  if (sae.d_in != hook_width(h, cfg))
    throw InputError(sae_dir + ": the SAE's d_in " + std::to_string(sae.d_in) + " does not match " + width_name(h, cfg, sae.d_in) +
                     " of the model " + model_dir);
  return h;
}

// ---- the evaluator ----

LmEvaluator::LmEvaluator(Model& model, const Sae& sae, HookPoint hook, LmEvalOptions opt)
    : model_(model), sae_(sae), hook_(hook), opt_(opt), structural_(sae) {
  if (opt_.batch < 1) throw UsageError("--batch must be at least 1, got " + std::to_string(opt_.batch));
  if (sae.d_in != hook_width(hook, model.config()))
    throw InputError("the SAE's d_in " + std::to_string(sae.d_in) + " does not match the model's " +
                     width_name(hook, model.config(), sae.d_in));
  chunk_rows_ = structural_.chunk_rows();
}

LmEvaluator::~LmEvaluator() = default;

void LmEvaluator::add(const std::vector<TextWindow>& windows) {
  for (size_t i = 0; i < windows.size(); i += size_t(opt_.batch))
    run_batch(windows.data() + i, std::min<int64_t>(opt_.batch, int64_t(windows.size() - i)));
}

namespace {

// Sum of KL(clean || other) over the scored predictions of each window: rows b*T .. b*T+n_b-1,
// n_b = the window's text tokens.
double kl_sum(const std::vector<float>& clean, const std::vector<float>& other, const TextWindow* w, int64_t B,
              int64_t T, int64_t V) {
  double s = 0;
  for (int64_t b = 0; b < B; b++) {
    const int64_t n = int64_t(w[b].tokens.size()) - 1;
    const size_t at = size_t(b * T * V);
    for (double v : kl_divergence_rows(clean.data() + at, other.data() + at, n, V)) s += v;
  }
  return s;
}

double nll_sum(const std::vector<float>& nll, const TextWindow* w, int64_t B, int64_t T) {
  double s = 0;
  for (int64_t b = 0; b < B; b++) {
    const int64_t n = int64_t(w[b].tokens.size()) - 1;
    for (int64_t t = 0; t < n; t++) s += nll[size_t(b * (T - 1) + t)];
  }
  return s;
}

}  // namespace

void LmEvaluator::run_batch(const TextWindow* w, int64_t B) {
  const ModelConfig& cfg = model_.config();
  const int64_t D = hook_width(hook_, cfg), V = cfg.vocab, d_sae = sae_.d_sae;
  int64_t T = 0;
  for (int64_t b = 0; b < B; b++) {
    if (w[b].tokens.size() < 2) throw InputError("lm eval: a window needs BOS and at least one text token");
    T = std::max<int64_t>(T, int64_t(w[b].tokens.size()));
  }
  // Shorter windows are padded after their end (with their own BOS): causal attention keeps the
  // padding from reaching the rows that are scored, and padding rows are neither spliced nor scored.
  std::vector<int32_t> ids(size_t(B * T), w[0].tokens[0]);
  rows_.clear();
  int64_t targets = 0;
  for (int64_t b = 0; b < B; b++) {
    const int64_t n = int64_t(w[b].tokens.size());
    std::copy(w[b].tokens.begin(), w[b].tokens.end(), ids.begin() + b * T);
    for (int64_t p = opt_.splice_bos ? 0 : 1; p < n; p++) rows_.push_back(b * T + p);
    targets += n - 1;
  }
  const int64_t R = int64_t(rows_.size());

  // The hook's activations travel through a host buffer: a memcpy on the CPU backend, the
  // device-to-host copy the host-side SAE needs on CUDA.
  auto load = [&](float* acts, int64_t rows, Backend& be) {
    host_.resize(size_t(rows * D));
    be.to_host(host_.data(), acts, host_.size() * sizeof(float));
  };
  auto store = [&](float* acts, Backend& be) { be.to_device(acts, host_.data(), host_.size() * sizeof(float)); };

  // The spliced pass: x -> x_hat at the chosen rows; x and x_hat are kept for keep-error.
  auto splice = [&](float* acts, int64_t rows, int64_t d, Backend& be) {
    load(acts, rows, be);
    x_.resize(size_t(R * d));
    x_hat_.resize(size_t(R * d));
    for (int64_t i = 0; i < R; i++)
      std::copy_n(host_.data() + rows_[size_t(i)] * d, d, x_.data() + i * d);
    for (int64_t r0 = 0; r0 < R; r0 += chunk_rows_) {
      const int64_t n = std::min(chunk_rows_, R - r0);
      latents_.resize(size_t(n * d_sae));
      sae_.reconstruct(x_.data() + r0 * d, n, latents_.data(), x_hat_.data() + r0 * d);
      if (opt_.structural) structural_.accumulate(x_.data() + r0 * d, latents_.data(), x_hat_.data() + r0 * d, n);
    }
    for (int64_t i = 0; i < R; i++)
      std::copy_n(x_hat_.data() + i * d, d, host_.data() + rows_[size_t(i)] * d);
    store(acts, be);
  };
  auto zero = [&](float* acts, int64_t rows, int64_t d, Backend& be) {
    load(acts, rows, be);
    for (int64_t r : rows_) std::fill_n(host_.data() + r * d, d, 0.0f);
    store(acts, be);
  };
  // x_hat + (x - x_hat) in float, as SAELens's error term: two roundings, so each element is x
  // to within an ulp of max(|x|, |x_hat|) (exactly x when x_hat is within a factor 2 of x).
  auto keep_error = [&](float* acts, int64_t rows, int64_t d, Backend& be) {
    load(acts, rows, be);
    for (int64_t i = 0; i < R; i++) {
      float* v = host_.data() + rows_[size_t(i)] * d;
      const float* xh = x_hat_.data() + i * d;
      for (int64_t j = 0; j < d; j++) {
        const float err = v[j] - xh[j];
        v[j] = xh[j] + err;
      }
    }
    store(acts, be);
  };

  ForwardOptions fo;
  fo.want_nll = true;
  fo.want_log_probs = true;
  model_.forward(ids.data(), B, T, fo, clean_);
  nll_clean_ += nll_sum(clean_.nll, w, B, T);

  auto edited = [&](std::function<void(float*, int64_t, int64_t, Backend&)> fn, double& nll, double& kl) {
    ForwardOptions e = fo;
    e.edits = {{hook_, std::move(fn)}};
    model_.forward(ids.data(), B, T, e, other_);
    nll += nll_sum(other_.nll, w, B, T);
    kl += kl_sum(clean_.logits, other_.logits, w, B, T, V);
  };
  edited(splice, nll_spliced_, kl_spliced_);
  edited(zero, nll_zero_, kl_zero_);
  if (opt_.keep_error) edited(keep_error, nll_keep_, kl_keep_);

  windows_ += B;
  tokens_ += targets;
  spliced_rows_ += R;
}

LmEvalResult LmEvaluator::result() const {
  LmEvalResult r;
  r.windows = windows_;
  r.tokens = tokens_;
  r.spliced_rows = spliced_rows_;
  if (tokens_ > 0) {
    const double n = double(tokens_);
    r.ce_clean = nll_clean_ / n;
    r.ce_spliced = nll_spliced_ / n;
    r.ce_zero = nll_zero_ / n;
    r.delta_lm_loss = r.ce_spliced - r.ce_clean;
    if (r.ce_zero != r.ce_clean) r.ce_recovered = (r.ce_zero - r.ce_spliced) / (r.ce_zero - r.ce_clean);
    r.kl = kl_spliced_ / n;
    r.kl_zero = kl_zero_ / n;
    if (opt_.keep_error) {
      r.ce_keep_error = nll_keep_ / n;
      r.kl_keep_error = kl_keep_ / n;
    }
  }
  if (opt_.structural && structural_.rows() > 0) {
    r.has_structural = true;
    r.structural = structural_.result();
  }
  return r;
}

// ---- text in, report out ----

namespace {

using Clock = std::chrono::steady_clock;

// SAELens keeps the training context length in cfg.json (metadata.context_size, or context_size
// at the top level in the legacy layout); sae-train records it there from the stream.
int64_t sae_context(const Sae& s) {
  for (const auto* j : {&s.cfg, s.cfg.contains("metadata") ? &s.cfg["metadata"] : nullptr})
    if (j && j->is_object() && j->contains("context_size") && (*j)["context_size"].is_number_integer())
      return (*j)["context_size"].get<int64_t>();
  return 0;
}

// Whether the SAE was trained on activations that kept the BOS rows (sae-train records the
// stream's provenance in metadata.activation_provenance).
bool sae_kept_bos(const Sae& s) {
  const auto& c = s.cfg;
  if (!c.contains("metadata") || !c["metadata"].is_object()) return false;
  const auto& m = c["metadata"];
  if (!m.contains("activation_provenance") || !m["activation_provenance"].is_object()) return false;
  const auto& p = m["activation_provenance"];
  return p.contains("exclude_bos") && p["exclude_bos"].is_boolean() && !p["exclude_bos"].get<bool>();
}

}  // namespace

LmEvalReport lm_eval_text(const Sae& sae, const std::string& sae_dir, const LmEvalTextOptions& o) {
  const auto start = Clock::now();
  if (o.max_tokens < 0) throw UsageError("--max-tokens must be >= 0, got " + std::to_string(o.max_tokens));
  if (o.context != 0 && o.context < 2)
    throw UsageError("--context must be at least 2 (the BOS token and one token of text), got " + std::to_string(o.context));
  if (o.eval.batch < 1) throw UsageError("--batch must be at least 1, got " + std::to_string(o.eval.batch));
  const Device dev = resolve_device(o.device);
  check_compute_device(o.compute, dev);
  LmEvalReport rep;
  rep.model_dir = o.model_dir;
  rep.sae_dir = sae_dir;
  rep.inputs = o.inputs.empty() ? std::vector<std::string>{"-"} : o.inputs;

  // Cheap checks first: the config decides the hook and d_model before any weights are read.
  const ModelConfig mcfg = load_model_config(o.model_dir);
  std::string note;
  const HookPoint hook = lm_eval_hook(sae, sae_dir, mcfg, o.model_dir, o.hook, &note);
  if (!note.empty()) cli::say("note: " + note);
  rep.context = o.context;
  if (rep.context == 0) {
    rep.context = sae_context(sae) >= 2 ? sae_context(sae) : 128;
    rep.context = std::min(rep.context, mcfg.max_positions);
  } else if (rep.context > mcfg.max_positions) {
    throw UsageError("--context " + std::to_string(rep.context) + " is longer than the model's " +
                     std::to_string(mcfg.max_positions) + " positions (" + mcfg.max_positions_field + " in " +
                     o.model_dir + "/config.json)");
  }
  rep.splice_bos = o.splice_bos < 0 ? sae_kept_bos(sae) : o.splice_bos > 0;

  auto be = make_backend(dev);
  rep.device = device_name(be->device());
  rep.compute = compute_name(o.compute);
  Model model(o.model_dir, *be, o.compute);
  rep.hook = hook.name();
  auto tok = Tokenizer::load(o.model_dir);
  const int32_t bos = sequence_bos(tok->bos_id(), model.config(), o.model_dir);

  LmEvalOptions eo = o.eval;
  eo.splice_bos = rep.splice_bos;
  LmEvaluator ev(model, sae, hook, eo);
  cli::Progress progress;
  TextDocumentReader reader(rep.inputs, o.jsonl_field, o.lines, o.replace_invalid_utf8);
  TextDocument doc;
  std::vector<TextWindow> pending;
  int64_t queued = 0;  // targets read so far (run or pending)
  auto flush = [&] {
    ev.add(pending);
    pending.clear();
    if (progress.enabled()) {
      const double s = std::chrono::duration<double>(Clock::now() - start).count();
      progress.update("eval: " + cli::human_count(double(ev.tokens())) + " tokens, " +
                      cli::human_count(double(ev.tokens()) / std::max(s, 1e-9)) + " tokens/s");
    }
  };
  for (int64_t doc_id = 0; o.max_tokens == 0 || queued < o.max_tokens; doc_id++) {
    if (!reader.next(doc)) break;
    std::vector<int32_t> ids = encode_document(*tok, doc);
    rep.documents++;
    if (ids.empty()) {
      rep.empty_documents++;
      continue;
    }
    if (o.max_tokens > 0 && queued + int64_t(ids.size()) > o.max_tokens) ids.resize(size_t(o.max_tokens - queued));
    queued += int64_t(ids.size());
    append_windows(ids, doc_id, bos, rep.context, pending);
    if (int64_t(pending.size()) >= eo.batch) {
      // Run whole batches; a partial one waits for the next document.
      const size_t full = pending.size() - pending.size() % size_t(eo.batch);
      std::vector<TextWindow> rest(std::make_move_iterator(pending.begin() + long(full)),
                                   std::make_move_iterator(pending.end()));
      pending.resize(full);
      flush();
      pending = std::move(rest);
    }
  }
  if (!pending.empty()) flush();
  progress.done();
  if (rep.empty_documents)
    cli::say("skipped " + std::to_string(rep.empty_documents) + " empty document" +
             (rep.empty_documents == 1 ? "" : "s") + " (no tokens)");
  if (ev.tokens() == 0) throw_no_text(rep.inputs);
  rep.result = ev.result();
  rep.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return rep;
}

namespace {

ojson num(double v) { return std::isfinite(v) ? ojson(v) : ojson(nullptr); }

std::string fmt(double v, const char* f = "%.5f") {
  if (!std::isfinite(v)) return "n/a";
  char b[64];
  snprintf(b, sizeof b, f, v);
  return b;
}

}  // namespace

ojson lm_eval_json(const LmEvalReport& r) {
  const LmEvalResult& e = r.result;
  ojson j;
  j["model"] = r.model_dir;
  j["hook"] = r.hook;
  j["text"] = r.inputs;
  j["context"] = r.context;
  j["splice_bos"] = r.splice_bos;
  j["documents"] = r.documents;
  j["empty_documents"] = r.empty_documents;
  j["windows"] = e.windows;
  j["tokens"] = e.tokens;
  j["spliced_rows"] = e.spliced_rows;
  j["ce_loss_clean"] = num(e.ce_clean);
  j["ce_loss_spliced"] = num(e.ce_spliced);
  j["ce_loss_zero_ablation"] = num(e.ce_zero);
  j["ce_loss_recovered"] = num(e.ce_recovered);
  j["delta_lm_loss"] = num(e.delta_lm_loss);
  j["kl_div"] = num(e.kl);
  j["kl_div_zero_ablation"] = num(e.kl_zero);
  if (!std::isnan(e.ce_keep_error) || !std::isnan(e.kl_keep_error)) {
    j["ce_loss_keep_error"] = num(e.ce_keep_error);
    j["kl_div_keep_error"] = num(e.kl_keep_error);
  }
  j["device"] = r.device;
  j["compute"] = r.compute;
  return j;
}

std::string lm_eval_table(const LmEvalReport& r) {
  const LmEvalResult& e = r.result;
  std::string o = "LM loss with the SAE spliced in at " + r.hook + " of " + r.model_dir + "\n  (" +
                  std::to_string(e.tokens) + " tokens in " + std::to_string(e.windows) + " windows of <= " +
                  std::to_string(r.context) + ", BOS " + (r.splice_bos ? "spliced" : "left clean") + ")\n";
  auto row = [&](const std::string& k, const std::string& v) {
    char b[256];
    snprintf(b, sizeof b, "  %-30s %s\n", k.c_str(), v.c_str());
    o += b;
  };
  row("CE loss clean", fmt(e.ce_clean));
  row("CE loss spliced", fmt(e.ce_spliced));
  row("CE loss zero ablation", fmt(e.ce_zero));
  row("CE loss recovered", fmt(e.ce_recovered, "%.4f"));
  row("delta LM loss", fmt(e.delta_lm_loss));
  row("KL(clean || spliced)", fmt(e.kl));
  row("KL(clean || zero ablation)", fmt(e.kl_zero));
  if (!std::isnan(e.ce_keep_error)) {
    row("CE loss with error term", fmt(e.ce_keep_error) + " (" + fmt(e.ce_keep_error - e.ce_clean, "%+.1e") + " vs clean)");
    row("KL with error term", fmt(e.kl_keep_error, "%.2e"));
  }
  row("time", fmt(r.seconds, "%.1f") + " s on " + r.device + ", " + r.compute + " compute (" +
                   fmt(double(e.tokens) / std::max(r.seconds, 1e-9), "%.0f") + " tokens/s, " +
                   (std::isnan(e.ce_keep_error) ? "3" : "4") + " passes)");
  return o;
}

}  // namespace sae
