// What a latent's decoder direction says without running the model (docs/explain.md): its logit
// lens, and its nearest latents by decoder cosine.
#pragma once
#include <cstdint>
#include <vector>

#include "explain/report.h"
#include "model/model.h"
#include "sae/sae.h"

namespace sae {

struct LatentLens {
  std::vector<TokenScore> top, bottom;                      // highest first / lowest first
  std::vector<TokenScore> top_corrected, bottom_corrected;  // the same, of score minus the token's mean
};

// Whether the logit lens applies to this SAE: its input must live in the residual stream's basis
// (d_in == d_model and not a hook_z SAE, whose rows are per-head attention outputs). "" when it
// applies, else the reason, for the tool to report.
std::string logit_lens_unavailable(const Sae& sae, const Unembedding& u);

// For each latent: score[t] = sum_j W_dec[latent][j] * g[j] * W_U[t][j], with g the final norm's
// weight (the norm's scaling and bias are left out: they do not depend on the direction, or
// shift every latent's scores alike). The T highest and lowest tokens, and the T highest and
// lowest of score[t] - mean over all d_sae latents of score[t] (the frequency correction: tokens
// every latent promotes drop out). Ties go to the lower token id.
std::vector<LatentLens> logit_lens(const Sae& sae, const Unembedding& u, const std::vector<int64_t>& latents, int T,
                                   int threads);

// For each latent, the n other latents whose decoder rows have the highest cosine with its own,
// highest first, ties to the lower index. A zero row has cosine 0 with everything.
std::vector<std::vector<Neighbour>> decoder_neighbours(const Sae& sae, const std::vector<int64_t>& latents, int n,
                                                       int threads);

}  // namespace sae
