// SAE directory formats: SAELens 6.x (standard, topk, jumprelu, gated), SAELens before 6.0,
// EleutherAI sparsify, Gemma Scope's params.npz and saetools's own layout are read into the same Sae, and its forward pass
// matches an independent reference of each format (sae_fixtures.h); save_sae writes a SAELens-6
// directory that reads back identically; bad directories get one clear message.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "base/errors.h"
#include "sae/sae.h"
#include "stream/safetensors.h"
#include "support/npz_writer.h"
#include "support/sae_fixtures.h"

using namespace sae;
using namespace fixtures;
using json = nlohmann::json;

namespace {

// Encodes and reconstructs rows with the loaded SAE and compares both with the reference.
void expect_forward_matches(const Sae& s, const RefOut& ref, const std::vector<float>& x, int64_t rows,
                            const std::string& what) {
  std::vector<float> f(size_t(rows * s.d_sae)), f2(size_t(rows * s.d_sae)), xh(size_t(rows * s.d_in));
  s.encode(x.data(), rows, f.data());
  expect_rows_near(f.data(), ref.f, rows, s.d_sae, what + " latents");
  s.reconstruct(x.data(), rows, f2.data(), xh.data());
  EXPECT_EQ(f, f2) << what << ": reconstruct's latents differ from encode's";
  expect_rows_near(xh.data(), ref.xhat, rows, s.d_in, what + " reconstruction");
}

// Expects load_sae(dir) to throw InputError whose message contains `needle`.
void expect_load_error(const std::string& dir, const std::string& needle) {
  try {
    load_sae(dir);
    ADD_FAILURE() << "load_sae(" << dir << ") did not throw; expected: " << needle;
  } catch (const InputError& e) {
    std::string m = e.what();
    EXPECT_NE(m.find(needle), std::string::npos) << "message: " << m << "\nexpected to contain: " << needle;
    EXPECT_EQ(m.find('\n'), std::string::npos) << "message is not one line: " << m;
  }
}

json read_json(const std::string& path) {
  std::ifstream in(path);
  return json::parse(in);
}

constexpr int64_t kRows = 50;

}  // namespace

// ---- a fixture whose numbers are obvious ----

// d_in 2, d_sae 3: latents 0 and 1 copy the two coordinates (ReLU), latent 2 has a zero encoder
// column and bias -1, so it never fires; its decoder row is (1, 1)/sqrt(2).
TEST(SaeFormatHand, IdentityFixtureEncodesByHand) {
  TempDir t;
  write_saelens6(t / "sae", hand_weights());
  Sae s = load_sae(t / "sae");
  EXPECT_EQ(s.source_format, "saelens");
  std::vector<float> x = {2, 0, 0, 2, -2, 0, 0, -2};
  std::vector<float> f(12), xh(8);
  s.reconstruct(x.data(), 4, f.data(), xh.data());
  EXPECT_EQ(f, (std::vector<float>{2, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0}));
  EXPECT_EQ(xh, (std::vector<float>{2, 0, 0, 2, 0, 0, 0, 0}));
}

// ---- Gemma Scope's release files: params.npz ----

namespace {

// A Gemma Scope directory as the release has it: params.npz (np.savez) and nothing else.
void write_gemma_scope(const std::string& dir, const Weights& w, const fixtures::NpzOptions& o = {}) {
  using npy::Elem;
  auto f64 = [](const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); };
  const uint64_t d_in = uint64_t(w.d_in), d_sae = uint64_t(w.d_sae);
  fs::create_directories(dir);
  std::ofstream(dir + "/params.npz", std::ios::binary)
      << fixtures::npz_bytes({{"W_enc.npy", fixtures::npy_bytes(Elem::f4, {d_in, d_sae}, f64(w.W_enc))},
                              {"W_dec.npy", fixtures::npy_bytes(Elem::f4, {d_sae, d_in}, f64(w.W_dec))},
                              {"threshold.npy", fixtures::npy_bytes(Elem::f4, {d_sae}, f64(w.threshold))},
                              {"b_enc.npy", fixtures::npy_bytes(Elem::f4, {d_sae}, f64(w.b_enc))},
                              {"b_dec.npy", fixtures::npy_bytes(Elem::f4, {d_in}, f64(w.b_dec))}},
                             o);
}

}  // namespace

// Gemma Scope's JumpReLU encodes x itself: f = relu(x W_enc + b_enc) where that exceeds the
// threshold; b_dec is only added back. By hand first, then against the SAELens reference.
TEST(SaeFormatGemmaScope, EncodesByHandWithoutSubtractingBDec) {
  TempDir t;
  Weights w;
  w.arch = "jumprelu";
  w.d_in = 2;
  w.d_sae = 2;
  w.W_enc = {1, 0, 0, 1};
  w.b_enc = {0, 0};
  w.threshold = {0.5f, 0.5f};
  w.W_dec = {1, 0, 0, 1};
  w.b_dec = {1, 1};
  write_gemma_scope(t / "sae", w);
  Sae s = load_sae(t / "sae");
  EXPECT_EQ(s.source_format, "gemma-scope");
  EXPECT_EQ(s.arch, "jumprelu");
  EXPECT_FALSE(s.apply_b_dec_to_input);
  EXPECT_EQ(s.hook, "");  // the path does not follow the release's layout
  // (2, 0.25): the second coordinate is under its threshold. Subtracting b_dec first would give
  // (1, -0.75) instead.
  std::vector<float> x = {2, 0.25f}, f(2), xh(2);
  s.reconstruct(x.data(), 1, f.data(), xh.data());
  EXPECT_EQ(f, (std::vector<float>{2, 0}));
  EXPECT_EQ(xh, (std::vector<float>{3, 1}));
}

TEST(SaeFormatGemmaScope, ForwardMatchesReferenceStoredOrDeflatedAndSavesAsSaeLens) {
  for (bool deflate : {false, true}) {
    SCOPED_TRACE(deflate ? "np.savez_compressed" : "np.savez");
    TempDir t;
    Weights w = random_weights("jumprelu", 16, 48, 31);
    w.apply_b_dec = false;
    fixtures::NpzOptions o;
    o.deflate = deflate;
    o.zip64 = deflate;  // numpy writes large arrays in zip64 form
    write_gemma_scope(t / "sae", w, o);
    Sae s = load_sae(t / "sae");
    std::vector<float> x = randn(size_t(kRows * 16), 7);
    expect_forward_matches(s, ref_saelens(w, x.data(), kRows), x, kRows, "gemma scope");
    // Saved in the SAELens layout, it reads back as the same SAE.
    save_sae(s, t / "converted");
    Sae c = load_sae(t / "converted");
    EXPECT_EQ(c.arch, "jumprelu");
    EXPECT_FALSE(c.apply_b_dec_to_input);
    expect_forward_matches(c, ref_saelens(w, x.data(), kRows), x, kRows, "gemma scope converted");
  }
}

TEST(SaeFormatGemmaScope, HookFromTheReleaseLayout) {
  TempDir t;
  Weights w = random_weights("jumprelu", 4, 8, 3);
  const std::pair<std::string, std::pair<std::string, std::string>> cases[] = {
      {"gemma-scope-2b-pt-res/layer_20/width_16k/average_l0_71", {"blocks.20.hook_resid_post", "none"}},
      {"gemma-scope-2b-pt-res-canonical/layer_3/width_16k/canonical", {"blocks.3.hook_resid_post", "none"}},
      {"models--google--gemma-scope-9b-pt-mlp/snapshots/abc/layer_7/width_131k/average_l0_10",
       {"blocks.7.hook_mlp_out", "none"}},
      {"gemma-scope-2b-pt-att/layer_0/width_16k/average_l0_104", {"blocks.0.attn.hook_z", "hook_z"}},
      {"somewhere/else/layer_4", {"", "none"}},
  };
  for (const auto& [path, want] : cases) {
    write_gemma_scope(t / path, w);
    Sae s = load_sae(t / path);
    EXPECT_EQ(s.hook, want.first) << path;
    EXPECT_EQ(s.reshape_activations, want.second) << path;
  }
}

TEST(SaeFormatGemmaScope, MissingArrayAndWrongShapesAreNamed) {
  TempDir t;
  using npy::Elem;
  fs::create_directories(t / "a");
  std::ofstream(t / "a/params.npz", std::ios::binary)
      << fixtures::npz_bytes({{"W_enc.npy", fixtures::npy_bytes(Elem::f4, {2, 2}, {1, 0, 0, 1})}});
  expect_load_error(t / "a", "a/params.npz: no array 'W_dec' (a Gemma Scope params.npz holds W_enc, W_dec, b_enc, "
                             "b_dec and threshold)");
  fs::create_directories(t / "b");
  std::ofstream(t / "b/params.npz", std::ios::binary)
      << fixtures::npz_bytes({{"W_enc.npy", fixtures::npy_bytes(Elem::f4, {4, 8}, std::vector<double>(32, 0.1))},
                              {"W_dec.npy", fixtures::npy_bytes(Elem::f4, {4, 8}, std::vector<double>(32, 0.1))},
                              {"threshold.npy", fixtures::npy_bytes(Elem::f4, {8}, std::vector<double>(8, 0))},
                              {"b_enc.npy", fixtures::npy_bytes(Elem::f4, {8}, std::vector<double>(8, 0))},
                              {"b_dec.npy", fixtures::npy_bytes(Elem::f4, {4}, std::vector<double>(4, 0))}});
  expect_load_error(t / "b", "b/params.npz: member W_dec.npy: shape (4, 8), expected (8, 4)");
}

// ---- SAELens 6.x: every inference architecture against the reference ----

class SaeFormatSaeLens6 : public ::testing::TestWithParam<std::string> {};

TEST_P(SaeFormatSaeLens6, ForwardMatchesReference) {
  const std::string arch = GetParam();
  TempDir t;
  Weights w = random_weights(arch, 24, 40, 11, arch == "topk" ? 5 : 0);
  write_saelens6(t / "sae", w);
  Sae s = load_sae(t / "sae");
  EXPECT_EQ(s.source_format, "saelens");
  EXPECT_EQ(s.arch, arch);
  EXPECT_EQ(s.d_in, 24);
  EXPECT_EQ(s.d_sae, 40);
  EXPECT_EQ(s.hook, "blocks.3.hook_resid_post");
  EXPECT_EQ(s.model, "gpt2");
  if (arch == "topk") {
    EXPECT_EQ(s.k, 5);
  }
  std::vector<float> x = randn(size_t(kRows * 24), 99);
  RefOut ref = ref_saelens(w, x.data(), kRows);
  expect_forward_matches(s, ref, x, kRows, arch);
  // The fixture is meant to exercise both firing and silent latents.
  int64_t nz = 0;
  for (double v : ref.f) nz += v != 0;
  EXPECT_GT(nz, kRows);
  EXPECT_LT(nz, kRows * 40);
}

TEST_P(SaeFormatSaeLens6, WithoutBDecSubtraction) {
  const std::string arch = GetParam();
  TempDir t;
  Weights w = random_weights(arch, 16, 32, 21, arch == "topk" ? 4 : 0);
  w.apply_b_dec = false;
  write_saelens6(t / "sae", w);
  Sae s = load_sae(t / "sae");
  EXPECT_FALSE(s.apply_b_dec_to_input);
  std::vector<float> x = randn(size_t(kRows * 16), 5);
  expect_forward_matches(s, ref_saelens(w, x.data(), kRows), x, kRows, arch + " apply_b_dec_to_input=false");
}

INSTANTIATE_TEST_SUITE_P(Arch, SaeFormatSaeLens6, ::testing::Values("standard", "topk", "jumprelu", "gated"));

TEST(SaeFormatSaeLens6Norm, ConstantNormRescaleAndLayerNormMatchSaeLens) {
  for (const char* norm : {"constant_norm_rescale", "layer_norm"}) {
    for (const char* arch : {"standard", "topk"}) {
      TempDir t;
      Weights w = random_weights(arch, 16, 32, 31, 6);
      w.norm = norm;
      write_saelens6(t / "sae", w);
      Sae s = load_sae(t / "sae");
      EXPECT_EQ(s.normalize_activations, norm);
      // Activations with a common offset and scale far from 1, where normalisation matters.
      std::vector<float> x = randn(size_t(kRows * 16), 7, 3.0f);
      for (size_t i = 0; i < x.size(); i++) x[i] += 5.0f;
      expect_forward_matches(s, ref_saelens(w, x.data(), kRows), x, kRows, std::string(norm) + " " + arch);
    }
  }
}

TEST(SaeFormatSaeLens6Norm, ExpectedAverageOnlyInIsIdentityAtInference) {
  TempDir t;
  Weights w = random_weights("standard", 8, 16, 41);
  write_saelens6(t / "sae", w, {{"normalize_activations", "expected_average_only_in"}});
  Sae s = load_sae(t / "sae");
  EXPECT_EQ(s.normalize_activations, "expected_average_only_in");
  std::vector<float> x = randn(size_t(kRows * 8), 8, 4.0f);
  expect_forward_matches(s, ref_saelens(w, x.data(), kRows), x, kRows, "expected_average_only_in");
}

TEST(SaeFormatSaeLens6, TopKRescaleActsByDecoderNormIsFolded) {
  TempDir t;
  Weights w = random_weights("topk", 16, 48, 51, 6);
  // Decoder rows of very different norms, so the rescaling changes which latents win.
  for (int64_t m = 0; m < 48; m++)
    for (int64_t i = 0; i < 16; i++) w.W_dec[size_t(m * 16 + i)] *= 0.2f + 0.1f * float(m % 9);
  w.rescale_by_decoder_norm = true;
  write_saelens6(t / "sae", w);
  Sae s = load_sae(t / "sae");
  std::vector<float> x = randn(size_t(kRows * 16), 9);
  RefOut ref = ref_saelens(w, x.data(), kRows);
  expect_forward_matches(s, ref, x, kRows, "rescale_acts_by_decoder_norm");
  // Without the rescaling the selection would differ: the option really is being honoured.
  Weights plain = w;
  plain.rescale_by_decoder_norm = false;
  RefOut ref_plain = ref_saelens(plain, x.data(), kRows);
  int64_t differ = 0;
  for (size_t i = 0; i < ref.f.size(); i++) differ += (ref.f[i] != 0) != (ref_plain.f[i] != 0);
  EXPECT_GT(differ, 0);
  // Saving writes the folded weights without the flag, and they read back to the same forward pass.
  save_sae(s, t / "out");
  EXPECT_FALSE(read_json(t / "out/cfg.json").contains("rescale_acts_by_decoder_norm"));
  expect_forward_matches(load_sae(t / "out"), ref, x, kRows, "rescale folded, saved");
}

TEST(SaeFormatSaeLens6, RescaleActsByDecoderNormOnOtherArchitectureIsRefused) {
  TempDir t;
  Weights w = random_weights("jumprelu", 8, 16, 52);
  write_saelens6(t / "sae", w, {{"rescale_acts_by_decoder_norm", true}});
  expect_load_error(t / "sae", "rescale_acts_by_decoder_norm is only supported for topk SAEs");
}

TEST(SaeFormatSaeLens6, ReleaseCandidateMetaKeyAndHookZ) {
  // SAELens 6.0 release candidates named the metadata object "meta".
  TempDir t;
  Weights w = random_weights("jumprelu", 8, 16, 61);
  write_saelens6(t / "sae", w,
                 {{"reshape_activations", "hook_z"},
                  {"metadata", nullptr},
                  {"meta", {{"sae_lens_version", "6.0.0-rc.1"}, {"hook_name", "blocks.2.attn.hook_z"}}}});
  // write_saelens6 merged "metadata": null; drop it so only "meta" remains.
  json cfg = read_json(t / "sae/cfg.json");
  cfg.erase("metadata");
  write_text(t / "sae/cfg.json", cfg.dump());
  Sae s = load_sae(t / "sae");
  EXPECT_EQ(s.source_format, "saelens");
  EXPECT_EQ(s.hook, "blocks.2.attn.hook_z");
  EXPECT_EQ(s.reshape_activations, "hook_z");
  save_sae(s, t / "out");
  json out = read_json(t / "out/cfg.json");
  EXPECT_EQ(out["reshape_activations"], "hook_z");
  EXPECT_EQ(out["metadata"]["hook_name"], "blocks.2.attn.hook_z");
  EXPECT_FALSE(out.contains("meta"));
}

TEST(SaeFormatSaeLens6, JumpReLUTrainingCheckpointLogThreshold) {
  TempDir t;
  Weights w = random_weights("jumprelu", 8, 16, 71);
  write_saelens6(t / "sae", w);
  // Rewrite the weights with log_threshold in place of threshold.
  std::vector<float> logt(w.threshold.size());
  for (size_t i = 0; i < logt.size(); i++) logt[i] = std::log(std::max(w.threshold[i], 1e-3f));
  Weights w2 = w;
  for (size_t i = 0; i < logt.size(); i++) w2.threshold[i] = std::exp(logt[i]);
  SafeTensorsWriter st;
  st.add("W_enc", {8, 16}, w.W_enc.data());
  st.add("W_dec", {16, 8}, w.W_dec.data());
  st.add("b_dec", {8}, w.b_dec.data());
  st.add("b_enc", {16}, w.b_enc.data());
  st.add("log_threshold", {16}, logt.data());
  st.write(t / "sae/sae_weights.safetensors");
  Sae s = load_sae(t / "sae");
  std::vector<float> x = randn(size_t(kRows * 8), 10);
  expect_forward_matches(s, ref_saelens(w2, x.data(), kRows), x, kRows, "log_threshold");
}

// ---- SAELens before 6.0 ----

TEST(SaeFormatLegacy, TopKWithActivationFnKwargsAndTopLevelMetadata) {
  TempDir t;
  Weights w = random_weights("topk", 16, 32, 81, 3);
  write_saelens_legacy(t / "sae", w);
  Sae s = load_sae(t / "sae");
  EXPECT_EQ(s.source_format, "saelens-legacy");
  EXPECT_EQ(s.arch, "topk");
  EXPECT_EQ(s.k, 3);
  EXPECT_EQ(s.hook, "blocks.8.hook_resid_pre");
  EXPECT_EQ(s.model, "gpt2-small");
  EXPECT_EQ(s.normalize_activations, "none");
  std::vector<float> x = randn(size_t(kRows * 16), 11);
  expect_forward_matches(s, ref_saelens(w, x.data(), kRows), x, kRows, "legacy topk");
}

TEST(SaeFormatLegacy, ActivationFnSpellingsAndTopKArchitecture) {
  // activation_fn (the 5.x spelling) with architecture "topk" and k in activation_fn_kwargs.
  TempDir t;
  Weights w = random_weights("topk", 8, 16, 82, 2);
  write_saelens_legacy(t / "sae", w,
                       {{"architecture", "topk"}, {"activation_fn", "topk"}, {"sae_lens_version", "5.9.1"}});
  json cfg = read_json(t / "sae/cfg.json");
  cfg.erase("activation_fn_str");
  write_text(t / "sae/cfg.json", cfg.dump());
  Sae s = load_sae(t / "sae");
  EXPECT_EQ(s.source_format, "saelens-legacy");
  EXPECT_EQ(s.arch, "topk");
  EXPECT_EQ(s.k, 2);
}

TEST(SaeFormatLegacy, BooleanNormalizeActivations) {
  TempDir t;
  Weights w = random_weights("standard", 8, 16, 83);
  write_saelens_legacy(t / "a", w, {{"normalize_activations", true}});
  EXPECT_EQ(load_sae(t / "a").normalize_activations, "expected_average_only_in");
  write_saelens_legacy(t / "b", w, {{"normalize_activations", false}});
  EXPECT_EQ(load_sae(t / "b").normalize_activations, "none");
}

TEST(SaeFormatLegacy, GatedAndJumpReLU) {
  for (const char* arch : {"gated", "jumprelu", "standard"}) {
    TempDir t;
    Weights w = random_weights(arch, 12, 20, 84);
    write_saelens_legacy(t / "sae", w, {{"hook_point", nullptr}, {"hook_name", "blocks.1.hook_mlp_out"}});
    Sae s = load_sae(t / "sae");
    EXPECT_EQ(s.arch, arch);
    EXPECT_EQ(s.hook, "blocks.1.hook_mlp_out");
    std::vector<float> x = randn(size_t(kRows * 12), 12);
    expect_forward_matches(s, ref_saelens(w, x.data(), kRows), x, kRows, std::string("legacy ") + arch);
  }
}

TEST(SaeFormatLegacy, FinetuningScalingFactor) {
  TempDir t;
  Weights w = random_weights("standard", 8, 16, 85);
  // All ones: SAELens drops it.
  w.scaling.assign(16, 1.0f);
  write_saelens_legacy(t / "ones", w, {{"finetuning_scaling_factor", false}});
  std::vector<float> x = randn(size_t(kRows * 8), 13);
  expect_forward_matches(load_sae(t / "ones"), ref_saelens(w, x.data(), kRows), x, kRows, "scaling ones");
  // A real finetuning scale multiplies the latents before decoding.
  w.scaling = uniform(16, 86, 0.5f, 2.0f);
  write_saelens_legacy(t / "scaled", w);
  Sae s = load_sae(t / "scaled");
  expect_forward_matches(s, ref_saelens(w, x.data(), kRows), x, kRows, "scaling applied");
  // ...and is a contradiction when the cfg says there is none.
  write_saelens_legacy(t / "bad", w, {{"finetuning_scaling_factor", false}});
  expect_load_error(t / "bad", "scaling_factor is present (and not all ones) but cfg.json finetuning_scaling_factor is false");
}

TEST(SaeFormatLegacy, UnsupportedActivationIsRefused) {
  TempDir t;
  Weights w = random_weights("standard", 8, 16, 87);
  write_saelens_legacy(t / "sae", w, {{"activation_fn_str", "tanh-relu"}});
  expect_load_error(t / "sae", "unsupported activation_fn 'tanh-relu' for architecture 'standard'");
}

TEST(SaeFormatLegacy, SavedAsSaeLens6) {
  // A legacy directory converted by save_sae must read as SAELens 6: no top-level version or
  // legacy activation keys, metadata moved under "metadata" with SAELens 6's key names.
  TempDir t;
  Weights w = random_weights("topk", 16, 32, 88, 4);
  write_saelens_legacy(t / "sae", w, {{"sae_lens_version", "3.5.0"}});
  Sae s = load_sae(t / "sae");
  save_sae(s, t / "out");
  json cfg = read_json(t / "out/cfg.json");
  for (const char* gone : {"sae_lens_version", "activation_fn_str", "activation_fn_kwargs", "hook_point",
                           "hook_point_layer", "model_name", "finetuning_scaling_factor", "context_size"})
    EXPECT_FALSE(cfg.contains(gone)) << gone;
  EXPECT_EQ(cfg["architecture"], "topk");
  EXPECT_EQ(cfg["k"], 4);
  EXPECT_EQ(cfg["normalize_activations"], "none");
  EXPECT_EQ(cfg["metadata"]["sae_lens_version"], "6.0.0");
  EXPECT_EQ(cfg["metadata"]["hook_name"], "blocks.8.hook_resid_pre");
  EXPECT_EQ(cfg["metadata"]["hook_layer"], 8);
  EXPECT_EQ(cfg["metadata"]["model_name"], "gpt2-small");
  EXPECT_EQ(cfg["metadata"]["context_size"], 128);
  Sae back = load_sae(t / "out");
  EXPECT_EQ(back.source_format, "saetools");
  std::vector<float> x = randn(size_t(kRows * 16), 14);
  expect_forward_matches(back, ref_saelens(w, x.data(), kRows), x, kRows, "legacy saved as 6");
}

// ---- EleutherAI sparsify ----

TEST(SaeFormatSparsify, ForwardMatchesSparsifyReference) {
  TempDir t;
  Weights w = bf16_rounded(random_weights("topk", 24, 64, 91, 6));
  write_sparsify(t / "layers.6", w);
  Sae s = load_sae(t / "layers.6");
  EXPECT_EQ(s.source_format, "sparsify");
  EXPECT_EQ(s.arch, "topk");
  EXPECT_EQ(s.k, 6);
  EXPECT_EQ(s.d_in, 24);
  EXPECT_EQ(s.d_sae, 64);
  EXPECT_EQ(s.hook, "layers.6");
  EXPECT_TRUE(s.apply_b_dec_to_input);
  std::vector<float> enc(size_t(64 * 24));
  for (int64_t m = 0; m < 64; m++)
    for (int64_t j = 0; j < 24; j++) enc[size_t(m * 24 + j)] = w.W_enc[size_t(j * 64 + m)];
  std::vector<float> x = randn(size_t(kRows * 24), 15);
  RefOut ref = ref_sparsify(enc, w.b_enc, w.W_dec, w.b_dec, 24, 64, 6, x.data(), kRows);
  expect_forward_matches(s, ref, x, kRows, "sparsify");
}

TEST(SaeFormatSparsify, CheckpointRootNamesItsHookpoints) {
  TempDir t;
  Weights w = random_weights("topk", 8, 16, 92, 2);
  write_sparsify(t / "ckpt/layers.0", w);
  write_sparsify(t / "ckpt/layers.1", w);
  write_text(t / "ckpt/config.json", "{}");
  expect_load_error(t / "ckpt", "a sparsify checkpoint with one SAE per hookpoint; give one of its directories "
                                "(layers.0, layers.1)");
}

TEST(SaeFormatSparsify, UnsupportedVariantsAreRefused) {
  TempDir t;
  Weights w = random_weights("topk", 8, 16, 93, 2);
  write_sparsify(t / "groupmax", w, {{"activation", "groupmax"}});
  expect_load_error(t / "groupmax", "sparsify activation 'groupmax' is not supported (only topk)");
  write_sparsify(t / "transcoder", w, {{"transcode", true}});
  expect_load_error(t / "transcoder", "transcoder");
  write_sparsify(t / "skip", w, {{"skip_connection", true}});
  expect_load_error(t / "skip", "skip_connection");
  write_sparsify(t / "nok", w);
  json cfg = read_json(t / "nok/cfg.json");
  cfg.erase("k");
  write_text(t / "nok/cfg.json", cfg.dump());
  expect_load_error(t / "nok", "'k' missing (sparsify SAEs are TopK)");
  write_sparsify(t / "din", w, {{"d_in", 9}});
  expect_load_error(t / "din", "cfg.json d_in 9 disagrees with tensor 'encoder.weight' [16, 8]");
}

// ---- saetools's own layout ----

class SaeFormatRoundTrip : public ::testing::TestWithParam<std::string> {};

TEST_P(SaeFormatRoundTrip, SaveThenLoadIsExact) {
  const std::string arch = GetParam();
  TempDir t;
  Weights w = random_weights(arch, 12, 20, 101, arch == "topk" ? 3 : 0);
  write_saelens6(t / "in", w);
  Sae s = load_sae(t / "in");
  std::vector<float> density = uniform(20, 5, -6.0f, 0.0f);
  SaveOptions opt;
  opt.log10_density = density;
  save_sae(s, t / "out", opt);
  Sae b = load_sae(t / "out");
  EXPECT_EQ(b.source_format, "saetools");
  EXPECT_EQ(b.arch, s.arch);
  EXPECT_EQ(b.k, s.k);
  EXPECT_EQ(b.W_enc, s.W_enc);
  EXPECT_EQ(b.W_dec, s.W_dec);
  EXPECT_EQ(b.b_dec, s.b_dec);
  EXPECT_EQ(b.b_enc, s.b_enc);
  EXPECT_EQ(b.threshold, s.threshold);
  EXPECT_EQ(b.b_gate, s.b_gate);
  EXPECT_EQ(b.r_mag, s.r_mag);
  EXPECT_EQ(b.b_mag, s.b_mag);
  EXPECT_EQ(b.hook, s.hook);
  EXPECT_EQ(b.model, s.model);
  EXPECT_EQ(load_sparsity(t / "out", 20), density);
  json cfg = read_json(t / "out/cfg.json");
  EXPECT_EQ(cfg["architecture"], arch);
  EXPECT_EQ(cfg["d_in"], 12);
  EXPECT_EQ(cfg["d_sae"], 20);
  EXPECT_EQ(cfg["dtype"], "float32");
  EXPECT_EQ(cfg["apply_b_dec_to_input"], true);
  EXPECT_EQ(cfg["normalize_activations"], "none");
  EXPECT_EQ(cfg["reshape_activations"], "none");
  EXPECT_EQ(cfg.contains("k"), arch == "topk");
  EXPECT_EQ(cfg["metadata"]["sae_lens_version"], "6.0.0");
  EXPECT_EQ(cfg["metadata"]["hook_name"], "blocks.3.hook_resid_post");
  // The tensors SAELens expects for the architecture, and no others.
  SafeTensors st(t / "out/sae_weights.safetensors");
  std::vector<std::string> names = st.names();
  std::vector<std::string> want = {"W_dec", "W_enc", "b_dec"};
  if (arch == "gated") want.insert(want.end(), {"b_gate", "b_mag", "r_mag"});
  else want.push_back("b_enc");
  if (arch == "jumprelu") want.push_back("threshold");
  std::sort(want.begin(), want.end());
  EXPECT_EQ(names, want);
}

INSTANTIATE_TEST_SUITE_P(Arch, SaeFormatRoundTrip, ::testing::Values("standard", "topk", "jumprelu", "gated"));

TEST(SaeFormatSave, HalfPrecisionStoresRoundedWeights) {
  TempDir t;
  Weights w = random_weights("standard", 16, 24, 111);
  write_saelens6(t / "in", w);
  Sae s = load_sae(t / "in");
  for (DType dt : {DType::f16, DType::bf16}) {
    SaveOptions opt;
    opt.dtype = dt;
    std::string out = t / (std::string("out-") + dtype_name(dt));
    save_sae(s, out, opt);
    Sae b = load_sae(out);
    EXPECT_EQ(read_json(out + "/cfg.json")["dtype"], dt == DType::f16 ? "float16" : "bfloat16");
    EXPECT_EQ(SafeTensors(out + "/sae_weights.safetensors").info("W_enc").dtype, dt == DType::f16 ? "F16" : "BF16");
    for (size_t i = 0; i < s.W_enc.size(); i++) {
      float want = dt == DType::f16 ? f16_to_f32(f32_to_f16(s.W_enc[i])) : bf16_to_f32(f32_to_bf16(s.W_enc[i]));
      ASSERT_EQ(b.W_enc[i], want) << i;
    }
  }
}

TEST(SaeFormatSave, DenseAndSparseDecodeAgree) {
  // reconstruct() sums active decoder rows when latents are sparse and uses sgemm when they are
  // dense; both must equal the reference. A large positive b_enc makes nearly every latent fire.
  TempDir t;
  Weights w = random_weights("standard", 16, 32, 121);
  for (float& b : w.b_enc) b += 3.0f;
  write_saelens6(t / "dense", w);
  std::vector<float> x = randn(size_t(kRows * 16), 16);
  RefOut ref = ref_saelens(w, x.data(), kRows);
  int64_t nz = 0;
  for (double v : ref.f) nz += v != 0;
  EXPECT_GT(nz * 8, kRows * 32);  // the dense path is taken
  expect_forward_matches(load_sae(t / "dense"), ref, x, kRows, "dense decode");
}

TEST(SaeFormatSave, LoadSparsity) {
  TempDir t;
  Weights w = random_weights("standard", 4, 8, 131);
  write_saelens6(t / "sae", w);
  EXPECT_TRUE(load_sparsity(t / "sae", 8).empty());
  std::vector<float> sp = uniform(8, 1, -10, 0);
  SafeTensorsWriter st;
  st.add("sparsity", {8}, sp.data());
  st.write(t / "sae/sparsity.safetensors");
  EXPECT_EQ(load_sparsity(t / "sae", 8), sp);
  try {
    load_sparsity(t / "sae", 9);
    ADD_FAILURE() << "wrong shape accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("sparsity"), std::string::npos) << e.what();
  }
}

// ---- bad directories ----

TEST(SaeFormatErrors, MissingOrNotADirectory) {
  TempDir t;
  expect_load_error(t / "nope", "not a directory");
  write_text(t / "file", "x");
  expect_load_error(t / "file", "not a directory");
  fs::create_directories(t / "empty");
  expect_load_error(t / "empty", "no cfg.json (not an SAE directory)");
  write_text(t / "nocfgjson/cfg.json", "{ not json");
  expect_load_error(t / "nocfgjson", "cfg.json: invalid JSON");
  write_text(t / "noweights/cfg.json", R"({"d_in": 4, "d_sae": 8})");
  expect_load_error(t / "noweights", "no sae_weights.safetensors");
}

TEST(SaeFormatErrors, MissingTensorNamesIt) {
  TempDir t;
  Weights w = random_weights("jumprelu", 4, 8, 141);
  write_saelens6(t / "sae", w);
  SafeTensorsWriter st;  // everything but the threshold
  st.add("W_enc", {4, 8}, w.W_enc.data());
  st.add("W_dec", {8, 4}, w.W_dec.data());
  st.add("b_dec", {4}, w.b_dec.data());
  st.add("b_enc", {8}, w.b_enc.data());
  st.write(t / "sae/sae_weights.safetensors");
  expect_load_error(t / "sae", "missing tensor 'threshold'");
}

TEST(SaeFormatErrors, WrongShapeNamesTensorAndShapes) {
  TempDir t;
  Weights w = random_weights("standard", 4, 8, 142);
  write_saelens6(t / "sae", w, {{"d_in", 5}});  // cfg says 5, the tensors hold 4
  expect_load_error(t / "sae", "'W_enc'");
  Weights v = w;
  write_saelens6(t / "sae2", v);
  SafeTensorsWriter st;
  st.add("W_enc", {4, 8}, w.W_enc.data());
  st.add("W_dec", {4, 8}, w.W_dec.data());  // transposed
  st.add("b_dec", {4}, w.b_dec.data());
  st.add("b_enc", {8}, w.b_enc.data());
  st.write(t / "sae2/sae_weights.safetensors");
  expect_load_error(t / "sae2", "'W_dec'");
}

TEST(SaeFormatErrors, NaNWeightNamesTensorAndElement) {
  TempDir t;
  Weights w = random_weights("standard", 4, 8, 143);
  w.W_dec[13] = std::numeric_limits<float>::quiet_NaN();
  write_saelens6(t / "sae", w);
  expect_load_error(t / "sae", "tensor 'W_dec' has a NaN or Inf value at element 13");
  Weights v = random_weights("gated", 4, 8, 144);
  v.r_mag[2] = std::numeric_limits<float>::infinity();
  write_saelens6(t / "gated", v);
  expect_load_error(t / "gated", "tensor 'r_mag' has a NaN or Inf value at element 2");
}

TEST(SaeFormatErrors, UnknownArchitectureAndBadConfig) {
  TempDir t;
  Weights w = random_weights("standard", 4, 8, 145);
  write_saelens6(t / "arch", w, {{"architecture", "transcoder"}});
  expect_load_error(t / "arch", "unknown architecture 'transcoder' (expected standard, topk, jumprelu or gated)");
  write_saelens6(t / "dsae", w, {{"d_sae", 0}});
  expect_load_error(t / "dsae", "'d_sae' missing or not a positive integer");
  Weights k = random_weights("topk", 4, 8, 146, 9);
  write_saelens6(t / "bigk", k);
  expect_load_error(t / "bigk", "topk SAE with k=9 outside 1..d_sae=8");
  Weights k2 = random_weights("topk", 4, 8, 147, 2);
  write_saelens6(t / "nok", k2);
  json cfg = read_json(t / "nok/cfg.json");
  cfg.erase("k");
  write_text(t / "nok/cfg.json", cfg.dump());
  expect_load_error(t / "nok", "topk SAE without 'k'");
  write_saelens6(t / "fk", k2, {{"k", 2.5}});
  expect_load_error(t / "fk", "'k' must be a positive integer, got 2.5");
  write_saelens6(t / "norm", w, {{"normalize_activations", "whiten"}});
  expect_load_error(t / "norm", "unsupported normalize_activations 'whiten'");
}

TEST(SaeFormatErrors, TruncatedWeightsFile) {
  TempDir t;
  Weights w = random_weights("standard", 4, 8, 148);
  write_saelens6(t / "sae", w);
  fs::resize_file(t / "sae/sae_weights.safetensors", fs::file_size(t / "sae/sae_weights.safetensors") - 7);
  expect_load_error(t / "sae", "data runs past the end of the file");
}

// ---- conversion (what sae-convert does: load_sae, then save_sae) ----

TEST(SaeFormatConvert, SparsifyToSaeLensEncodesIdentically) {
  TempDir t;
  Weights w = bf16_rounded(random_weights("topk", 24, 64, 151, 5));
  write_sparsify(t / "layers.2", w);
  Sae a = load_sae(t / "layers.2");
  save_sae(a, t / "out");
  Sae b = load_sae(t / "out");
  EXPECT_EQ(b.arch, "topk");
  EXPECT_EQ(b.k, 5);
  EXPECT_EQ(b.hook, "layers.2");
  std::vector<float> x = randn(size_t(kRows * 24), 17);
  std::vector<float> fa(size_t(kRows * 64)), fb(fa.size()), xa(size_t(kRows * 24)), xb(xa.size());
  a.reconstruct(x.data(), kRows, fa.data(), xa.data());
  b.reconstruct(x.data(), kRows, fb.data(), xb.data());
  EXPECT_EQ(fa, fb);  // f32 storage: bit-identical
  EXPECT_EQ(xa, xb);
}

TEST(SaeFormatConvert, Bf16EncodingsWithinTheRoundingBound) {
  // bf16 rounds each weight w to w(1 + e) with |e| <= 2^-9. For the standard architecture,
  // pre = sum_i (x_i - b_i) W_ij + c_j, so |pre' - pre| <= 2^-9 * (sum_i (|x_i| + 2|b_i|)|W_ij| + |c_j|)
  // to first order, and ReLU does not increase differences. The test allows twice that, plus
  // float32 rounding of the products (1e-5 of the same scale).
  TempDir t;
  Weights w = random_weights("standard", 24, 40, 161);
  write_saelens6(t / "in", w);
  Sae a = load_sae(t / "in");
  SaveOptions opt;
  opt.dtype = DType::bf16;
  save_sae(a, t / "out", opt);
  Sae b = load_sae(t / "out");
  std::vector<float> x = randn(size_t(kRows * 24), 18);
  std::vector<float> fa(size_t(kRows * 40)), fb(fa.size());
  a.encode(x.data(), kRows, fa.data());
  b.encode(x.data(), kRows, fb.data());
  int64_t changed = 0;
  for (int64_t r = 0; r < kRows; r++)
    for (int64_t j = 0; j < 40; j++) {
      double scale = std::fabs(w.b_enc[size_t(j)]);
      for (int64_t i = 0; i < 24; i++)
        scale += (std::fabs(x[size_t(r * 24 + i)]) + 2 * std::fabs(w.b_dec[size_t(i)])) * std::fabs(w.W_enc[size_t(i * 40 + j)]);
      double diff = std::fabs(double(fa[size_t(r * 40 + j)]) - fb[size_t(r * 40 + j)]);
      EXPECT_LE(diff, (2.0 / 512 + 1e-5) * scale) << "row " << r << " latent " << j;
      changed += diff > 0;
    }
  EXPECT_GT(changed, 0);  // the weights really were rounded
}
