// ReLU SAE with Anthropic's April 2024 recipe: f = ReLU((x - b_dec) W_enc + b_enc), the L1 penalty
// weighted by each latent's decoder row norm, lambda * sum_i f_i ||d_i|| (so shrinking the decoder
// cannot dodge it), unconstrained decoder rows initialised small, and a warm-up of lambda (the
// trainer's --l1-warmup). Exported as SAELens "standard".
#include "sae/arch.h"

namespace sae {

namespace {
class Relu final : public Arch {
 public:
  Relu(SaeOps& ops, const ArchConfig& cfg) : Arch(ops, cfg) { norms_ = Buffer<float>(be_, size_t(cfg.d_sae)); }
  bool unit_norm_decoder() const override { return false; }

  StepStats step(const StepInput& in) override {
    const int64_t B = in.B, n = cfg_.d_sae, d = cfg_.d_in;
    ensure(B);
    StepStats st;
    encode_pre(in.x, B);
    ops_.row_norms(D_->w.data(), norms_.data(), n, d);
    ops_.relu_fwd(pre_.data(), b_enc_->w.data(), f_.data(), fires_.data(), colsum_.data(), B, n);
    dense_decode(f_.data(), B, xhat_.data());
    ops_.recon_error(xhat_.data(), in.x, g_.data(), err_.data(), B, d, 2.0f / float(B));
    st.mse = mean_err(B);
    const float lambda = cfg_.lambda * in.sparsity_scale;
    const float coef = lambda / float(B);
    st.sparsity = double(coef) * ops_.dot(colsum_.data(), norms_.data(), n);
    st.loss = st.mse + st.sparsity;
    // decoder: reconstruction term, then the norm-weighted L1 term
    be_.gemm(true, false, n, d, B, 1.0f, f_.data(), n, g_.data(), d, 0.0f, D_->g.data(), d);
    ops_.l1_norm_grad(colsum_.data(), norms_.data(), D_->w.data(), coef, D_->g.data(), n, d);
    // df = g D^T into the pre-activation buffer (pre is no longer needed: f > 0 is the mask)
    float* df = pre_.data();
    be_.gemm(false, true, B, n, d, 1.0f, g_.data(), d, D_->w.data(), d, 0.0f, df, n);
    ops_.relu_bwd(df, f_.data(), norms_.data(), coef, df, B, n);
    dense_encoder_grads(df, g_.data(), B, b_enc_->g.data());
    st.fires = download_fires(n);
    return st;
  }

  void reconstruct(const float* x, int64_t B, float* xhat) override {
    ensure(B);
    encode_pre(x, B);
    ops_.relu_fwd(pre_.data(), b_enc_->w.data(), f_.data(), fires_.data(), colsum_.data(), B, cfg_.d_sae);
    dense_decode(f_.data(), B, xhat);
  }

 private:
  void ensure(int64_t B) {
    ensure_rows(B);
    if (int64_t(f_.size()) < B * cfg_.d_sae) f_ = Buffer<float>(be_, size_t(B * cfg_.d_sae));
  }
  Buffer<float> f_, norms_;
};
}  // namespace

std::unique_ptr<Arch> make_relu_arch(SaeOps& ops, const ArchConfig& cfg) { return std::make_unique<Relu>(ops, cfg); }

}  // namespace sae
