// Steering (lib/steer): the identities that make an intervention trustworthy (alpha 0 and a clamp
// to the current value change no bit, an ablation of a silent latent changes nothing there),
// adding a direction at the last resid_post against a hand computation through the final norm
// and the unembedding, control directions of exactly the decoder row's norm, the position scopes,
// the spec parser's messages, and the whole experiment on every shared model.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "backend/backend.h"
#include "model/generate.h"
#include "model/model.h"
#include "steer/report.h"
#include "steer/steer.h"
#include "stream/safetensors.h"
#include "support/model_util.h"

using namespace sae;
using namespace model_test;

namespace {

// A ReLU SAE on d_in inputs with random weights and biases spread so that some latents fire and
// some stay silent on typical rows.
Sae random_sae(int64_t d_in, int64_t d_sae, uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  Sae s;
  s.arch = "standard";
  s.d_in = d_in;
  s.d_sae = d_sae;
  s.W_enc.resize(size_t(d_in * d_sae));
  s.W_dec.resize(size_t(d_sae * d_in));
  s.b_enc.resize(size_t(d_sae));
  s.b_dec.assign(size_t(d_in), 0.0f);
  for (auto& v : s.W_enc) v = nd(g) / std::sqrt(float(d_in));
  for (auto& v : s.W_dec) v = nd(g) * 0.3f;
  for (int64_t j = 0; j < d_sae; j++) s.b_enc[size_t(j)] = -0.5f * float(j % 5);
  return s;
}

std::vector<SteerSae> one_sae(const ModelConfig& c, const std::string& hook, uint32_t seed, int64_t d_sae = 96) {
  SteerSae s;
  s.hook = parse_hook(hook, c);
  s.sae = random_sae(hook_width(s.hook, c), d_sae, seed);
  s.dir = "random-sae";
  return {s};
}

std::vector<int32_t> case_tokens(const std::string& model, int c = 0) {
  SafeTensors ref(shared_model(model) + "/reference.safetensors");
  return ref.read_i32("case" + std::to_string(c) + ".tokens");
}

ForwardResult run(Model& m, const std::vector<int32_t>& tok, std::vector<HookEdit> edits, std::vector<HookPoint> capture = {}) {
  ForwardOptions o;
  o.want_logits = true;
  o.edits = std::move(edits);
  o.capture = std::move(capture);
  return m.forward(tok.data(), 1, int64_t(tok.size()), o);
}

Intervention iv_of(int64_t latent, SteerOp op, double value) {
  Intervention iv;
  iv.latent = latent;
  iv.op = op;
  iv.value = value;
  iv.has_value = true;
  return iv;
}

const auto all_rows = [](int64_t) { return true; };

}  // namespace

// Alpha 0, and a clamp of each latent to its own current value, leave every logit bit as it was:
// the coefficient is exactly 0 and the row is not touched.
TEST(Steer, ZeroAlphaAndClampToCurrentValueChangeNothing) {
  NEED_SHARED();
  auto be = make_cpu_backend();
  Model m(shared_model("stories260K"), *be);
  const auto saes = one_sae(m.config(), "blocks.2.hook_resid_post", 1);
  const auto tok = case_tokens("stories260K");
  const ForwardResult clean = run(m, tok, {});
  EXPECT_EQ(run(m, tok, steering_edits(saes, {iv_of(7, SteerOp::add, 0.0)}, AlphaUnit::absolute, all_rows)).logits,
            clean.logits);
  // The clamp value: latent 3's activation, which differs row by row, so clamp a single row.
  const ForwardResult acts = run(m, tok, {}, {saes[0].hook});
  const int64_t d = saes[0].sae.d_in, n = saes[0].sae.d_sae, row = 5;
  std::vector<float> f(sz(n));
  saes[0].sae.encode(acts.captured[0].data() + row * d, 1, f.data());
  for (int64_t latent : {0, 3, 11}) {
    const auto only_row = [row](int64_t r) { return r == row; };
    const ForwardResult r =
        run(m, tok, steering_edits(saes, {iv_of(latent, SteerOp::clamp, f[size_t(latent)])}, AlphaUnit::absolute, only_row));
    EXPECT_EQ(r.logits, clean.logits) << "latent " << latent << " at " << f[size_t(latent)];
  }
}

// Ablating a latent at positions where it is 0 leaves those positions' activations exactly as
// they were; where it fires they move by -f * d.
TEST(Steer, AblatingASilentLatentChangesNothingThere) {
  NEED_SHARED();
  auto be = make_cpu_backend();
  Model m(shared_model("gpt2-random"), *be);
  const auto saes = one_sae(m.config(), "blocks.1.hook_resid_post", 2);
  const auto tok = case_tokens("gpt2-random");
  const int64_t T = int64_t(tok.size()), d = saes[0].sae.d_in, n = saes[0].sae.d_sae;
  const ForwardResult clean = run(m, tok, {}, {saes[0].hook});
  std::vector<float> f(size_t(T * n));
  saes[0].sae.encode(clean.captured[0].data(), T, f.data());
  // A latent that fires on some rows and not on others.
  int64_t latent = -1;
  for (int64_t j = 0; j < n && latent < 0; j++) {
    int fires = 0;
    for (int64_t t = 0; t < T; t++) fires += f[size_t(t * n + j)] > 0;
    if (fires > 0 && fires < T) latent = j;
  }
  ASSERT_GE(latent, 0);
  const ForwardResult ab = run(m, tok, steering_edits(saes, {iv_of(latent, SteerOp::ablate_zero, 0)}, AlphaUnit::absolute, all_rows),
                               {saes[0].hook});
  int silent = 0;
  for (int64_t t = 0; t < T; t++) {
    const float ft = f[size_t(t * n + latent)];
    for (int64_t i = 0; i < d; i++) {
      const float before = clean.captured[0][size_t(t * d + i)], after = ab.captured[0][size_t(t * d + i)];
      if (ft == 0) ASSERT_EQ(after, before) << "row " << t;
      else ASSERT_EQ(after, before + float(-double(ft)) * saes[0].sae.W_dec[size_t(latent * d + i)]) << "row " << t;
    }
    silent += ft == 0;
  }
  EXPECT_GT(silent, 0);
}

// Adding alpha * d at the last block's resid_post moves the logits exactly as the final norm and
// the unembedding say, computed here in double from the captured activations and the stored
// weights (a random GPT-2 with LayerNorm and a tied head, a random Llama with RMSNorm and an
// untied one), to 1e-5 of the logits' scale.
TEST(Steer, AddAtTheLastResidPostMatchesAHandComputation) {
  for (bool llama : {false, true}) {
    TempDir dir;
    const json cfg = llama ? json{{"model_type", "llama"}, {"architectures", {"LlamaForCausalLM"}}, {"hidden_size", 32},
                                  {"intermediate_size", 40}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                                  {"num_key_value_heads", 2}, {"vocab_size", 50}, {"max_position_embeddings", 64},
                                  {"rms_norm_eps", 1e-5}, {"tie_word_embeddings", false}}
                           : json{{"model_type", "gpt2"}, {"architectures", {"GPT2LMHeadModel"}}, {"n_layer", 2},
                                  {"n_embd", 32}, {"n_head", 4}, {"n_positions", 64}, {"vocab_size", 50}};
    const Tensors w = write_random_model(dir.path(), cfg, 5);
    auto be = make_cpu_backend();
    Model m(dir.path(), *be);
    const ModelConfig& c = m.config();
    const auto saes = one_sae(c, "blocks.1.hook_resid_post", 3, 40);
    std::vector<int32_t> tok = {1, 7, 33, 2, 49, 12, 5};
    const int64_t T = int64_t(tok.size()), D = c.d_model, V = c.vocab, latent = 9;
    const double alpha = 2.5;
    const ForwardResult clean = run(m, tok, {}, {saes[0].hook});
    const ForwardResult st =
        run(m, tok, steering_edits(saes, {iv_of(latent, SteerOp::add, alpha)}, AlphaUnit::absolute, all_rows));
    const std::string pre = llama ? "model." : "transformer.";
    const std::vector<float>& nw = w.get(llama ? "model.norm.weight" : "transformer.ln_f.weight");
    const std::vector<float>& head = w.get(llama ? "lm_head.weight" : "transformer.wte.weight");
    double worst = 0, scale = 0;
    for (int64_t t = 0; t < T; t++) {
      std::vector<double> h(sz(D));
      for (int64_t i = 0; i < D; i++)
        h[size_t(i)] = double(clean.captured[0][size_t(t * D + i)]) + alpha * saes[0].sae.W_dec[size_t(latent * D + i)];
      std::vector<double> y(sz(D));
      if (llama) {
        double ms = 0;
        for (double v : h) ms += v * v / double(D);
        for (int64_t i = 0; i < D; i++) y[size_t(i)] = h[size_t(i)] / std::sqrt(ms + c.norm_eps) * nw[size_t(i)];
      } else {
        const std::vector<float>& nb = w.get("transformer.ln_f.bias");
        double mean = 0, var = 0;
        for (double v : h) mean += v / double(D);
        for (double v : h) var += (v - mean) * (v - mean) / double(D);
        for (int64_t i = 0; i < D; i++)
          y[size_t(i)] = (h[size_t(i)] - mean) / std::sqrt(var + c.norm_eps) * nw[size_t(i)] + nb[size_t(i)];
      }
      for (int64_t v = 0; v < V; v++) {
        double z = 0;
        for (int64_t i = 0; i < D; i++) z += y[size_t(i)] * head[size_t(v * D + i)];
        worst = std::max(worst, std::fabs(z - st.logits[size_t(t * V + v)]));
        scale = std::max(scale, std::fabs(z));
      }
    }
    EXPECT_LE(worst / scale, 1e-5) << (llama ? "llama" : "gpt2");
    EXPECT_NE(st.logits, clean.logits);
  }
}

// A random-direction control keeps each intervention's coefficient and draws a direction of
// exactly its decoder row's norm; the draws differ from each other and repeat for a seed.
TEST(Steer, RandomControlsHaveTheDecoderRowsNorm) {
  std::vector<SteerSae> saes(1);
  saes[0].sae = random_sae(48, 64, 4);
  saes[0].dir = "s";
  const std::vector<Intervention> ivs = {iv_of(5, SteerOp::add, 3.0), iv_of(40, SteerOp::clamp, 1.0)};
  const auto a = random_direction_control(saes, ivs, 7, 0), b = random_direction_control(saes, ivs, 7, 1);
  for (size_t i = 0; i < ivs.size(); i++) {
    double want = 0, got = 0;
    for (int64_t j = 0; j < 48; j++) {
      want += double(saes[0].sae.W_dec[size_t(ivs[i].latent * 48 + j)]) * saes[0].sae.W_dec[size_t(ivs[i].latent * 48 + j)];
      got += double(a[i].direction[size_t(j)]) * a[i].direction[size_t(j)];
    }
    EXPECT_NEAR(std::sqrt(got), std::sqrt(want), 1e-6 * std::sqrt(want));
    EXPECT_EQ(a[i].value, ivs[i].value);
    EXPECT_EQ(a[i].latent, ivs[i].latent);
    EXPECT_NE(a[i].direction, b[i].direction);
  }
  EXPECT_EQ(random_direction_control(saes, ivs, 7, 0)[0].direction, a[0].direction);
  // Density-matched: the nearest firing density on a log scale, dead latents and itself left out.
  saes[0].density.assign(64, 0.0f);
  saes[0].density[5] = 0.01f;
  saes[0].density[6] = 0.5f;
  saes[0].density[7] = 0.012f;
  saes[0].density[8] = 0.0085f;
  EXPECT_EQ(density_matched_control(saes, {ivs[0]}, 0)[0].latent, 8);  // |log 0.85| < |log 1.2|
  EXPECT_EQ(density_matched_control(saes, {ivs[0]}, 1)[0].latent, 7);
  EXPECT_EQ(density_matched_control(saes, {ivs[0]}, 2)[0].latent, 6);
  EXPECT_THROW(density_matched_control(saes, {ivs[0]}, 3), UsageError);
}

TEST(Steer, SpecsAndTheirMessages) {
  Intervention iv = parse_intervention("17:add=8", 1);
  EXPECT_EQ(iv.latent, 17);
  EXPECT_EQ(iv.op, SteerOp::add);
  EXPECT_EQ(iv.value, 8.0);
  EXPECT_EQ(iv.text(), "17:add=8");
  EXPECT_FALSE(parse_intervention("3:add", 1).has_value);
  EXPECT_EQ(parse_intervention("1/4:clamp=-2.5", 2).sae, 1);
  EXPECT_EQ(parse_intervention("4:ablate", 1).op, SteerOp::ablate_zero);
  EXPECT_EQ(parse_intervention("4:ablate=mean", 1).op, SteerOp::ablate_mean);
  auto msg = [](const std::string& spec, int n) {
    try {
      parse_intervention(spec, n);
    } catch (const UsageError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(msg("17:add=big", 1), "--steer '17:add=big': 'big' is not a number");
  EXPECT_EQ(msg("x:add", 1), "--steer 'x:add': 'x' is not a latent index (expected [S/]LATENT:add[=ALPHA], "
                             "LATENT:clamp=VALUE or LATENT:ablate[=zero|mean])");
  EXPECT_EQ(msg("2/17:add", 2), "--steer '2/17:add': SAE 2 is out of range (2 given with --sae, numbered from 0)");
  EXPECT_EQ(msg("17:boost", 1), "--steer '17:boost': unknown operation 'boost' (expected [S/]LATENT:add[=ALPHA], "
                                "LATENT:clamp=VALUE or LATENT:ablate[=zero|mean])");
  EXPECT_EQ(msg("17:ablate=half", 1), "--steer '17:ablate=half': ablate takes zero or mean, not 'half'");
  std::vector<SteerSae> saes(1);
  saes[0].sae = random_sae(8, 16, 1);
  saes[0].dir = "s";
  try {
    check_interventions(saes, {parse_intervention("16:add=1", 1)}, AlphaUnit::absolute);
    ADD_FAILURE();
  } catch (const UsageError& e) {
    EXPECT_STREQ(e.what(), "--steer '16:add=1': latent 16 is out of range (s has 16 latents, 0-15)");
  }
  EXPECT_THROW(check_interventions(saes, {parse_intervention("3:add=1", 1)}, AlphaUnit::max_activation), UsageError);
  EXPECT_THROW(check_interventions(saes, {parse_intervention("3:ablate=mean", 1)}, AlphaUnit::absolute), UsageError);
  EXPECT_EQ(parse_scope("from:4").from, 4);
  EXPECT_THROW(parse_scope("later"), UsageError);
}

// The whole experiment on every shared model: alpha 0 reproduces the unsteered text and measures
// (KL exactly 0), a strong add moves the distribution, the controls run, and steering only the
// generated tokens leaves the first one (predicted from the prompt) as it was.
TEST(Steer, ExperimentOnEverySharedModel) {
  NEED_SHARED();
  auto be = make_cpu_backend();
  for (const char* name : {"stories260K", "gpt2-random", "tiny-gpt2", "qwen3-random", "gemma2-random", "gemma3-random",
                           "pythia-random"}) {
    Model m(shared_model(name), *be);
    const ModelConfig& c = m.config();
    const std::string hook = "blocks." + std::to_string(c.n_layers / 2) + ".hook_resid_post";
    auto saes = one_sae(c, hook, 6);
    const auto tok = case_tokens(name);
    const std::vector<std::vector<int32_t>> prompts = {std::vector<int32_t>(tok.begin(), tok.begin() + 4),
                                                       std::vector<int32_t>(tok.begin(), tok.begin() + 7)};
    SteerOptions o;
    Intervention iv;
    iv.latent = 2;
    o.interventions = {iv};
    o.alphas = {0.0, 40.0};
    o.random_controls = 2;
    o.density_controls = 0;
    o.generation.max_new_tokens = 6;
    o.generation.stop_at_eos = false;
    o.targets = {tok[4]};
    const auto recs = run_steering(m, saes, prompts, o);
    ASSERT_EQ(recs.size(), size_t(2 * (1 + 2 * (1 + 2)))) << name;
    // unsteered (2 prompts), then per alpha: steered, 2 random controls, for 2 prompts.
    for (int p = 0; p < 2; p++) {
      const SteerRecord& un = recs[size_t(p)];
      const SteerRecord& zero = recs[size_t(2 + p)];
      EXPECT_EQ(un.setting, "unsteered");
      EXPECT_EQ(zero.setting, "steered");
      EXPECT_EQ(zero.alpha, 0.0);
      EXPECT_EQ(zero.tokens, un.tokens) << name;
      EXPECT_EQ(zero.measures.mean_kl, 0.0) << name;
      EXPECT_EQ(zero.measures.perplexity, un.measures.perplexity) << name;
      const SteerRecord& strong = recs[size_t(8 + p)];
      EXPECT_EQ(strong.alpha, 40.0);
      // tiny-gpt2's logits are almost flat (its bf16 pass moves its NLL by 3e-4 at most, see
      // test_model_bf16.cpp), and no direction moves its distribution much: there the KL need
      // only be positive.
      EXPECT_GT(strong.measures.mean_kl, std::string(name) == "tiny-gpt2" ? 0.0 : 1e-3) << name;
      EXPECT_EQ(strong.measures.kl.size(), strong.tokens.size());
      EXPECT_EQ(recs[size_t(10 + p)].setting, "random-direction");
    }
    // Generated-only steering: the first token comes from the unsteered prompt rows.
    o.scope = parse_scope("generated");
    o.alphas = {40.0};
    o.random_controls = 0;
    const auto gen_only = run_steering(m, saes, prompts, o);
    for (int p = 0; p < 2; p++) EXPECT_EQ(gen_only[size_t(2 + p)].tokens[0], gen_only[size_t(p)].tokens[0]) << name;
  }
}

// The sweep pools records per setting and alpha.
TEST(Steer, SweepTableAveragesPerSettingAndAlpha) {
  std::vector<SteerRecord> recs(4);
  recs[0].setting = recs[1].setting = "steered";
  recs[0].alpha = recs[1].alpha = 2;
  recs[0].measures.mean_kl = 1;
  recs[1].measures.mean_kl = 3;
  recs[2].setting = "random-direction";
  recs[2].alpha = 2;
  recs[3].setting = "unsteered";
  recs[3].alpha = NAN;
  const auto rows = sweep_table(recs);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].n, 2);
  EXPECT_EQ(rows[0].mean_kl, 2.0);
  EXPECT_NE(sweep_svg(rows, false).find("<svg"), std::string::npos);
}

// latent_stats over windows of different lengths (right-padded in its batches of 8): each
// latent's largest and mean activation and firing fraction over every non-BOS token, against the
// same quantities computed window by window here.
TEST(Steer, LatentStatsOverWindowsOfDifferentLengths) {
  NEED_SHARED();
  auto be = make_cpu_backend();
  Model m(shared_model("stories260K"), *be);
  auto saes = one_sae(m.config(), "blocks.1.hook_resid_post", 8, 40);
  const auto tok = case_tokens("stories260K");
  std::vector<std::vector<int32_t>> windows;
  for (int i = 0; i < 11; i++) windows.push_back(std::vector<int32_t>(tok.begin(), tok.begin() + 3 + (i * 7) % 19));
  latent_stats(m, saes[0], windows);
  const int64_t n = saes[0].sae.d_sae, d = saes[0].sae.d_in;
  std::vector<double> mx(sz(n), 0.0), sum(sz(n), 0.0), fired(sz(n), 0.0);
  int64_t tokens = 0;
  for (const auto& w : windows) {
    const ForwardResult r = run(m, w, {}, {saes[0].hook});
    const int64_t T = int64_t(w.size());
    std::vector<float> f(sz((T - 1) * n));
    saes[0].sae.encode(r.captured[0].data() + d, T - 1, f.data());
    for (int64_t t = 0; t < T - 1; t++)
      for (int64_t j = 0; j < n; j++) {
        const double v = f[sz(t * n + j)];
        mx[sz(j)] = std::max(mx[sz(j)], v);
        sum[sz(j)] += v;
        fired[sz(j)] += v != 0;
      }
    tokens += T - 1;
  }
  int firing = 0;
  for (int64_t j = 0; j < n; j++) {
    EXPECT_NEAR(saes[0].max_act[sz(j)], mx[sz(j)], 1e-5 * (1 + mx[sz(j)])) << j;
    EXPECT_NEAR(saes[0].mean_act[sz(j)], sum[sz(j)] / double(tokens), 1e-5) << j;
    EXPECT_NEAR(saes[0].density[sz(j)], fired[sz(j)] / double(tokens), 1e-6) << j;
    firing += fired[sz(j)] > 0;
  }
  EXPECT_GT(firing, 3);
  EXPECT_LT(firing, n);  // some latents never fire: the densities are not all alike
}

// The units of add: alpha along the unit direction is alpha / |d| of the decoder row, and in
// max units alpha times the latent's largest activation; checked on the edited activations.
TEST(Steer, AddUnitsScaleTheDecoderRow) {
  std::vector<SteerSae> saes(1);
  saes[0].sae = random_sae(8, 16, 9);
  saes[0].max_act.assign(16, 2.5f);
  auto be = make_cpu_backend();
  const int64_t latent = 4, d = 8;
  double norm = 0;
  for (int64_t j = 0; j < d; j++) norm += double(saes[0].sae.W_dec[sz(latent * d + j)]) * saes[0].sae.W_dec[sz(latent * d + j)];
  norm = std::sqrt(norm);
  for (AlphaUnit unit : {AlphaUnit::absolute, AlphaUnit::unit, AlphaUnit::max_activation}) {
    std::vector<float> h(sz(2 * d), 0.0f);
    auto edits = steering_edits(saes, {iv_of(latent, SteerOp::add, 3.0)}, unit, [](int64_t r) { return r == 1; });
    ASSERT_EQ(edits.size(), 1u);
    edits[0].fn(h.data(), 2, d, *be);
    const double a = unit == AlphaUnit::absolute ? 3.0 : unit == AlphaUnit::unit ? 3.0 / norm : 3.0 * 2.5;
    for (int64_t j = 0; j < d; j++) {
      EXPECT_EQ(h[sz(j)], 0.0f);  // row 0 not selected
      EXPECT_NEAR(h[sz(d + j)], a * saes[0].sae.W_dec[sz(latent * d + j)], 1e-6) << int(unit);
    }
  }
}
