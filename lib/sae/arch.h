// SAE training architectures behind a small registry (one file each: lib/sae/arch_<name>.cpp).
// An architecture owns its parameters (with their gradients and Adam moments) and computes, for a
// batch, its loss and the gradient of every parameter. It is written against the op set
// (lib/sae/ops.h) and Backend::gemm only, so the same code trains on the CPU and on CUDA.
//
// Internal layout: the encoder is stored as E = W_enc^T [d_sae, d_in] (one row per latent, so the
// sparse backward gathers contiguous rows) and the decoder as D = W_dec [d_sae, d_in]. The trainer
// feeds inputs already scaled so that E||x||^2 = d_in; export folds that scale into the weights.
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "base/rng.h"
#include "sae/ops.h"
#include "sae/sae.h"

namespace sae {

struct ArchConfig {
  std::string arch = "topk";
  int64_t d_in = 0, d_sae = 0;
  int k = 32;                  // topk, batchtopk, matryoshka: latents per row (batch mean for batch variants)
  int k_aux = 0;               // AuxK latents per row; 0 = d_in / 2
  float aux_coef = 1.0f / 32;  // AuxK loss coefficient (0 disables AuxK)
  float lambda = 0;            // sparsity coefficient: relu L1, jumprelu L0, gated L1
  float bandwidth = 0.001f;    // jumprelu STE rectangle width
  float init_threshold = 0.001f;  // jumprelu initial threshold
  float freq_scale = 0;        // jumprelu quadratic frequency penalty scale (0 = plain L0)
  std::vector<int64_t> prefixes;  // matryoshka nested dictionary sizes (ascending, last = d_sae)
  float threshold_lr = 0.01f;  // batchtopk: EMA rate of the inference threshold estimate
  float dec_init_norm = 0.1f;  // relu: initial decoder row norm (other architectures: unit rows)
  uint64_t seed = 1;
};

// One parameter tensor with its gradient and Adam moments, all on the device.
struct Param {
  std::string name;
  std::vector<int64_t> shape;
  int64_t size = 0;
  Buffer<float> w, g, m, v;
};

// What a training step needs beyond the parameters.
struct StepInput {
  const float* x = nullptr;  // scaled input rows [B, d_in], device
  int64_t B = 0;
  float sparsity_scale = 1;  // warm-up factor of the sparsity coefficient, in [0, 1]
  const uint8_t* dead_mask = nullptr;  // [d_sae], device: latents dead for AuxK (may be null)
  int64_t num_dead = 0;
  bool update_state = true;  // false for gradient checks: leave running estimates alone
};

struct StepStats {
  double mse = 0;       // mean over rows of ||x - xhat||^2 (full reconstruction)
  double sparsity = 0;  // sparsity penalty (with the warm-up factor applied)
  double aux = 0;       // auxiliary loss: AuxK, or gated's frozen-decoder reconstruction
  double prefix = 0;    // matryoshka: the losses of the inner prefixes
  double loss = 0;      // the objective whose gradient was computed
  std::vector<int32_t> fires;  // per latent, rows of the batch where it was active
};

class Arch {
 public:
  Arch(SaeOps& ops, ArchConfig cfg);
  virtual ~Arch() = default;
  Arch(const Arch&) = delete;
  Arch& operator=(const Arch&) = delete;

  const ArchConfig& config() const { return cfg_; }
  SaeOps& ops() { return ops_; }
  // Random decoder rows (unit norm, or dec_init_norm for relu), W_enc = W_dec^T, zero encoder
  // biases, the given b_dec (geometric median of the first sample), architecture extras.
  virtual void init(const std::vector<float>& b_dec);
  // Loss and gradients (into every Param::g) for one batch.
  virtual StepStats step(const StepInput& in) = 0;
  // Inference-mode reconstruction (BatchTopK/Matryoshka use the learned threshold), device to device.
  virtual void reconstruct(const float* x, int64_t B, float* xhat) = 0;
  // Decoder rows kept at unit norm (the trainer removes the gradient's parallel component first).
  virtual bool unit_norm_decoder() const { return true; }
  // Called after each optimiser step.
  virtual void after_update();
  // The SAE as SAELens would load it, with input scale `scale` folded into the weights.
  virtual Sae export_sae(float scale);
  // Running state that is not a parameter (BatchTopK's threshold estimate), for checkpoints.
  virtual nlohmann::json state() const { return nlohmann::json::object(); }
  virtual void load_state(const nlohmann::json&) {}

  std::vector<Param*> params() { return params_; }
  Param* param(const std::string& name);
  // Re-initialise the given latents from the given (scaled) input directions: relu resampling.
  void resample(const std::vector<int64_t>& latents, const std::vector<std::vector<float>>& dirs, float enc_norm,
                float dec_norm);

 protected:
  Param& add_param(const std::string& name, std::vector<int64_t> shape);
  void ensure_rows(int64_t B);  // common batch buffers
  void encode_pre(const float* x, int64_t B);  // xc = x - b_dec; pre = xc E^T (no bias)
  void dense_decode(const float* f, int64_t B, float* xhat);  // xhat = b_dec + f D
  // Gradients of E, b_enc (b_enc may be null: gated) and b_dec from dpre [B, n] and the loss
  // gradient g [B, d] that reaches b_dec through the decoder bias.
  void dense_encoder_grads(const float* dpre, const float* g, int64_t B, float* g_b_enc);
  std::vector<int32_t> download_fires(int64_t n);
  double mean_err(int64_t B, int stride = 1, int offset = 0);

  SaeOps& ops_;
  Backend& be_;
  ArchConfig cfg_;
  std::vector<Param*> params_;
  std::vector<std::unique_ptr<Param>> owned_;
  Param *E_ = nullptr, *D_ = nullptr, *b_dec_ = nullptr, *b_enc_ = nullptr;
  int64_t rows_ = 0;
  Buffer<float> xc_, pre_, xhat_, g_, err_, dxc_, colsum_;
  Buffer<int32_t> fires_;
};

// Sparse codes on the device: CSR rows and their latent -> entries transpose (see sae/ops.h).
struct SparseCodes {
  Buffer<int32_t> row_ptr, idx, lat_ptr, ent, ent_row;
  Buffer<float> val, dpre;
  int64_t nnz = 0, cap = 0;
  void reserve(Backend& be, int64_t B, int64_t n, int64_t cap);
};

// The TopK family (topk, batchtopk, matryoshka): subclasses choose the latents of each row; the
// decode and the backward pass touch only those (and AuxK's dead latents), never a dense
// [B, d_sae] gradient.
class SparseArch : public Arch {
 public:
  SparseArch(SaeOps& ops, ArchConfig cfg, Groups groups);
  StepStats step(const StepInput& in) override;
  void reconstruct(const float* x, int64_t B, float* xhat) override;

 protected:
  // Fills codes_ from pre_ (+ b_enc) for B rows, training mode.
  virtual void select(int64_t B, bool update_state) = 0;
  // Fills codes_ for inference.
  virtual void select_infer(int64_t B) = 0;
  void ensure_sparse(int64_t B);
  Groups groups_;
  SparseCodes codes_, aux_;
  Buffer<float> G_, resid_, aux_xhat_, aux_G_, aux_err_;
};

// The factories, one per file.
std::unique_ptr<Arch> make_relu_arch(SaeOps& ops, const ArchConfig& cfg);
std::unique_ptr<Arch> make_topk_arch(SaeOps& ops, const ArchConfig& cfg);
std::unique_ptr<Arch> make_batchtopk_arch(SaeOps& ops, const ArchConfig& cfg);
std::unique_ptr<Arch> make_jumprelu_arch(SaeOps& ops, const ArchConfig& cfg);
std::unique_ptr<Arch> make_gated_arch(SaeOps& ops, const ArchConfig& cfg);
std::unique_ptr<Arch> make_matryoshka_arch(SaeOps& ops, const ArchConfig& cfg);
// BatchTopK with nested prefix groups: the shared engine of batchtopk and matryoshka.
std::unique_ptr<Arch> make_batchtopk_groups(SaeOps& ops, const ArchConfig& cfg, const Groups& groups);
// Matryoshka prefix sizes used when none are given: d_sae/64, d_sae/16, d_sae/4, d_sae (those >= 1).
std::vector<int64_t> default_matryoshka_prefixes(int64_t d_sae);

struct ArchInfo {
  const char* name;
  const char* about;
  std::unique_ptr<Arch> (*make)(SaeOps&, const ArchConfig&);
};
const std::vector<ArchInfo>& arch_registry();
// Validates the configuration (UsageError naming the option) and builds the architecture.
std::unique_ptr<Arch> make_arch(SaeOps& ops, const ArchConfig& cfg);
// Throws UsageError naming the option when cfg is out of range for its architecture.
void validate_arch_config(const ArchConfig& cfg);

}  // namespace sae
