// BatchTopK SAE (Bussmann et al. 2024): the batch keeps its k*B largest pre-activations (after
// ReLU) over all rows together, so rows use a variable number of latents. At inference a single
// threshold replaces the batch selection: a bias-corrected exponential moving average of the
// smallest value kept in each training batch. Exported as SAELens "jumprelu" with that threshold
// for every latent. The same engine, with nested prefix groups, is Matryoshka.
#include <algorithm>
#include <cmath>

#include "sae/arch.h"

namespace sae {

namespace {
class BatchTopK final : public SparseArch {
 public:
  BatchTopK(SaeOps& ops, const ArchConfig& cfg, const Groups& g) : SparseArch(ops, cfg, g) {}

  Sae export_sae(float scale) override {
    Sae s = Arch::export_sae(scale);
    s.arch = "jumprelu";
    // pre-activations are unchanged by the folded scale, so the threshold carries over as is
    s.threshold.assign(size_t(cfg_.d_sae), threshold());
    return s;
  }
  nlohmann::json state() const override { return {{"threshold_ema", ema_}, {"threshold_updates", updates_}}; }
  void load_state(const nlohmann::json& j) override {
    ema_ = j.at("threshold_ema").get<double>();
    updates_ = j.at("threshold_updates").get<int64_t>();
  }

 protected:
  float threshold() const {
    if (updates_ == 0) return 0.0f;
    return float(ema_ / (1.0 - std::pow(1.0 - double(cfg_.threshold_lr), double(updates_))));
  }
  void select(int64_t B, bool update_state) override {
    const int64_t n = cfg_.d_sae;
    const float thr = ops_.batch_kth(pre_.data(), b_enc_->w.data(), B, n, B * int64_t(cfg_.k));
    fill(B, thr, true);
    if (update_state) {
      // The smallest kept value is this batch's sample of the inference threshold.
      double sample = ops_.min_positive(codes_.val.data(), codes_.nnz);
      ema_ = (1.0 - cfg_.threshold_lr) * ema_ + double(cfg_.threshold_lr) * sample;
      updates_++;
    }
  }
  void select_infer(int64_t B) override { fill(B, threshold(), false); }
  void fill(int64_t B, float thr, bool inclusive) {
    const int64_t n = cfg_.d_sae;
    int64_t nnz = ops_.select_above(pre_.data(), b_enc_->w.data(), thr, inclusive, B, n, codes_.row_ptr.data(),
                                    codes_.idx.data(), codes_.val.data(), codes_.cap);
    if (nnz > codes_.cap) {
      codes_.reserve(be_, B, n, nnz + nnz / 4);
      nnz = ops_.select_above(pre_.data(), b_enc_->w.data(), thr, inclusive, B, n, codes_.row_ptr.data(),
                              codes_.idx.data(), codes_.val.data(), codes_.cap);
    }
    codes_.nnz = nnz;
  }
  double ema_ = 0;
  int64_t updates_ = 0;
};
}  // namespace

std::unique_ptr<Arch> make_batchtopk_groups(SaeOps& ops, const ArchConfig& cfg, const Groups& g) {
  return std::make_unique<BatchTopK>(ops, cfg, g);
}

std::unique_ptr<Arch> make_batchtopk_arch(SaeOps& ops, const ArchConfig& cfg) {
  Groups g;
  g.n = 1;
  g.end[0] = int32_t(cfg.d_sae);
  return make_batchtopk_groups(ops, cfg, g);
}

}  // namespace sae
