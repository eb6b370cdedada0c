// The forward pass against the reference outputs in ../shared/models/*/reference.safetensors
// (computed in float64 by an independent implementation, stored as float32): every hook of every
// layer, the logits and the per-token NLL, for every case, using the reference tokens as input.
//
// Tolerance: kTol = 1e-4 of the tensor's largest magnitude (scaled_err). Our pass computes in
// f32, so each value carries rounding of a few ulp per operation (~1e-7 relative) accumulated
// through a few layers of sums over d_model terms; 1e-4 is the agreement the data's README
// promises for an f32 implementation and leaves a wide margin over what we measure (~1e-6), while
// any real mistake (a wrong convention, a missing bias) shows up at 1e-2 or more. NLL values are
// compared absolutely with the same 1e-4 (they are O(1) log-probabilities).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "model/model.h"
#include "stream/safetensors.h"
#include "support/model_util.h"

using namespace sae;
using namespace model_test;

namespace {

constexpr double kTol = 1e-4;

// Every hook of the model but attn.hook_z (the older references lack it; check_model_against_reference
// adds it where the reference has it).
std::vector<std::string> all_hooks(const ModelConfig& c) {
  std::vector<std::string> v;
  for (const HookPoint& h : model_hooks(c))
    if (h.kind != HookKind::attn_z) v.push_back(h.name());
  return v;
}

int count_cases(const SafeTensors& ref) {
  int n = 0;
  while (ref.has("case" + std::to_string(n) + ".tokens")) n++;
  return n;
}

void check_model_against_reference(const std::string& name) {
  const std::string dir = shared_model(name);
  auto be = make_cpu_backend();
  Model m(dir, *be);
  SafeTensors ref(dir + "/reference.safetensors");
  const int cases = count_cases(ref);
  ASSERT_GT(cases, 0);
  auto hooks = all_hooks(m.config());
  // The newer references also hold attn.hook_z, the heads' outputs before o_proj.
  for (int l = 0; l < m.config().n_layers; l++)
    if (ref.has("case0.blocks." + std::to_string(l) + ".attn.hook_z")) hooks.push_back("blocks." + std::to_string(l) + ".attn.hook_z");
  ForwardOptions opt;
  for (const auto& h : hooks) opt.capture.push_back(parse_hook(h, m.config()));
  opt.want_logits = true;
  opt.want_nll = true;
  double worst_hook = 0, worst_logits = 0, worst_nll = 0;
  for (int i = 0; i < cases; i++) {
    const std::string c = "case" + std::to_string(i) + ".";
    std::vector<int32_t> tok = ref.read_i32(c + "tokens");
    ForwardResult r = m.forward(tok.data(), 1, int64_t(tok.size()), opt);
    for (size_t h = 0; h < hooks.size(); h++) {
      double e = scaled_err(r.captured[h], ref.read_f32(c + hooks[h]));
      EXPECT_LE(e, kTol) << name << " " << c << hooks[h];
      worst_hook = std::max(worst_hook, e);
    }
    if (ref.has(c + "logits")) {
      double e = scaled_err(r.logits, ref.read_f32(c + "logits"));
      EXPECT_LE(e, kTol) << name << " " << c << "logits";
      worst_logits = std::max(worst_logits, e);
    }
    std::vector<float> nll = ref.read_f32(c + "nll");
    ASSERT_EQ(r.nll.size(), nll.size());
    for (size_t t = 0; t < nll.size(); t++) {
      EXPECT_NEAR(r.nll[t], nll[t], kTol) << name << " " << c << "nll[" << t << "]";
      worst_nll = std::max(worst_nll, std::fabs(double(r.nll[t]) - nll[t]));
    }
  }
  std::printf("[ %s ] %d cases: worst scaled error hooks %.2e, logits %.2e; worst NLL error %.2e\n", name.c_str(),
              cases, worst_hook, worst_logits, worst_nll);
}

}  // namespace

TEST(ModelReference, Stories260KEveryHookLogitsAndNll) {
  NEED_SHARED();
  check_model_against_reference("stories260K");
}

TEST(ModelReference, Gpt2RandomEveryHookLogitsAndNll) {
  NEED_SHARED();
  check_model_against_reference("gpt2-random");
}

// Qwen3 (transformers 5's own save_pretrained, bf16 weights): per-head q/k RMSNorm, GQA, no
// q/k/v bias, untied head, rope_parameters.
TEST(ModelReference, Qwen3RandomEveryHookLogitsAndNll) {
  NEED_SHARED();
  check_model_against_reference("qwen3-random");
}

// Gemma 2 (transformers 5's save_pretrained, f32 weights): (1 + w) RMSNorms, post-attention and
// post-feed-forward norms, a scaled embedding, GeGLU, GQA, head_dim 24 != 64 / 4,
// query_pre_attn_scalar 20, sliding windows of 8 keys on layers 0 and 2 (the cases are longer),
// attention soft-capping at 2 and final soft-capping at 3.
TEST(ModelReference, Gemma2RandomEveryHookLogitsAndNll) {
  NEED_SHARED();
  check_model_against_reference("gemma2-random");
}

// Gemma 3 (bf16 weights): as Gemma 2 without soft-capping, with q/k norms, and rope theta 10000
// on the sliding layers 0 and 2 but 1e6 with linear scaling (factor 8) on the global layer 1.
TEST(ModelReference, Gemma3RandomEveryHookLogitsAndNll) {
  NEED_SHARED();
  check_model_against_reference("gemma3-random");
}

// GPT-NeoX (f16 weights): LayerNorm, packed per-head query_key_value, rotary on 25% of each
// head, erf GELU, a parallel residual (no resid_mid) and an untied embed_out.
TEST(ModelReference, PythiaRandomEveryHookLogitsAndNll) {
  NEED_SHARED();
  check_model_against_reference("pythia-random");
}

namespace {

// A model directory in a scratch directory: `cfg` as config.json, and either a link to `weights`
// or (with `rename`) its tensors written again under new names in the same dtype, plus extra.
struct ScratchModel {
  TempDir dir;
  ScratchModel(const nlohmann::json& cfg, const std::string& weights,
               const std::function<std::string(const std::string&)>& rename = nullptr, DType dt = DType::f32) {
    std::ofstream(dir / "config.json") << cfg.dump(2);
    if (!rename) {
      std::filesystem::create_symlink(weights, dir / "model.safetensors");
      return;
    }
    SafeTensors src(weights);
    SafeTensorsWriter w;
    for (const auto& n : src.names()) {
      std::vector<float> v = src.read_f32(n);
      w.add(rename(n), src.info(n).shape, v.data(), dt);
    }
    // A vision tower's tensor, which the text model must ignore.
    std::vector<float> vis(12, 0.5f);
    w.add("vision_tower.vision_model.embeddings.patch_embedding.weight", {3, 4}, vis.data(), dt);
    w.write(dir / "model.safetensors");
  }
  std::string path() const { return dir.path(); }
};

// Two directories holding the same model give the same bits at every hook and in the logits, on
// case 0 of `ref_dir`'s reference.
void expect_same_outputs(const std::string& ref_dir, const std::string& other_dir) {
  auto be = make_cpu_backend();
  Model a(ref_dir, *be), b(other_dir, *be);
  SafeTensors ref(ref_dir + "/reference.safetensors");
  std::vector<int32_t> tok = ref.read_i32("case0.tokens");
  ForwardOptions opt;
  opt.capture = model_hooks(a.config());
  opt.want_logits = true;
  const ForwardResult ra = a.forward(tok.data(), 1, int64_t(tok.size()), opt);
  const ForwardResult rb = b.forward(tok.data(), 1, int64_t(tok.size()), opt);
  EXPECT_EQ(ra.captured, rb.captured) << other_dir;
  EXPECT_EQ(ra.logits, rb.logits) << other_dir;
  EXPECT_FALSE(ra.logits.empty());
}

nlohmann::json shared_config(const std::string& name) {
  return nlohmann::json::parse(std::ifstream(shared_model(name) + "/config.json"));
}

// Turns a transformers 5.x config into the 4.x spelling: no layer_types, rope_parameters or dtype.
nlohmann::json as_transformers4(nlohmann::json cfg) {
  const std::string dtype = cfg["dtype"].get<std::string>();
  cfg.erase("rope_parameters");
  cfg.erase("layer_types");
  cfg.erase("dtype");
  cfg["torch_dtype"] = dtype;
  cfg["transformers_version"] = "4.51.0";
  return cfg;
}

}  // namespace

// The same weights under a transformers 4.x config (rope_theta at the top level, torch_dtype, no
// layer_types or rope_parameters), as most published Qwen3 checkpoints spell it: the same bits.
TEST(ModelReference, Qwen3TransformersFourConfigGivesTheSameOutputs) {
  NEED_SHARED();
  const std::string dir = shared_model("qwen3-random");
  nlohmann::json cfg = shared_config("qwen3-random");
  const double theta = cfg["rope_parameters"]["rope_theta"].get<double>();
  cfg = as_transformers4(cfg);
  cfg["rope_theta"] = theta;
  cfg["rope_scaling"] = nullptr;
  ScratchModel m(cfg, dir + "/model.safetensors");
  expect_same_outputs(dir, m.path());
  EXPECT_EQ(load_model_config(m.path()).rope_theta, 1e6);
}

// Gemma 2 as transformers 4.4x wrote it: rope_theta at the top level, and no layer_types: the
// sliding layers are implied by the model type (every even layer).
TEST(ModelReference, Gemma2TransformersFourConfigGivesTheSameOutputs) {
  NEED_SHARED();
  const std::string dir = shared_model("gemma2-random");
  nlohmann::json cfg = as_transformers4(shared_config("gemma2-random"));
  cfg["rope_theta"] = 10000.0;
  cfg["hidden_act"] = "gelu_pytorch_tanh";
  cfg["cache_implementation"] = "hybrid";
  ScratchModel m(cfg, dir + "/model.safetensors");
  expect_same_outputs(dir, m.path());
  const ModelConfig c = load_model_config(m.path());
  EXPECT_EQ(c.layer_sliding, (std::vector<uint8_t>{1, 0, 1}));
  EXPECT_EQ(c.sliding_window, 8);
}

// Gemma 3 as transformers 4.5x wrote it: rope_theta for the global layers, with rope_scaling on
// them only, rope_local_base_freq for the sliding ones, and sliding_window_pattern instead of
// layer_types (2 here: layers 0 and 2 slide, every second layer is global).
TEST(ModelReference, Gemma3TransformersFourConfigGivesTheSameOutputs) {
  NEED_SHARED();
  const std::string dir = shared_model("gemma3-random");
  nlohmann::json cfg = as_transformers4(shared_config("gemma3-random"));
  cfg.erase("_sliding_window_pattern");
  cfg["sliding_window_pattern"] = 2;
  cfg["rope_theta"] = 1000000.0;
  cfg["rope_local_base_freq"] = 10000.0;
  cfg["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 8.0}};
  ScratchModel m(cfg, dir + "/model.safetensors");
  expect_same_outputs(dir, m.path());
  const ModelConfig c = load_model_config(m.path());
  EXPECT_EQ(c.layer_sliding, (std::vector<uint8_t>{1, 0, 1}));
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::linear);
  EXPECT_EQ(c.sliding_rope_scaling.type, RopeScalingType::none);
}

// A multimodal Gemma 3 (Gemma3ForConditionalGeneration) holds the text model's config under
// text_config, with only some fields (the rest are transformers' defaults), and its weights under
// a language-model prefix: 4.x wrote language_model.model.*, 5.x model.language_model.*. Its text
// tower runs as the text model does, bit for bit; the vision tower is ignored.
TEST(ModelReference, Gemma3MultimodalCheckpointRunsItsTextTower) {
  NEED_SHARED();
  const std::string dir = shared_model("gemma3-random");
  nlohmann::json text = shared_config("gemma3-random");
  text.erase("architectures");
  text.erase("dtype");
  text.erase("tie_word_embeddings");  // default: tied
  text.erase("rms_norm_eps");         // default: 1e-6
  const nlohmann::json cfg = {{"architectures", {"Gemma3ForConditionalGeneration"}},
                              {"model_type", "gemma3"},
                              {"torch_dtype", "bfloat16"},
                              {"text_config", text},
                              {"vision_config", {{"model_type", "siglip_vision_model"}, {"hidden_size", 4}}},
                              {"mm_tokens_per_image", 256}};
  for (const std::string prefix : {"language_model.model.", "model.language_model."}) {
    ScratchModel m(cfg, dir + "/model.safetensors",
                   [&](const std::string& n) { return prefix + n.substr(std::string("model.").size()); }, DType::bf16);
    expect_same_outputs(dir, m.path());
    EXPECT_EQ(load_model_config(m.path()).model_type, "gemma3");
  }
}

// Pythia as transformers 4.x wrote it: rotary_pct and rotary_emb_base, no attention_bias (true by
// default).
TEST(ModelReference, PythiaTransformersFourConfigGivesTheSameOutputs) {
  NEED_SHARED();
  const std::string dir = shared_model("pythia-random");
  nlohmann::json cfg = as_transformers4(shared_config("pythia-random"));
  cfg.erase("attention_bias");
  cfg["rotary_pct"] = 0.25;
  cfg["rotary_emb_base"] = 10000;
  ScratchModel m(cfg, dir + "/model.safetensors");
  expect_same_outputs(dir, m.path());
  EXPECT_EQ(load_model_config(m.path()).rotary_dims, 4);
}

TEST(ModelReference, TinyGpt2SavePretrainedArtifact) {
  NEED_SHARED();
  check_model_against_reference("tiny-gpt2");
}

// All cases in one right-padded batch give the rows each case gives alone: padding after a
// sequence never reaches it through causal attention.
TEST(ModelReference, BatchedRightPaddedCasesMatchReference) {
  NEED_SHARED();
  const std::string dir = shared_model("stories260K");
  auto be = make_cpu_backend();
  Model m(dir, *be);
  SafeTensors ref(dir + "/reference.safetensors");
  const int cases = count_cases(ref);
  std::vector<std::vector<int32_t>> toks;
  int64_t T = 0;
  for (int i = 0; i < cases; i++) {
    toks.push_back(ref.read_i32("case" + std::to_string(i) + ".tokens"));
    T = std::max<int64_t>(T, int64_t(toks.back().size()));
  }
  std::vector<int32_t> batch(size_t(cases * T), 0);
  for (int i = 0; i < cases; i++) std::copy(toks[size_t(i)].begin(), toks[size_t(i)].end(), batch.begin() + i * T);
  ForwardOptions opt;
  opt.capture = {parse_hook("blocks.4.hook_resid_post", m.config()), parse_hook("blocks.2.hook_attn_out", m.config())};
  opt.want_logits = true;
  ForwardResult r = m.forward(batch.data(), cases, T, opt);
  const int64_t D = m.config().d_model, V = m.config().vocab;
  for (int i = 0; i < cases; i++) {
    const std::string c = "case" + std::to_string(i) + ".";
    const size_t n = toks[size_t(i)].size();
    for (size_t h = 0; h < opt.capture.size(); h++) {
      std::vector<float> rows(r.captured[h].begin() + i * T * D, r.captured[h].begin() + i * T * D + int64_t(n) * D);
      EXPECT_LE(scaled_err(rows, ref.read_f32(c + opt.capture[h].name())), kTol) << c << opt.capture[h].name();
    }
    std::vector<float> lg(r.logits.begin() + i * T * V, r.logits.begin() + i * T * V + int64_t(n) * V);
    EXPECT_LE(scaled_err(lg, ref.read_f32(c + "logits")), kTol) << c << "logits";
  }
}

// The naive double-precision pass of the tests agrees with the reference too, so it can serve as
// the reference for fixtures the shared models do not cover (biases, untied heads, rope scaling,
// GPT-NeoX's sequential residual): for every family, attn.hook_z included where the reference has it.
TEST(ModelReference, NaiveTestPassAgreesWithReference) {
  NEED_SHARED();
  for (std::string name : {"stories260K", "gpt2-random", "qwen3-random", "gemma2-random", "gemma3-random", "pythia-random"}) {
    const std::string dir = shared_model(name);
    ModelConfig c = load_model_config(dir);
    SafeTensors w(dir + "/model.safetensors"), ref(dir + "/reference.safetensors");
    auto get = [&](const std::string& n) { return w.has(n) ? w.read_f32(n) : w.read_f32("transformer." + n); };
    std::vector<int32_t> tok = ref.read_i32("case0.tokens");
    NaiveOut o = naive_forward(c, get, tok);
    for (const HookPoint& hp : model_hooks(c)) {
      const std::string h = hp.name();
      if (hp.kind == HookKind::attn_z && !ref.has("case0." + h)) continue;
      EXPECT_LE(scaled_err(o.hooks[h], ref.read_f32("case0." + h)), 1e-5) << name << " " << h;
    }
    EXPECT_LE(scaled_err(o.logits, ref.read_f32("case0.logits")), 1e-5) << name;
  }
}
