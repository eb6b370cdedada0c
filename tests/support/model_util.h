// Helpers shared by the model tests: the ../shared location, scratch directories, random model
// fixtures (lib/model/random.h), and a naive double-precision forward pass that reads
// Hugging Face tensor names directly (no code shared with lib/model*.cpp beyond the config and
// rope_inv_freq, which have their own tests). The naive pass is itself checked against the
// reference outputs in ../shared, then used as the reference for the fixtures.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "base/files.h"
#include "model/model.h"
#include "model/random.h"
#include "stream/safetensors.h"

namespace model_test {

using namespace sae;
using json = nlohmann::json;
namespace fs = std::filesystem;

// A cast that the compiler cannot mistake for a declarator (`std::vector<double> y(size_t(n))`
// declares a function).
inline size_t sz(int64_t v) { return static_cast<size_t>(v); }

inline std::string shared_dir() {
  const char* e = std::getenv("SAE_SHARED");
  return e ? e : std::string(SAE_SOURCE_DIR) + "/../shared";
}
inline std::string shared_model(const std::string& name) { return shared_dir() + "/models/" + name; }
inline bool have_shared() { return fs::is_directory(shared_dir() + "/models"); }
#define NEED_SHARED()                                                                               \
  do {                                                                                              \
    if (!model_test::have_shared()) GTEST_SKIP() << "../shared is absent (set SAE_SHARED to the test data)"; \
  } while (0)

using sae::TempDir;  // a scratch directory removed at the end of the test (base/files.h)

inline void write_text(const std::string& path, const std::string& s) {
  std::ofstream(path, std::ios::binary) << s;
}

// max |a - ref| / max |ref|: the error relative to the tensor's scale (elementwise relative
// errors are meaningless for entries that happen to be near zero).
template <class A, class B>
double scaled_err(const A& a, const B& ref) {
  double num = 0, den = 0;
  EXPECT_EQ(a.size(), ref.size());
  for (size_t i = 0; i < a.size() && i < ref.size(); i++) {
    num = std::max(num, std::fabs(double(a[i]) - double(ref[i])));
    den = std::max(den, std::fabs(double(ref[i])));
  }
  return den > 0 ? num / den : num;
}

// Fixture tensors by Hugging Face name and random fixture weights: lib/model/random.h (the GPU
// self-test writes its models with them too).
using Tensors = ModelTensors;
inline Tensors random_weights(const ModelConfig& c, uint32_t seed, const std::string& gpt2_prefix = "transformer.") {
  return random_model_tensors(c, seed, gpt2_prefix);
}

struct NaiveOut {
  std::map<std::string, std::vector<double>> hooks;  // "blocks.L.hook_X", "blocks.L.attn.hook_z" -> [T, width]
  std::vector<double> logits;                        // [T, V]
  std::vector<double> nll;                           // [T-1]
};

// One sequence through the model, one token at a time, in double, straight from the config's
// definition, for every family: GPT-2, Llama (Qwen3's q/k norms included), Gemma 2/3 and
// GPT-NeoX (both residual forms). `get(name)` returns a tensor by its Hugging Face name (GPT-2
// names without the "transformer." prefix; the getter adds whatever the file uses).
inline NaiveOut naive_forward(const ModelConfig& c, const std::function<std::vector<float>(const std::string&)>& get,
                              const std::vector<int32_t>& tokens) {
  const bool gpt2 = c.arch == ModelArch::gpt2, neox = c.arch == ModelArch::neox, gemma = c.arch == ModelArch::gemma;
  const bool layernorm = gpt2 || neox;
  const int64_t T = int64_t(tokens.size()), D = c.d_model, I = c.d_mlp, V = c.vocab, H = c.n_heads,
                KVH = c.n_kv_heads, dh = c.head_dim;
  using Vec = std::vector<double>;
  using Mat = std::vector<Vec>;
  std::map<std::string, std::vector<float>> cache;
  auto getc = [&](const std::string& n) -> const std::vector<float>& {
    auto it = cache.find(n);
    if (it == cache.end()) it = cache.emplace(n, get(n)).first;
    return it->second;
  };
  // LayerNorm (GPT-2, NeoX: weight and bias) or RMSNorm (weight; Gemma's scales by 1 + w).
  auto norm = [&](const Vec& x, const std::string& prefix) {
    const int64_t n = int64_t(x.size());
    const std::vector<float>& W = getc(prefix + ".weight");
    Vec y(sz(n));
    if (layernorm) {
      const std::vector<float>& B = getc(prefix + ".bias");
      double mean = 0, var = 0;
      for (double v : x) mean += v;
      mean /= double(n);
      for (double v : x) var += (v - mean) * (v - mean);
      var /= double(n);
      for (int64_t i = 0; i < n; i++) y[sz(i)] = (x[sz(i)] - mean) / std::sqrt(var + c.norm_eps) * W[sz(i)] + B[sz(i)];
    } else {
      double ms = 0;
      for (double v : x) ms += v * v;
      ms /= double(n);
      for (int64_t i = 0; i < n; i++)
        y[sz(i)] = x[sz(i)] / std::sqrt(ms + c.norm_eps) * (gemma ? 1.0 + W[sz(i)] : double(W[sz(i)]));
    }
    return y;
  };
  // y = x W for W stored [in, out] (Conv1D) or y = x W^T for W stored [out, in] (Linear).
  auto mm = [&](const Vec& x, const std::string& w, int64_t in, int64_t out, bool linear, const std::string& bias = "") {
    const std::vector<float>& W = getc(w);
    Vec y(sz(out), 0.0);
    for (int64_t o = 0; o < out; o++) {
      double s = 0;
      for (int64_t i = 0; i < in; i++) s += x[sz(i)] * double(W[sz(linear ? o * in + i : i * out + o)]);
      y[sz(o)] = s;
    }
    if (!bias.empty()) {
      const std::vector<float>& B = getc(bias);
      for (int64_t o = 0; o < out; o++) y[sz(o)] += B[sz(o)];
    }
    return y;
  };
  auto act = [&](double x) {
    switch (c.act) {
      case tk::Activation::gelu_tanh: return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
      case tk::Activation::gelu_erf: return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
      case tk::Activation::relu: return x > 0 ? x : 0.0;
      case tk::Activation::silu: return x / (1 + std::exp(-x));
    }
    return x;
  };
  NaiveOut out;
  auto record = [&](const std::string& name, const Mat& m) {
    auto& v = out.hooks[name];
    for (const auto& r : m) v.insert(v.end(), r.begin(), r.end());
  };
  const std::string embed = gpt2 ? "wte.weight" : neox ? "gpt_neox.embed_in.weight" : "model.embed_tokens.weight";
  std::vector<float> wte = getc(embed);
  std::vector<float> wpe = gpt2 ? getc("wpe.weight") : std::vector<float>{};
  Mat x(sz(T), Vec(sz(D)));
  for (int64_t t = 0; t < T; t++)
    for (int64_t i = 0; i < D; i++)
      x[sz(t)][sz(i)] = double(wte[sz(tokens[sz(t)] * D + i)]) * c.embed_scale + (gpt2 ? wpe[sz(t * D + i)] : 0.0);
  // Rotary embedding of the first rotary_dims of each head: pairs (i, i + rotary_dims/2).
  const int64_t rot = c.rotary_dims;
  auto rope = [&](Vec& v, int64_t heads, int64_t t, const std::vector<double>& inv) {
    for (int64_t h = 0; h < heads; h++)
      for (int64_t i = 0; i < rot / 2; i++) {
        double a = v[sz(h * dh + i)], b = v[sz(h * dh + i + rot / 2)], ang = double(t) * inv[sz(i)];
        v[sz(h * dh + i)] = a * std::cos(ang) - b * std::sin(ang);
        v[sz(h * dh + i + rot / 2)] = b * std::cos(ang) + a * std::sin(ang);
      }
  };
  // Each head's own RMSNorm (Qwen3, Gemma 3: q_norm and k_norm of width head_dim).
  auto head_norm = [&](Vec& v, int64_t heads, const std::string& w) {
    for (int64_t h = 0; h < heads; h++) {
      Vec part(v.begin() + h * dh, v.begin() + (h + 1) * dh);
      part = norm(part, w);
      std::copy(part.begin(), part.end(), v.begin() + h * dh);
    }
  };
  for (int l = 0; l < c.n_layers; l++) {
    const std::string L = std::to_string(l), blk = "blocks." + L + ".";
    const std::string p = gpt2 ? "h." + L + "." : neox ? "gpt_neox.layers." + L + "." : "model.layers." + L + ".";
    const bool sliding = !c.layer_sliding.empty() && c.layer_sliding[sz(l)];
    const std::vector<double> inv = c.rope_inv_freq(sliding);
    record(blk + "hook_resid_pre", x);
    const Mat resid_pre = x;
    Mat q(sz(T)), k(sz(T)), v(sz(T)), z(sz(T)), attn_out(sz(T));
    for (int64_t t = 0; t < T; t++) {
      if (gpt2) {
        auto hn = norm(x[sz(t)], p + "ln_1");
        auto qkv = mm(hn, p + "attn.c_attn.weight", D, 3 * D, false, p + "attn.c_attn.bias");
        q[sz(t)].assign(qkv.begin(), qkv.begin() + D);
        k[sz(t)].assign(qkv.begin() + D, qkv.begin() + 2 * D);
        v[sz(t)].assign(qkv.begin() + 2 * D, qkv.end());
        continue;
      }
      if (neox) {
        auto hn = norm(x[sz(t)], p + "input_layernorm");
        auto qkv = mm(hn, p + "attention.query_key_value.weight", D, 3 * D, true,
                      c.qkv_bias ? p + "attention.query_key_value.bias" : "");
        for (int64_t h = 0; h < H; h++) {  // per head: [q | k | v]
          q[sz(t)].insert(q[sz(t)].end(), qkv.begin() + h * 3 * dh, qkv.begin() + h * 3 * dh + dh);
          k[sz(t)].insert(k[sz(t)].end(), qkv.begin() + h * 3 * dh + dh, qkv.begin() + h * 3 * dh + 2 * dh);
          v[sz(t)].insert(v[sz(t)].end(), qkv.begin() + h * 3 * dh + 2 * dh, qkv.begin() + (h + 1) * 3 * dh);
        }
      } else {
        auto hn = norm(x[sz(t)], p + "input_layernorm");
        const std::string a = p + "self_attn.";
        q[sz(t)] = mm(hn, a + "q_proj.weight", D, H * dh, true, c.qkv_bias ? a + "q_proj.bias" : "");
        k[sz(t)] = mm(hn, a + "k_proj.weight", D, KVH * dh, true, c.qkv_bias ? a + "k_proj.bias" : "");
        v[sz(t)] = mm(hn, a + "v_proj.weight", D, KVH * dh, true, c.qkv_bias ? a + "v_proj.bias" : "");
        if (c.qk_norm) {
          head_norm(q[sz(t)], H, a + "q_norm");
          head_norm(k[sz(t)], KVH, a + "k_norm");
        }
      }
      rope(q[sz(t)], H, t, inv);
      rope(k[sz(t)], KVH, t, inv);
    }
    double scale = 1 / std::sqrt(double(dh));
    if (gpt2) scale = (c.scale_attn_weights ? scale : 1.0) / (c.scale_attn_by_inverse_layer_idx ? l + 1 : 1);
    if (gemma) scale = 1 / std::sqrt(c.query_pre_attn_scalar);
    for (int64_t t = 0; t < T; t++) {
      Vec o(sz(H * dh), 0.0);
      const int64_t first = sliding ? std::max<int64_t>(0, t - c.sliding_window + 1) : 0;
      for (int64_t h = 0; h < H; h++) {
        int64_t kh = h / (H / KVH);
        Vec s(sz(t + 1), 0.0);
        double m = -1e300, sum = 0;
        for (int64_t j = first; j <= t; j++) {
          double d = 0;
          for (int64_t i = 0; i < dh; i++) d += q[sz(t)][sz(h * dh + i)] * k[sz(j)][sz(kh * dh + i)];
          s[sz(j)] = d * scale;
          if (c.attn_softcap > 0) s[sz(j)] = c.attn_softcap * std::tanh(s[sz(j)] / c.attn_softcap);
          m = std::max(m, s[sz(j)]);
        }
        for (int64_t j = first; j <= t; j++) sum += (s[sz(j)] = std::exp(s[sz(j)] - m));
        for (int64_t j = first; j <= t; j++)
          for (int64_t i = 0; i < dh; i++) o[sz(h * dh + i)] += s[sz(j)] / sum * v[sz(j)][sz(kh * dh + i)];
      }
      z[sz(t)] = o;
      if (gpt2) attn_out[sz(t)] = mm(o, p + "attn.c_proj.weight", D, D, false, p + "attn.c_proj.bias");
      else if (neox) attn_out[sz(t)] = mm(o, p + "attention.dense.weight", D, D, true, c.o_bias ? p + "attention.dense.bias" : "");
      else attn_out[sz(t)] = mm(o, p + "self_attn.o_proj.weight", H * dh, D, true, c.o_bias ? p + "self_attn.o_proj.bias" : "");
      if (gemma) attn_out[sz(t)] = norm(attn_out[sz(t)], p + "post_attention_layernorm");
    }
    record(blk + "attn.hook_z", z);
    record(blk + "hook_attn_out", attn_out);
    for (int64_t t = 0; t < T; t++)
      for (int64_t i = 0; i < D; i++) x[sz(t)][sz(i)] += attn_out[sz(t)][sz(i)];
    if (!c.parallel_residual) record(blk + "hook_resid_mid", x);
    Mat mlp_out(sz(T));
    for (int64_t t = 0; t < T; t++) {
      const Vec& in = c.parallel_residual ? resid_pre[sz(t)] : x[sz(t)];
      if (gpt2) {
        auto hn = norm(in, p + "ln_2");
        auto hid = mm(hn, p + "mlp.c_fc.weight", D, I, false, p + "mlp.c_fc.bias");
        for (auto& e : hid) e = act(e);
        mlp_out[sz(t)] = mm(hid, p + "mlp.c_proj.weight", I, D, false, p + "mlp.c_proj.bias");
      } else if (neox) {
        auto hn = norm(in, p + "post_attention_layernorm");
        auto hid = mm(hn, p + "mlp.dense_h_to_4h.weight", D, I, true, p + "mlp.dense_h_to_4h.bias");
        for (auto& e : hid) e = act(e);
        mlp_out[sz(t)] = mm(hid, p + "mlp.dense_4h_to_h.weight", I, D, true, p + "mlp.dense_4h_to_h.bias");
      } else {
        auto hn = norm(in, p + (gemma ? "pre_feedforward_layernorm" : "post_attention_layernorm"));
        const std::string m = p + "mlp.";
        auto gate = mm(hn, m + "gate_proj.weight", D, I, true, c.mlp_bias ? m + "gate_proj.bias" : "");
        auto up = mm(hn, m + "up_proj.weight", D, I, true, c.mlp_bias ? m + "up_proj.bias" : "");
        for (int64_t i = 0; i < I; i++) gate[sz(i)] = act(gate[sz(i)]) * up[sz(i)];
        mlp_out[sz(t)] = mm(gate, m + "down_proj.weight", I, D, true, c.mlp_bias ? m + "down_proj.bias" : "");
        if (gemma) mlp_out[sz(t)] = norm(mlp_out[sz(t)], p + "post_feedforward_layernorm");
      }
    }
    record(blk + "hook_mlp_out", mlp_out);
    for (int64_t t = 0; t < T; t++)
      for (int64_t i = 0; i < D; i++) x[sz(t)][sz(i)] += mlp_out[sz(t)][sz(i)];
    record(blk + "hook_resid_post", x);
  }
  const std::string head = c.tied_head ? embed : neox ? "embed_out.weight" : "lm_head.weight";
  const std::string final_norm = gpt2 ? "ln_f" : neox ? "gpt_neox.final_layer_norm" : "model.norm";
  for (int64_t t = 0; t < T; t++) {
    auto lg = mm(norm(x[sz(t)], final_norm), head, D, V, true);
    if (c.final_softcap > 0)
      for (auto& e : lg) e = c.final_softcap * std::tanh(e / c.final_softcap);
    out.logits.insert(out.logits.end(), lg.begin(), lg.end());
    if (t + 1 < T) {
      double m = *std::max_element(lg.begin(), lg.end()), s = 0;
      for (double e : lg) s += std::exp(e - m);
      out.nll.push_back(m + std::log(s) - lg[sz(tokens[sz(t + 1)])]);
    }
  }
  return out;
}

// A getter over fixture tensors for naive_forward (GPT-2 names get the fixture's prefix).
inline std::function<std::vector<float>(const std::string&)> getter(const Tensors& t, const std::string& gpt2_prefix = "transformer.") {
  return [&t, gpt2_prefix](const std::string& n) {
    if (t.data.count(n)) return t.get(n);
    return t.get(gpt2_prefix + n);
  };
}

}  // namespace model_test
