// Streaming SAE metrics (lib/eval/metrics.h) against values derived by hand and against a plain
// two-pass reference computed here from stored rows; decoder geometry against all-pairs cosines;
// streaming independence from chunking and thread count; memory that does not grow with rows.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "eval/metrics.h"
#include "sae/sae.h"
#include "support/sae_fixtures.h"

using namespace sae;
using namespace fixtures;
using json = nlohmann::json;

namespace {

// The hand fixture of docs/eval.md (sae_fixtures.h), in memory.
Sae hand_sae() {
  Weights w = hand_weights();
  Sae s;
  s.arch = w.arch;
  s.d_in = w.d_in;
  s.d_sae = w.d_sae;
  s.W_enc = w.W_enc;
  s.b_enc = w.b_enc;
  s.W_dec = w.W_dec;
  s.b_dec = w.b_dec;
  s.validate("hand");
  return s;
}
// Rows (2,0), (0,2), (-2,0), (0,-2): the positive ones are reconstructed exactly, the negative
// ones as 0.
const std::vector<float> kHandRows = {2, 0, 0, 2, -2, 0, 0, -2};

// Two-pass reference over stored rows, straight from the definitions in docs/eval.md.
struct Ref {
  double mse, fvu, cos, l2_in, l2_out, ratio, rrb, l0_mean, l0_std, l1;
  int64_t zero_rows;
  std::vector<int64_t> fire;
};
Ref reference(const std::vector<float>& x, const std::vector<float>& f, const std::vector<float>& xh, int64_t n,
              int64_t d, int64_t m) {
  Ref r{};
  std::vector<double> mean(size_t(d), 0.0);
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < d; j++) mean[size_t(j)] += x[size_t(i * d + j)];
  for (double& v : mean) v /= double(n);
  double se = 0, tv = 0, xh2 = 0, dot = 0, cos = 0, ratio = 0, nin = 0, nout = 0, l0 = 0, l0sq = 0, l1 = 0;
  int64_t nz = 0;
  r.fire.assign(size_t(m), 0);
  for (int64_t i = 0; i < n; i++) {
    double a = 0, b = 0, c = 0;
    for (int64_t j = 0; j < d; j++) {
      double xv = x[size_t(i * d + j)], hv = xh[size_t(i * d + j)];
      se += (xv - hv) * (xv - hv);
      tv += (xv - mean[size_t(j)]) * (xv - mean[size_t(j)]);
      a += xv * xv;
      b += hv * hv;
      c += xv * hv;
    }
    xh2 += b;
    dot += c;
    nin += std::sqrt(a);
    nout += std::sqrt(b);
    if (a > 0) {
      nz++;
      cos += b > 0 ? c / std::sqrt(a * b) : 0;
      ratio += std::sqrt(b / a);
    }
    int64_t cnt = 0;
    for (int64_t k = 0; k < m; k++)
      if (f[size_t(i * m + k)] != 0) {
        cnt++;
        r.fire[size_t(k)]++;
        l1 += std::fabs(f[size_t(i * m + k)]);
      }
    l0 += double(cnt);
    l0sq += double(cnt) * double(cnt);
  }
  r.mse = se / double(n * d);
  r.fvu = se / tv;
  r.cos = cos / double(nz);
  r.ratio = ratio / double(nz);
  r.l2_in = nin / double(n);
  r.l2_out = nout / double(n);
  r.rrb = xh2 / dot;
  r.l0_mean = l0 / double(n);
  r.l0_std = std::sqrt(l0sq / double(n) - r.l0_mean * r.l0_mean);
  r.l1 = l1 / double(n);
  r.zero_rows = n - nz;
  return r;
}

void expect_rel(double got, double want, double rel, const char* what) {
  EXPECT_NEAR(got, want, rel * std::max(1.0, std::fabs(want))) << what;
}

// Every number of the evaluator against the two-pass reference: the reconstruction metrics to
// `rel`, the integer-derived L0 mean to double rounding, the one-pass L0 std to 1e-9, the fire
// counts exactly.
void expect_matches(const EvalResult& e, const Ref& r, double rel, const std::string& what) {
  SCOPED_TRACE(what);
  expect_rel(e.mse, r.mse, rel, "mse");
  expect_rel(e.fvu, r.fvu, rel, "fvu");
  expect_rel(e.cosine_similarity, r.cos, rel, "cos");
  expect_rel(e.l2_ratio, r.ratio, rel, "l2 ratio");
  expect_rel(e.l2_norm_in, r.l2_in, rel, "l2 in");
  expect_rel(e.l2_norm_out, r.l2_out, rel, "l2 out");
  expect_rel(e.relative_reconstruction_bias, r.rrb, rel, "rrb");
  expect_rel(e.l1_mean, r.l1, rel, "l1");
  expect_rel(e.l0_mean, r.l0_mean, 1e-12, "l0");
  expect_rel(e.l0_std, r.l0_std, 1e-9, "l0 std");
  EXPECT_EQ(e.zero_input_rows, r.zero_rows);
  EXPECT_EQ(e.fire_count, r.fire);
}

int64_t current_rss_kb() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6));
  return -1;
}

}  // namespace

// ---- the hand fixture: every number by hand ----

TEST(MetricsHand, EveryNumberByHand) {
  Sae s = hand_sae();
  SaeEvaluator ev(s);
  ev.add(kHandRows.data(), 4);
  EvalResult e = ev.result();
  EXPECT_EQ(e.rows, 4);
  // Errors: rows 3 and 4 lose their whole value (4 each): sum 8 over 4 rows * 2 dims.
  EXPECT_DOUBLE_EQ(e.mse, 1.0);
  EXPECT_DOUBLE_EQ(e.squared_error_per_row, 2.0);
  // The mean row is 0, so the total variance is the sum of squares, 16; FVU = 8/16.
  EXPECT_DOUBLE_EQ(e.total_variance, 16.0);
  EXPECT_DOUBLE_EQ(e.fvu, 0.5);
  EXPECT_DOUBLE_EQ(e.explained_variance, 0.5);
  // cos = 1, 1, and 0 for the two rows reconstructed as zero.
  EXPECT_DOUBLE_EQ(e.cosine_similarity, 0.5);
  EXPECT_DOUBLE_EQ(e.l2_ratio, 0.5);
  EXPECT_DOUBLE_EQ(e.l2_norm_in, 2.0);
  EXPECT_DOUBLE_EQ(e.l2_norm_out, 1.0);
  // E||x_hat||^2 = 8/4 = E[x . x_hat]: no shrinkage.
  EXPECT_DOUBLE_EQ(e.relative_reconstruction_bias, 1.0);
  EXPECT_EQ(e.zero_input_rows, 0);
  // L0 = 1, 1, 0, 0; L1 = 2, 2, 0, 0.
  EXPECT_DOUBLE_EQ(e.l0_mean, 0.5);
  EXPECT_DOUBLE_EQ(e.l0_std, 0.5);
  EXPECT_DOUBLE_EQ(e.l1_mean, 1.0);
  EXPECT_EQ(e.l0_histogram, (std::vector<int64_t>{2, 2, 0, 0}));
  EXPECT_EQ(e.l0_quantile(0.5), 0);
  EXPECT_EQ(e.l0_quantile(0.51), 1);
  EXPECT_EQ(e.l0_quantile(1.0), 1);
  // Latents 0 and 1 fire on a quarter of the rows each (> 10%: dense); latent 2 never.
  EXPECT_EQ(e.fire_count, (std::vector<int64_t>{1, 1, 0}));
  EXPECT_EQ(e.dead, 1);
  EXPECT_EQ(e.dense, 2);
  std::vector<float> dens = e.log10_density();
  EXPECT_FLOAT_EQ(dens[0], float(std::log10(0.25 + 1e-10)));
  EXPECT_FLOAT_EQ(dens[1], float(std::log10(0.25 + 1e-10)));
  EXPECT_FLOAT_EQ(dens[2], -10.0f);  // SAELens's floor for never-firing latents
}

TEST(MetricsHand, DecoderGeometryByHand) {
  Sae s = hand_sae();
  auto be = make_cpu_backend();
  GeometryResult g = decoder_geometry(s, *be);
  // e1.e2 = 0 and each of them has cosine 1/sqrt 2 with (1,1)/sqrt 2.
  ASSERT_EQ(g.max_cos.size(), 3u);
  for (float c : g.max_cos) EXPECT_NEAR(c, 1 / std::sqrt(2.0), 1e-6);
  EXPECT_EQ(g.zero_rows, 0);
  EXPECT_EQ(g.above_threshold, 0);
  EXPECT_EQ(g.summary.count, 3);
}

TEST(MetricsHand, ReportJsonAndTable) {
  Sae s = hand_sae();
  s.source_format = "saelens";
  SaeEvaluator ev(s);
  ev.add(kHandRows.data(), 4);
  auto be = make_cpu_backend();
  EvalReport rep;
  rep.sae_path = "hand";
  rep.sae = &s;
  rep.inputs = {"rows.sae"};
  rep.eval = ev.result();
  rep.geometry = decoder_geometry(s, *be);
  rep.has_geometry = true;
  auto j = eval_report_json(rep);
  EXPECT_EQ(j["rows"], 4);
  EXPECT_EQ(j["sae"]["architecture"], "standard");
  EXPECT_EQ(j["sae"]["format"], "saelens");
  EXPECT_DOUBLE_EQ(j["reconstruction"]["mse"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(j["reconstruction"]["fvu"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(j["reconstruction"]["explained_variance"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(j["reconstruction"]["cosine_similarity"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(j["reconstruction"]["relative_reconstruction_bias"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(j["sparsity"]["l0"]["mean"].get<double>(), 0.5);
  EXPECT_EQ(j["sparsity"]["l0"]["histogram"], nlohmann::ordered_json::parse("[[0, 2], [1, 2]]"));
  EXPECT_EQ(j["sparsity"]["l0"]["median"], 0);
  EXPECT_EQ(j["latents"]["dead"], 1);
  EXPECT_EQ(j["latents"]["dense"], 2);
  EXPECT_EQ(j["latents"]["alive"], 2);
  EXPECT_NEAR(j["decoder_geometry"]["max_cosine"]["mean"].get<double>(), 1 / std::sqrt(2.0), 1e-6);
  EXPECT_FALSE(j.contains("compare"));
  std::string table = eval_report_table(rep);
  EXPECT_NE(table.find("  fvu                            0.50000\n"), std::string::npos) << table;
  EXPECT_NE(table.find("  dead (never fired)             1 (33.33%)\n"), std::string::npos) << table;
}

TEST(MetricsHand, UndefinedValuesAreNullInJson) {
  // Every row identical: zero total variance, so FVU is undefined.
  Sae s = hand_sae();
  SaeEvaluator ev(s);
  std::vector<float> x = {1, 1, 1, 1, 1, 1};
  ev.add(x.data(), 3);
  EvalReport rep;
  rep.sae = &s;
  rep.eval = ev.result();
  EXPECT_EQ(rep.eval.total_variance, 0.0);
  auto j = eval_report_json(rep);
  EXPECT_TRUE(j["reconstruction"]["fvu"].is_null());
  EXPECT_TRUE(j["reconstruction"]["explained_variance"].is_null());
  EXPECT_DOUBLE_EQ(j["reconstruction"]["mse"].get<double>(), 0.0);
}

TEST(MetricsHand, ZeroInputRowsLeftOutOfCosineAndRatio) {
  Sae s = hand_sae();
  SaeEvaluator ev(s);
  std::vector<float> x = {2, 0, 0, 0};  // (2,0) and a zero row
  ev.add(x.data(), 2);
  EvalResult e = ev.result();
  EXPECT_EQ(e.zero_input_rows, 1);
  EXPECT_DOUBLE_EQ(e.cosine_similarity, 1.0);
  EXPECT_DOUBLE_EQ(e.l2_ratio, 1.0);
  EXPECT_DOUBLE_EQ(e.l2_norm_in, 1.0);
}

// ---- random SAEs against the two-pass reference ----

class MetricsRandom : public ::testing::TestWithParam<std::string> {};

TEST_P(MetricsRandom, AccumulateMatchesTwoPassReference) {
  // The metric arithmetic alone: given x, latents and x_hat, the one-pass sums must equal the
  // two-pass definitions to double rounding (1e-10 relative; the one-pass variance subtracts
  // two sums of size ~n*d, which loses a few digits but nowhere near 6).
  const std::string arch = GetParam();
  Weights w = random_weights(arch, 16, 48, 7, arch == "topk" ? 4 : 0);
  TempDir t;
  write_saelens6(t / "sae", w);
  Sae s = load_sae(t / "sae");
  const int64_t n = 700;
  std::vector<float> x = randn(size_t(n * 16), 3, 2.0f);
  for (size_t i = 0; i < x.size(); i++) x[i] += float(i % 16) * 0.5f;  // per-dimension offsets
  std::vector<float> f(size_t(n * 48)), xh(size_t(n * 16));
  s.reconstruct(x.data(), n, f.data(), xh.data());
  SaeEvaluator ev(s);
  ev.accumulate(x.data(), f.data(), xh.data(), 300);
  ev.accumulate(x.data() + 300 * 16, f.data() + 300 * 48, xh.data() + 300 * 16, n - 300);
  EvalResult e = ev.result();
  Ref r = reference(x, f, xh, n, 16, 48);
  expect_matches(e, r, 1e-10, arch);
  // A random SAE on offset rows reconstructs badly (fvu well above 1); what matters here is that
  // the comparison above is not between degenerate values.
  EXPECT_GT(e.fvu, 0.1);
  EXPECT_TRUE(std::isfinite(e.fvu));
  EXPECT_GT(e.l0_mean, 1.0);
}

TEST_P(MetricsRandom, EndToEndMatchesIndependentReference) {
  // add() encodes with Sae::reconstruct; here the reference also computes the SAE's output
  // itself, in double (sae_fixtures.h), so this checks encoding and metrics together. float32
  // reconstructions differ from double ones by ~1e-6 relative, so metrics agree to 1e-4.
  const std::string arch = GetParam();
  Weights w = random_weights(arch, 16, 48, 9, arch == "topk" ? 4 : 0);
  TempDir t;
  write_saelens6(t / "sae", w);
  Sae s = load_sae(t / "sae");
  const int64_t n = 500;
  std::vector<float> x = randn(size_t(n * 16), 4);
  SaeEvaluator ev(s, 64);
  ev.add(x.data(), n);
  EvalResult e = ev.result();
  RefOut ro = ref_saelens(w, x.data(), n);
  std::vector<float> f(ro.f.begin(), ro.f.end()), xh(ro.xhat.begin(), ro.xhat.end());
  expect_matches(e, reference(x, f, xh, n, 16, 48), 1e-4, arch);
}

TEST(MetricsFormats, LegacyAndSparsifyFixturesMatchTheirReferences) {
  // The same end-to-end check for the other two readers: a pre-6.0 SAELens TopK directory and a
  // sparsify directory (bf16 weights), each against its own format's reference forward pass.
  const int64_t n = 400;
  std::vector<float> x = randn(size_t(n * 16), 12);
  TempDir t;
  Weights lw = random_weights("topk", 16, 48, 19, 4);
  write_saelens_legacy(t / "legacy", lw);
  Weights sw = bf16_rounded(random_weights("topk", 16, 48, 23, 6));
  write_sparsify(t / "layers.1", sw);
  std::vector<float> enc(size_t(48 * 16));
  for (int64_t m = 0; m < 48; m++)
    for (int64_t j = 0; j < 16; j++) enc[size_t(m * 16 + j)] = sw.W_enc[size_t(j * 48 + m)];
  struct Case {
    std::string dir;
    RefOut ref;
  } cases[] = {{t / "legacy", ref_saelens(lw, x.data(), n)},
               {t / "layers.1", ref_sparsify(enc, sw.b_enc, sw.W_dec, sw.b_dec, 16, 48, 6, x.data(), n)}};
  for (const Case& c : cases) {
    Sae s = load_sae(c.dir);
    SaeEvaluator ev(s);
    ev.add(x.data(), n);
    EvalResult e = ev.result();
    std::vector<float> f(c.ref.f.begin(), c.ref.f.end()), xh(c.ref.xhat.begin(), c.ref.xhat.end());
    expect_matches(e, reference(x, f, xh, n, 16, 48), 1e-4, c.dir);
  }
}

INSTANTIATE_TEST_SUITE_P(Arch, MetricsRandom, ::testing::Values("standard", "topk", "jumprelu", "gated"));

TEST(MetricsStreaming, ChunkingAndThreadsDoNotChangeResults) {
  Weights w = random_weights("topk", 16, 64, 13, 5);
  TempDir t;
  write_saelens6(t / "sae", w);
  Sae s = load_sae(t / "sae");
  const int64_t n = 1000;
  std::vector<float> x = randn(size_t(n * 16), 6);
  auto run = [&](int64_t chunk, int64_t call, int threads) {
    int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    SaeEvaluator ev(s, chunk);
    for (int64_t r = 0; r < n; r += call) ev.add(x.data() + r * 16, std::min(call, n - r));
    omp_set_num_threads(saved);
    return ev.result();
  };
  EvalResult a = run(1000, 1000, 2), b = run(7, 1000, 2), c = run(64, 33, 1), d = run(1, 5, 2);
  for (const EvalResult* o : {&b, &c, &d}) {
    // Per-row values do not depend on the chunk or thread count; only the variance shift (the
    // mean of the first call's rows) does, which moves FVU by double rounding. float sgemm may
    // round a row differently with a different number of rows, hence 1e-6 rather than exact.
    expect_rel(o->fvu, a.fvu, 1e-6, "fvu");
    expect_rel(o->mse, a.mse, 1e-6, "mse");
    expect_rel(o->cosine_similarity, a.cosine_similarity, 1e-6, "cos");
    EXPECT_EQ(o->fire_count, a.fire_count);
    EXPECT_EQ(o->l0_histogram, a.l0_histogram);
  }
}

TEST(MetricsStreaming, LargeCommonOffsetKeepsVarianceAccurate) {
  // Activations 1e4 + N(0, 1): a naive one-pass sum(x^2) - n*mean^2 in double would lose about
  // 8 of its 16 digits; the shifted sums must match the two-pass variance to 1e-9.
  Sae s = hand_sae();
  const int64_t n = 20000;
  std::vector<float> x = randn(size_t(n * 2), 8);
  for (float& v : x) v += 1e4f;
  std::vector<float> f(size_t(n * 3), 0.0f), xh(size_t(n * 2), 1e4f);
  SaeEvaluator ev(s);
  ev.accumulate(x.data(), f.data(), xh.data(), n);
  Ref r = reference(x, f, xh, n, 2, 3);
  expect_rel(ev.result().fvu, r.fvu, 1e-9, "fvu with offset");
}

TEST(MetricsStreaming, MemoryDoesNotGrowWithRows) {
  // Storing rows would cost 16 floats = 64 bytes per row: 20 MB for 320k rows. After a warm-up
  // of 32k rows (all buffers allocated), evaluating 10x more rows must not grow the resident set
  // by more than 2 MB (allocator noise).
  Weights w = random_weights("topk", 16, 64, 17, 4);
  TempDir t;
  write_saelens6(t / "sae", w);
  Sae s = load_sae(t / "sae");
  std::vector<float> batch = randn(size_t(4096 * 16), 9);
  SaeEvaluator ev(s);
  for (int i = 0; i < 8; i++) ev.add(batch.data(), 4096);
  int64_t before = current_rss_kb();
  for (int i = 0; i < 80; i++) ev.add(batch.data(), 4096);
  int64_t after = current_rss_kb();
  ASSERT_GT(before, 0);
  EXPECT_EQ(ev.rows(), 88 * 4096);
  EXPECT_LT(after - before, 2048) << "RSS grew from " << before << " kB to " << after << " kB";
}

// ---- decoder geometry ----

TEST(MetricsGeometry, MaxCosineMatchesAllPairs) {
  const int64_t na = 37, nb = 53, d = 12;
  std::vector<float> A = randn(size_t(na * d), 21), B = randn(size_t(nb * d), 22);
  // A zero row in each: no candidate in B, NaN in A.
  std::fill(A.begin() + 5 * d, A.begin() + 6 * d, 0.0f);
  std::fill(B.begin() + 7 * d, B.begin() + 8 * d, 0.0f);
  auto cosd = [&](const float* a, const float* b) {
    double ab = 0, aa = 0, bb = 0;
    for (int64_t i = 0; i < d; i++) {
      ab += double(a[i]) * b[i];
      aa += double(a[i]) * a[i];
      bb += double(b[i]) * b[i];
    }
    return ab / std::sqrt(aa * bb);
  };
  auto be = make_cpu_backend();
  for (int64_t block : {int64_t(1), int64_t(5), int64_t(0)}) {
    std::vector<float> got = max_cosine(A.data(), na, B.data(), nb, d, false, *be, block);
    for (int64_t i = 0; i < na; i++) {
      if (i == 5) {
        EXPECT_TRUE(std::isnan(got[size_t(i)]));
        continue;
      }
      double best = -2;
      for (int64_t j = 0; j < nb; j++)
        if (j != 7) best = std::max(best, cosd(A.data() + i * d, B.data() + j * d));
      // float32 dot products of 12 unit-scale terms: 1e-6 is ~10x the rounding error.
      EXPECT_NEAR(got[size_t(i)], best, 1e-6) << "row " << i << " block " << block;
    }
    // Both directions from one pass: the same maxima as two separate passes.
    std::vector<float> ab, ba;
    max_cosine_both_ways(A.data(), na, B.data(), nb, d, *be, ab, ba, block);
    std::vector<float> ba_sep = max_cosine(B.data(), nb, A.data(), na, d, false, *be, block);
    ASSERT_EQ(ab.size(), size_t(na));
    ASSERT_EQ(ba.size(), size_t(nb));
    for (int64_t i = 0; i < na; i++) {
      if (i == 5) {
        EXPECT_TRUE(std::isnan(ab[size_t(i)]));
      } else {
        EXPECT_NEAR(ab[size_t(i)], got[size_t(i)], 1e-6) << "both ways, a row " << i;
      }
    }
    for (int64_t j = 0; j < nb; j++) {
      if (j == 7) {
        EXPECT_TRUE(std::isnan(ba[size_t(j)]));
      } else {
        EXPECT_NEAR(ba[size_t(j)], ba_sep[size_t(j)], 1e-6) << "both ways, b row " << j;
      }
    }
    // Within one matrix, a row's own index is excluded.
    std::vector<float> self = max_cosine(B.data(), nb, B.data(), nb, d, true, *be, block);
    for (int64_t i = 0; i < nb; i++) {
      if (i == 7) continue;
      double best = -2;
      for (int64_t j = 0; j < nb; j++)
        if (j != 7 && j != i) best = std::max(best, cosd(B.data() + i * d, B.data() + j * d));
      EXPECT_NEAR(self[size_t(i)], best, 1e-6) << "self row " << i;
    }
  }
}

TEST(MetricsGeometry, CompareFindsPermutedCopyAndHalfDictionary) {
  // B holds A's rows in another order, rescaled: every row matches (cosine 1) both ways. C holds
  // the first half of A: A -> C matches half the rows, C -> A all of them. Random directions in
  // 64 dimensions have |cos| < 0.6 with overwhelming probability, so nothing else passes 0.9.
  const int64_t m = 40, d = 64;
  Sae a;
  a.d_in = d;
  a.d_sae = m;
  a.W_dec = randn(size_t(m * d), 31);
  Sae b = a, c = a;
  for (int64_t i = 0; i < m; i++) {
    int64_t src = (i * 7) % m;
    for (int64_t j = 0; j < d; j++) b.W_dec[size_t(i * d + j)] = 3.0f * a.W_dec[size_t(src * d + j)];
  }
  c.d_sae = m / 2;
  c.W_dec.resize(size_t(m / 2 * d));
  auto be = make_cpu_backend();
  CompareResult ab = compare_decoders(a, b, *be, "b");
  EXPECT_NEAR(ab.a_to_b.mean, 1.0, 1e-6);
  EXPECT_NEAR(ab.b_to_a.mean, 1.0, 1e-6);
  EXPECT_DOUBLE_EQ(ab.matched_a_to_b, 1.0);
  EXPECT_DOUBLE_EQ(ab.matched_b_to_a, 1.0);
  EXPECT_EQ(ab.d_sae_other, m);
  CompareResult ac = compare_decoders(a, c, *be, "c");
  EXPECT_DOUBLE_EQ(ac.matched_a_to_b, 0.5);
  EXPECT_DOUBLE_EQ(ac.matched_b_to_a, 1.0);
  EXPECT_LT(ac.a_to_b.mean, 0.8);
  Sae wrong = a;
  wrong.d_in = d - 1;
  wrong.W_dec.resize(size_t(m * (d - 1)));
  try {
    compare_decoders(a, wrong, *be, "other");
    ADD_FAILURE() << "d_in mismatch accepted";
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(), "other: decoder rows have d_in 63, the evaluated SAE's have 64");
  }
}

TEST(MetricsGeometry, SummaryQuantiles) {
  std::vector<float> v;
  for (int i = 1; i <= 100; i++) v.push_back(float(i));
  v.push_back(std::numeric_limits<float>::quiet_NaN());
  Summary s = summarize(v);
  EXPECT_EQ(s.count, 100);
  EXPECT_DOUBLE_EQ(s.mean, 50.5);
  EXPECT_DOUBLE_EQ(s.min, 1);
  EXPECT_DOUBLE_EQ(s.p10, 10);
  EXPECT_DOUBLE_EQ(s.median, 50);
  EXPECT_DOUBLE_EQ(s.p90, 90);
  EXPECT_DOUBLE_EQ(s.p99, 99);
  EXPECT_DOUBLE_EQ(s.max, 100);
  Summary empty = summarize({});
  EXPECT_EQ(empty.count, 0);
  EXPECT_TRUE(std::isnan(empty.mean));
}

// ---- plots ----

TEST(MetricsPlots, ThreeReadablePlots) {
  Weights w = random_weights("standard", 16, 48, 41);
  TempDir t;
  write_saelens6(t / "sae", w);
  Sae s = load_sae(t / "sae");
  const int64_t n = 2000;
  std::vector<float> x = randn(size_t(n * 16), 10);
  SaeEvaluator ev(s);
  ev.add(x.data(), n);
  auto be = make_cpu_backend();
  EvalReport rep;
  rep.sae = &s;
  rep.eval = ev.result();
  rep.geometry = decoder_geometry(s, *be);
  rep.has_geometry = true;
  auto plots = eval_report_plots(rep);
  ASSERT_EQ(plots.size(), 3u);
  const std::string& fh = plots.at("freq_hist.svg");
  EXPECT_NE(fh.find("Latent firing frequency"), std::string::npos);
  EXPECT_NE(fh.find("log10(firing frequency)"), std::string::npos);
  EXPECT_NE(fh.find(std::to_string(rep.eval.dead) + " dead (never fired, not shown)"), std::string::npos);
  // One bar per bin; their tooltip counts add up to the latents that fired.
  int64_t total = 0;
  for (size_t p = fh.find("<title>["); p != std::string::npos; p = fh.find("<title>[", p + 1)) {
    size_t colon = fh.find("): ", p);
    total += std::stoll(fh.substr(colon + 3));
  }
  EXPECT_EQ(total, rep.eval.d_sae - rep.eval.dead);
  EXPECT_NE(plots.at("l0_hist.svg").find("L0 (number of non-zero latents in a row)"), std::string::npos);
  EXPECT_NE(plots.at("decoder_cos_hist.svg").find("highest cosine similarity"), std::string::npos);
  rep.has_geometry = false;
  EXPECT_EQ(eval_report_plots(rep).count("decoder_cos_hist.svg"), 0u);
}
