#include "explain/lens.h"

#include <algorithm>
#include <cmath>

#include "backend/backend.h"  // host_sgemm
#include "base/fork_join_pool.h"

namespace sae {

namespace {

// Latents per GEMM block: bounds the score block at kBlock x vocab floats.
constexpr int64_t kBlock = 256;

// The n largest of values[0..count) (skipping `skip`) as (index, value), largest first, ties to
// the lower index; with `lowest`, the n smallest, smallest first.
std::vector<std::pair<int64_t, float>> extremes(const float* values, int64_t count, int n, bool lowest,
                                                int64_t skip = -1) {
  std::vector<std::pair<float, int64_t>> heap;  // the best so far, the worst of them at the root
  auto better = [](const std::pair<float, int64_t>& a, const std::pair<float, int64_t>& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  const size_t keep = size_t(std::max(n, 0));
  heap.reserve(keep);
  for (int64_t i = 0; i < count && keep > 0; i++) {
    if (i == skip) continue;
    const std::pair<float, int64_t> c{lowest ? -values[i] : values[i], i};
    if (heap.size() < keep) {
      heap.push_back(c);
      std::push_heap(heap.begin(), heap.end(), better);
    } else if (better(c, heap.front())) {
      std::pop_heap(heap.begin(), heap.end(), better);
      heap.back() = c;
      std::push_heap(heap.begin(), heap.end(), better);
    }
  }
  std::sort(heap.begin(), heap.end(), better);
  std::vector<std::pair<int64_t, float>> out;
  for (const auto& [v, i] : heap) out.push_back({i, lowest ? -v : v});
  return out;
}

std::vector<TokenScore> token_scores(const std::vector<std::pair<int64_t, float>>& v) {
  std::vector<TokenScore> out;
  for (const auto& [i, s] : v) out.push_back({int32_t(i), s});
  return out;
}

}  // namespace

std::string logit_lens_unavailable(const Sae& sae, const Unembedding& u) {
  if (sae.reshape_activations == "hook_z")
    return "the SAE reads attention heads' outputs (hook_z), which are not in the residual stream's basis";
  if (sae.d_in != u.d_model)
    return "the SAE's d_in (" + std::to_string(sae.d_in) + ") is not the model's d_model (" + std::to_string(u.d_model) +
           "): its hook is not in the residual stream";
  return "";
}

std::vector<LatentLens> logit_lens(const Sae& sae, const Unembedding& u, const std::vector<int64_t>& latents, int T,
                                   int threads) {
  const int64_t D = sae.d_in, V = u.vocab;
  // The mean score of each token over all latents is the score of the mean decoder row.
  std::vector<float> mean_dir(size_t(D), 0.0f);
  {
    std::vector<double> acc(size_t(D), 0.0);
    for (int64_t i = 0; i < sae.d_sae; i++)
      for (int64_t j = 0; j < D; j++) acc[size_t(j)] += sae.W_dec[size_t(i * D + j)];
    for (int64_t j = 0; j < D; j++)
      mean_dir[size_t(j)] = float(acc[size_t(j)] / double(sae.d_sae)) * u.final_norm_weight[size_t(j)];
  }
  std::vector<float> mean_score(static_cast<size_t>(V));
  host_sgemm(false, true, 1, V, D, 1.0f, mean_dir.data(), D, u.W_U.data(), D, 0.0f, mean_score.data(), V);

  std::vector<LatentLens> out(latents.size());
  ForkJoinPool pool(ForkJoinPool::threads_for(threads));
  std::vector<float> dirs, scores;
  for (size_t b0 = 0; b0 < latents.size(); b0 += size_t(kBlock)) {
    const int64_t B = std::min<int64_t>(kBlock, int64_t(latents.size() - b0));
    dirs.resize(size_t(B * D));
    for (int64_t r = 0; r < B; r++)
      for (int64_t j = 0; j < D; j++)
        dirs[size_t(r * D + j)] = sae.W_dec[size_t(latents[b0 + size_t(r)] * D + j)] * u.final_norm_weight[size_t(j)];
    scores.resize(size_t(B * V));
    host_sgemm(false, true, B, V, D, 1.0f, dirs.data(), D, u.W_U.data(), D, 0.0f, scores.data(), V);
    pool.run(B, [&](int64_t r0, int64_t r1, int) {
      std::vector<float> corrected(static_cast<size_t>(V));
      for (int64_t r = r0; r < r1; r++) {
        const float* s = scores.data() + r * V;
        LatentLens& L = out[b0 + size_t(r)];
        L.top = token_scores(extremes(s, V, T, false));
        L.bottom = token_scores(extremes(s, V, T, true));
        for (int64_t t = 0; t < V; t++) corrected[size_t(t)] = s[t] - mean_score[size_t(t)];
        L.top_corrected = token_scores(extremes(corrected.data(), V, T, false));
        L.bottom_corrected = token_scores(extremes(corrected.data(), V, T, true));
      }
    });
  }
  return out;
}

std::vector<std::vector<Neighbour>> decoder_neighbours(const Sae& sae, const std::vector<int64_t>& latents, int n,
                                                       int threads) {
  const int64_t D = sae.d_in, S = sae.d_sae;
  std::vector<float> unit(sae.W_dec);
  for (int64_t i = 0; i < S; i++) {
    double norm = 0;
    for (int64_t j = 0; j < D; j++) norm += double(unit[size_t(i * D + j)]) * unit[size_t(i * D + j)];
    const float inv = norm > 0 ? float(1.0 / std::sqrt(norm)) : 0.0f;
    for (int64_t j = 0; j < D; j++) unit[size_t(i * D + j)] *= inv;
  }
  std::vector<std::vector<Neighbour>> out(latents.size());
  ForkJoinPool pool(ForkJoinPool::threads_for(threads));
  std::vector<float> rows, sims;
  for (size_t b0 = 0; b0 < latents.size(); b0 += size_t(kBlock)) {
    const int64_t B = std::min<int64_t>(kBlock, int64_t(latents.size() - b0));
    rows.resize(size_t(B * D));
    for (int64_t r = 0; r < B; r++)
      std::copy_n(unit.data() + latents[b0 + size_t(r)] * D, D, rows.data() + r * D);
    sims.resize(size_t(B * S));
    host_sgemm(false, true, B, S, D, 1.0f, rows.data(), D, unit.data(), D, 0.0f, sims.data(), S);
    pool.run(B, [&](int64_t r0, int64_t r1, int) {
      for (int64_t r = r0; r < r1; r++)
        for (const auto& [i, s] : extremes(sims.data() + r * S, S, n, false, latents[b0 + size_t(r)]))
          out[b0 + size_t(r)].push_back({i, s});
    });
  }
  return out;
}

}  // namespace sae
