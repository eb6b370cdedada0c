// Model features the shared models do not cover, on small random models written by the tests
// themselves (config.json + SafeTensorsWriter): GPT-2 names without the "transformer." prefix,
// untied heads, erf GELU and per-layer attention scaling, Qwen2 q/k/v biases, Llama attention
// and MLP biases, Llama-3 and linear rope scaling, f16/bf16 weights, sharded weights; each checked
// on every hook, the logits and the NLL against the naive double-precision pass of
// support/model_util.h (itself checked against ../shared's references).
//
// Tolerance kTol = 1e-4 of each tensor's scale, as in test_model_reference.cpp: f32 rounding
// through two small layers stays near 1e-6, a wrong convention shows at 1e-2 or more.
#include <gtest/gtest.h>

#include "backend/backend.h"
#include "model/model.h"
#include "support/model_util.h"

using namespace sae;
using namespace model_test;

namespace {

constexpr double kTol = 1e-4;

json gpt2_config() {
  return {{"model_type", "gpt2"},  {"architectures", {"GPT2LMHeadModel"}}, {"n_layer", 2}, {"n_embd", 16},
          {"n_head", 4},           {"n_positions", 32},  {"vocab_size", 50},  {"activation_function", "gelu_new"},
          {"layer_norm_epsilon", 1e-5}, {"n_inner", nullptr}};
}

json llama_config() {
  return {{"model_type", "llama"},        {"architectures", {"LlamaForCausalLM"}}, {"hidden_size", 32},
          {"intermediate_size", 40},      {"num_hidden_layers", 2},  {"num_attention_heads", 4},
          {"num_key_value_heads", 2},     {"vocab_size", 50},        {"max_position_embeddings", 64},
          {"rms_norm_eps", 1e-5},         {"rope_theta", 10000.0},   {"hidden_act", "silu"},
          {"tie_word_embeddings", false}, {"rope_scaling", nullptr}};
}

json gemma2_config() {
  return {{"model_type", "gemma2"},        {"architectures", {"Gemma2ForCausalLM"}}, {"hidden_size", 24},
          {"head_dim", 8},                 {"intermediate_size", 40},  {"num_hidden_layers", 3},
          {"num_attention_heads", 4},      {"num_key_value_heads", 2}, {"vocab_size", 50},
          {"max_position_embeddings", 64}, {"sliding_window", 4},      {"query_pre_attn_scalar", 10},
          {"attn_logit_softcapping", 1.5}, {"final_logit_softcapping", 2.5}, {"dtype", "float32"}};
}

json neox_config() {
  return {{"model_type", "gpt_neox"}, {"architectures", {"GPTNeoXForCausalLM"}}, {"hidden_size", 32},
          {"intermediate_size", 48},  {"num_hidden_layers", 2},  {"num_attention_heads", 4},
          {"vocab_size", 50},         {"max_position_embeddings", 64}, {"rotary_pct", 0.5},
          {"rotary_emb_base", 10000}, {"hidden_act", "gelu"},   {"use_parallel_residual", true}};
}

// Writes config.json and model.safetensors for `cfg` with random weights; returns the weights.
Tensors write_model(const std::string& dir, const json& cfg, uint32_t seed, DType dt = DType::f32,
                    const std::string& gpt2_prefix = "transformer.") {
  write_text(dir + "/config.json", cfg.dump(2));
  ModelConfig c = parse_model_config(cfg, "config.json");
  Tensors t = random_weights(c, seed, gpt2_prefix);
  t.write(dir + "/model.safetensors", dt);
  return t;
}

std::vector<int32_t> some_tokens(int n, int vocab, uint32_t seed) {
  std::mt19937 g(seed);
  std::vector<int32_t> v(sz(n));
  for (auto& x : v) x = int32_t(g() % uint32_t(vocab));
  return v;
}

ForwardOptions everything(const ModelConfig& c) {
  ForwardOptions o;
  o.capture = model_hooks(c);
  o.want_logits = true;
  o.want_nll = true;
  return o;
}

// Every hook, the logits and the NLL of `dir`'s model against the naive pass over `t`, on
// `n_tokens` tokens.
void check_against_naive(const std::string& dir, const Tensors& t, const std::string& gpt2_prefix = "transformer.",
                         int n_tokens = 13) {
  auto be = make_cpu_backend();
  Model m(dir, *be);
  std::vector<int32_t> tok = some_tokens(n_tokens, m.config().vocab, 7);
  ForwardOptions o = everything(m.config());
  ForwardResult r = m.forward(tok.data(), 1, int64_t(tok.size()), o);
  NaiveOut ref = naive_forward(m.config(), getter(t, gpt2_prefix), tok);
  for (size_t i = 0; i < o.capture.size(); i++)
    EXPECT_LE(scaled_err(r.captured[i], ref.hooks[o.capture[i].name()]), kTol) << o.capture[i].name();
  EXPECT_LE(scaled_err(r.logits, ref.logits), kTol) << "logits";
  ASSERT_EQ(r.nll.size(), ref.nll.size());
  for (size_t i = 0; i < ref.nll.size(); i++) EXPECT_NEAR(r.nll[i], ref.nll[i], kTol) << "nll[" << i << "]";
}

template <class E, class F>
std::string error_of(F f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no exception";
  return "";
}

std::string load_error(const std::string& dir) {
  auto be = make_cpu_backend();
  return error_of<InputError>([&] { Model m(dir, *be); });
}

}  // namespace

TEST(ModelFixture, Gpt2WithAndWithoutTransformerPrefix) {
  for (std::string prefix : {"transformer.", ""}) {
    TempDir d;
    Tensors t = write_model(d.path(), gpt2_config(), 1, DType::f32, prefix);
    check_against_naive(d.path(), t, prefix);
  }
}

TEST(ModelFixture, Gpt2UntiedHeadErfGeluAndInverseLayerScaling) {
  TempDir d;
  json c = gpt2_config();
  c["tie_word_embeddings"] = false;
  c["activation_function"] = "gelu";
  c["scale_attn_by_inverse_layer_idx"] = true;
  Tensors t = write_model(d.path(), c, 2);
  ASSERT_TRUE(t.data.count("lm_head.weight"));
  check_against_naive(d.path(), t);
}

TEST(ModelFixture, Qwen2QkvBiases) {
  TempDir d;
  json c = llama_config();
  c["model_type"] = "qwen2";
  c["architectures"] = {"Qwen2ForCausalLM"};
  c["use_sliding_window"] = false;
  c["sliding_window"] = 32;  // ignored while use_sliding_window is false
  Tensors t = write_model(d.path(), c, 3);
  ASSERT_TRUE(t.data.count("model.layers.1.self_attn.k_proj.bias"));
  ASSERT_FALSE(t.data.count("model.layers.1.self_attn.o_proj.bias"));
  check_against_naive(d.path(), t);
  auto be = make_cpu_backend();
  EXPECT_EQ(Model(d.path(), *be).config().max_positions, 64);
}

TEST(ModelFixture, LlamaUntiedHeadGqaWithAttentionAndMlpBiases) {
  TempDir d;
  json c = llama_config();
  c["attention_bias"] = true;
  c["mlp_bias"] = true;
  c["num_key_value_heads"] = 1;  // every query head shares one key/value head
  Tensors t = write_model(d.path(), c, 4);
  ASSERT_TRUE(t.data.count("model.layers.0.self_attn.o_proj.bias"));
  ASSERT_TRUE(t.data.count("model.layers.0.mlp.down_proj.bias"));
  check_against_naive(d.path(), t);
}

// Gemma 2 with q/k/v/o biases (attention_bias), a window of 4 keys on layers 0 and 2 against 13
// tokens, and both soft-caps small enough to bend the scores and logits.
TEST(ModelFixture, Gemma2BiasesWindowsAndSoftcaps) {
  TempDir d;
  json c = gemma2_config();
  c["attention_bias"] = true;
  Tensors t = write_model(d.path(), c, 21);
  ASSERT_TRUE(t.data.count("model.layers.0.self_attn.o_proj.bias"));
  ASSERT_TRUE(t.data.count("model.layers.2.post_feedforward_layernorm.weight"));
  check_against_naive(d.path(), t);
}

// Gemma 3 in the 4.x spelling over 4 layers: sliding_window_pattern 2 (layers 0 and 2 slide),
// llama3 rope scaling on the global layers only, rope_local_base_freq on the sliding ones.
TEST(ModelFixture, Gemma3PatternAndPerLayerRope) {
  TempDir d;
  json c = gemma2_config();
  c["model_type"] = "gemma3_text";
  c["architectures"] = {"Gemma3ForCausalLM"};
  c["num_hidden_layers"] = 4;
  c["sliding_window_pattern"] = 2;
  c["attn_logit_softcapping"] = nullptr;
  c["final_logit_softcapping"] = nullptr;
  c["rope_theta"] = 50000.0;
  c["rope_local_base_freq"] = 100.0;
  c["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                       {"original_max_position_embeddings", 16}};
  Tensors t = write_model(d.path(), c, 22);
  ASSERT_TRUE(t.data.count("model.layers.3.self_attn.q_norm.weight"));
  const ModelConfig m = parse_model_config(c, "c");
  EXPECT_EQ(m.layer_sliding, (std::vector<uint8_t>{1, 0, 1, 0}));
  EXPECT_TRUE(m.separate_sliding_rope());
  EXPECT_EQ(m.attn_softcap, 0.0f);
  check_against_naive(d.path(), t);
}

// GPT-NeoX with a parallel residual and rotary on half of each 8-wide head.
TEST(ModelFixture, NeoxParallelResidualPartialRotary) {
  TempDir d;
  Tensors t = write_model(d.path(), neox_config(), 23);
  ASSERT_TRUE(t.data.count("embed_out.weight"));
  check_against_naive(d.path(), t);
}

// GPT-NeoX's sequential variant (use_parallel_residual false: the MLP reads resid_mid, which
// exists), with a tied head, no attention biases, full rotary and tanh GELU.
TEST(ModelFixture, NeoxSequentialResidualTiedHeadNoBias) {
  TempDir d;
  json c = neox_config();
  c["use_parallel_residual"] = false;
  c["tie_word_embeddings"] = true;
  c["attention_bias"] = false;
  c["rotary_pct"] = 1.0;
  c["hidden_act"] = "gelu_new";
  Tensors t = write_model(d.path(), c, 24);
  ASSERT_FALSE(t.data.count("embed_out.weight"));
  ASSERT_FALSE(t.data.count("gpt_neox.layers.0.attention.dense.bias"));
  const ModelConfig m = parse_model_config(c, "c");
  EXPECT_EQ(parse_hook("blocks.1.hook_resid_mid", m).kind, HookKind::resid_mid);
  check_against_naive(d.path(), t);
}

// Gemma multiplies the embedding by sqrt(d_model) as a tensor of the model's dtype.
TEST(ModelConfigGemma, EmbedScaleIsRoundedToTheModelsDtype) {
  json c = gemma2_config();
  c["hidden_size"] = 3584;  // Gemma 2 9B: sqrt = 59.866...
  c["dtype"] = "bfloat16";  // 8 significant bits: steps of 0.25 between 32 and 64
  EXPECT_EQ(parse_model_config(c, "c").embed_scale, 59.75f);
  c["dtype"] = "float16";
  EXPECT_EQ(parse_model_config(c, "c").embed_scale, 59.875f);
  c["dtype"] = "float32";
  EXPECT_EQ(parse_model_config(c, "c").embed_scale, float(std::sqrt(3584.0)));
  c.erase("dtype");
  c["torch_dtype"] = "bfloat16";  // the 4.x spelling
  EXPECT_EQ(parse_model_config(c, "c").embed_scale, 59.75f);
  c["hidden_size"] = 2304;  // Gemma 2 2B: 48 exactly in every dtype
  EXPECT_EQ(parse_model_config(c, "c").embed_scale, 48.0f);
}

// A field a Gemma config leaves out takes transformers' default (Gemma2Config,
// Gemma3TextConfig), as transformers itself does; an explicit null turns soft-capping off.
TEST(ModelConfigGemma, MissingFieldsTakeTransformersDefaults) {
  ModelConfig g2 = parse_model_config(json{{"model_type", "gemma2"}}, "c");
  EXPECT_EQ(g2.n_layers, 26);
  EXPECT_EQ(g2.d_model, 2304);
  EXPECT_EQ(g2.head_dim, 256);
  EXPECT_EQ(g2.n_kv_heads, 4);
  EXPECT_EQ(g2.vocab, 256000);
  EXPECT_EQ(g2.attn_softcap, 50.0f);
  EXPECT_EQ(g2.final_softcap, 30.0f);
  EXPECT_EQ(g2.sliding_window, 4096);
  EXPECT_EQ(g2.layer_sliding[0], 1);
  EXPECT_EQ(g2.layer_sliding[1], 0);
  EXPECT_EQ(g2.attn_scale(0), float(1 / std::sqrt(256.0)));
  json off = {{"model_type", "gemma2"}, {"attn_logit_softcapping", nullptr}, {"final_logit_softcapping", nullptr}};
  EXPECT_EQ(parse_model_config(off, "c").attn_softcap, 0.0f);
  EXPECT_EQ(parse_model_config(off, "c").final_softcap, 0.0f);

  ModelConfig g3 = parse_model_config(json{{"model_type", "gemma3_text"}}, "c");
  EXPECT_EQ(g3.vocab, 262208);
  EXPECT_EQ(g3.attn_softcap, 0.0f);
  EXPECT_EQ(g3.rope_theta, 1e6);
  EXPECT_EQ(g3.sliding_rope_theta, 1e4);
  EXPECT_TRUE(g3.qk_norm);
  for (int l = 0; l < 26; l++) EXPECT_EQ(g3.sliding(l), (l + 1) % 6 != 0) << l;  // every 6th layer is global
}

TEST(ModelFixture, LlamaTiedHeadAndExplicitHeadDim) {
  TempDir d;
  json c = llama_config();
  c["tie_word_embeddings"] = true;
  c["head_dim"] = 6;  // 4 heads x 6 != hidden_size 32: o_proj maps 24 -> 32
  Tensors t = write_model(d.path(), c, 5);
  ASSERT_FALSE(t.data.count("lm_head.weight"));
  check_against_naive(d.path(), t);
}

// Llama 3.1 frequencies for head_dim 8, rope_theta 10000, factor 8, low_freq_factor 1,
// high_freq_factor 4, original_max_position_embeddings 1024, derived by hand:
//   base inv_freq_i = 10000^(-2i/8) = 1, 0.1, 0.01, 0.001; wavelength 2*pi/inv_freq =
//   6.283, 62.83, 628.3, 6283. Long-wave limit 1024/1 = 1024, short-wave limit 1024/4 = 256.
//   i=0, 1: wavelength < 256, kept: 1, 0.1.
//   i=2: 256 <= 628.3 <= 1024, smoothed: s = (1024/628.3185 - 1)/(4 - 1) = 0.2099155,
//        inv = (1 - s) * 0.01/8 + s * 0.01 = 0.003086761.
//   i=3: 6283 > 1024, divided by the factor: 0.001/8 = 0.000125.
TEST(ModelFixture, Llama3RopeScalingFrequenciesByHand) {
  json c = llama_config();
  c["hidden_size"] = 32;
  c["num_attention_heads"] = 4;
  c["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 1024}};
  ModelConfig m = parse_model_config(c, "config.json");
  ASSERT_EQ(m.head_dim, 8);
  std::vector<double> inv = m.rope_inv_freq();
  const double want[] = {1.0, 0.1, 0.003086761, 0.000125};
  ASSERT_EQ(inv.size(), 4u);
  for (int i = 0; i < 4; i++) EXPECT_NEAR(inv[size_t(i)], want[i], 1e-9 + 1e-6 * want[i]) << "inv_freq[" << i << "]";

  // The older "type" key and linear scaling: every frequency divided by the factor.
  c["rope_scaling"] = {{"type", "linear"}, {"factor", 4.0}};
  inv = parse_model_config(c, "config.json").rope_inv_freq();
  const double lin[] = {0.25, 0.025, 0.0025, 0.00025};
  for (int i = 0; i < 4; i++) EXPECT_NEAR(inv[size_t(i)], lin[i], 1e-12) << "linear inv_freq[" << i << "]";
}

TEST(ModelFixture, Llama3RopeScalingForward) {
  TempDir d;
  json c = llama_config();
  // A short original context so that, at head_dim 8, all three regimes of the scaling occur.
  c["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 1024}};
  Tensors t = write_model(d.path(), c, 6);
  check_against_naive(d.path(), t);
}

// f16 and bf16 files hold the same numbers as an f32 file of weights rounded to that dtype, so
// the outputs must be identical, bit for bit.
TEST(ModelFixture, HalfPrecisionWeightsLoadExactly) {
  for (DType dt : {DType::f16, DType::bf16}) {
    TempDir half, full;
    Tensors t = write_model(half.path(), llama_config(), 8, dt);
    for (auto& kv : t.data) {
      std::vector<uint16_t> h(kv.second.size());
      encode_f32(dt, kv.second.data(), kv.second.size(), h.data());
      decode_f32(dt, h.data(), h.size(), kv.second.data());
    }
    write_text(full / "config.json", llama_config().dump());
    t.write(full / "model.safetensors", DType::f32);
    auto be = make_cpu_backend();
    Model a(half.path(), *be), b(full.path(), *be);
    std::vector<int32_t> tok = some_tokens(9, 50, 3);
    ForwardResult ra = a.forward(tok.data(), 1, 9, everything(a.config()));
    ForwardResult rb = b.forward(tok.data(), 1, 9, everything(b.config()));
    EXPECT_EQ(ra.logits, rb.logits) << dtype_name(dt);
    EXPECT_EQ(ra.captured, rb.captured) << dtype_name(dt);
    check_against_naive(half.path(), t);
  }
}

namespace {
// Splits `t` into two shards with an index, as save_pretrained does for large models.
void write_sharded(const std::string& dir, const Tensors& t) {
  std::vector<std::string> a(t.order.begin(), t.order.begin() + long(t.order.size() / 2)),
      b(t.order.begin() + long(t.order.size() / 2), t.order.end());
  t.write(dir + "/model-00001-of-00002.safetensors", DType::bf16, &a);
  t.write(dir + "/model-00002-of-00002.safetensors", DType::f32, &b);
  json idx = {{"metadata", {{"total_size", 0}}}, {"weight_map", json::object()}};
  for (const auto& n : a) idx["weight_map"][n] = "model-00001-of-00002.safetensors";
  for (const auto& n : b) idx["weight_map"][n] = "model-00002-of-00002.safetensors";
  write_text(dir + "/model.safetensors.index.json", idx.dump(2));
}
}  // namespace

TEST(ModelFixture, ShardedIndexWithMixedDtypes) {
  TempDir d;
  write_text(d / "config.json", gpt2_config().dump());
  Tensors t = random_weights(parse_model_config(gpt2_config(), "c"), 9);
  // Round the first shard's tensors to bf16 so that the naive pass sees what the file holds.
  for (size_t i = 0; i < t.order.size() / 2; i++) {
    auto& v = t.data[t.order[i]];
    for (auto& x : v) x = bf16_to_f32(f32_to_bf16(x));
  }
  write_sharded(d.path(), t);
  check_against_naive(d.path(), t);
}

TEST(ModelLoadErrors, MissingShard) {
  TempDir d;
  write_text(d / "config.json", gpt2_config().dump());
  Tensors t = random_weights(parse_model_config(gpt2_config(), "c"), 9);
  write_sharded(d.path(), t);
  fs::remove(d / "model-00002-of-00002.safetensors");
  std::string msg = load_error(d.path());
  EXPECT_NE(msg.find(d / "model.safetensors.index.json: shard 'model-00002-of-00002.safetensors' is missing (it holds tensor '"),
            std::string::npos)
      << msg;
}

TEST(ModelLoadErrors, CorruptHeaderTruncatedAndShortTensors) {
  TempDir d;
  Tensors t = write_model(d.path(), gpt2_config(), 10);
  const std::string st = d / "model.safetensors";
  std::ifstream in(st, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  uint64_t hlen;
  memcpy(&hlen, bytes.data(), 8);

  // A header that is not JSON.
  std::string bad = bytes;
  bad[8] = '#';
  write_text(st, bad);
  EXPECT_EQ(load_error(d.path()).rfind(st + ": bad safetensors header (invalid JSON: ", 0), 0u) << load_error(d.path());

  // A header length past the end of the file.
  bad = bytes;
  uint64_t huge = bytes.size();
  memcpy(bad.data(), &huge, 8);
  write_text(st, bad);
  EXPECT_EQ(load_error(d.path()), st + ": bad safetensors header (header length " + std::to_string(huge) +
                                     " exceeds the file size " + std::to_string(bytes.size()) + ")");

  // The file cut short: the last tensor's data runs past the end.
  write_text(st, bytes.substr(0, bytes.size() - 10));
  std::string msg = load_error(d.path());
  EXPECT_NE(msg.find("data runs past the end of the file (truncated file?"), std::string::npos) << msg;
  EXPECT_EQ(msg.rfind(st + ": tensor '", 0), 0u) << msg;

  // A tensor whose byte range is shorter than its declared shape.
  json h = json::parse(bytes.substr(8, hlen));
  auto& e = h["transformer.ln_f.bias"];
  e["data_offsets"][1] = e["data_offsets"][1].get<int64_t>() - 4;
  std::string hs = h.dump();
  uint64_t n = hs.size();
  std::string shortened(8, '\0');
  memcpy(shortened.data(), &n, 8);
  write_text(st, shortened + hs + bytes.substr(8 + hlen));
  EXPECT_EQ(load_error(d.path()), st + ": tensor 'transformer.ln_f.bias': holds 60 bytes but its shape [16] of F32 needs 64");
}

TEST(ModelLoadErrors, MissingOrMisshapenTensorAndMissingFiles) {
  TempDir d;
  Tensors t = write_model(d.path(), llama_config(), 11);
  std::vector<std::string> keep;
  for (const auto& n : t.order)
    if (n != "model.layers.1.mlp.up_proj.weight") keep.push_back(n);
  t.write(d / "model.safetensors", DType::f32, &keep);
  EXPECT_EQ(load_error(d.path()), d.path() + ": missing tensor 'model.layers.1.mlp.up_proj.weight' (looked in model.safetensors)");

  t.shape["model.norm.weight"] = {2, 16};
  t.write(d / "model.safetensors");
  EXPECT_EQ(load_error(d.path()), d / "model.safetensors" + ": tensor 'model.norm.weight' has shape [2, 16], expected [32]");

  fs::remove(d / "model.safetensors");
  EXPECT_EQ(load_error(d.path()), d.path() + ": no model.safetensors or model.safetensors.index.json (only safetensors weights are read)");
  fs::remove(d / "config.json");
  EXPECT_EQ(load_error(d.path()), d / "config.json" + ": missing (a model directory needs config.json)");
  EXPECT_EQ(load_error(d / "nope"), d / "nope" + ": not a model directory (no such directory)");
  write_text(d / "config.json", "{\"model_type\": ");
  EXPECT_EQ(load_error(d.path()).rfind(d / "config.json" + ": invalid JSON (", 0), 0u);
}

namespace {
std::string config_error(json c) {
  return error_of<InputError>([&] { parse_model_config(c, "m/config.json"); });
}
}  // namespace

// Every setting the pass cannot reproduce exactly is refused, naming the field.
TEST(ModelConfigErrors, UnsupportedValuesNameTheField) {
  json c = llama_config();
  c["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  EXPECT_EQ(config_error(c), "m/config.json: rope_scaling.rope_type: 'yarn' is not supported (supported: default, linear, llama3)");
  c["rope_scaling"] = {{"type", "dynamic"}, {"factor", 2.0}};
  EXPECT_EQ(config_error(c), "m/config.json: rope_scaling.type: 'dynamic' is not supported (supported: default, linear, llama3)");
  c["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}};
  EXPECT_EQ(config_error(c), "m/config.json: rope_scaling.low_freq_factor: missing (required for rope type 'llama3')");

  c = llama_config();
  c["hidden_act"] = "gelu";
  EXPECT_EQ(config_error(c), "m/config.json: hidden_act: 'gelu' is not supported (the Llama family uses silu)");
  c = llama_config();
  c["partial_rotary_factor"] = 0.5;
  EXPECT_EQ(config_error(c), "m/config.json: partial_rotary_factor: value 0.5 is not supported (only 1.0)");
  c = llama_config();
  c["num_key_value_heads"] = 3;
  EXPECT_EQ(config_error(c), "m/config.json: num_key_value_heads: 3 does not divide num_attention_heads 4");
  c = llama_config();
  c.erase("num_hidden_layers");
  EXPECT_EQ(config_error(c), "m/config.json: num_hidden_layers: missing (required for model_type 'llama')");
  c = llama_config();
  c["hidden_size"] = "32";
  EXPECT_EQ(config_error(c), "m/config.json: hidden_size: expected an integer, found \"32\"");
  c = llama_config();
  c["architectures"] = {"LlamaForSequenceClassification"};
  EXPECT_EQ(config_error(c), "m/config.json: architectures: 'LlamaForSequenceClassification' is not supported (expected LlamaForCausalLM, LlamaModel)");

  c = gpt2_config();
  c["activation_function"] = "quick_gelu";
  EXPECT_EQ(config_error(c), "m/config.json: activation_function: 'quick_gelu' is not supported (gelu_new, gelu_pytorch_tanh, gelu_fast, gelu, relu, silu)");
  c = gpt2_config();
  c["add_cross_attention"] = true;
  EXPECT_EQ(config_error(c), "m/config.json: add_cross_attention: value true is not supported (the forward pass would not match the model)");
  c = gpt2_config();
  c["model_type"] = "bert";
  EXPECT_EQ(config_error(c), "m/config.json: model_type: 'bert' is not supported (supported: gpt2, llama, mistral, "
                             "qwen2, qwen3, gemma2, gemma3_text, gemma3, gpt_neox)");
  c.erase("model_type");
  EXPECT_EQ(config_error(c), "m/config.json: model_type: missing (cannot tell the architecture)");
}

// The bad inputs of the newer families, each naming its field.
TEST(ModelConfigErrors, NewFamiliesNameTheField) {
  json c = gemma2_config();
  c["model_type"] = "gemma3_text";
  c["architectures"] = {"Gemma3ForCausalLM"};
  c["layer_types"] = {"sliding_attention", "chunked_attention", "full_attention"};
  EXPECT_EQ(config_error(c), "m/config.json: layer_types[1]: \"chunked_attention\" is not supported (expected "
                             "sliding_attention or full_attention)");
  c["layer_types"] = {"sliding_attention", "full_attention"};
  EXPECT_EQ(config_error(c), "m/config.json: layer_types: expected a list of 3 layer types, found "
                             "[\"sliding_attention\",\"full_attention\"]");
  c.erase("layer_types");
  c["use_bidirectional_attention"] = true;
  EXPECT_EQ(config_error(c), "m/config.json: use_bidirectional_attention: value true is not supported (the forward "
                             "pass would not match the model)");

  c = llama_config();
  c["num_attention_heads"] = 5;
  c["num_key_value_heads"] = 5;
  EXPECT_EQ(config_error(c), "m/config.json: head_dim: missing, and cannot be derived: num_attention_heads 5 does not "
                             "divide hidden_size 32");

  c = neox_config();
  c["rotary_pct"] = 0.375;  // 3 of 8 dimensions
  EXPECT_EQ(config_error(c), "m/config.json: rotary_pct: 0.375 of head_dim 8 leaves 3 rotary dimensions, an odd number "
                             "(rotary pairs them)");
  c.erase("rotary_pct");
  c["rope_parameters"] = {{"rope_theta", 10000}, {"partial_rotary_factor", 0.125}};  // 1 of 8
  EXPECT_EQ(config_error(c), "m/config.json: rope_parameters.partial_rotary_factor: 0.125 of head_dim 8 leaves 1 rotary "
                             "dimensions, an odd number (rotary pairs them)");
  c = neox_config();
  c["architectures"] = {"GPTNeoXForTokenClassification"};
  EXPECT_EQ(config_error(c), "m/config.json: architectures: 'GPTNeoXForTokenClassification' is not supported (expected "
                             "GPTNeoXForCausalLM, GPTNeoXModel)");

  json mm = {{"model_type", "gemma3"}, {"architectures", {"Gemma3ForConditionalGeneration"}}, {"vision_config", json::object()}};
  EXPECT_EQ(config_error(mm), "m/config.json: text_config: missing (a multimodal Gemma 3 config holds its text model "
                              "there; without it there is no text tower to run)");
  mm["text_config"] = {{"model_type", "siglip"}};
  EXPECT_EQ(config_error(mm), "m/config.json: text_config.model_type: 'siglip' is not supported (expected gemma3_text)");
  mm["text_config"] = {{"hidden_size", "wide"}};
  EXPECT_EQ(config_error(mm), "m/config.json: text_config.hidden_size: expected an integer, found \"wide\"");
}

// GPT-NeoX's parallel residual has no resid_mid: the hook is refused by name, with the reason.
TEST(ModelHooks, ParallelResidualHasNoResidMid) {
  const ModelConfig c = parse_model_config(neox_config(), "c");
  EXPECT_EQ(error_of<UsageError>([&] { parse_hook("blocks.1.hook_resid_mid", c); }),
            "hook 'blocks.1.hook_resid_mid': this gpt_neox model has a parallel residual (attention and the MLP both read "
            "resid_pre), so there is no resid_mid; resid_post = resid_pre + attn_out + mlp_out");
  EXPECT_EQ(model_hooks(c).size(), size_t(2 * 5));
  TempDir d;
  write_model(d.path(), neox_config(), 25);
  auto be = make_cpu_backend();
  Model m(d.path(), *be);
  ForwardOptions o;
  o.capture = {{0, HookKind::resid_mid}};
  std::vector<int32_t> tok = some_tokens(4, 50, 1);
  EXPECT_EQ(error_of<UsageError>([&] { m.forward(tok.data(), 1, 4, o); }),
            "forward: hook blocks.0.hook_resid_mid does not exist under a parallel residual");
}

// A sliding window equals full attention while the sequence fits in it, so it lowers the longest
// accepted context (named in the error) instead of being approximated.
TEST(ModelConfigErrors, SlidingWindowLimitsTheContext) {
  json c = llama_config();
  c["model_type"] = "mistral";
  c["architectures"] = {"MistralForCausalLM"};
  c["sliding_window"] = 16;
  ModelConfig m = parse_model_config(c, "m/config.json");
  EXPECT_EQ(m.max_positions, 16);
  EXPECT_EQ(m.max_positions_field, "sliding_window");
  c["sliding_window"] = nullptr;
  EXPECT_EQ(parse_model_config(c, "m/config.json").max_positions, 64);

  c = llama_config();
  c["model_type"] = "qwen2";
  c["architectures"] = {"Qwen2ForCausalLM"};
  c["use_sliding_window"] = true;
  c["sliding_window"] = 8;
  TempDir d;
  Tensors t = write_model(d.path(), c, 12);
  auto be = make_cpu_backend();
  Model model(d.path(), *be);
  std::vector<int32_t> tok = some_tokens(9, 50, 1);
  ForwardOptions o;
  o.want_nll = true;
  EXPECT_EQ(error_of<InputError>([&] { model.forward(tok.data(), 1, 9, o); }),
            "sequence of 9 tokens is longer than the model's 8 positions (sliding_window)");
  EXPECT_NO_THROW(model.forward(tok.data(), 1, 8, o));
}

TEST(ModelHooks, NamesParseAndErrorsNameTheHook) {
  ModelConfig c = parse_model_config(llama_config(), "c");
  HookPoint h = parse_hook("blocks.1.hook_mlp_out", c);
  EXPECT_EQ(h.layer, 1);
  EXPECT_EQ(h.kind, HookKind::mlp_out);
  EXPECT_EQ(h.name(), "blocks.1.hook_mlp_out");
  for (const char* n : {"blocks.0.hook_resid_pre", "blocks.0.hook_attn_out", "blocks.0.hook_resid_mid",
                        "blocks.1.hook_resid_post", "blocks.1.attn.hook_z"})
    EXPECT_EQ(parse_hook(n, c).name(), n);
  // hook_z is the heads' concatenated outputs: n_heads x head_dim wide, the residual hooks d_model.
  EXPECT_EQ(parse_hook("blocks.1.attn.hook_z", c).kind, HookKind::attn_z);
  EXPECT_EQ(hook_width(parse_hook("blocks.1.attn.hook_z", c), c), int64_t(c.n_heads) * c.head_dim);
  EXPECT_EQ(hook_width(parse_hook("blocks.1.hook_mlp_out", c), c), c.d_model);
  EXPECT_EQ(error_of<UsageError>([&] { parse_hook("blocks.2.hook_resid_post", c); }),
            "hook 'blocks.2.hook_resid_post': layer 2 is out of range (the model has 2 layers, 0-1)");
  const std::string expect = "expected blocks.L.hook_{resid_pre,attn_out,resid_mid,mlp_out,resid_post} or blocks.L.attn.hook_z";
  for (const char* n : {"blocks.0.hook_q", "blocks.x.hook_resid_pre", "ln_final.hook_normalized", "blocks.0",
                        "blocks..hook_resid_pre", "blocks.0.hook_resid_post.x"})
    EXPECT_EQ(error_of<UsageError>([&] { parse_hook(n, c); }), std::string("hook '") + n + "': unknown hook name (" + expect + ")");
}

TEST(ModelForward, ContextLongerThanPositionsAndBadTokens) {
  TempDir d;
  write_model(d.path(), gpt2_config(), 13);
  auto be = make_cpu_backend();
  Model m(d.path(), *be);
  std::vector<int32_t> tok(33, 1);
  ForwardOptions o;
  o.want_logits = true;
  EXPECT_EQ(error_of<InputError>([&] { m.forward(tok.data(), 1, 33, o); }),
            "sequence of 33 tokens is longer than the model's 32 positions (n_positions)");
  tok[5] = 50;
  EXPECT_EQ(error_of<InputError>([&] { m.forward(tok.data(), 1, 8, o); }),
            "token id 50 is outside the vocabulary (size 50)");
}

// The pass ends at the deepest hook: with NaN weights in block 1's MLP, hooks up to block 1's
// resid_mid are finite and correct, while asking for the logits runs into the NaNs.
TEST(ModelForward, StopsAfterTheDeepestHook) {
  TempDir d;
  json c = llama_config();
  write_text(d / "config.json", c.dump());
  Tensors t = random_weights(parse_model_config(c, "c"), 14);
  Tensors clean = t;
  for (auto& x : t.data["model.layers.1.mlp.down_proj.weight"]) x = NAN;
  t.write(d / "model.safetensors");
  auto be = make_cpu_backend();
  Model m(d.path(), *be);
  std::vector<int32_t> tok = some_tokens(10, 50, 2);
  ForwardOptions o;
  o.capture = {{1, HookKind::resid_mid}, {0, HookKind::mlp_out}};
  ForwardResult r = m.forward(tok.data(), 1, 10, o);
  NaiveOut ref = naive_forward(m.config(), getter(clean), tok);
  EXPECT_LE(scaled_err(r.captured[0], ref.hooks["blocks.1.hook_resid_mid"]), kTol);
  EXPECT_LE(scaled_err(r.captured[1], ref.hooks["blocks.0.hook_mlp_out"]), kTol);
  EXPECT_TRUE(r.logits.empty());
  o.want_logits = true;
  r = m.forward(tok.data(), 1, 10, o);
  EXPECT_TRUE(std::isnan(r.logits[0]));
}

// sae-eval's splice: an identity edit reproduces the clean NLL bit for bit; a zero edit changes
// it; the captured activations are the edited ones; log-probs, NLL and KL agree with each other.
TEST(ModelForward, HookEditsLogProbsAndKl) {
  TempDir d;
  write_model(d.path(), llama_config(), 15);
  auto be = make_cpu_backend();
  Model m(d.path(), *be);
  const int64_t B = 2, T = 12, V = 50;
  std::vector<int32_t> tok = some_tokens(int(B * T), 50, 4);
  ForwardOptions clean;
  clean.want_nll = true;
  clean.want_log_probs = true;
  ForwardResult base = m.forward(tok.data(), B, T, clean);
  ASSERT_EQ(base.nll.size(), size_t(B * (T - 1)));
  ASSERT_EQ(base.logits.size(), size_t(B * T * V));
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t + 1 < T; t++) {
      const float* lp = base.logits.data() + (b * T + t) * V;
      double total = 0;
      for (int64_t v = 0; v < V; v++) total += std::exp(double(lp[v]));
      EXPECT_NEAR(total, 1.0, 1e-5);
      EXPECT_NEAR(base.nll[size_t(b * (T - 1) + t)], -lp[tok[size_t(b * T + t + 1)]], 1e-5);
    }

  const HookPoint at = parse_hook("blocks.0.hook_resid_post", m.config());
  int calls = 0;
  ForwardOptions ident = clean;
  ident.edits.push_back({at, [&](float* x, int64_t rows, int64_t dm, Backend& bk) {
                           calls++;
                           EXPECT_EQ(rows, B * T);
                           EXPECT_EQ(dm, 32);
                           EXPECT_EQ(&bk, &m.backend());
                           std::vector<float> h(size_t(rows * dm));
                           bk.to_host(h.data(), x, h.size() * sizeof(float));
                           bk.to_device(x, h.data(), h.size() * sizeof(float));
                         }});
  ForwardResult same = m.forward(tok.data(), B, T, ident);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(same.nll, base.nll);
  EXPECT_EQ(same.logits, base.logits);

  ForwardOptions zero = clean;
  zero.capture = {at};
  zero.edits.push_back({at, [](float* x, int64_t rows, int64_t dm, Backend& bk) { bk.zero(x, size_t(rows * dm) * sizeof(float)); }});
  ForwardResult z = m.forward(tok.data(), B, T, zero);
  EXPECT_EQ(z.captured[0], std::vector<float>(size_t(B * T * 32), 0.0f));
  double base_mean = 0, zero_mean = 0;
  for (size_t i = 0; i < base.nll.size(); i++) {
    base_mean += base.nll[i];
    zero_mean += z.nll[i];
  }
  EXPECT_GT(std::fabs(zero_mean - base_mean) / double(base.nll.size()), 0.05);

  std::vector<double> kl_same = kl_divergence_rows(base.logits.data(), same.logits.data(), B * T, V);
  std::vector<double> kl_zero = kl_divergence_rows(base.logits.data(), z.logits.data(), B * T, V);
  for (int64_t r = 0; r < B * T; r++) {
    EXPECT_EQ(kl_same[size_t(r)], 0.0);
    EXPECT_GT(kl_zero[size_t(r)], 1e-4);
  }
  // The zero edit at resid_post of block 0 equals running block 1 on a zero residual, which the
  // naive pass cannot express; instead check one row by hand: with a zero residual entering
  // block 1, RMSNorm gives zeros, so block 1's attention and MLP add nothing but biases (none
  // here), and the logits are those of a zero final residual: all zero.
  for (int64_t v = 0; v < V; v++) EXPECT_NEAR(z.logits[size_t(v)], -std::log(double(V)), 1e-5);
}

// The BOS every window starts with: the tokenizer's, else config.json's; none, or one outside
// the vocabulary, is an InputError naming the model directory.
TEST(ModelConfig, SequenceBosFallsBackToTheConfig) {
  ModelConfig c = parse_model_config(llama_config(), "c");  // no bos_token_id: -1
  EXPECT_EQ(sequence_bos(7, c, "m"), 7);
  EXPECT_EQ(error_of<InputError>([&] { sequence_bos(-1, c, "m"); }), "m: the model has no BOS token to start each sequence with");
  c.bos_token_id = 3;
  EXPECT_EQ(sequence_bos(-1, c, "m"), 3);
  EXPECT_EQ(error_of<InputError>([&] { sequence_bos(50, c, "m"); }),
            "m: the BOS token id 50 is outside the model's vocabulary");
  EXPECT_EQ(error_of<UsageError>([&] { parse_compute_option("fp8"); }),
            "--compute: unknown compute type 'fp8' (expected f32 or bf16)");
}
