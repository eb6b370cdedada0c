// A sparse autoencoder in memory, its directory format on disk (SAELens-loadable cfg.json +
// sae_weights.safetensors), readers for SAELens (current and legacy cfg keys), EleutherAI sparsify
// and Gemma Scope (params.npz) directories, and a plain reference encoder/decoder for inference.
// docs/sae-format.md describes every format and how each is mapped onto this struct.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/dtype.h"

namespace sae {

// Inference architectures, as SAELens names them. Training architectures map onto these at
// export: relu -> standard, topk -> topk, batchtopk/matryoshka -> jumprelu (learned threshold),
// jumprelu -> jumprelu, gated -> gated.
struct Sae {
  std::string arch = "standard";  // standard | topk | jumprelu | gated
  int64_t d_in = 0, d_sae = 0;
  int k = 0;  // topk only

  std::vector<float> W_enc;      // [d_in, d_sae]
  std::vector<float> b_enc;      // [d_sae]
  std::vector<float> W_dec;      // [d_sae, d_in]
  std::vector<float> b_dec;      // [d_in]
  std::vector<float> threshold;  // [d_sae], jumprelu
  std::vector<float> b_gate;     // [d_sae], gated (b_enc unused)
  std::vector<float> r_mag;      // [d_sae], gated
  std::vector<float> b_mag;      // [d_sae], gated

  bool apply_b_dec_to_input = true;
  // Run-time input normalisation, as SAELens applies it: none | expected_average_only_in (a
  // training-time factor SAELens folds into the weights, so identity here) | constant_norm_rescale
  // | layer_norm. The last two are undone on the reconstruction by reconstruct().
  std::string normalize_activations = "none";
  std::string reshape_activations = "none";  // none | hook_z (rows are the flattened heads either way)
  std::string hook;           // hook point (cfg metadata.hook_name / hook_name)
  std::string model;          // model name, when known
  std::string source_format;  // "saetools", "saelens", "saelens-legacy", "sparsify" or "gemma-scope" (set by load_sae)
  nlohmann::json cfg = nlohmann::json::object();  // the cfg.json as read, or extra keys to write

  // Pre-activation: (norm(x) - b_dec if apply_b_dec_to_input) @ W_enc + b_enc, for `rows` rows.
  // encode: the latents (dense, rows x d_sae) per the architecture.
  // decode: f @ W_dec + b_dec, in the SAE's own (normalised) input space; it equals the
  // activation space unless normalize_activations is constant_norm_rescale or layer_norm, whose
  // per-row factors only reconstruct() knows.
  void encode(const float* x, int64_t rows, float* latents) const;
  // What encode multiplies by W_enc, for `rows` rows into out (rows x d_in): x after the run-time
  // normalisation and, with apply_b_dec_to_input, minus b_dec; the pre-activation is
  // encoder_input @ W_enc + b_enc (gated: + 0, then its two paths). The same arithmetic as encode's,
  // for encoders that do the product themselves (sae/sparse_encode.h).
  void encoder_input(const float* x, int64_t rows, float* out) const;
  void decode(const float* latents, int64_t rows, float* x_hat) const;
  // encode + decode as SAELens's forward does: latents (rows x d_sae) and the reconstruction
  // x_hat (rows x d_in) in activation space, run-time normalisation undone. The decoder sums only
  // the active latents of each row when rows are sparse, and uses one sgemm otherwise.
  void reconstruct(const float* x, int64_t rows, float* latents, float* x_hat) const;
  // Throws InputError naming `where` if any parameter is NaN/Inf or shapes are inconsistent.
  void validate(const std::string& where) const;
};

struct SaveOptions {
  DType dtype = DType::f32;  // storage dtype of the weights
  std::vector<float> log10_density;  // if non-empty, written as sparsity.safetensors ("sparsity" [d_sae])
};

// Reads a saetools, SAELens, sparsify or Gemma Scope SAE directory; every defect (missing files or tensors,
// wrong shapes, NaN weights, unknown architecture) is an InputError naming the directory.
Sae load_sae(const std::string& dir);
// Writes dir atomically (a temporary directory renamed into place).
void save_sae(const Sae& sae, const std::string& dir, const SaveOptions& opt = {});
// The SAELens feature-density file of an SAE directory (sparsity.safetensors, "sparsity" [d_sae],
// log10 firing frequency): empty when the directory has none; InputError when it is malformed.
std::vector<float> load_sparsity(const std::string& dir, int64_t d_sae);

}  // namespace sae
