// Gated SAE (Rajamanoharan et al. 2024, "Improving Dictionary Learning with Gated SAEs"):
//   base = (x - b_dec) W_gate,  pi_gate = base + b_gate,  pi_mag = exp(r_mag) * base + b_mag,
//   f = H(pi_gate) * ReLU(pi_mag),  xhat = f W_dec + b_dec,
//   L = ||x - xhat||^2 + lambda * sum_i ReLU(pi_gate)_i + ||x - (ReLU(pi_gate) W_dec' + b_dec')||^2
// where W_dec', b_dec' are a frozen copy (no gradient reaches the decoder from the auxiliary term)
// and the Heaviside gate passes no gradient. Decoder rows unit norm (so the L1 needs no norm
// weight). Exported as SAELens "gated" (W_enc = W_gate, b_gate, r_mag, b_mag).
#include "sae/arch.h"

namespace sae {

namespace {
class Gated final : public Arch {
 public:
  Gated(SaeOps& ops, const ArchConfig& cfg) : Arch(ops, cfg) {
    b_gate_ = &add_param("b_gate", {cfg.d_sae});
    r_mag_ = &add_param("r_mag", {cfg.d_sae});
    b_mag_ = &add_param("b_mag", {cfg.d_sae});
  }

  StepStats step(const StepInput& in) override {
    const int64_t B = in.B, n = cfg_.d_sae, d = cfg_.d_in;
    ensure(B);
    StepStats st;
    encode_pre(in.x, B);  // pre_ = base
    ops_.gated_fwd(pre_.data(), b_gate_->w.data(), r_mag_->w.data(), b_mag_->w.data(), f_.data(), gr_.data(),
                   fires_.data(), colsum_.data(), B, n);
    dense_decode(f_.data(), B, xhat_.data());
    ops_.recon_error(xhat_.data(), in.x, g_.data(), err_.data(), B, d, 2.0f / float(B));
    st.mse = mean_err(B);
    // auxiliary reconstruction from relu(pi_gate) through the (frozen) decoder
    dense_decode(gr_.data(), B, aux_xhat_.data());
    ops_.recon_error(aux_xhat_.data(), in.x, aux_g_.data(), err_.data(), B, d, 2.0f / float(B));
    st.aux = mean_err(B);
    const float l1 = cfg_.lambda * in.sparsity_scale / float(B);
    st.sparsity = double(l1) * ops_.sum(colsum_.data(), n);
    st.loss = st.mse + st.sparsity + st.aux;
    be_.gemm(true, false, n, d, B, 1.0f, f_.data(), n, g_.data(), d, 0.0f, D_->g.data(), d);
    float* df = f_.data();
    be_.gemm(false, true, B, n, d, 1.0f, g_.data(), d, D_->w.data(), d, 0.0f, df, n);
    float* dgr = gr_.data();
    be_.gemm(false, true, B, n, d, 1.0f, aux_g_.data(), d, D_->w.data(), d, 0.0f, dgr, n);
    ops_.gated_bwd(pre_.data(), df, dgr, b_gate_->w.data(), r_mag_->w.data(), b_mag_->w.data(), l1, df,
                   b_gate_->g.data(), r_mag_->g.data(), b_mag_->g.data(), B, n);
    dense_encoder_grads(df, g_.data(), B, nullptr);
    st.fires = download_fires(n);
    return st;
  }

  void reconstruct(const float* x, int64_t B, float* xhat) override {
    ensure(B);
    encode_pre(x, B);
    ops_.gated_fwd(pre_.data(), b_gate_->w.data(), r_mag_->w.data(), b_mag_->w.data(), f_.data(), gr_.data(),
                   fires_.data(), colsum_.data(), B, cfg_.d_sae);
    dense_decode(f_.data(), B, xhat);
  }

  Sae export_sae(float scale) override {
    Sae s = Arch::export_sae(scale);
    s.arch = "gated";
    s.b_enc.clear();
    s.b_gate = b_gate_->w.to_vector();
    s.r_mag = r_mag_->w.to_vector();
    s.b_mag = b_mag_->w.to_vector();
    return s;
  }

 private:
  void ensure(int64_t B) {
    ensure_rows(B);
    const int64_t n = cfg_.d_sae, d = cfg_.d_in;
    if (int64_t(f_.size()) < B * n) {
      f_ = Buffer<float>(be_, size_t(B * n));
      gr_ = Buffer<float>(be_, size_t(B * n));
      aux_xhat_ = Buffer<float>(be_, size_t(B * d));
      aux_g_ = Buffer<float>(be_, size_t(B * d));
    }
  }
  Param *b_gate_ = nullptr, *r_mag_ = nullptr, *b_mag_ = nullptr;
  Buffer<float> f_, gr_, aux_xhat_, aux_g_;
};
}  // namespace

std::unique_ptr<Arch> make_gated_arch(SaeOps& ops, const ArchConfig& cfg) { return std::make_unique<Gated>(ops, cfg); }

}  // namespace sae
