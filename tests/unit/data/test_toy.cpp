// lib/data/toy: the generated data against its configuration (statistical tests with fixed seeds and
// stated tolerances), the hierarchy's invariants, determinism across threads and batchings, the
// written streams and the truth SAE read back, and the configuration errors.
#include <gtest/gtest.h>
#include <omp.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "base/errors.h"
#include "base/files.h"
#include "data/toy.h"
#include "sae/sae.h"
#include "stream/stream.h"

using namespace sae;
using namespace sae::toy;
namespace fs = std::filesystem;

namespace {

// The codes of `rows` rows, generated in batches of 5000.
struct Sample {
  int64_t rows = 0;
  std::vector<float> x;
  std::vector<uint32_t> count, index;
  std::vector<float> value;
};

Sample sample(const ToyModel& m, int64_t rows) {
  Sample s;
  s.rows = rows;
  for (int64_t first = 0; first < rows; first += 5000) {
    Batch a, c;
    m.generate(first, std::min<int64_t>(5000, rows - first), a, &c);
    s.x.insert(s.x.end(), a.x.begin(), a.x.end());
    s.count.insert(s.count.end(), c.count.begin(), c.count.end());
    s.index.insert(s.index.end(), c.index.begin(), c.index.end());
    s.value.insert(s.value.end(), c.value.begin(), c.value.end());
  }
  return s;
}

std::vector<double> firing_counts(const Sample& s, int64_t n) {
  std::vector<double> c(size_t(n), 0);
  for (uint32_t i : s.index) c[i]++;
  return c;
}

// Each feature's count against Binomial(rows, p_i): every |z| below 5 (a false alarm has
// probability 6e-7 per feature), and the sum of z^2, which is chi-square with n degrees of
// freedom when features fire independently, within 5 sd of its mean n (sd sqrt(2n)); that sum
// catches a small bias shared by many features that single z-tests miss.
void expect_frequencies(const std::vector<double>& counts, const std::vector<double>& p, int64_t rows,
                        bool independent) {
  double chi = 0;
  int n = 0;
  for (size_t i = 0; i < p.size(); i++) {
    const double mean = double(rows) * p[i], var = mean * (1 - p[i]);
    if (var < 1e-9) {  // p = 1 (clipped) up to rounding: fires in every row
      EXPECT_NEAR(counts[i], mean, 0.5) << "feature " << i;
      continue;
    }
    const double z = (counts[i] - mean) / std::sqrt(var);
    EXPECT_LT(std::fabs(z), 5) << "feature " << i << ": " << counts[i] << " firings, expected " << mean;
    chi += z * z;
    n++;
  }
  if (independent) {
    EXPECT_NEAR(chi, n, 5 * std::sqrt(2.0 * n));
  }
}

// The mean number of active features per row.
double mean_active(const Sample& s) {
  double t = 0;
  for (uint32_t c : s.count) t += c;
  return t / double(s.rows);
}

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string usage_error(const ToyConfig& c) {
  try {
    validate(c);
  } catch (const UsageError& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST(Toy, FeaturesAreUnitNormAndSeeded) {
  ToyConfig c;
  c.d = 48;
  c.features = 200;
  const ToyModel a(c), b(c);
  c.seed = 1;
  const ToyModel other(c);
  ASSERT_EQ(a.features().size(), size_t(200 * 48));
  for (int64_t i = 0; i < 200; i++) {
    double ss = 0;
    for (int64_t j = 0; j < 48; j++) ss += double(a.features()[size_t(i * 48 + j)]) * a.features()[size_t(i * 48 + j)];
    // 48 components each rounded to float (relative 6e-8): the norm is 1 within ~1e-7.
    EXPECT_NEAR(std::sqrt(ss), 1.0, 1e-6) << "feature " << i;
  }
  EXPECT_EQ(a.features(), b.features());
  EXPECT_NE(a.features(), other.features());
  // Random directions in R^48: |cos| between two is about 1/sqrt(48) = 0.14; the mean over all
  // pairs of |cos| is sqrt(2/(pi 48)) = 0.115; a broken generator (repeated or correlated
  // directions) would move it far from that.
  double sum = 0;
  int pairs = 0;
  for (int64_t i = 0; i < 200; i++)
    for (int64_t k = i + 1; k < 200; k++) {
      double dot = 0;
      for (int64_t j = 0; j < 48; j++) dot += double(a.features()[size_t(i * 48 + j)]) * a.features()[size_t(k * 48 + j)];
      sum += std::fabs(dot);
      pairs++;
    }
  EXPECT_NEAR(sum / pairs, std::sqrt(2 / (M_PI * 48)), 0.01);
}

TEST(Toy, UniformLawFiringFrequencies) {
  ToyConfig c;
  c.d = 16;
  c.features = 64;
  c.active = 4;
  const ToyModel m(c);
  for (double p : m.firing_probability()) EXPECT_DOUBLE_EQ(p, 4.0 / 64);
  const int64_t rows = 100000;
  const Sample s = sample(m, rows);
  expect_frequencies(firing_counts(s, 64), m.firing_probability(), rows, true);
  // Active per row: mean 4, variance 64 p (1 - p) = 3.75 per row: sd of the mean 0.0061.
  EXPECT_NEAR(mean_active(s), 4.0, 6 * std::sqrt(3.75 / rows));
}

TEST(Toy, PowerLawFiringFrequenciesWithClipping) {
  // 128 features, exponent 1, 6 active: s w_0 would exceed 1 (sum of 1/(i+1) is 5.43 < 6), so
  // feature 0 is clipped to 1 and the other 127 share the remaining 5 in proportion to 1/(i+1).
  ToyConfig c;
  c.d = 16;
  c.features = 128;
  c.active = 6;
  c.freq = FreqLaw::power;
  c.freq_exponent = 1.0;
  const ToyModel m(c);
  const auto& p = m.firing_probability();
  double h = 0;
  for (int i = 1; i < 128; i++) h += 1.0 / (i + 1);
  EXPECT_EQ(p[0], 1.0);
  for (int i = 1; i < 128; i++) EXPECT_NEAR(p[size_t(i)], 5.0 / h / (i + 1), 1e-12) << i;
  EXPECT_NEAR(m.expected_active(), 6.0, 1e-9);
  const int64_t rows = 100000;
  const Sample s = sample(m, rows);
  expect_frequencies(firing_counts(s, 128), p, rows, true);
  double var = 0;
  for (double q : p) var += q * (1 - q);
  EXPECT_NEAR(mean_active(s), 6.0, 6 * std::sqrt(var / rows));
}

TEST(Toy, PowerLawWithoutClippingIsProportional) {
  ToyConfig c;
  c.d = 8;
  c.features = 1000;
  c.active = 3;
  c.freq = FreqLaw::power;
  c.freq_exponent = 0.7;
  const ToyModel m(c);
  const auto& p = m.firing_probability();
  for (int i = 1; i < 1000; i++) EXPECT_NEAR(p[size_t(i)] / p[0], std::pow(i + 1.0, -0.7), 1e-12) << i;
  EXPECT_NEAR(m.expected_active(), 3.0, 1e-9);
  const int64_t rows = 60000;
  const Sample s = sample(m, rows);
  expect_frequencies(firing_counts(s, 1000), p, rows, true);
}

TEST(Toy, MagnitudeLaws) {
  ToyConfig c;
  c.d = 8;
  c.features = 32;
  c.active = 4;
  c.noise = 0;
  {
    c.magnitude = MagLaw::uniform;
    c.mag_lo = 0.5;
    c.mag_hi = 2.5;
    const Sample s = sample(ToyModel(c), 20000);
    double t = 0;
    for (float v : s.value) {
      ASSERT_GE(v, 0.5f);
      ASSERT_LE(v, 2.5f);
      t += v;
    }
    // mean 1.5, variance (hi - lo)^2 / 12 = 1/3 per value; 6 sd of the mean.
    const double n = double(s.value.size());
    EXPECT_NEAR(t / n, 1.5, 6 * std::sqrt(1.0 / 3 / n));
  }
  {
    c.magnitude = MagLaw::exponential;
    c.mag_mean = 2.0;
    const Sample s = sample(ToyModel(c), 20000);
    double t = 0;
    for (float v : s.value) {
      ASSERT_GE(v, 0.0f);
      t += v;
    }
    const double n = double(s.value.size());
    EXPECT_NEAR(t / n, 2.0, 6 * 2.0 / std::sqrt(n));  // sd of an exponential = its mean
  }
  {
    c.magnitude = MagLaw::constant;
    c.mag_mean = 0.7;
    const Sample s = sample(ToyModel(c), 2000);
    for (float v : s.value) ASSERT_EQ(v, 0.7f);
  }
}

TEST(Toy, RowsAreTheCodesTimesTheFeaturesPlusNoise) {
  ToyConfig c;
  c.d = 32;
  c.features = 96;
  c.active = 5;
  c.noise = 0.1;
  const ToyModel m(c);
  const int64_t rows = 30000;
  const Sample s = sample(m, rows);
  // Residual x - sum_k m_k f_k over rows * d = 960000 values: its sample variance has relative
  // sd sqrt(2 / 960000) = 0.14%, so its sd is within 1% of 0.1 at 7 sd; the mean is 0 within
  // 6 * 0.1 / sqrt(960000).
  double sum = 0, ss = 0;
  size_t k = 0;
  std::vector<double> rec(size_t(c.d));
  for (int64_t r = 0; r < rows; r++) {
    std::fill(rec.begin(), rec.end(), 0.0);
    for (uint32_t t = 0; t < s.count[size_t(r)]; t++, k++) {
      ASSERT_TRUE(t == 0 || s.index[k] > s.index[k - 1]) << "indices ascending in row " << r;
      for (int64_t j = 0; j < c.d; j++) rec[size_t(j)] += double(s.value[k]) * m.features()[size_t(s.index[k] * c.d + j)];
    }
    for (int64_t j = 0; j < c.d; j++) {
      const double e = s.x[size_t(r * c.d + j)] - rec[size_t(j)];
      sum += e, ss += e * e;
    }
  }
  const double n = double(rows * c.d);
  EXPECT_NEAR(sum / n, 0, 6 * 0.1 / std::sqrt(n));
  EXPECT_NEAR(std::sqrt(ss / n - (sum / n) * (sum / n)), 0.1, 0.001);

  // Without noise the rows are the codes times the features up to float rounding (values ~1,
  // float accumulation of ~5 terms: 1e-5 absolute is ~100 ulp).
  c.noise = 0;
  const ToyModel exact(c);
  const Sample e = sample(exact, 500);
  k = 0;
  for (int64_t r = 0; r < 500; r++) {
    std::fill(rec.begin(), rec.end(), 0.0);
    for (uint32_t t = 0; t < e.count[size_t(r)]; t++, k++)
      for (int64_t j = 0; j < c.d; j++) rec[size_t(j)] += double(e.value[k]) * exact.features()[size_t(e.index[k] * c.d + j)];
    for (int64_t j = 0; j < c.d; j++) ASSERT_NEAR(e.x[size_t(r * c.d + j)], rec[size_t(j)], 1e-5);
  }
}

TEST(Toy, HierarchyParentsFireWithTheirChildren) {
  // 6 parents with 4 children each (features 0-5 parents, 6-29 children), 34 free features.
  ToyConfig c;
  c.d = 16;
  c.features = 64;
  c.active = 6;
  c.parents = 6;
  c.children = 4;
  const ToyModel m(c);
  EXPECT_NEAR(m.expected_active(), 6.0, 1e-9);
  const auto& p = m.firing_probability();
  const int64_t rows = 100000;
  const Sample s = sample(m, rows);
  int64_t alone = 0;  // rows where a parent fires without any of its children
  size_t k = 0;
  for (int64_t r = 0; r < rows; r++) {
    std::vector<int> on(64, 0);
    for (uint32_t t = 0; t < s.count[size_t(r)]; t++) on[s.index[k++]] = 1;
    for (int par = 0; par < 6; par++) {
      int kids = 0;
      for (int ch = 0; ch < 4; ch++) kids += on[size_t(6 + par * 4 + ch)];
      ASSERT_LE(kids, 1) << "children of one parent are mutually exclusive (row " << r << ")";
      if (kids) {
        ASSERT_EQ(on[size_t(par)], 1) << "parent " << par << " must fire with its child (row " << r << ")";
      }
      alone += on[size_t(par)] && !kids;
    }
  }
  EXPECT_GT(alone, 0) << "parents also fire on their own";
  // Parent marginal = own rate + (1 - own rate) * P(any child): with uniform weights every feature
  // has the same own rate q, so parent = q + (1 - q) 4q.
  const double q = p[6];
  EXPECT_NEAR(p[0], q + (1 - q) * 4 * q, 1e-12);
  EXPECT_NEAR(p[40], q, 1e-15);
  // Frequencies: z-tests per feature (parents and children are dependent, so no chi-square sum).
  expect_frequencies(firing_counts(s, 64), p, rows, false);
  // Active per row: parents and children are correlated, so the variance of the per-row count is
  // estimated from the sample; 6 standard errors.
  double var = 0;
  for (uint32_t n : s.count) var += (n - 6.0) * (n - 6.0);
  var /= double(rows);
  EXPECT_NEAR(mean_active(s), 6.0, 6 * std::sqrt(var / rows));
}

TEST(Toy, HierarchyNearItsMaximumSaturatesTheChildren) {
  // 12 features, 2 parents with 3 children each, power law: at most 6 free-or-parent + 2 children
  // = 8 active. Asking for 7.5 pushes the children's rates past a sum of 1, where they are scaled
  // to sum to exactly 1 (one child of each parent in every row) and the rest is taken up by the
  // parents' and free features' own rates.
  ToyConfig c;
  c.d = 8;
  c.features = 12;
  c.active = 7.5;
  c.parents = 2;
  c.children = 3;
  c.freq = FreqLaw::power;
  const ToyModel m(c);
  const auto& p = m.firing_probability();
  EXPECT_NEAR(m.expected_active(), 7.5, 1e-9);
  for (int par = 0; par < 2; par++) {
    double s = 0;
    for (int ch = 0; ch < 3; ch++) s += p[size_t(2 + par * 3 + ch)];
    EXPECT_NEAR(s, 1.0, 1e-12) << "children of parent " << par;
    EXPECT_NEAR(p[size_t(par)], 1.0, 1e-12) << "a child fires in every row, so its parent does";
  }
  const int64_t rows = 50000;
  const Sample smp = sample(m, rows);
  expect_frequencies(firing_counts(smp, 12), p, rows, false);
  for (int64_t r = 0; r < rows; r++) ASSERT_GE(smp.count[size_t(r)], 4u) << "2 parents + 2 children in every row";
  c.active = 8.5;
  EXPECT_EQ(usage_error(c),
            "--active (8.5) must be at most 8 with this hierarchy (every free feature and parent, one child per "
            "parent)");
}

TEST(Toy, SameRowsWhateverTheThreadsOrBatches) {
  ToyConfig c;
  c.d = 24;
  c.features = 80;
  c.active = 3;
  c.parents = 2;
  c.children = 3;
  c.freq = FreqLaw::power;
  const ToyModel m(c);
  Batch a1, c1, a2, c2, a3, c3;
  m.generate(0, 1500, a1, &c1, 1);
  m.generate(0, 1500, a2, &c2, 2);
  m.generate(0, 1500, a3, &c3, 5);
  EXPECT_EQ(a1.x, a2.x);
  EXPECT_EQ(a1.x, a3.x);
  EXPECT_EQ(c1.index, c3.index);
  EXPECT_EQ(c1.value, c3.value);
  EXPECT_EQ(c1.count, c3.count);
  // Rows 0-699 and 700-1499 generated separately are the same rows.
  Batch p1, p2;
  m.generate(0, 700, p1, nullptr, 2);
  m.generate(700, 800, p2, nullptr, 3);
  std::vector<float> joined = p1.x;
  joined.insert(joined.end(), p2.x.begin(), p2.x.end());
  EXPECT_EQ(joined, a1.x);
}

TEST(Toy, ContextColumns) {
  ToyConfig c;
  c.d = 4;
  c.features = 8;
  c.active = 1;
  c.context = 128;
  const ToyModel m(c);
  Batch a;
  m.generate(250, 10, a);
  ASSERT_EQ(a.doc.size(), 10u);
  ASSERT_EQ(a.pos.size(), 10u);
  EXPECT_EQ(a.doc[0], 1);
  EXPECT_EQ(a.pos[0], 122);
  EXPECT_EQ(a.doc[6], 2);  // row 256 starts document 2
  EXPECT_EQ(a.pos[6], 0);
  c.context = 0;
  Batch b;
  ToyModel(c).generate(0, 10, b);
  EXPECT_TRUE(b.doc.empty());
  EXPECT_TRUE(b.pos.empty());
}

TEST(Toy, WrittenStreamsAndTruthReadBack) {
  TempDir tmp;
  const std::string dir = tmp.path();
  ToyConfig c;
  c.d = 16;
  c.features = 40;
  c.active = 3;
  c.rows = 3000;
  c.seed = 5;
  c.parents = 2;
  c.children = 2;
  ToyOutput o;
  o.path = dir + "/a.sae";
  o.latents_out = dir + "/codes.sae";
  o.truth = dir + "/truth";
  o.batch_rows = 1000;
  o.threads = 1;
  write_toy(c, o);

  // Same options, other thread count: the same bytes; another seed: other bytes.
  ToyOutput o2 = o;
  o2.path = dir + "/b.sae";
  o2.latents_out = dir + "/codes2.sae";
  o2.truth = "";
  o2.threads = 3;
  write_toy(c, o2);
  EXPECT_EQ(slurp(o.path), slurp(o2.path));
  EXPECT_EQ(slurp(o.latents_out), slurp(o2.latents_out));
  ToyConfig c3 = c;
  c3.seed = 6;
  ToyOutput o3 = o2;
  o3.path = dir + "/c.sae";
  o3.latents_out = "";
  write_toy(c3, o3);
  EXPECT_NE(slurp(o.path), slurp(o3.path));

  // The activations stream: header, provenance, and the rows the model generates.
  StreamReader r({o.path});
  EXPECT_EQ(r.header().kind, "activations");
  EXPECT_EQ(r.header().d, 16);
  EXPECT_EQ(r.header().dtype, DType::f32);
  EXPECT_EQ(r.header().provenance["model"], "toy");
  EXPECT_EQ(r.header().provenance["hook"], "toy");
  EXPECT_EQ(r.header().provenance["seed"], 5);
  EXPECT_EQ(r.header().provenance["toy"]["hierarchy"], "2:2");
  EXPECT_EQ(r.header().provenance["toy"]["features"], 40);
  EXPECT_EQ(r.header().provenance["toy"]["generator_version"], kToyGeneratorVersion);
  std::vector<float> xs;
  Batch b;
  int batches = 0;
  while (r.next(b)) {
    xs.insert(xs.end(), b.x.begin(), b.x.end());
    batches++;
  }
  EXPECT_EQ(batches, 3);
  const ToyModel m(c);
  Batch want, want_codes;
  m.generate(0, 3000, want, &want_codes);
  EXPECT_EQ(xs, want.x);

  // The codes stream.
  StreamReader lr({o.latents_out});
  EXPECT_EQ(lr.header().kind, "latents");
  EXPECT_EQ(lr.header().d, 40);
  std::vector<uint32_t> idx;
  std::vector<float> val;
  while (lr.next(b)) {
    idx.insert(idx.end(), b.index.begin(), b.index.end());
    val.insert(val.end(), b.value.begin(), b.value.end());
  }
  EXPECT_EQ(idx, want_codes.index);
  EXPECT_EQ(val, want_codes.value);

  // The truth: W_dec is the features, W_enc its transpose, zero biases, metadata.
  const Sae t = load_sae(o.truth);
  EXPECT_EQ(t.arch, "standard");
  EXPECT_EQ(t.d_in, 16);
  EXPECT_EQ(t.d_sae, 40);
  EXPECT_EQ(t.W_dec, m.features());
  for (int64_t i = 0; i < 40; i++)
    for (int64_t j = 0; j < 16; j++) ASSERT_EQ(t.W_enc[size_t(j * 40 + i)], m.features()[size_t(i * 16 + j)]);
  EXPECT_EQ(t.b_enc, std::vector<float>(40, 0.f));
  EXPECT_EQ(t.b_dec, std::vector<float>(16, 0.f));
  EXPECT_EQ(t.hook, "toy");
  EXPECT_EQ(t.model, "toy");
  EXPECT_EQ(t.cfg["metadata"]["toy_truth"], true);
  EXPECT_EQ(t.cfg["metadata"]["toy"]["seed"], 5);
  EXPECT_TRUE(fs::exists(o.truth + "/sparsity.safetensors"));
}

TEST(Toy, Bf16OutputIsTheRoundedRows) {
  TempDir tmp;
  const std::string dir = tmp.path();
  ToyConfig c;
  c.d = 8;
  c.features = 16;
  c.active = 2;
  c.rows = 100;
  ToyOutput o;
  o.path = dir + "/a.sae";
  o.dtype = DType::bf16;
  write_toy(c, o);
  StreamReader r({o.path});
  EXPECT_EQ(r.header().dtype, DType::bf16);
  Batch b, want;
  ASSERT_TRUE(r.next(b));
  ToyModel(c).generate(0, 100, want);
  ASSERT_EQ(b.x.size(), want.x.size());
  for (size_t i = 0; i < b.x.size(); i++) ASSERT_EQ(b.x[i], bf16_to_f32(f32_to_bf16(want.x[i])));
}

TEST(Toy, BadConfigurationsAreOneLineUsageErrors) {
  ToyConfig c;
  c.d = -3;
  EXPECT_EQ(usage_error(c), "--d must be at least 1, got -3");
  c = ToyConfig{};
  c.features = 0;
  EXPECT_EQ(usage_error(c), "--features must be at least 1, got 0");
  c = ToyConfig{};
  c.active = 300;
  EXPECT_EQ(usage_error(c), "--active (300) must be at most --features (256)");
  c.active = 0;
  EXPECT_EQ(usage_error(c), "--active must be positive, got 0");
  c = ToyConfig{};
  c.parents = 8;
  c.children = 4;
  c.active = 250;  // at most 216 free + 8 parents + one child for each of the 8 parents = 232
  EXPECT_EQ(usage_error(c),
            "--active (250) must be at most 232 with this hierarchy (every free feature and parent, one child "
            "per parent)");
  c.parents = 100;
  c.active = 4;
  EXPECT_EQ(usage_error(c), "--hierarchy 100:4 needs 500 features, more than --features 256");
  c = ToyConfig{};
  c.mag_lo = 2;
  c.mag_hi = 1;
  EXPECT_EQ(usage_error(c), "--mag-lo/--mag-hi must satisfy 0 <= lo <= hi and hi > 0, got 2 and 1");
  c = ToyConfig{};
  c.magnitude = MagLaw::exponential;
  c.mag_mean = -1;
  EXPECT_EQ(usage_error(c), "--mag-mean must be positive, got -1");
  c = ToyConfig{};
  c.noise = -0.5;
  EXPECT_EQ(usage_error(c), "--noise must be non-negative, got -0.5");
  c = ToyConfig{};
  c.freq_exponent = 11;
  EXPECT_EQ(usage_error(c), "--freq-exponent must be in [0, 10], got 11");
  c = ToyConfig{};
  c.rows = 0;
  EXPECT_EQ(usage_error(c), "--rows must be at least 1, got 0");
  EXPECT_EQ(usage_error(ToyConfig{}), "(no error)");

  int64_t P = 0, C = 0;
  parse_hierarchy("8:4", P, C);
  EXPECT_EQ(P, 8);
  EXPECT_EQ(C, 4);
  for (const char* bad : {"8", "8:", ":4", "8:0", "0:3", "a:b", "8:4:2", "-1:2", "8x4", "1234567890:1"}) {
    try {
      parse_hierarchy(bad, P, C);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const UsageError& e) {
      EXPECT_EQ(std::string(e.what()),
                std::string("--hierarchy: expected PARENTS:CHILDREN with positive integers (e.g. 8:4), got '") + bad + "'");
    }
  }
  EXPECT_THROW(parse_freq("zipf"), UsageError);
  EXPECT_THROW(parse_mag("gamma"), UsageError);
}
