// LM-loss metrics with an SAE spliced into the model (lib/eval/lm_eval.h). The model tests run the
// shared stories260K model (skipped when ../shared is absent) with SAEs built by hand, whose
// effect on the loss is known: an identity SAE changes nothing, a zero SAE is zero ablation, the
// error term restores the clean activations. The losses are also checked against numbers computed
// independently: the reference NLLs in ../shared, and a double-precision splice at the last layer
// from the reference activations.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <random>

#include "eval/lm_eval.h"
#include "support/model_util.h"
#include "tokenizer/tokenizer.h"

namespace {

using namespace sae;
using model_test::have_shared;
using model_test::shared_model;
using model_test::TempDir;
using json = nlohmann::json;

// ---- hook checks (no model needed) ----

ModelConfig five_layers() {
  ModelConfig c;
  c.n_layers = 5;
  c.d_model = 64;
  return c;
}

std::string message(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no exception)";
}

TEST(LmEvalHook, MatchesTheModelOrSaysWhy) {
  const ModelConfig c = five_layers();
  Sae s;
  s.d_in = 64;
  s.hook = "blocks.2.hook_resid_post";
  EXPECT_EQ(lm_eval_hook(s, "sae", c, "model", "").name(), "blocks.2.hook_resid_post");
  std::string note;
  EXPECT_EQ(lm_eval_hook(s, "sae", c, "model", "blocks.1.hook_mlp_out", &note).name(), "blocks.1.hook_mlp_out");
  EXPECT_EQ(note, "evaluating at --hook blocks.1.hook_mlp_out, not at the SAE's recorded hook blocks.2.hook_resid_post");

  s.hook = "blocks.7.hook_resid_post";
  EXPECT_THROW(lm_eval_hook(s, "sae", c, "model", ""), InputError);
  EXPECT_EQ(message([&] { lm_eval_hook(s, "sae", c, "model", ""); }),
            "sae: the SAE's hook blocks.7.hook_resid_post is not a hook of the model model (hook "
            "'blocks.7.hook_resid_post': layer 7 is out of range (the model has 5 layers, 0-4))");
  s.hook = "layers.3";  // a sparsify hookpoint name: --hook gives the TransformerLens one
  EXPECT_EQ(message([&] { lm_eval_hook(s, "sae", c, "model", ""); }),
            "sae: the SAE's hook layers.3 is not a hook of the model model (hook 'layers.3': unknown hook name "
            "(expected blocks.L.hook_{resid_pre,attn_out,resid_mid,mlp_out,resid_post} or blocks.L.attn.hook_z))");
  EXPECT_EQ(lm_eval_hook(s, "sae", c, "model", "blocks.3.hook_resid_post").layer, 3);

  s.hook = "blocks.2.hook_resid_post";
  s.d_in = 128;
  EXPECT_THROW(lm_eval_hook(s, "sae", c, "model", ""), InputError);
  EXPECT_EQ(message([&] { lm_eval_hook(s, "sae", c, "model", ""); }),
            "sae: the SAE's d_in 128 does not match d_model 64 of the model model");
  // At attn.hook_z the SAE reads the heads' concatenated outputs: 4 heads of 24 here, not d_model.
  ModelConfig z = c;
  z.n_heads = 4;
  z.head_dim = 24;
  s.hook = "blocks.1.attn.hook_z";
  EXPECT_EQ(message([&] { lm_eval_hook(s, "sae", z, "model", ""); }),
            "sae: the SAE's d_in 128 does not match n_heads x head_dim 4 x 24 = 96 of blocks.1.attn.hook_z of the model model");
  s.d_in = 90;  // not a whole number of heads
  EXPECT_EQ(message([&] { lm_eval_hook(s, "sae", z, "model", ""); }),
            "sae: the SAE's d_in 90 does not match n_heads x head_dim 4 x 24 = 96 of blocks.1.attn.hook_z (90 is not a "
            "whole number of the 4 heads) of the model model");
  s.d_in = 96;
  EXPECT_EQ(lm_eval_hook(s, "sae", z, "model", "").kind, HookKind::attn_z);
  s.hook = "blocks.2.hook_resid_post";

  s.d_in = 64;
  s.hook.clear();
  EXPECT_THROW(lm_eval_hook(s, "sae", c, "model", ""), UsageError);
  EXPECT_EQ(message([&] { lm_eval_hook(s, "sae", c, "model", ""); }),
            "sae records no hook (cfg.json hook_name): give the hook with --hook");
}

// ---- hand-made SAEs ----

Sae standard_sae(int64_t d_in, int64_t d_sae, const std::string& hook) {
  Sae s;
  s.arch = "standard";
  s.d_in = d_in;
  s.d_sae = d_sae;
  s.hook = hook;
  s.W_enc.assign(size_t(d_in * d_sae), 0.0f);
  s.W_dec.assign(size_t(d_sae * d_in), 0.0f);
  s.b_enc.assign(size_t(d_sae), 0.0f);
  s.b_dec.assign(size_t(d_in), 0.0f);
  return s;
}

// ReLU(x) - ReLU(-x) = x: W_enc = [I, -I], W_dec = [I; -I], so negative activations survive too.
Sae identity_sae(int64_t d, const std::string& hook) {
  Sae s = standard_sae(d, 2 * d, hook);
  for (int64_t i = 0; i < d; i++) {
    s.W_enc[size_t(i * 2 * d + i)] = 1.0f;
    s.W_enc[size_t(i * 2 * d + d + i)] = -1.0f;
    s.W_dec[size_t(i * d + i)] = 1.0f;
    s.W_dec[size_t((d + i) * d + i)] = -1.0f;
  }
  return s;
}

// Random weights: a reconstruction that is far from x (so the loss moves), with about half the
// latents active.
Sae random_sae(int64_t d, int64_t d_sae, const std::string& hook, uint32_t seed) {
  Sae s = standard_sae(d, d_sae, hook);
  std::mt19937 g(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  for (auto& v : s.W_enc) v = n(g) / std::sqrt(float(d));
  for (auto& v : s.W_dec) v = n(g) / std::sqrt(float(d_sae));
  for (auto& v : s.b_enc) v = 0.1f * n(g);
  for (auto& v : s.b_dec) v = 0.1f * n(g);
  return s;
}

// ---- the stories260K model ----

#define NEED_STORIES()                                                                                  \
  do {                                                                                                  \
    if (!have_shared()) GTEST_SKIP() << "../shared is absent (set SAE_SHARED to the test data)";        \
  } while (0)

struct RefCase {
  std::string text;
  std::vector<int32_t> tokens;  // BOS first
  std::vector<float> nll;       // [T-1]
};

std::vector<RefCase> reference_cases() {
  const std::string dir = shared_model("stories260K");
  std::ifstream f(dir + "/reference.json");
  json j = json::parse(f);
  SafeTensors ref(dir + "/reference.safetensors");
  std::vector<RefCase> out;
  for (const auto& c : j["cases"]) {
    RefCase r;
    r.text = c["text"].get<std::string>();
    r.tokens = c["tokens"].get<std::vector<int32_t>>();
    r.nll = ref.read_f32(c["name"].get<std::string>() + ".nll");
    out.push_back(r);
  }
  return out;
}

std::vector<TextWindow> reference_windows(const std::vector<RefCase>& cases) {
  std::vector<TextWindow> w;
  for (size_t i = 0; i < cases.size(); i++) w.push_back({cases[i].tokens, int64_t(i)});
  return w;
}

// Story text, tokenized as sae-eval does: about 600 tokens, in windows of up to 64.
std::vector<TextWindow> story_windows(int64_t context) {
  auto tok = Tokenizer::load(shared_model("stories260K"));
  std::ifstream f(model_test::shared_dir() + "/data/tinystories-sample.txt");
  std::string line, text;
  std::vector<TextWindow> w;
  int64_t doc = 0;
  auto end_doc = [&] {
    if (!text.empty()) append_windows(tok->encode(text), doc++, tok->bos_id(), context, w);
    text.clear();
  };
  while (std::getline(f, line) && doc < 4) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) end_doc();
    else text += (text.empty() ? "" : "\n") + line;
  }
  end_doc();
  return w;
}

struct Stories {
  std::unique_ptr<Backend> be = make_cpu_backend();
  Model model{shared_model("stories260K"), *be};
};

LmEvalResult evaluate(Model& m, const Sae& s, const std::vector<TextWindow>& w, LmEvalOptions o = {}) {
  LmEvaluator ev(m, s, parse_hook(s.hook, m.config()), o);
  ev.add(w);
  return ev.result();
}

// The clean loss is the mean of the reference NLLs over all targets of all cases (token-weighted):
// the reference is float64 stored as float32, our pass is float32, and they agree to about 1e-4
// relative per value (../shared/README.md), so the means agree to that too.
TEST(LmEvalStories, CleanLossIsTheReferenceMeanNll) {
  NEED_STORIES();
  Stories m;
  const auto cases = reference_cases();
  double sum = 0;
  int64_t n = 0;
  for (const auto& c : cases) {
    for (float v : c.nll) sum += v;
    n += int64_t(c.nll.size());
  }
  const double want = sum / double(n);
  const LmEvalResult r = evaluate(m.model, identity_sae(64, "blocks.2.hook_resid_post"), reference_windows(cases));
  EXPECT_EQ(r.tokens, n);
  EXPECT_EQ(r.windows, int64_t(cases.size()));
  EXPECT_NEAR(r.ce_clean, want, 1e-4 * want);

  // The same through the text path: the reference texts as JSONL documents (one of them holds a
  // blank line), tokenized by sae-eval.
  TempDir t;
  std::string text;
  for (const auto& c : cases) text += json{{"text", c.text}}.dump() + "\n";
  model_test::write_text(t / "ref.txt", text);
  const std::string sae_dir = t / "sae";
  LmEvalTextOptions o;
  o.model_dir = shared_model("stories260K");
  o.inputs = {t / "ref.txt"};
  o.jsonl_field = "text";
  o.eval.batch = 3;  // a full batch and a partial one
  const LmEvalReport rep = lm_eval_text(identity_sae(64, "blocks.2.hook_resid_post"), sae_dir, o);
  EXPECT_EQ(rep.documents, int64_t(cases.size()));
  EXPECT_EQ(rep.context, 128);  // no context_size in the SAE's cfg
  EXPECT_EQ(rep.result.tokens, n);
  EXPECT_NEAR(rep.result.ce_clean, want, 1e-4 * want);
}

// The ±I SAE reconstructs every activation exactly (each output element is one product by ±1
// plus exact zeros), so the spliced pass repeats the clean pass's arithmetic bit for bit.
TEST(LmEvalStories, IdentitySaeChangesNothing) {
  NEED_STORIES();
  Stories m;
  const auto w = story_windows(64);
  // attn.hook_z is 8 heads x 8 = 64 wide in stories260K, as its residual stream is.
  for (const auto& [hook, bos] : {std::pair{"blocks.0.hook_resid_pre", true}, {"blocks.2.hook_resid_post", false},
                                   {"blocks.3.hook_mlp_out", true}, {"blocks.1.attn.hook_z", true}}) {
    {
      SCOPED_TRACE(std::string(hook) + (bos ? " splicing BOS" : ""));
      LmEvalOptions o;
      o.splice_bos = bos;
      o.keep_error = true;
      const LmEvalResult r = evaluate(m.model, identity_sae(64, hook), w, o);
      EXPECT_GT(r.tokens, 300);
      EXPECT_EQ(r.ce_spliced, r.ce_clean);
      EXPECT_EQ(r.ce_keep_error, r.ce_clean);
      EXPECT_EQ(r.kl, 0.0);
      EXPECT_EQ(r.delta_lm_loss, 0.0);
      EXPECT_EQ(r.ce_recovered, 1.0);
      EXPECT_GT(r.ce_zero, r.ce_clean + 0.1);  // zero ablation hurts, so "recovered" means something
      EXPECT_GT(r.kl_zero, 0.1);
      // Rows spliced: every position but BOS unless BOS is spliced too.
      const int64_t positions = r.tokens + r.windows;
      EXPECT_EQ(r.spliced_rows, bos ? positions : r.tokens);
      ASSERT_TRUE(r.has_structural);
      EXPECT_EQ(r.structural.rows, r.spliced_rows);
      EXPECT_EQ(r.structural.fvu, 0.0);
    }
  }
}

// A zero SAE reconstructs 0 at every spliced row: exactly zero ablation.
TEST(LmEvalStories, ZeroSaeIsZeroAblation) {
  NEED_STORIES();
  Stories m;
  const Sae s = standard_sae(64, 32, "blocks.1.hook_resid_post");
  const LmEvalResult r = evaluate(m.model, s, story_windows(64));
  EXPECT_EQ(r.ce_spliced, r.ce_zero);
  EXPECT_EQ(r.kl, r.kl_zero);
  EXPECT_EQ(r.ce_recovered, 0.0);
  EXPECT_GT(r.delta_lm_loss, 0.1);
  EXPECT_EQ(r.structural.l0_mean, 0.0);
}

// The error term restores the clean activations: x_hat + (x - x_hat) in float is x to within an
// ulp of max(|x|, |x_hat|), an activation perturbation of relative size ~1e-7 * |x_hat|/|x|, the
// size of the pass's own float32 rounding, so the loss moves by about the float32 rounding of the
// NLLs themselves: an ulp of a 2-4 nat loss is 2.4e-7 (measured: up to 6e-8). 1e-6 absolute is a
// few ulps, and 1e5 times smaller than the random SAE's own damage (checked below). The KL of two
// float32 log-prob rows that agree to rounding is ~1e-8 and may come out slightly negative.
TEST(LmEvalStories, KeepErrorReproducesTheCleanLoss) {
  NEED_STORIES();
  Stories m;
  const auto w = story_windows(64);
  for (const char* hook : {"blocks.1.hook_resid_post", "blocks.2.hook_attn_out", "blocks.4.hook_resid_pre"}) {
    SCOPED_TRACE(hook);
    LmEvalOptions o;
    o.keep_error = true;
    const LmEvalResult r = evaluate(m.model, random_sae(64, 256, hook, 7), w, o);
    EXPECT_NEAR(r.ce_keep_error, r.ce_clean, 1e-6);
    EXPECT_NEAR(r.kl_keep_error, 0.0, 1e-6);
    EXPECT_GT(std::abs(r.ce_spliced - r.ce_clean), 0.1);
    EXPECT_GT(r.kl, 0.1);
    EXPECT_GT(r.structural.fvu, 0.1);
  }
}

// Padding never reaches the scored rows: any batch size gives the same numbers (to float32
// rounding, since gemm blocking may differ with the number of rows: 1e-6 relative).
TEST(LmEvalStories, BatchSizeDoesNotMatter) {
  NEED_STORIES();
  Stories m;
  const auto w = story_windows(48);
  const Sae s = random_sae(64, 128, "blocks.2.hook_resid_mid", 3);
  LmEvalOptions o;
  o.batch = 1;
  const LmEvalResult a = evaluate(m.model, s, w, o);
  o.batch = 5;
  const LmEvalResult b = evaluate(m.model, s, w, o);
  EXPECT_EQ(a.tokens, b.tokens);
  for (auto [x, y] : {std::pair{a.ce_clean, b.ce_clean}, {a.ce_spliced, b.ce_spliced}, {a.ce_zero, b.ce_zero}, {a.kl, b.kl}})
    EXPECT_NEAR(x, y, 1e-6 * std::abs(x));
}

// An independent splice at the last layer's resid_post, from the reference activations: the SAE
// in double, then the final RMSNorm and the tied head in double. The reference activations agree
// with ours to about 1e-4 relative, so the losses do too (2e-4 relative leaves room for the mean).
// Zero ablation there gives logits 0, a uniform distribution: NLL ln(512) at every ablated row.
TEST(LmEvalStories, SplicedLossMatchesAnIndependentComputation) {
  NEED_STORIES();
  Stories m;
  const std::string dir = shared_model("stories260K");
  const auto cases = reference_cases();
  const Sae s = random_sae(64, 96, "blocks.4.hook_resid_post", 11);
  SafeTensors weights(dir + "/model.safetensors"), ref(dir + "/reference.safetensors");
  const std::vector<float> wte = weights.read_f32("model.embed_tokens.weight"), nw = weights.read_f32("model.norm.weight");
  const int64_t D = 64, V = 512, F = s.d_sae;
  const double eps = m.model.config().norm_eps;
  double spliced = 0, zero = 0;
  int64_t n = 0;
  for (size_t i = 0; i < cases.size(); i++) {
    const std::vector<float> x = ref.read_f32("case" + std::to_string(i) + ".blocks.4.hook_resid_post");
    const auto& tk = cases[i].tokens;
    for (size_t t = 0; t + 1 < tk.size(); t++) {
      const float* xr = x.data() + t * D;
      std::vector<double> h(xr, xr + D);
      if (t > 0) {  // BOS is not spliced
        std::vector<double> f(model_test::sz(F));
        for (int64_t j = 0; j < F; j++) {
          double a = s.b_enc[size_t(j)];
          for (int64_t k = 0; k < D; k++) a += (double(xr[k]) - s.b_dec[size_t(k)]) * s.W_enc[size_t(k * F + j)];
          f[size_t(j)] = std::max(a, 0.0);
        }
        for (int64_t k = 0; k < D; k++) {
          double a = s.b_dec[size_t(k)];
          for (int64_t j = 0; j < F; j++) a += f[size_t(j)] * s.W_dec[size_t(j * D + k)];
          h[size_t(k)] = a;
        }
      }
      double ms = 0;
      for (double v : h) ms += v * v;
      const double r = 1 / std::sqrt(ms / double(D) + eps);
      std::vector<double> logits(model_test::sz(V));
      for (int64_t v = 0; v < V; v++) {
        double a = 0;
        for (int64_t k = 0; k < D; k++) a += h[size_t(k)] * r * nw[size_t(k)] * wte[size_t(v * D + k)];
        logits[size_t(v)] = a;
      }
      const double mx = *std::max_element(logits.begin(), logits.end());
      double se = 0;
      for (double l : logits) se += std::exp(l - mx);
      spliced += mx + std::log(se) - logits[size_t(tk[t + 1])];
      zero += t > 0 ? std::log(double(V)) : double(cases[i].nll[t]);
      n++;
    }
  }
  const LmEvalResult r = evaluate(m.model, s, reference_windows(cases));
  ASSERT_EQ(r.tokens, n);
  EXPECT_NEAR(r.ce_spliced, spliced / double(n), 2e-4 * spliced / double(n));
  EXPECT_NEAR(r.ce_zero, zero / double(n), 2e-4 * zero / double(n));
  EXPECT_NEAR(r.ce_recovered, (r.ce_zero - r.ce_spliced) / (r.ce_zero - r.ce_clean), 1e-12);
}

// The text path: documents, windows and targets counted as sae-collect cuts them, --max-tokens,
// the default context from the SAE's cfg, and the default BOS splicing from its provenance.
TEST(LmEvalStories, TextPathCountsAndDefaults) {
  NEED_STORIES();
  TempDir t;
  model_test::write_text(t / "a.txt", "Once upon a time, there was a cat.\n\n\n\nThe cat sat on a mat. It was happy.\n");
  auto tok = Tokenizer::load(shared_model("stories260K"));
  const int64_t n1 = int64_t(tok->encode("Once upon a time, there was a cat.").size());
  const int64_t n2 = int64_t(tok->encode("The cat sat on a mat. It was happy.").size());
  Sae s = random_sae(64, 64, "blocks.0.hook_resid_post", 5);
  LmEvalTextOptions o;
  o.model_dir = shared_model("stories260K");
  o.inputs = {t / "a.txt"};
  o.context = 5;
  LmEvalReport r = lm_eval_text(s, "sae", o);
  EXPECT_EQ(r.documents, 2);
  EXPECT_EQ(r.result.tokens, n1 + n2);
  EXPECT_EQ(r.result.windows, (n1 + 3) / 4 + (n2 + 3) / 4);
  EXPECT_FALSE(r.splice_bos);
  EXPECT_EQ(r.result.spliced_rows, n1 + n2);

  o.max_tokens = n1 + 2;
  r = lm_eval_text(s, "sae", o);
  EXPECT_EQ(r.result.tokens, n1 + 2);
  EXPECT_EQ(r.result.windows, (n1 + 3) / 4 + 1);

  // sae-train records the stream's context and BOS policy in the SAE's cfg.
  s.cfg = json{{"metadata", {{"context_size", 16}, {"activation_provenance", {{"exclude_bos", false}}}}}};
  o.context = 0;
  o.max_tokens = 0;
  r = lm_eval_text(s, "sae", o);
  EXPECT_EQ(r.context, 16);
  EXPECT_TRUE(r.splice_bos);
  EXPECT_EQ(r.result.spliced_rows, r.result.tokens + r.result.windows);
  o.splice_bos = 0;
  EXPECT_FALSE(lm_eval_text(s, "sae", o).splice_bos);

  const nlohmann::ordered_json j = lm_eval_json(r);
  EXPECT_EQ(j["tokens"], r.result.tokens);
  EXPECT_EQ(j["hook"], "blocks.0.hook_resid_post");
  EXPECT_DOUBLE_EQ(j["ce_loss_recovered"].get<double>(), r.result.ce_recovered);
  EXPECT_FALSE(j.contains("ce_loss_keep_error"));
}

TEST(LmEvalStories, BadInput) {
  NEED_STORIES();
  TempDir t;
  model_test::write_text(t / "a.txt", "Once upon a time.\n");
  LmEvalTextOptions o;
  o.model_dir = shared_model("stories260K");
  o.inputs = {t / "a.txt"};

  Sae wide = random_sae(128, 64, "blocks.0.hook_resid_post", 1);
  EXPECT_THROW(lm_eval_text(wide, "wide", o), InputError);
  EXPECT_EQ(message([&] { lm_eval_text(wide, "wide", o); }),
            "wide: the SAE's d_in 128 does not match d_model 64 of the model " + o.model_dir);
  Sae deep = random_sae(64, 64, "blocks.5.hook_resid_post", 1);
  EXPECT_THROW(lm_eval_text(deep, "deep", o), InputError);
  EXPECT_EQ(message([&] { lm_eval_text(deep, "deep", o); }),
            "deep: the SAE's hook blocks.5.hook_resid_post is not a hook of the model " + o.model_dir +
                " (hook 'blocks.5.hook_resid_post': layer 5 is out of range (the model has 5 layers, 0-4))");

  // A model directory without its weights: the loader's message, naming the directory.
  const std::string bare = t / "bare";
  std::filesystem::create_directory(bare);
  for (const char* f : {"config.json", "tokenizer.model", "tokenizer_config.json"})
    std::filesystem::copy_file(o.model_dir + "/" + f, bare + "/" + f);
  o.model_dir = bare;
  const Sae s = random_sae(64, 64, "blocks.0.hook_resid_post", 1);
  EXPECT_THROW(lm_eval_text(s, "sae", o), InputError);
  const std::string msg = message([&] { lm_eval_text(s, "sae", o); });
  EXPECT_NE(msg.find(bare), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;

  o.model_dir = shared_model("stories260K");
  model_test::write_text(t / "empty.txt", "\n\n");
  o.inputs = {t / "empty.txt"};
  EXPECT_EQ(message([&] { lm_eval_text(s, "sae", o); }), t / "empty.txt" + ": no text (the input is empty or holds only blank documents)");
}

}  // namespace
