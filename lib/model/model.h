// Hugging Face causal language models (GPT-2; the Llama family: Llama 2/3, Mistral, Qwen2, Qwen3,
// SmolLM, TinyLlama; Gemma 2 and Gemma 3; GPT-NeoX/Pythia) loaded from a model directory and run by
// our own forward pass on the CPU
// (OpenBLAS + OpenMP) or CUDA (cuBLAS + kernels) backend, with TransformerLens-style hook points.
//
// Loading: config.json, then model.safetensors or a sharded model.safetensors.index.json. Weights
// may be stored as f32, f16 or bf16; they are converted to f32, or rounded to bf16 for the
// matrices in bf16 compute (see Compute below).
// A config the code cannot run exactly is refused with an InputError naming the field; nothing is
// ever approximated.
//
// Hook points (TransformerLens names), for block L:
//   blocks.L.hook_resid_pre   residual stream entering the block
//   blocks.L.hook_attn_out    what attention adds to the residual stream (after the output
//                             projection and its bias, and after Gemma's post-attention norm)
//   blocks.L.hook_resid_mid   resid_pre + attn_out (absent under GPT-NeoX's parallel residual,
//                             where the MLP reads resid_pre: parse_hook refuses it)
//   blocks.L.hook_mlp_out     what the MLP adds (after the down projection and its bias, and
//                             after Gemma's post-feed-forward norm)
//   blocks.L.hook_resid_post  resid_mid + mlp_out (= blocks.L+1.hook_resid_pre)
//   blocks.L.attn.hook_z      the attention heads' outputs before the output projection, heads
//                             concatenated: n_heads * head_dim wide (hook_width), where Gemma
//                             Scope's attention SAEs read; editing it edits what o_proj sees
//
// The forward API serves sae-collect and sae-eval:
//   Model m(dir, backend);
//   ForwardOptions o;
//   o.capture = {parse_hook("blocks.3.hook_resid_post", m.config())};   // (a) activations
//   o.edits = {{hook, [](float* x, int64_t rows, int64_t d, Backend& be) { ... }}};  // (b) splice
//   o.want_nll = true; o.want_log_probs = true;                          // (c) LM loss, KL
//   ForwardResult r = m.forward(tokens, batch, seq, o);
// Without logits or NLL the pass stops after the deepest hook captured or edited.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "model/kernels.h"

namespace sae {

// The block structure. gpt2: LayerNorm, Conv1D weights, learned positions. llama: RMSNorm, RoPE,
// SwiGLU (Llama, Mistral, Qwen2, Qwen3). gemma: llama's shape with (1 + w) RMSNorms, a scaled
// embedding, GeGLU and post-norms on both sub-blocks (Gemma 2, Gemma 3). neox: LayerNorm, packed
// per-head qkv, partial RoPE, a plain MLP and a parallel or sequential residual (GPT-NeoX, Pythia).
enum class ModelArch { gpt2, llama, gemma, neox };

enum class RopeScalingType { none, linear, llama3 };

struct RopeScaling {
  RopeScalingType type = RopeScalingType::none;
  double factor = 1.0;
  // llama3 only
  double low_freq_factor = 1.0, high_freq_factor = 4.0;
  double original_max_positions = 8192;
};

struct ModelConfig {
  ModelArch arch = ModelArch::gpt2;
  std::string model_type;  // config.json "model_type" (gpt2, llama, mistral, qwen2, qwen3, gemma2,
                           // gemma3_text, gemma3 for the multimodal wrapper, gpt_neox)
  std::string name;        // "_name_or_path" when present, else ""
  int n_layers = 0, d_model = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0, d_mlp = 0, vocab = 0;
  // Longest sequence the model runs exactly, and the config field that sets it (for messages).
  int64_t max_positions = 0;
  std::string max_positions_field;
  float norm_eps = 1e-5f;
  tk::Activation act = tk::Activation::gelu_tanh;
  bool tied_head = true;
  bool qkv_bias = false, o_bias = false, mlp_bias = false;
  // Qwen3, Gemma 3: every query and key head is RMS-normalised (self_attn.q_norm / k_norm,
  // [head_dim]) after the projection and before the rotary embedding.
  bool qk_norm = false;
  // GPT-2 attention scaling options.
  bool scale_attn_weights = true, scale_attn_by_inverse_layer_idx = false;
  // Gemma: attention scale query_pre_attn_scalar^-1/2 instead of head_dim^-1/2.
  double query_pre_attn_scalar = 0;
  // Gemma: the token embedding is multiplied by sqrt(d_model) rounded to the model's dtype (as
  // transformers rounds it); 1 elsewhere.
  float embed_scale = 1.0f;
  // Gemma 2 soft-capping, cap * tanh(x / cap), of the attention scores and of the final logits;
  // 0 = off.
  float attn_softcap = 0.0f, final_softcap = 0.0f;
  // GPT-NeoX: attention and MLP both read resid_pre and add to it (no resid_mid).
  bool parallel_residual = false;
  // Rotary embedding (llama, gemma, neox): the first rotary_dims of each head turn (head_dim, or
  // GPT-NeoX's fraction of it; always even), with rope_theta and rope_scaling; Gemma 3's sliding
  // layers use their own theta and scaling (the same as the full layers' elsewhere).
  int rotary_dims = 0;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  double sliding_rope_theta = 10000.0;
  RopeScaling sliding_rope_scaling;
  // Sliding-window attention (Gemma): a query on a sliding layer sees the sliding_window most
  // recent positions, itself included. layer_sliding has one entry per layer (empty = none).
  int64_t sliding_window = 0;
  std::vector<uint8_t> layer_sliding;
  int64_t bos_token_id = -1, eos_token_id = -1;

  bool uses_layernorm() const { return arch == ModelArch::gpt2 || arch == ModelArch::neox; }
  bool gated_mlp() const { return arch == ModelArch::llama || arch == ModelArch::gemma; }
  bool sliding(int layer) const { return !layer_sliding.empty() && layer_sliding[size_t(layer)]; }
  // Keys a query of `layer` sees, counting itself; 0 = every earlier position.
  int64_t attn_window(int layer) const { return sliding(layer) ? sliding_window : 0; }
  // Gemma 3: the sliding layers' rotary embedding differs from the full layers'.
  bool separate_sliding_rope() const;
  int qkv_width() const { return (n_heads + 2 * n_kv_heads) * head_dim; }
  float attn_scale(int layer) const;
  // The rotary_dims/2 inverse frequencies of a full (or, with `sliding`, a sliding) layer after
  // its scaling, computed in double.
  std::vector<double> rope_inv_freq(bool sliding = false) const;
  // Parameters in the matrices the pass multiplies by (all blocks, plus the output head when
  // with_head): the FLOP count of a forward pass is 2 x this x tokens (attention scores aside).
  int64_t matmul_params(int layers, bool with_head) const;
};

// Parses a config.json object; `where` (the file's path) starts every message. Fields the code
// cannot run exactly give an InputError naming the field.
ModelConfig parse_model_config(const nlohmann::json& cfg, const std::string& where);
ModelConfig load_model_config(const std::string& dir);

// attn_z comes last in the enum (loops over the five residual-width kinds stop before it) but
// runs second in a block: resid_pre, attn_z, attn_out, resid_mid, mlp_out, resid_post.
enum class HookKind { resid_pre, attn_out, resid_mid, mlp_out, resid_post, attn_z };

struct HookPoint {
  int layer = 0;
  HookKind kind = HookKind::resid_post;
  std::string name() const;  // "blocks.L.hook_KIND", "blocks.L.attn.hook_z"
  bool operator==(const HookPoint& o) const { return layer == o.layer && kind == o.kind; }
};

// Every hook the model has, in the order the pass reaches them: per block resid_pre, attn_z,
// attn_out, resid_mid (not under a parallel residual), mlp_out, resid_post.
std::vector<HookPoint> model_hooks(const ModelConfig& cfg);

// Values per row at a hook: n_heads * head_dim for attn.hook_z, d_model for the others.
int64_t hook_width(const HookPoint& h, const ModelConfig& cfg);

// Parses "blocks.L.hook_KIND" or "blocks.L.attn.hook_z"; an unknown name, a layer outside the
// model or a hook the family lacks (resid_mid under a parallel residual) is a UsageError that
// names the hook (and the model's layer range, or why).
HookPoint parse_hook(const std::string& name, const ModelConfig& cfg);

struct HookEdit {
  HookPoint at;
  // Called with the hook's activations, row-major [rows = batch*seq, d], in the backend's memory
  // (host memory on the CPU backend, device memory on CUDA); it modifies them in place, and the
  // rest of the pass sees the modified values. Editing a residual hook edits the residual
  // stream; editing attn_out/mlp_out edits what is added to it.
  std::function<void(float* acts, int64_t rows, int64_t d, Backend& be)> fn;
};

struct ForwardOptions {
  std::vector<HookPoint> capture;  // copied to the host after any edit at the same hook
  std::vector<HookEdit> edits;
  // Last block to run; -1 derives it: every block when logits, log-probs or NLL are wanted,
  // otherwise the deepest hook captured or edited.
  int stop_after_layer = -1;
  bool want_logits = false;     // [rows, vocab] raw logits
  bool want_log_probs = false;  // [rows, vocab] log-softmax of the logits (replaces logits)
  bool want_nll = false;        // [batch, seq-1]: -log p(tokens[b][t+1] | tokens[b][..t])
  // Logits or log-probs of each sequence's last row only ([batch, vocab]): what decoding needs,
  // without the head's product over every row. Not with want_nll.
  bool last_row_only = false;
};

struct ForwardResult {
  int64_t batch = 0, seq = 0;
  std::vector<std::vector<float>> captured;  // one per ForwardOptions::capture, [batch*seq, hook_width]
  std::vector<float> logits;                 // logits or log-probs, [batch*seq, vocab] ([batch, vocab] with last_row_only), if asked
  std::vector<float> nll;                    // [batch, seq-1], if asked
};

// What the pass computes in (docs/models.md, "Compute"):
//   f32   every weight, activation and product in f32.
//   bf16  the weight matrices (q/k/v, o, the MLP's, the head, and the token embedding, which is
//         also the tied head) are held in bf16: half the memory. Every projection rounds its
//         input activations to bf16 (round to nearest even, lib/base/dtype.h) and multiplies with f32
//         accumulation (Backend::gemm_bf16); its output is f32. Norms, softmax, attention, RoPE,
//         residual adds, biases, norm weights, GPT-2's position embeddings and the loss stay f32.
// The CUDA backend runs bf16 with cuBLAS. On the CPU backend a bf16 Model is an emulation (the
// same roundings; the exact bf16 products summed by OpenBLAS in f32) that the tests and the
// self-test check the GPU's arithmetic against; the tools offer bf16 on CUDA only.
enum class Compute { f32, bf16 };
const char* compute_name(Compute c);
// "f32" or "bf16"; anything else is a UsageError naming the value.
Compute parse_compute(const std::string& s);
// parse_compute for a tool's --compute option: the UsageError names the option.
Compute parse_compute_option(const std::string& value);
// The tools' rule: bf16 needs the CUDA backend (UsageError on the CPU, which computes in f32).
void check_compute_device(Compute c, Device d);

// The BOS token every window or prompt starts with: the tokenizer's (tokenizer_bos; -1 when it
// names none), else config.json's bos_token_id. InputError naming model_dir when neither gives an
// id inside the vocabulary.
int32_t sequence_bos(int32_t tokenizer_bos, const ModelConfig& cfg, const std::string& model_dir);

class TransformerOps;  // per-backend element-wise ops (lib/model/ops.h)
class Model;

// The keys and values of every layer for `batch` sequences of up to `capacity` slots, on the
// model's backend: what incremental decoding reuses (Model::forward with a cache). Sequence b's
// first pad[b] slots are left padding: never attended to, and its positions count from the first
// real slot, so prompts of different lengths share one batch.
class KvCache {
 public:
  KvCache() = default;
  int64_t batch() const { return batch_; }
  int64_t capacity() const { return capacity_; }
  int64_t length() const { return length_; }  // slots filled, the same for every sequence
  const std::vector<int32_t>& pad() const { return pad_; }
  // Position of sequence b's slot s (0 for a pad slot).
  int64_t position(int64_t b, int64_t slot) const {
    return slot < pad_[size_t(b)] ? 0 : slot - pad_[size_t(b)];
  }
  // Bytes held in the backend's memory.
  size_t bytes() const;

 private:
  friend class Model;
  std::vector<Buffer<float>> k_, v_;  // per layer [batch][capacity][n_kv * head_dim]
  Buffer<int32_t> key_start_;         // pad, in the backend's memory
  std::vector<int32_t> pad_;
  int64_t batch_ = 0, capacity_ = 0, length_ = 0;
};

// A loaded model on one backend. forward() reuses preallocated buffers, so one Model serves one
// thread at a time.
class Model {
 public:
  // Loads config.json and the weights from `dir` onto `be` (InputError naming the file and what
  // is wrong for any defect), the matrices in f32 or bf16 as `compute` says.
  Model(const std::string& dir, Backend& be, Compute compute = Compute::f32);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelConfig& config() const { return cfg_; }
  const std::string& dir() const { return dir_; }
  Backend& backend() { return be_; }
  Compute compute() const { return compute_; }
  // Bytes of weights held in the backend's memory (the GPU's on CUDA).
  size_t weight_bytes() const;

  // Runs tokens [batch, seq] (row-major int32, BOS included by the caller). Sequences of
  // different lengths may be right-padded with any valid token: attention is causal, so padding
  // never changes the rows before it. seq above max_positions and token ids outside the
  // vocabulary are InputErrors.
  ForwardResult forward(const int32_t* tokens, int64_t batch, int64_t seq, const ForwardOptions& opt);
  // The same, into `out`, whose vectors keep their memory from call to call (a caller that runs
  // batch after batch saves allocating and zeroing the captured activations each time).
  void forward(const int32_t* tokens, int64_t batch, int64_t seq, const ForwardOptions& opt, ForwardResult& out);

  // A KV cache for `batch` sequences of up to `capacity` slots; pad (empty: none) gives each
  // sequence's left padding. A capacity whose last position exceeds the model's is an InputError.
  KvCache make_cache(int64_t batch, int64_t capacity, std::vector<int32_t> pad = {});
  // Incremental decoding: runs tokens [batch, n_new] as the next n_new slots of every sequence in
  // `cache` (each attending to the slots before it), appends their keys and values, and advances
  // cache.length() by n_new. Hooks, edits, logits and NLL are as in forward() for these rows (the
  // NLL within the n_new tokens); every block runs, whatever is captured, so that the cache stays
  // whole. The logits equal those of forward() over the whole sequence, to f32 rounding.
  void forward(const int32_t* tokens, int64_t batch, int64_t n_new, KvCache& cache, const ForwardOptions& opt,
               ForwardResult& out);

 private:
  struct Weights;
  struct Work;
  void ensure_work(int64_t rows, int64_t positions, bool logits);
  void run(const int32_t* tokens, int64_t batch, int64_t n, KvCache* cache, const ForwardOptions& opt,
           ForwardResult& out);
  std::string dir_;
  Backend& be_;
  ModelConfig cfg_;
  Compute compute_ = Compute::f32;
  std::unique_ptr<TransformerOps> ops_;
  std::unique_ptr<Weights> w_;
  std::unique_ptr<Work> work_;
};

// The unembedding as a logit lens reads it, without loading the rest of the model: the head
// W_U [vocab, d_model] (the embedding when tied) and the final norm's weight as the forward pass
// multiplies by it (Gemma's 1 + w). InputError naming the file for any defect.
struct Unembedding {
  int64_t d_model = 0, vocab = 0;
  std::vector<float> W_U;                // [vocab, d_model], row-major
  std::vector<float> final_norm_weight;  // [d_model]
};
Unembedding load_unembedding(const std::string& dir);

// Per-row KL divergence KL(p || q) from two log-prob matrices [rows, vocab] (p the clean model).
std::vector<double> kl_divergence_rows(const float* logp, const float* logq, int64_t rows, int64_t vocab);

}  // namespace sae
