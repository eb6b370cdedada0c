// JumpReLU SAE (Rajamanoharan et al. 2024, "Jumping Ahead"): f_i = z_i H(z_i - theta_i) with a
// learned per-latent threshold theta = exp(log_threshold), trained with straight-through
// pseudo-derivatives through a rectangle kernel of width --bandwidth (lib/sae/kernels.h,
// jumprelu_grad), and an L0 penalty lambda * sum_i p_i on the batch firing frequencies p_i. With
// --freq-scale s > 0 the penalty is GDM's quadratic-frequency variant (progress update, 2025):
// lambda * sum_i p_i (1 + p_i / s), which leaves rare latents at plain L0 and pushes hard on latents
// firing much more often than s. Decoder rows unit norm. Exported as SAELens "jumprelu".
#include <cmath>

#include "sae/arch.h"

namespace sae {

namespace {
class JumpRelu final : public Arch {
 public:
  JumpRelu(SaeOps& ops, const ArchConfig& cfg) : Arch(ops, cfg) { log_thr_ = &add_param("log_threshold", {cfg.d_sae}); }

  void init(const std::vector<float>& b_dec) override {
    Arch::init(b_dec);
    std::vector<float> t(static_cast<size_t>(cfg_.d_sae), std::log(cfg_.init_threshold));
    log_thr_->w.upload(t);
  }

  StepStats step(const StepInput& in) override {
    const int64_t B = in.B, n = cfg_.d_sae, d = cfg_.d_in;
    ensure(B);
    StepStats st;
    encode_pre(in.x, B);
    ops_.jumprelu_fwd(pre_.data(), b_enc_->w.data(), log_thr_->w.data(), f_.data(), fires_.data(), B, n);
    dense_decode(f_.data(), B, xhat_.data());
    ops_.recon_error(xhat_.data(), in.x, g_.data(), err_.data(), B, d, 2.0f / float(B));
    st.mse = mean_err(B);
    const float lambda = cfg_.lambda * in.sparsity_scale;
    st.fires = download_fires(n);
    for (int32_t c : st.fires) st.sparsity += kern::l0_penalty_term(float(c) / float(B), lambda, cfg_.freq_scale);
    st.loss = st.mse + st.sparsity;
    be_.gemm(true, false, n, d, B, 1.0f, f_.data(), n, g_.data(), d, 0.0f, D_->g.data(), d);
    float* df = f_.data();  // f is no longer needed once the decoder gradient is taken
    be_.gemm(false, true, B, n, d, 1.0f, g_.data(), d, D_->w.data(), d, 0.0f, df, n);
    ops_.jumprelu_bwd(df, pre_.data(), log_thr_->w.data(), fires_.data(), 1.0f / cfg_.bandwidth, lambda,
                      cfg_.freq_scale, df, log_thr_->g.data(), B, n);
    dense_encoder_grads(df, g_.data(), B, b_enc_->g.data());
    return st;
  }

  void reconstruct(const float* x, int64_t B, float* xhat) override {
    ensure(B);
    encode_pre(x, B);
    ops_.jumprelu_fwd(pre_.data(), b_enc_->w.data(), log_thr_->w.data(), f_.data(), fires_.data(), B, cfg_.d_sae);
    dense_decode(f_.data(), B, xhat);
  }

  Sae export_sae(float scale) override {
    Sae s = Arch::export_sae(scale);
    s.arch = "jumprelu";
    std::vector<float> lt = log_thr_->w.to_vector();
    s.threshold.resize(lt.size());
    for (size_t i = 0; i < lt.size(); i++) s.threshold[i] = std::exp(lt[i]);  // pre-activations are scale-free
    return s;
  }

 private:
  void ensure(int64_t B) {
    ensure_rows(B);
    if (int64_t(f_.size()) < B * cfg_.d_sae) f_ = Buffer<float>(be_, size_t(B * cfg_.d_sae));
  }
  Param* log_thr_ = nullptr;
  Buffer<float> f_;
};
}  // namespace

std::unique_ptr<Arch> make_jumprelu_arch(SaeOps& ops, const ArchConfig& cfg) {
  return std::make_unique<JumpRelu>(ops, cfg);
}

}  // namespace sae
