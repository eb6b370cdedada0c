// Matryoshka SAE (Bussmann et al. 2025; Nabeshima 2024) over BatchTopK: the latents are split
// into nested prefixes [0, m_1) ⊂ [0, m_2) ⊂ ... ⊂ [0, d_sae), and the loss is the sum over prefixes
// of the reconstruction error using only that prefix's latents (plus b_dec):
//   L = sum_t mean_rows ||x - b_dec - sum_{i < m_t} f_i d_i||^2   (+ AuxK).
// Early latents must reconstruct on their own, so they learn general features and the later ones
// refine them. Sparse codes keep each row's latents in ascending order, so the prefix
// reconstructions are running sums of one pass (SaeOps::sparse_decode with groups).
#include "sae/arch.h"

namespace sae {

std::unique_ptr<Arch> make_matryoshka_arch(SaeOps& ops, const ArchConfig& cfg) {
  Groups g;
  g.n = int(cfg.prefixes.size());
  for (int t = 0; t < g.n; t++) g.end[t] = int32_t(cfg.prefixes[size_t(t)]);
  return make_batchtopk_groups(ops, cfg, g);
}

// Default prefix sizes when none are given: d_sae/64, d_sae/16, d_sae/4, d_sae (those >= 1).
std::vector<int64_t> default_matryoshka_prefixes(int64_t d_sae) {
  std::vector<int64_t> p;
  for (int64_t div : {64, 16, 4}) {
    int64_t m = d_sae / div;
    if (m >= 1 && (p.empty() || m > p.back())) p.push_back(m);
  }
  if (p.empty() || p.back() != d_sae) p.push_back(d_sae);
  return p;
}

}  // namespace sae
