// The Model: weights on a backend, and the forward pass written once for both backends and both
// compute types: every projection is one GEMM over all batch*seq rows (Backend::gemm, or
// Backend::gemm_bf16 in bf16 compute), the rest goes through TransformerOps; activations live in
// buffers kept between calls.
#include "model/model.h"

#include <algorithm>
#include <cmath>

#include "base/dtype.h"
#include "base/errors.h"
#include "base/fork_join_pool.h"
#include "model/ops.h"
#include "model/weights.h"

namespace sae {

namespace {

// A weight matrix as stored: [in, out] (GPT-2's Conv1D) or [out, in] (nn.Linear, trans); in f32
// (w) or, in bf16 compute, in bf16 (wh). The bias is f32 either way.
struct Linear {
  Buffer<float> w, b;
  Buffer<uint16_t> wh;
  int64_t in = 0, out = 0;
  bool trans = false;
};

std::vector<float> concat(std::vector<std::vector<float>> parts) {
  std::vector<float> all;
  for (auto& p : parts) all.insert(all.end(), p.begin(), p.end());
  return all;
}

}  // namespace

struct Model::Weights {
  struct Layer {
    // norm1 before attention, norm2 before the MLP; the biases only for LayerNorm.
    Buffer<float> norm1_w, norm1_b, norm2_w, norm2_b;
    Buffer<float> q_norm_w, k_norm_w;  // Qwen3's and Gemma 3's per-head q/k RMSNorm weights [head_dim]
    Buffer<float> post_attn_norm_w, post_mlp_norm_w;  // Gemma's norms of each sub-block's output
    Linear qkv, o, up, down;  // up: GPT-2 c_fc / NeoX dense_h_to_4h [.., d_mlp], gated gate|up [.., 2*d_mlp]
  };
  Buffer<float> wte, wpe, norm_f_w, norm_f_b;
  // bf16 compute: the token table (also the tied head) and the untied head in bf16; wte and
  // lm_head are then empty.
  Buffer<uint16_t> wte_h, lm_head_h;
  Buffer<float> lm_head;  // untied head [vocab, d_model]; empty when tied to wte
  std::vector<Layer> layers;
};

struct Model::Work {
  int64_t rows = 0, positions = 0;  // rows the buffers hold; positions the rotary tables cover
  bool logits = false;
  Buffer<int32_t> tokens, targets, pos;  // pos: each row's position
  // xn2: the MLP's normed input under a parallel residual (norm2 of resid_pre). cos/sin: the
  // rotary tables [seq][rotary_dims/2] of full layers; sliding_cos/sin those of Gemma 3's sliding
  // layers when their rope differs.
  Buffer<float> resid, xn, xn2, qkv, attn, proj, mlp, act, head, nll, cos, sin, sliding_cos, sliding_sin;
  Buffer<uint16_t> xh;  // bf16 compute: a projection's input rounded to bf16
};

namespace {

// Where a family keeps its tensors, shared by the model and the logit lens (load_unembedding).
std::string weight_prefix(const WeightSource& src, const ModelConfig& c) {
  if (c.arch == ModelArch::gpt2) return "transformer.";
  if (c.arch == ModelArch::neox) return "gpt_neox.";
  if (c.arch == ModelArch::gemma) {
    // A multimodal Gemma 3 keeps its text model under a language-model prefix: transformers 5.x
    // writes "model.language_model.", 4.x "language_model.model.".
    for (const char* p : {"model.", "model.language_model.", "language_model.model."})
      if (src.has(p, "embed_tokens.weight")) return p;
  }
  return "model.";
}

const char* embedding_name(const ModelConfig& c) {
  return c.arch == ModelArch::gpt2 ? "wte.weight" : c.arch == ModelArch::neox ? "embed_in.weight" : "embed_tokens.weight";
}

const char* final_norm_name(const ModelConfig& c) {
  return c.arch == ModelArch::gpt2 ? "ln_f.weight" : c.arch == ModelArch::neox ? "final_layer_norm.weight" : "norm.weight";
}

// GPT-NeoX's untied head is embed_out; a multimodal Gemma 3's may sit under language_model.
std::string untied_head_name(const WeightSource& src, const ModelConfig& c) {
  std::string name = c.arch == ModelArch::neox ? "embed_out.weight" : "lm_head.weight";
  if (!src.has("", name) && src.has("language_model.", name)) name = "language_model." + name;
  return name;
}

// A norm's weight as the forward pass multiplies by it. Gemma's RMSNorms multiply by (1 + w);
// adding 1 once here (in f32, as transformers computes 1.0 + weight.float()) lets the shared
// RMSNorm multiply by the stored sum.
std::vector<float> read_norm_weight(const WeightSource& src, const ModelConfig& c, const std::string& prefix,
                                    const std::string& name, int64_t n) {
  std::vector<float> w = src.read(prefix, name, {n});
  if (c.arch == ModelArch::gemma)
    for (float& v : w) v = 1.0f + v;
  return w;
}

}  // namespace

Unembedding load_unembedding(const std::string& dir) {
  Unembedding u;
  const ModelConfig c = load_model_config(dir);
  WeightSource src(dir);
  u.d_model = c.d_model;
  u.vocab = c.vocab;
  const std::string pre = weight_prefix(src, c);
  u.final_norm_weight = read_norm_weight(src, c, pre, final_norm_name(c), c.d_model);
  u.W_U = c.tied_head ? src.read(pre, embedding_name(c), {c.vocab, c.d_model})
                      : src.read("", untied_head_name(src, c), {c.vocab, c.d_model});
  return u;
}

Model::~Model() = default;

Model::Model(const std::string& dir, Backend& be, Compute compute) : dir_(dir), be_(be), compute_(compute) {
  cfg_ = load_model_config(dir);
  WeightSource src(dir);
  ops_ = make_transformer_ops(be);
  w_ = std::make_unique<Weights>();
  work_ = std::make_unique<Work>();
  const ModelConfig& c = cfg_;
  const int64_t D = c.d_model, I = c.d_mlp, V = c.vocab, A = int64_t(c.n_heads) * c.head_dim;
  const int64_t KVW = int64_t(c.n_kv_heads) * c.head_dim;
  auto up = [&](const std::vector<float>& v) {
    Buffer<float> b(be, v.size());
    b.upload(v);
    return b;
  };
  // A matrix: f32, or rounded to bf16 (f32_to_bf16, as the GEMM inputs are) in bf16 compute.
  const bool bf16 = compute == Compute::bf16;
  auto up_bf16 = [&](const std::vector<float>& v) {
    std::vector<uint16_t> h(v.size());
    encode_f32(DType::bf16, v.data(), v.size(), h.data());
    Buffer<uint16_t> b(be, h.size());
    b.upload(h);
    return b;
  };
  const bool gpt2 = c.arch == ModelArch::gpt2, neox = c.arch == ModelArch::neox, gemma = c.arch == ModelArch::gemma;
  const std::string pre = weight_prefix(src, c);
  auto rd = [&](const std::string& name, std::vector<int64_t> shape) { return src.read(pre, name, shape); };
  auto rd_norm = [&](const std::string& name, int64_t n) { return read_norm_weight(src, c, pre, name, n); };

  {
    std::vector<float> wte = rd(embedding_name(c), {V, D});
    if (bf16) w_->wte_h = up_bf16(wte);
    else w_->wte = up(wte);
  }
  if (gpt2) w_->wpe = up(rd("wpe.weight", {c.max_positions, D}));
  w_->norm_f_w = up(rd_norm(final_norm_name(c), D));
  if (gpt2) w_->norm_f_b = up(rd("ln_f.bias", {D}));
  if (neox) w_->norm_f_b = up(rd("final_layer_norm.bias", {D}));
  if (!c.tied_head) {
    std::vector<float> head = src.read("", untied_head_name(src, c), {V, D});
    if (bf16) w_->lm_head_h = up_bf16(head);
    else w_->lm_head = up(head);
  }

  for (int l = 0; l < c.n_layers; l++) {
    Weights::Layer L;
    const std::string p = (gpt2 ? "h." : "layers.") + std::to_string(l) + ".";
    auto lin = [&](Linear& m, std::vector<float> w, std::vector<float> b, int64_t in, int64_t out, bool trans) {
      if (bf16) m.wh = up_bf16(w);
      else m.w = up(w);
      if (!b.empty()) m.b = up(b);
      m.in = in;
      m.out = out;
      m.trans = trans;
    };
    if (gpt2) {
      L.norm1_w = up(rd(p + "ln_1.weight", {D}));
      L.norm1_b = up(rd(p + "ln_1.bias", {D}));
      L.norm2_w = up(rd(p + "ln_2.weight", {D}));
      L.norm2_b = up(rd(p + "ln_2.bias", {D}));
      lin(L.qkv, rd(p + "attn.c_attn.weight", {D, 3 * D}), rd(p + "attn.c_attn.bias", {3 * D}), D, 3 * D, false);
      lin(L.o, rd(p + "attn.c_proj.weight", {D, D}), rd(p + "attn.c_proj.bias", {D}), D, D, false);
      lin(L.up, rd(p + "mlp.c_fc.weight", {D, I}), rd(p + "mlp.c_fc.bias", {I}), D, I, false);
      lin(L.down, rd(p + "mlp.c_proj.weight", {I, D}), rd(p + "mlp.c_proj.bias", {D}), I, D, false);
    } else if (neox) {
      L.norm1_w = up(rd(p + "input_layernorm.weight", {D}));
      L.norm1_b = up(rd(p + "input_layernorm.bias", {D}));
      L.norm2_w = up(rd(p + "post_attention_layernorm.weight", {D}));
      L.norm2_b = up(rd(p + "post_attention_layernorm.bias", {D}));
      // query_key_value packs each head's [q | k | v] in turn (output row h*3*dh + part*dh + i);
      // regrouped here into the [q heads | k heads | v heads] the attention reads.
      const int64_t dh = c.head_dim, H = c.n_heads;
      const std::string a = p + "attention.";
      std::vector<float> w = rd(a + "query_key_value.weight", {3 * D, D}), b;
      if (c.qkv_bias) b = rd(a + "query_key_value.bias", {3 * D});
      std::vector<float> wq(w.size()), bq(b.size());
      for (int64_t h = 0; h < H; h++)
        for (int64_t part = 0; part < 3; part++)
          for (int64_t i = 0; i < dh; i++) {
            const int64_t from = (h * 3 + part) * dh + i, to = part * H * dh + h * dh + i;
            std::copy_n(w.begin() + from * D, D, wq.begin() + to * D);
            if (!b.empty()) bq[size_t(to)] = b[size_t(from)];
          }
      lin(L.qkv, wq, bq, D, 3 * D, true);
      lin(L.o, rd(a + "dense.weight", {D, D}), c.o_bias ? rd(a + "dense.bias", {D}) : std::vector<float>{}, D, D, true);
      lin(L.up, rd(p + "mlp.dense_h_to_4h.weight", {I, D}), rd(p + "mlp.dense_h_to_4h.bias", {I}), D, I, true);
      lin(L.down, rd(p + "mlp.dense_4h_to_h.weight", {D, I}), rd(p + "mlp.dense_4h_to_h.bias", {D}), I, D, true);
    } else {
      // Llama and Gemma. Gemma's post_attention_layernorm normalises the attention's output; its
      // pre_feedforward_layernorm is the Llama family's post_attention_layernorm (the MLP's input).
      L.norm1_w = up(rd_norm(p + "input_layernorm.weight", D));
      if (gemma) {
        L.post_attn_norm_w = up(rd_norm(p + "post_attention_layernorm.weight", D));
        L.norm2_w = up(rd_norm(p + "pre_feedforward_layernorm.weight", D));
        L.post_mlp_norm_w = up(rd_norm(p + "post_feedforward_layernorm.weight", D));
      } else {
        L.norm2_w = up(rd(p + "post_attention_layernorm.weight", {D}));
      }
      const std::string a = p + "self_attn.", m = p + "mlp.";
      // q, k and v are fused into one [q | k | v] projection, gate and up into one [gate | up]:
      // fewer, larger GEMMs.
      std::vector<float> qkv_b;
      if (c.qkv_bias)
        qkv_b = concat({rd(a + "q_proj.bias", {A}), rd(a + "k_proj.bias", {KVW}), rd(a + "v_proj.bias", {KVW})});
      lin(L.qkv, concat({rd(a + "q_proj.weight", {A, D}), rd(a + "k_proj.weight", {KVW, D}), rd(a + "v_proj.weight", {KVW, D})}),
          qkv_b, D, A + 2 * KVW, true);
      lin(L.o, rd(a + "o_proj.weight", {D, A}), c.o_bias ? rd(a + "o_proj.bias", {D}) : std::vector<float>{}, A, D, true);
      if (c.qk_norm) {
        L.q_norm_w = up(rd_norm(a + "q_norm.weight", c.head_dim));
        L.k_norm_w = up(rd_norm(a + "k_norm.weight", c.head_dim));
      }
      std::vector<float> gu_b, down_b;
      if (c.mlp_bias) {
        gu_b = concat({rd(m + "gate_proj.bias", {I}), rd(m + "up_proj.bias", {I})});
        down_b = rd(m + "down_proj.bias", {D});
      }
      lin(L.up, concat({rd(m + "gate_proj.weight", {I, D}), rd(m + "up_proj.weight", {I, D})}), gu_b, D, 2 * I, true);
      lin(L.down, rd(m + "down_proj.weight", {D, I}), down_b, I, D, true);
    }
    w_->layers.push_back(std::move(L));
  }
}

void Model::ensure_work(int64_t rows, int64_t seq, bool logits) {
  // seq: the number of positions (0..seq-1) the rotary tables must cover.
  Work& k = *work_;
  const ModelConfig& c = cfg_;
  if (rows > k.rows) {
    k.rows = rows;
    k.tokens = Buffer<int32_t>(be_, rows);
    k.targets = Buffer<int32_t>(be_, rows);
    k.pos = Buffer<int32_t>(be_, rows);
    k.resid = Buffer<float>(be_, rows * c.d_model);
    k.xn = Buffer<float>(be_, rows * c.d_model);
    k.qkv = Buffer<float>(be_, rows * c.qkv_width());
    k.attn = Buffer<float>(be_, rows * c.n_heads * c.head_dim);
    k.proj = Buffer<float>(be_, rows * c.d_model);
    const int64_t mlp_cols = c.gated_mlp() ? 2 * int64_t(c.d_mlp) : c.d_mlp;
    k.mlp = Buffer<float>(be_, rows * mlp_cols);
    if (c.gated_mlp()) k.act = Buffer<float>(be_, rows * c.d_mlp);
    if (c.parallel_residual) k.xn2 = Buffer<float>(be_, rows * c.d_model);
    k.nll = Buffer<float>(be_, rows);
    if (compute_ == Compute::bf16) {
      const int64_t widest = std::max({int64_t(c.d_model), int64_t(c.n_heads) * c.head_dim, int64_t(c.d_mlp)});
      k.xh = Buffer<uint16_t>(be_, rows * widest);
    }
    k.logits = false;
    k.head.reset();
  }
  if (logits && !k.logits) {
    k.head = Buffer<float>(be_, k.rows * int64_t(c.vocab));
    k.logits = true;
  }
  if (c.rotary_dims > 0 && seq > k.positions) {
    // Rotary tables for positions 0..seq-1, angles computed in double and rounded once.
    const int half = c.rotary_dims / 2;
    auto tables = [&](bool sliding, Buffer<float>& cos_out, Buffer<float>& sin_out) {
      std::vector<double> inv = c.rope_inv_freq(sliding);
      std::vector<float> cs(size_t(seq * half)), sn(size_t(seq * half));
      for (int64_t t = 0; t < seq; t++) {
        for (int i = 0; i < half; i++) {
          double ang = double(t) * inv[size_t(i)];
          cs[size_t(t * half + i)] = float(std::cos(ang));
          sn[size_t(t * half + i)] = float(std::sin(ang));
        }
      }
      cos_out = Buffer<float>(be_, cs.size());
      sin_out = Buffer<float>(be_, sn.size());
      cos_out.upload(cs);
      sin_out.upload(sn);
    };
    tables(false, k.cos, k.sin);
    if (c.separate_sliding_rope()) tables(true, k.sliding_cos, k.sliding_sin);
  }
  k.positions = std::max(k.positions, seq);
}

ForwardResult Model::forward(const int32_t* tokens, int64_t batch, int64_t seq, const ForwardOptions& opt) {
  ForwardResult r;
  forward(tokens, batch, seq, opt, r);
  return r;
}

void Model::forward(const int32_t* tokens, int64_t batch, int64_t seq, const ForwardOptions& opt, ForwardResult& res) {
  run(tokens, batch, seq, nullptr, opt, res);
}

size_t KvCache::bytes() const {
  size_t n = key_start_.size() * sizeof(int32_t);
  for (const auto& b : k_) n += b.size() * sizeof(float);
  for (const auto& b : v_) n += b.size() * sizeof(float);
  return n;
}

KvCache Model::make_cache(int64_t batch, int64_t capacity, std::vector<int32_t> pad) {
  const ModelConfig& c = cfg_;
  if (batch <= 0 || capacity <= 0)
    throw UsageError("KV cache: empty (" + std::to_string(batch) + " sequences x " + std::to_string(capacity) + " slots)");
  if (pad.empty()) pad.assign(size_t(batch), 0);
  if (int64_t(pad.size()) != batch) throw UsageError("KV cache: " + std::to_string(pad.size()) + " paddings for " +
                                                     std::to_string(batch) + " sequences");
  int32_t least = pad[0];
  for (int32_t p : pad) {
    if (p < 0 || p >= capacity) throw UsageError("KV cache: padding " + std::to_string(p) + " outside 0-" + std::to_string(capacity - 1));
    least = std::min(least, p);
  }
  if (capacity - least > c.max_positions)
    throw InputError("sequence of " + std::to_string(capacity - least) + " tokens is longer than the model's " +
                     std::to_string(c.max_positions) + " positions (" + c.max_positions_field + ")");
  KvCache kv;
  const size_t per_layer = size_t(batch * capacity) * size_t(c.n_kv_heads) * size_t(c.head_dim);
  for (int l = 0; l < c.n_layers; l++) {
    kv.k_.emplace_back(be_, per_layer);
    kv.v_.emplace_back(be_, per_layer);
  }
  kv.key_start_ = Buffer<int32_t>(be_, size_t(batch));
  kv.key_start_.upload(pad.data(), pad.size());
  kv.pad_ = std::move(pad);
  kv.batch_ = batch;
  kv.capacity_ = capacity;
  return kv;
}

void Model::forward(const int32_t* tokens, int64_t batch, int64_t n_new, KvCache& cache, const ForwardOptions& opt,
                    ForwardResult& res) {
  if (cache.k_.size() != size_t(cfg_.n_layers)) throw UsageError("forward: the KV cache was not made by this model");
  if (batch != cache.batch())
    throw UsageError("forward: " + std::to_string(batch) + " sequences for a KV cache of " + std::to_string(cache.batch()));
  if (cache.length() + n_new > cache.capacity())
    throw InputError("forward: " + std::to_string(cache.length() + n_new) + " slots do not fit the KV cache's " +
                     std::to_string(cache.capacity()));
  run(tokens, batch, n_new, &cache, opt, res);
  cache.length_ += n_new;
}

void Model::run(const int32_t* tokens, int64_t batch, int64_t seq, KvCache* cache, const ForwardOptions& opt,
                ForwardResult& res) {
  const ModelConfig& c = cfg_;
  if (batch <= 0 || seq <= 0) throw InputError("forward: empty batch (" + std::to_string(batch) + " x " + std::to_string(seq) + " tokens)");
  const int64_t past = cache ? cache->length() : 0;
  // Each row's position: its slot, less its sequence's left padding.
  std::vector<int32_t> positions(size_t(batch * seq));
  int64_t last_position = 0;
  for (int64_t b = 0; b < batch; b++)
    for (int64_t t = 0; t < seq; t++) {
      const int64_t p = cache ? cache->position(b, past + t) : t;
      positions[size_t(b * seq + t)] = int32_t(p);
      last_position = std::max(last_position, p);
    }
  if (last_position >= c.max_positions)
    throw InputError("sequence of " + std::to_string(last_position + 1) + " tokens is longer than the model's " +
                     std::to_string(c.max_positions) + " positions (" + c.max_positions_field + ")");
  const int64_t rows = batch * seq;
  for (int64_t i = 0; i < rows; i++)
    if (tokens[i] < 0 || tokens[i] >= c.vocab)
      throw InputError("token id " + std::to_string(tokens[i]) + " is outside the vocabulary (size " + std::to_string(c.vocab) + ")");

  const bool head = opt.want_logits || opt.want_log_probs || opt.want_nll;
  if (opt.last_row_only && opt.want_nll) throw UsageError("forward: last_row_only leaves no targets for the NLL");
  auto check_hook = [&](const HookPoint& h) {
    if (h.layer < 0 || h.layer >= c.n_layers) throw UsageError("forward: hook " + h.name() + " is outside the model");
    if (h.kind == HookKind::resid_mid && c.parallel_residual)
      throw UsageError("forward: hook " + h.name() + " does not exist under a parallel residual");
  };
  for (const auto& h : opt.capture) check_hook(h);
  for (const auto& e : opt.edits) check_hook(e.at);
  // Where the pass ends: after the deepest hook captured or edited (hooks order by layer, then
  // resid_pre < attn_z < attn_out < resid_mid < mlp_out < resid_post), after stop_after_layer's
  // block, or after the last block when the head is wanted.
  constexpr int kHooksPerBlock = 6;
  auto order = [](int layer, HookKind kind) {
    const int within = kind == HookKind::attn_z ? 1 : kind == HookKind::resid_pre ? 0 : int(kind) + 1;
    return layer * kHooksPerBlock + within;
  };
  int end = -1;
  for (const auto& h : opt.capture) end = std::max(end, order(h.layer, h.kind));
  for (const auto& e : opt.edits) end = std::max(end, order(e.at.layer, e.at.kind));
  if (opt.stop_after_layer >= 0) {
    if (head && opt.stop_after_layer < c.n_layers - 1)
      throw UsageError("forward: logits need every layer, but stop_after_layer is " + std::to_string(opt.stop_after_layer));
    if (end > order(opt.stop_after_layer, HookKind::resid_post))
      throw UsageError("forward: a hook lies after stop_after_layer " + std::to_string(opt.stop_after_layer));
    end = order(std::min(opt.stop_after_layer, c.n_layers - 1), HookKind::resid_post);
  }
  // Every block with a cache: a block left out would leave its keys and values missing.
  if (head || cache) end = order(c.n_layers - 1, HookKind::resid_post);
  const int last = end < 0 ? -1 : end / kHooksPerBlock;

  res.batch = batch;
  res.seq = seq;
  res.captured.resize(opt.capture.size());
  if (!(opt.want_logits || opt.want_log_probs)) res.logits.clear();
  if (!opt.want_nll) res.nll.clear();
  ensure_work(rows, last_position + 1, head);
  Work& k = *work_;
  TransformerOps& ops = *ops_;
  const int64_t D = c.d_model;

  // Runs the edits, then the captures, registered at one hook; true when the pass ends there.
  auto hook = [&](int layer, HookKind kind, float* x) {
    const int64_t width = hook_width(HookPoint{layer, kind}, c);
    for (const auto& e : opt.edits)
      if (e.at.layer == layer && e.at.kind == kind) e.fn(x, rows, width, be_);
    for (size_t i = 0; i < opt.capture.size(); i++) {
      if (opt.capture[i].layer == layer && opt.capture[i].kind == kind) {
        res.captured[i].resize(size_t(rows * width));
        be_.to_host(res.captured[i].data(), x, size_t(rows * width) * sizeof(float));
      }
    }
    return order(layer, kind) == end;
  };
  // y[rows, out] = x[rows, in] W, in the model's compute type
  const bool bf16 = compute_ == Compute::bf16;
  auto product = [&](const Linear& m, const float* x, float* y) {
    if (bf16) ops.project_bf16(be_, m.trans, rows, m.out, m.in, x, k.xh.data(), m.wh.data(), y);
    else ops.project(be_, m.trans, rows, m.out, m.in, x, m.w.data(), y);
  };
  // y[rows, out] = x[rows, in] W (+ b)
  auto project = [&](const Linear& m, const float* x, float* y) {
    product(m, x, y);
    if (m.b.size()) ops.add_bias(y, m.b.data(), rows, m.out);
  };

  be_.to_device(k.tokens.data(), tokens, size_t(rows) * sizeof(int32_t));
  be_.to_device(k.pos.data(), positions.data(), size_t(rows) * sizeof(int32_t));
  const float* wpe = c.arch == ModelArch::gpt2 ? w_->wpe.data() : nullptr;
  if (bf16) ops.embed_bf16(k.tokens.data(), k.pos.data(), rows, w_->wte_h.data(), wpe, D, c.embed_scale, k.resid.data());
  else ops.embed(k.tokens.data(), k.pos.data(), rows, w_->wte.data(), wpe, D, c.embed_scale, k.resid.data());
  // The norm before attention (norm1) or the MLP (norm2): LayerNorm (GPT-2, NeoX) or RMSNorm.
  auto norm = [&](const Buffer<float>& w, const Buffer<float>& b, const float* x, float* y) {
    if (c.uses_layernorm()) ops.layernorm(x, w.data(), b.data(), y, rows, D, c.norm_eps);
    else ops.rmsnorm(x, w.data(), y, rows, D, c.norm_eps);
  };
  for (int l = 0; l <= last; l++) {
    const Weights::Layer& L = w_->layers[size_t(l)];
    if (hook(l, HookKind::resid_pre, k.resid.data())) break;
    norm(L.norm1_w, L.norm1_b, k.resid.data(), k.xn.data());
    if (c.parallel_residual) norm(L.norm2_w, L.norm2_b, k.resid.data(), k.xn2.data());
    project(L.qkv, k.xn.data(), k.qkv.data());
    if (c.qk_norm)
      ops.qk_rmsnorm(k.qkv.data(), rows, c.n_heads, c.n_kv_heads, c.head_dim, L.q_norm_w.data(), L.k_norm_w.data(),
                     c.norm_eps);
    if (c.rotary_dims > 0) {
      const bool own = c.sliding(l) && c.separate_sliding_rope();
      ops.rope(k.qkv.data(), k.pos.data(), rows, c.n_heads, c.n_kv_heads, c.head_dim, c.rotary_dims,
               own ? k.sliding_cos.data() : k.cos.data(), own ? k.sliding_sin.data() : k.sin.data());
    }
    if (cache) {
      // The new keys and values join the cache; attention reads every slot from there.
      const int64_t kvw = int64_t(c.n_kv_heads) * c.head_dim;
      float* kc = cache->k_[size_t(l)].data();
      float* vc = cache->v_[size_t(l)].data();
      ops.store_kv(k.qkv.data(), batch, seq, c.n_heads, c.n_kv_heads, c.head_dim, kc, vc, cache->capacity(), past);
      AttentionInput in;
      in.q = k.qkv.data();
      in.q_stride = c.qkv_width();
      in.k = kc;
      in.v = vc;
      in.kv_stride = kvw;
      in.kv_batch_stride = cache->capacity() * kvw;
      in.n_q = seq;
      in.q_pos0 = past;
      in.key_start = cache->key_start_.data();
      ops.attend(in, k.attn.data(), batch, c.n_heads, c.n_kv_heads, c.head_dim, c.attn_scale(l), c.attn_softcap,
                 c.attn_window(l));
    } else {
      ops.attention(k.qkv.data(), k.attn.data(), batch, seq, c.n_heads, c.n_kv_heads, c.head_dim, c.attn_scale(l),
                    c.attn_softcap, c.attn_window(l));
    }
    if (hook(l, HookKind::attn_z, k.attn.data())) break;
    project(L.o, k.attn.data(), k.proj.data());
    if (L.post_attn_norm_w.size()) ops.rmsnorm(k.proj.data(), L.post_attn_norm_w.data(), k.proj.data(), rows, D, c.norm_eps);
    if (hook(l, HookKind::attn_out, k.proj.data())) break;
    ops.add(k.resid.data(), k.proj.data(), rows * D);
    // Under a parallel residual the MLP reads norm2(resid_pre), computed above; resid_pre +
    // attn_out is no hook point there (parse_hook refuses resid_mid).
    const float* mlp_in = k.xn2.data();
    if (!c.parallel_residual) {
      if (hook(l, HookKind::resid_mid, k.resid.data())) break;
      norm(L.norm2_w, L.norm2_b, k.resid.data(), k.xn.data());
      mlp_in = k.xn.data();
    }
    if (c.gated_mlp()) {
      project(L.up, mlp_in, k.mlp.data());
      ops.gated_act(k.mlp.data(), k.act.data(), rows, c.d_mlp, c.act);
      project(L.down, k.act.data(), k.proj.data());
    } else {
      // The up product, then bias and activation in one pass.
      product(L.up, mlp_in, k.mlp.data());
      ops.bias_act(k.mlp.data(), L.up.b.data(), rows, L.up.out, c.act);
      project(L.down, k.mlp.data(), k.proj.data());
    }
    if (L.post_mlp_norm_w.size()) ops.rmsnorm(k.proj.data(), L.post_mlp_norm_w.data(), k.proj.data(), rows, D, c.norm_eps);
    if (hook(l, HookKind::mlp_out, k.proj.data())) break;
    ops.add(k.resid.data(), k.proj.data(), rows * D);
    if (hook(l, HookKind::resid_post, k.resid.data())) break;
  }

  if (head) {
    norm(w_->norm_f_w, w_->norm_f_b, k.resid.data(), k.xn.data());
    const int64_t V = c.vocab;
    // The head's rows: all, or each sequence's last, gathered into proj (free by now).
    const float* x = k.xn.data();
    int64_t head_rows = rows;
    if (opt.last_row_only) {
      for (int64_t b = 0; b < batch; b++)
        be_.copy(k.proj.data() + b * D, k.xn.data() + (b * seq + seq - 1) * D, size_t(D) * sizeof(float));
      x = k.proj.data();
      head_rows = batch;
    }
    if (bf16)
      ops.project_bf16(be_, true, head_rows, V, D, x, k.xh.data(), c.tied_head ? w_->wte_h.data() : w_->lm_head_h.data(),
                       k.head.data());
    else
      ops.project(be_, true, head_rows, V, D, x, c.tied_head ? w_->wte.data() : w_->lm_head.data(), k.head.data());
    if (c.final_softcap > 0) ops.softcap(k.head.data(), head_rows * V, c.final_softcap);
    if (opt.want_nll || opt.want_log_probs) {
      std::vector<int32_t> tgt(size_t(head_rows), -1);
      if (!opt.last_row_only)
        for (int64_t b = 0; b < batch; b++)
          for (int64_t t = 0; t + 1 < seq; t++) tgt[size_t(b * seq + t)] = tokens[b * seq + t + 1];
      k.targets.upload(tgt.data(), tgt.size());
      ops.log_softmax_nll(k.head.data(), head_rows, V, k.targets.data(), k.nll.data(), opt.want_log_probs);
    }
    if (opt.want_logits || opt.want_log_probs) {
      res.logits.resize(size_t(head_rows * V));
      be_.to_host(res.logits.data(), k.head.data(), res.logits.size() * sizeof(float));
    }
    if (opt.want_nll) {
      std::vector<float> all(static_cast<size_t>(rows));
      be_.to_host(all.data(), k.nll.data(), all.size() * sizeof(float));
      res.nll.resize(size_t(batch * (seq - 1)));
      for (int64_t b = 0; b < batch; b++)
        for (int64_t t = 0; t + 1 < seq; t++) res.nll[size_t(b * (seq - 1) + t)] = all[size_t(b * seq + t)];
    }
  }
  be_.sync();
}

size_t Model::weight_bytes() const {
  size_t n = 0;
  auto add = [&](const auto& b) { n += b.size() * sizeof(*b.data()); };
  for (const Buffer<float>* b : {&w_->wte, &w_->wpe, &w_->norm_f_w, &w_->norm_f_b, &w_->lm_head}) add(*b);
  add(w_->wte_h);
  add(w_->lm_head_h);
  for (const auto& L : w_->layers) {
    for (const Buffer<float>* b : {&L.norm1_w, &L.norm1_b, &L.norm2_w, &L.norm2_b, &L.q_norm_w, &L.k_norm_w,
                                   &L.post_attn_norm_w, &L.post_mlp_norm_w})
      add(*b);
    for (const Linear* m : {&L.qkv, &L.o, &L.up, &L.down}) {
      add(m->w);
      add(m->b);
      add(m->wh);
    }
  }
  return n;
}

const char* compute_name(Compute c) { return c == Compute::bf16 ? "bf16" : "f32"; }

Compute parse_compute(const std::string& s) {
  if (s == "f32") return Compute::f32;
  if (s == "bf16") return Compute::bf16;
  throw UsageError("unknown compute type '" + s + "' (expected f32 or bf16)");
}

Compute parse_compute_option(const std::string& value) {
  try {
    return parse_compute(value);
  } catch (const UsageError& e) {
    throw UsageError(std::string("--compute: ") + e.what());
  }
}

int32_t sequence_bos(int32_t tokenizer_bos, const ModelConfig& cfg, const std::string& model_dir) {
  const int64_t bos = tokenizer_bos >= 0 ? tokenizer_bos : cfg.bos_token_id;
  if (bos < 0) throw InputError(model_dir + ": the model has no BOS token to start each sequence with");
  if (bos >= cfg.vocab)
    throw InputError(model_dir + ": the BOS token id " + std::to_string(bos) + " is outside the model's vocabulary");
  return int32_t(bos);
}

void check_compute_device(Compute c, Device d) {
  if (c == Compute::bf16 && d != Device::cuda)
    throw UsageError("--compute bf16 runs on the GPU only (--device cuda): the CPU computes in f32");
}

std::vector<double> kl_divergence_rows(const float* logp, const float* logq, int64_t rows, int64_t vocab) {
  std::vector<double> kl(static_cast<size_t>(rows));
  ForkJoinPool::global().run(rows, [&](int64_t first, int64_t last, int) {
    for (int64_t r = first; r < last; r++) {
      const float* p = logp + r * vocab;
      const float* q = logq + r * vocab;
      double s = 0;
      for (int64_t i = 0; i < vocab; i++) s += std::exp(double(p[i])) * (double(p[i]) - double(q[i]));
      kl[size_t(r)] = s;
    }
  });
  return kl;
}

}  // namespace sae
