// TopK SAE (Gao et al. 2024): each row keeps its k largest pre-activations (then ReLU); AuxK makes
// dead latents reconstruct the residual. Decoder rows unit norm. Exported as SAELens "topk".
#include "sae/arch.h"

namespace sae {

namespace {
class TopK final : public SparseArch {
 public:
  TopK(SaeOps& ops, const ArchConfig& cfg) : SparseArch(ops, cfg, one_group(cfg.d_sae)) {}

  Sae export_sae(float scale) override {
    Sae s = Arch::export_sae(scale);
    s.arch = "topk";
    s.k = cfg_.k;
    return s;
  }

 protected:
  static Groups one_group(int64_t n) {
    Groups g;
    g.n = 1;
    g.end[0] = int32_t(n);
    return g;
  }
  void select(int64_t B, bool) override { select_infer(B); }
  void select_infer(int64_t B) override {
    ops_.topk(pre_.data(), b_enc_->w.data(), nullptr, B, cfg_.d_sae, cfg_.k, codes_.row_ptr.data(), codes_.idx.data(),
              codes_.val.data());
    codes_.nnz = B * cfg_.k;
  }
};
}  // namespace

std::unique_ptr<Arch> make_topk_arch(SaeOps& ops, const ArchConfig& cfg) { return std::make_unique<TopK>(ops, cfg); }

}  // namespace sae
