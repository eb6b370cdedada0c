// Random model directories (model/random.h). The generator is std::mt19937 with
// std::normal_distribution<float>, drawn tensor by tensor in the order below: the tests' fixtures
// depend on this order.
#include "model/random.h"

#include <fstream>
#include <random>
#include <stdexcept>

#include "base/errors.h"
#include "stream/safetensors.h"

namespace sae {

void ModelTensors::add(const std::string& n, std::vector<int64_t> s, std::vector<float> v) {
  if (!data.count(n)) order.push_back(n);
  data[n] = std::move(v);
  shape[n] = std::move(s);
}

const std::vector<float>& ModelTensors::get(const std::string& n) const {
  auto it = data.find(n);
  if (it == data.end()) throw std::runtime_error("random model has no tensor " + n);
  return it->second;
}

void ModelTensors::write(const std::string& path, DType dt, const std::vector<std::string>* only) const {
  SafeTensorsWriter w;
  w.set_metadata("format", "pt");
  for (const auto& n : only ? *only : order) w.add(n, shape.at(n), data.at(n).data(), dt);
  w.write(path);
}

namespace {

size_t sz(int64_t v) { return static_cast<size_t>(v); }

std::vector<float> randn(std::mt19937& g, size_t n, float scale, float mean = 0.0f) {
  std::normal_distribution<float> d(mean, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

}  // namespace

ModelTensors random_model_tensors(const ModelConfig& c, uint32_t seed, const std::string& gpt2_prefix) {
  std::mt19937 g(seed);
  ModelTensors t;
  const int64_t D = c.d_model, I = c.d_mlp, V = c.vocab, A = int64_t(c.n_heads) * c.head_dim,
                KV = int64_t(c.n_kv_heads) * c.head_dim;
  const float ws = 0.3f;
  if (c.arch == ModelArch::gpt2) {
    const std::string p = gpt2_prefix;
    t.add(p + "wte.weight", {V, D}, randn(g, sz(V * D), 0.5f));
    t.add(p + "wpe.weight", {c.max_positions, D}, randn(g, sz(c.max_positions * D), 0.2f));
    for (int l = 0; l < c.n_layers; l++) {
      std::string h = p + "h." + std::to_string(l) + ".";
      t.add(h + "ln_1.weight", {D}, randn(g, sz(D), 0.1f, 1.0f));
      t.add(h + "ln_1.bias", {D}, randn(g, sz(D), 0.1f));
      t.add(h + "attn.c_attn.weight", {D, 3 * D}, randn(g, sz(3 * D * D), ws));
      t.add(h + "attn.c_attn.bias", {3 * D}, randn(g, sz(3 * D), 0.1f));
      t.add(h + "attn.c_proj.weight", {D, D}, randn(g, sz(D * D), ws));
      t.add(h + "attn.c_proj.bias", {D}, randn(g, sz(D), 0.1f));
      t.add(h + "ln_2.weight", {D}, randn(g, sz(D), 0.1f, 1.0f));
      t.add(h + "ln_2.bias", {D}, randn(g, sz(D), 0.1f));
      t.add(h + "mlp.c_fc.weight", {D, I}, randn(g, sz(D * I), ws));
      t.add(h + "mlp.c_fc.bias", {I}, randn(g, sz(I), 0.1f));
      t.add(h + "mlp.c_proj.weight", {I, D}, randn(g, sz(I * D), ws));
      t.add(h + "mlp.c_proj.bias", {D}, randn(g, sz(D), 0.1f));
    }
    t.add(p + "ln_f.weight", {D}, randn(g, sz(D), 0.1f, 1.0f));
    t.add(p + "ln_f.bias", {D}, randn(g, sz(D), 0.1f));
  } else if (c.arch == ModelArch::neox) {
    // Biases and norms as GPT-2's; query_key_value packed per head as GPT-NeoX stores it.
    const std::string p = "gpt_neox.";
    t.add(p + "embed_in.weight", {V, D}, randn(g, sz(V * D), 0.5f));
    for (int l = 0; l < c.n_layers; l++) {
      std::string h = p + "layers." + std::to_string(l) + ".";
      t.add(h + "input_layernorm.weight", {D}, randn(g, sz(D), 0.1f, 1.0f));
      t.add(h + "input_layernorm.bias", {D}, randn(g, sz(D), 0.1f));
      t.add(h + "post_attention_layernorm.weight", {D}, randn(g, sz(D), 0.1f, 1.0f));
      t.add(h + "post_attention_layernorm.bias", {D}, randn(g, sz(D), 0.1f));
      t.add(h + "attention.query_key_value.weight", {3 * D, D}, randn(g, sz(3 * D * D), ws));
      if (c.qkv_bias) t.add(h + "attention.query_key_value.bias", {3 * D}, randn(g, sz(3 * D), 0.1f));
      t.add(h + "attention.dense.weight", {D, D}, randn(g, sz(D * D), ws));
      if (c.o_bias) t.add(h + "attention.dense.bias", {D}, randn(g, sz(D), 0.1f));
      t.add(h + "mlp.dense_h_to_4h.weight", {I, D}, randn(g, sz(I * D), ws));
      t.add(h + "mlp.dense_h_to_4h.bias", {I}, randn(g, sz(I), 0.1f));
      t.add(h + "mlp.dense_4h_to_h.weight", {D, I}, randn(g, sz(D * I), ws));
      t.add(h + "mlp.dense_4h_to_h.bias", {D}, randn(g, sz(D), 0.1f));
    }
    t.add(p + "final_layer_norm.weight", {D}, randn(g, sz(D), 0.1f, 1.0f));
    t.add(p + "final_layer_norm.bias", {D}, randn(g, sz(D), 0.1f));
    if (!c.tied_head) t.add("embed_out.weight", {V, D}, randn(g, sz(V * D), 0.5f));
    return t;
  } else {
    // Llama and Gemma. Gemma stores its RMSNorm weights as w for a scale of (1 + w): drawn
    // around 0 instead of 1, so that the scale is 1 +- 0.1 either way.
    const float norm_mean = c.arch == ModelArch::gemma ? 0.0f : 1.0f;
    auto norm = [&](const std::string& name, int64_t n) { t.add(name, {n}, randn(g, sz(n), 0.1f, norm_mean)); };
    t.add("model.embed_tokens.weight", {V, D}, randn(g, sz(V * D), 0.5f));
    for (int l = 0; l < c.n_layers; l++) {
      std::string h = "model.layers." + std::to_string(l) + ".";
      norm(h + "input_layernorm.weight", D);
      t.add(h + "self_attn.q_proj.weight", {A, D}, randn(g, sz(A * D), ws));
      t.add(h + "self_attn.k_proj.weight", {KV, D}, randn(g, sz(KV * D), ws));
      t.add(h + "self_attn.v_proj.weight", {KV, D}, randn(g, sz(KV * D), ws));
      if (c.qkv_bias) {
        t.add(h + "self_attn.q_proj.bias", {A}, randn(g, sz(A), 0.3f));
        t.add(h + "self_attn.k_proj.bias", {KV}, randn(g, sz(KV), 0.3f));
        t.add(h + "self_attn.v_proj.bias", {KV}, randn(g, sz(KV), 0.3f));
      }
      if (c.qk_norm) {
        norm(h + "self_attn.q_norm.weight", c.head_dim);
        norm(h + "self_attn.k_norm.weight", c.head_dim);
      }
      t.add(h + "self_attn.o_proj.weight", {D, A}, randn(g, sz(D * A), ws));
      if (c.o_bias) t.add(h + "self_attn.o_proj.bias", {D}, randn(g, sz(D), 0.3f));
      norm(h + "post_attention_layernorm.weight", D);
      if (c.arch == ModelArch::gemma) {
        norm(h + "pre_feedforward_layernorm.weight", D);
        norm(h + "post_feedforward_layernorm.weight", D);
      }
      t.add(h + "mlp.gate_proj.weight", {I, D}, randn(g, sz(I * D), ws));
      t.add(h + "mlp.up_proj.weight", {I, D}, randn(g, sz(I * D), ws));
      t.add(h + "mlp.down_proj.weight", {D, I}, randn(g, sz(D * I), ws));
      if (c.mlp_bias) {
        t.add(h + "mlp.gate_proj.bias", {I}, randn(g, sz(I), 0.3f));
        t.add(h + "mlp.up_proj.bias", {I}, randn(g, sz(I), 0.3f));
        t.add(h + "mlp.down_proj.bias", {D}, randn(g, sz(D), 0.3f));
      }
    }
    norm("model.norm.weight", D);
  }
  if (!c.tied_head) t.add("lm_head.weight", {V, D}, randn(g, sz(V * D), 0.5f));
  return t;
}

ModelTensors write_random_model(const std::string& dir, const nlohmann::json& cfg, uint32_t seed, DType dt,
                                const std::string& gpt2_prefix) {
  const std::string path = dir + "/config.json";
  std::ofstream f(path, std::ios::binary);
  f << cfg.dump(2);
  f.close();
  if (!f) throw std::runtime_error(path + ": cannot write");
  ModelTensors t = random_model_tensors(parse_model_config(cfg, path), seed, gpt2_prefix);
  t.write(dir + "/model.safetensors", dt);
  return t;
}

}  // namespace sae
