// What the decoder says (lib/explain/lens.h): the unembedding as the logit lens reads it, straight
// from the shared models' files (tied and untied heads, Gemma's 1 + w norm), and the logit lens and
// decoder neighbours against a brute-force computation in double.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <random>

#include "explain/lens.h"
#include "stream/safetensors.h"

using namespace sae;

namespace {

std::string shared_model(const std::string& name) {
  const char* s = std::getenv("SAE_SHARED");
  return std::string(s ? s : SAE_SOURCE_DIR "/../shared") + "/models/" + name;
}

Sae random_sae(int64_t d_in, int64_t d_sae, uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  Sae s;
  s.d_in = d_in;
  s.d_sae = d_sae;
  s.W_dec.resize(size_t(d_sae * d_in));
  for (float& w : s.W_dec) w = nd(g);
  // Two rows of the same direction, one zero row: neighbours with cosine 1 and 0.
  EXPECT_GE(d_sae, 6) << "random_sae sets rows 3 and 5";
  for (int64_t j = 0; j < d_in; j++) s.W_dec[size_t(3 * d_in + j)] = 2.5f * s.W_dec[size_t(1 * d_in + j)];
  for (int64_t j = 0; j < d_in; j++) s.W_dec[size_t(5 * d_in + j)] = 0.0f;
  return s;
}

// The T best of scores by (score desc, index asc), or lowest first.
std::vector<std::pair<int64_t, double>> brute_extremes(const std::vector<double>& v, int T, bool lowest, int64_t skip = -1) {
  std::vector<std::pair<int64_t, double>> all;
  for (size_t i = 0; i < v.size(); i++)
    if (int64_t(i) != skip) all.push_back({int64_t(i), v[i]});
  std::stable_sort(all.begin(), all.end(), [&](auto& a, auto& b) { return lowest ? a.second < b.second : a.second > b.second; });
  all.resize(std::min(all.size(), size_t(T)));
  return all;
}

// Lists equal up to float rounding: the same scores within tol, and the same tokens wherever the
// brute-force scores are not within tol of a neighbour's (a near-tie may order either way).
void expect_same_list(const std::vector<TokenScore>& got, const std::vector<std::pair<int64_t, double>>& want,
                      const std::vector<double>& all, double tol, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t k = 0; k < want.size(); k++) {
    EXPECT_NEAR(got[k].score, want[k].second, tol) << what << " rank " << k;
    if (got[k].token != want[k].first) {
      EXPECT_NEAR(all[size_t(got[k].token)], want[k].second, tol) << what << " rank " << k;
    }
  }
}

}  // namespace

TEST(Unembedding, ReadsTheHeadAndTheFinalNormOfEachFamily) {
  struct Case {
    const char* model;
    const char* head;  // the tensor W_U must equal
    const char* norm;
    bool one_plus;     // Gemma: the forward multiplies by 1 + w
  };
  for (const Case& c : {Case{"gpt2-random", "transformer.wte.weight", "transformer.ln_f.weight", false},
                        Case{"stories260K", "model.embed_tokens.weight", "model.norm.weight", false},
                        Case{"gemma2-random", "model.embed_tokens.weight", "model.norm.weight", true},
                        Case{"pythia-random", "embed_out.weight", "gpt_neox.final_layer_norm.weight", false},
                        Case{"qwen3-random", "lm_head.weight", "model.norm.weight", false}}) {
    const std::string dir = shared_model(c.model);
    if (!std::ifstream(dir + "/config.json")) GTEST_SKIP() << dir << " is absent";
    const Unembedding u = load_unembedding(dir);
    SafeTensors st(dir + "/model.safetensors");
    const std::vector<float> head = st.read_f32(c.head, {u.vocab, u.d_model});
    std::vector<float> norm = st.read_f32(c.norm, {u.d_model});
    if (c.one_plus)
      for (float& w : norm) w = 1.0f + w;
    EXPECT_EQ(u.W_U, head) << c.model;
    EXPECT_EQ(u.final_norm_weight, norm) << c.model;
  }
}

TEST(LogitLens, EqualsBruteForceInDoubleWithTheFrequencyCorrection) {
  const int64_t D = 24, S = 40, V = 300;
  const Sae sae = random_sae(D, S, 1);
  Unembedding u;
  u.d_model = D;
  u.vocab = V;
  std::mt19937 g(2);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  u.W_U.resize(size_t(V * D));
  for (float& w : u.W_U) w = nd(g);
  u.final_norm_weight.resize(size_t(D));
  for (float& w : u.final_norm_weight) w = 1.0f + 0.3f * nd(g);
  ASSERT_EQ(logit_lens_unavailable(sae, u), "");
  const std::vector<int64_t> latents = {0, 1, 7, 39};
  const int T = 6;
  const auto got = logit_lens(sae, u, latents, T, 2);
  ASSERT_EQ(got.size(), latents.size());
  // mean score of each token over all latents
  std::vector<double> mean(static_cast<size_t>(V), 0.0);
  std::vector<std::vector<double>> score(static_cast<size_t>(S), std::vector<double>(static_cast<size_t>(V)));
  for (int64_t i = 0; i < S; i++)
    for (int64_t t = 0; t < V; t++) {
      double s = 0;
      for (int64_t j = 0; j < D; j++)
        s += double(sae.W_dec[size_t(i * D + j)]) * u.final_norm_weight[size_t(j)] * u.W_U[size_t(t * D + j)];
      score[size_t(i)][size_t(t)] = s;
      mean[size_t(t)] += s / double(S);
    }
  for (size_t k = 0; k < latents.size(); k++) {
    const std::vector<double>& s = score[size_t(latents[k])];
    std::vector<double> corrected(static_cast<size_t>(V));
    for (int64_t t = 0; t < V; t++) corrected[size_t(t)] = s[size_t(t)] - mean[size_t(t)];
    expect_same_list(got[k].top, brute_extremes(s, T, false), s, 2e-4, "top");
    expect_same_list(got[k].bottom, brute_extremes(s, T, true), s, 2e-4, "bottom");
    expect_same_list(got[k].top_corrected, brute_extremes(corrected, T, false), corrected, 2e-4, "top corrected");
    expect_same_list(got[k].bottom_corrected, brute_extremes(corrected, T, true), corrected, 2e-4, "bottom corrected");
  }
  // The correction matters: a token every latent promotes tops the raw lists, not the corrected.
  Sae shifted = sae;
  for (int64_t i = 0; i < S; i++)
    for (int64_t j = 0; j < D; j++) shifted.W_dec[size_t(i * D + j)] += 3.0f * u.W_U[size_t(17 * D + j)] / u.final_norm_weight[size_t(j)];
  const auto biased = logit_lens(shifted, u, {0, 1, 2}, 3, 1);
  for (const LatentLens& l : biased) {
    EXPECT_EQ(l.top[0].token, 17);
    for (const TokenScore& t : l.top_corrected) EXPECT_NE(t.token, 17);
  }
}

TEST(LogitLens, NeedsTheResidualStreamBasis) {
  Sae s = random_sae(8, 6, 3);
  Unembedding u;
  u.d_model = 16;
  EXPECT_EQ(logit_lens_unavailable(s, u), "the SAE's d_in (8) is not the model's d_model (16): its hook is not in the residual stream");
  u.d_model = 8;
  s.reshape_activations = "hook_z";
  EXPECT_EQ(logit_lens_unavailable(s, u),
            "the SAE reads attention heads' outputs (hook_z), which are not in the residual stream's basis");
}

TEST(DecoderNeighbours, EqualBruteForceCosines) {
  const int64_t D = 16, S = 30;
  const Sae sae = random_sae(D, S, 4);
  const std::vector<int64_t> latents = {0, 1, 3, 5, 29};
  const auto got = decoder_neighbours(sae, latents, 4, 2);
  auto norm = [&](int64_t i) {
    double n = 0;
    for (int64_t j = 0; j < D; j++) n += double(sae.W_dec[size_t(i * D + j)]) * sae.W_dec[size_t(i * D + j)];
    return std::sqrt(n);
  };
  for (size_t k = 0; k < latents.size(); k++) {
    const int64_t a = latents[k];
    std::vector<double> cos(static_cast<size_t>(S), 0.0);
    for (int64_t b = 0; b < S; b++) {
      double dot = 0;
      for (int64_t j = 0; j < D; j++) dot += double(sae.W_dec[size_t(a * D + j)]) * sae.W_dec[size_t(b * D + j)];
      const double n = norm(a) * norm(b);
      cos[size_t(b)] = n > 0 ? dot / n : 0.0;
    }
    const auto want = brute_extremes(cos, 4, false, a);
    ASSERT_EQ(got[k].size(), want.size());
    for (size_t r = 0; r < want.size(); r++) {
      EXPECT_NEAR(got[k][r].score, want[r].second, 1e-5) << "latent " << a << " rank " << r;
      if (got[k][r].latent != want[r].first) {
        EXPECT_NEAR(cos[size_t(got[k][r].latent)], want[r].second, 1e-5);
      }
    }
  }
  // 1 and 3 share a direction; 5 is zero and near nothing.
  EXPECT_EQ(got[1][0].latent, 3);
  EXPECT_NEAR(got[1][0].score, 1.0, 1e-6);
  for (const Neighbour& n : got[3]) EXPECT_EQ(n.score, 0.0f);
}
