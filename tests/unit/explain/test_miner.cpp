// The streaming miner of sae-explain (lib/explain/miner.h) against brute force over a dense copy
// of the same rows: statistics, top lists with ties broken by stream order, every example's window
// (inside its document) with the latent's activation on each token, the quantile groups, the
// contrast windows, exact co-firing Jaccard, the reservoir's uniformity, and independence from
// how the rows are split into batches.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <set>

#include "explain/miner.h"

using namespace sae;

namespace {

struct Rows {
  int64_t d = 0, n = 0;
  std::vector<float> dense;  // n x d
  std::vector<int32_t> token;
  std::vector<int64_t> doc;
  std::vector<uint32_t> count, index;
  std::vector<float> value;
};

// Random sparse rows in documents of random length. Activations take few distinct values so that
// ties are common; latent 0 fires often, latent d-1 never.
Rows make_rows(int64_t d, int64_t n, uint32_t seed) {
  Rows r;
  r.d = d;
  r.n = n;
  r.dense.assign(size_t(n * d), 0);
  std::mt19937 g(seed);
  int64_t doc = 0, left = 0;
  for (int64_t i = 0; i < n; i++) {
    if (left == 0) {
      doc += 1 + int64_t(g() % 3);  // ids need not be consecutive, only different
      left = 1 + int64_t(g() % 40);
    }
    left--;
    r.doc.push_back(doc);
    r.token.push_back(int32_t(g() % 1000));
    uint32_t c = 0;
    for (int64_t l = 0; l < d - 1; l++) {
      const double p = l == 0 ? 0.5 : 0.08;
      if (std::uniform_real_distribution<double>(0, 1)(g) < p) {
        const float v = 0.5f * float(1 + g() % 6);
        r.dense[size_t(i * d + l)] = v;
        r.index.push_back(uint32_t(l));
        r.value.push_back(v);
        c++;
      }
    }
    r.count.push_back(c);
  }
  return r;
}

void feed(LatentMiner& m, const Rows& r, int64_t batch) {
  size_t at = 0;
  for (int64_t i = 0; i < r.n; i += batch) {
    const int64_t rows = std::min(batch, r.n - i);
    size_t nnz = 0;
    for (int64_t k = i; k < i + rows; k++) nnz += r.count[size_t(k)];
    m.add(rows, r.count.data() + i, r.index.data() + at, r.value.data() + at, r.token.data() + i, r.doc.data() + i);
    at += nnz;
  }
  m.finish();
}

// The window the miner must give an example at `row`: inside the document, before/after tokens.
void expect_window(const Rows& r, int64_t latent, const ContextExample& c, int before, int after) {
  int64_t start = c.row, end = c.row;
  while (start > 0 && c.row - start < before && r.doc[size_t(start - 1)] == r.doc[size_t(c.row)]) start--;
  while (end + 1 < r.n && end - c.row < after && r.doc[size_t(end + 1)] == r.doc[size_t(c.row)]) end++;
  ASSERT_EQ(c.peak, c.row - start) << "row " << c.row;
  EXPECT_EQ(c.doc, r.doc[size_t(c.row)]);
  ASSERT_EQ(int64_t(c.tokens.size()), end - start + 1) << "row " << c.row;
  ASSERT_EQ(c.acts.size(), c.tokens.size());
  for (int64_t k = start; k <= end; k++) {
    EXPECT_EQ(c.tokens[size_t(k - start)], r.token[size_t(k)]);
    EXPECT_EQ(c.acts[size_t(k - start)], r.dense[size_t(k * r.d + latent)]) << "latent " << latent << " row " << k;
  }
  EXPECT_EQ(c.activation, r.dense[size_t(c.row * r.d + latent)]);
}

MinerOptions small_options() {
  MinerOptions o;
  o.top = 7;
  o.quantiles = 4;
  o.per_quantile = 3;
  o.contrast = 5;
  o.before = 6;
  o.after = 3;
  o.cofire_rows = 1 << 20;  // more than the rows: co-firing is exact
  o.seed = 11;
  o.chunk_rows = 97;  // many chunks, their ends inside documents and inside open windows
  return o;
}

std::vector<int64_t> all_latents(int64_t d) {
  std::vector<int64_t> v(static_cast<size_t>(d));
  for (int64_t i = 0; i < d; i++) v[size_t(i)] = i;
  return v;
}

}  // namespace

TEST(LatentMiner, StatisticsAndTopListsEqualBruteForce) {
  const Rows r = make_rows(9, 6000, 1);
  MinerOptions o = small_options();
  o.threads = 2;
  LatentMiner m(r.d, all_latents(r.d), o);
  feed(m, r, 5000);  // a batch with enough firings to be split between the threads, and a small one
  EXPECT_EQ(m.rows(), r.n);
  for (int64_t l = 0; l < r.d; l++) {
    const LatentReport rep = m.report(size_t(l));
    std::vector<std::pair<float, int64_t>> firing;  // (activation, row)
    double sum = 0;
    for (int64_t i = 0; i < r.n; i++) {
      const float v = r.dense[size_t(i * r.d + l)];
      if (v != 0) firing.push_back({v, i}), sum += v;
    }
    ASSERT_EQ(rep.latent, l);
    EXPECT_EQ(rep.fires, int64_t(firing.size()));
    EXPECT_DOUBLE_EQ(rep.density, double(firing.size()) / double(r.n));
    int64_t in_hist = 0;
    for (int64_t c : rep.hist_counts) in_hist += c;
    EXPECT_EQ(in_hist, rep.fires);
    EXPECT_EQ(rep.hist_edges.size(), rep.hist_counts.empty() ? 0 : rep.hist_counts.size() + 1);
    if (firing.empty()) {
      EXPECT_EQ(rep.max_activation, 0);
      EXPECT_TRUE(rep.top.empty());
      EXPECT_TRUE(rep.quantiles.empty());
      continue;
    }
    EXPECT_NEAR(rep.mean_activation, sum / double(firing.size()), 1e-12);
    std::stable_sort(firing.begin(), firing.end(), [](auto& a, auto& b) { return a.first > b.first; });
    EXPECT_EQ(rep.max_activation, firing[0].first);
    // Brute force: activation descending, the earlier row first among equals.
    const size_t n = std::min(firing.size(), size_t(o.top));
    ASSERT_EQ(rep.top.size(), n) << "latent " << l;
    for (size_t k = 0; k < n; k++) {
      EXPECT_EQ(rep.top[k].row, firing[k].second) << "latent " << l << " rank " << k;
      expect_window(r, l, rep.top[k], o.before, o.after);
    }
  }
}

TEST(LatentMiner, QuantileGroupsAreRankBandsOfDistinctFirings) {
  const Rows r = make_rows(6, 2000, 2);
  const MinerOptions o = small_options();
  LatentMiner m(r.d, all_latents(r.d), o);
  feed(m, r, 100);
  for (int64_t l = 0; l < r.d - 1; l++) {
    const LatentReport rep = m.report(size_t(l));
    ASSERT_EQ(int(rep.quantiles.size()), o.quantiles) << "latent " << l;
    std::set<int64_t> rows;
    float prev_max = -1;
    for (const auto& group : rep.quantiles) {
      ASSERT_EQ(int(group.size()), o.per_quantile);
      for (size_t k = 0; k + 1 < group.size(); k++) EXPECT_GE(group[k].activation, group[k + 1].activation);
      EXPECT_GE(group.back().activation, prev_max);  // bands do not overlap, lowest first
      prev_max = group.front().activation;
      for (const auto& c : group) {
        EXPECT_GT(c.activation, 0);
        EXPECT_TRUE(rows.insert(c.row).second) << "row " << c.row << " sampled twice";
        expect_window(r, l, c, o.before, o.after);
      }
    }
  }
}

TEST(LatentMiner, FewFiringsGiveFewerGroups) {
  Rows r = make_rows(3, 50, 3);
  MinerOptions o = small_options();
  o.quantiles = 10;
  o.per_quantile = 10;
  LatentMiner m(r.d, {1}, o);
  feed(m, r, 50);
  const LatentReport rep = m.report(0);
  size_t total = 0;
  for (const auto& g : rep.quantiles) total += g.size();
  EXPECT_EQ(int64_t(total), rep.fires);  // every firing, when there are fewer than Q*S
  EXPECT_EQ(int64_t(rep.quantiles.size()), std::min<int64_t>(10, rep.fires));
}

TEST(LatentMiner, ContrastWindowsAreSilentAndDistinct) {
  const Rows r = make_rows(8, 4000, 4);
  const MinerOptions o = small_options();
  LatentMiner m(r.d, all_latents(r.d), o);
  feed(m, r, 999);
  for (int64_t l = 1; l < r.d; l++) {
    const LatentReport rep = m.report(size_t(l));
    EXPECT_EQ(int(rep.contrast.size()), o.contrast) << "latent " << l;
    std::set<int64_t> rows;
    for (const auto& c : rep.contrast) {
      EXPECT_TRUE(rows.insert(c.row).second);
      expect_window(r, l, c, o.before, o.after);  // checks every window activation is the true one...
      for (float a : c.acts) EXPECT_EQ(a, 0);     // ...and that it is zero
    }
  }
  // Latent 0 fires on half the tokens: a silent 10-token window is rare, so it gets few or none,
  // and never a wrong one (the loop above would have caught it for latents 1..).
  const LatentReport busy = m.report(0);
  for (const auto& c : busy.contrast)
    for (size_t k = 0; k < c.tokens.size(); k++) EXPECT_EQ(r.dense[size_t((c.row - c.peak + int64_t(k)) * r.d)], 0);
}

TEST(LatentMiner, CofiringJaccardIsExactWhenEveryRowIsSampled) {
  const Rows r = make_rows(7, 1500, 5);
  const MinerOptions o = small_options();
  LatentMiner m(r.d, all_latents(r.d), o);
  feed(m, r, 64);
  EXPECT_EQ(m.cofire_rows(), r.n);
  const auto got = m.cofire_neighbours(3);
  for (int64_t a = 0; a < r.d; a++) {
    std::vector<Neighbour> want;
    for (int64_t b = 0; b < r.d; b++) {
      if (b == a) continue;
      int64_t both = 0, either = 0;
      for (int64_t i = 0; i < r.n; i++) {
        const bool fa = r.dense[size_t(i * r.d + a)] != 0, fb = r.dense[size_t(i * r.d + b)] != 0;
        both += fa && fb;
        either += fa || fb;
      }
      if (both > 0) want.push_back({b, float(double(both) / double(either))});
    }
    std::sort(want.begin(), want.end(), [](auto& x, auto& y) { return x.score > y.score || (x.score == y.score && x.latent < y.latent); });
    want.resize(std::min<size_t>(want.size(), 3));
    ASSERT_EQ(got[size_t(a)].size(), want.size()) << "latent " << a;
    for (size_t k = 0; k < want.size(); k++) {
      EXPECT_EQ(got[size_t(a)][k].latent, want[k].latent) << "latent " << a << " rank " << k;
      EXPECT_NEAR(got[size_t(a)][k].score, want[k].score, 1e-6);
    }
  }
}

TEST(LatentMiner, ResultsDoNotDependOnBatchingAndFollowTheSeed) {
  const Rows r = make_rows(5, 1200, 6);
  const MinerOptions o = small_options();
  LatentMiner a(r.d, all_latents(r.d), o), b(r.d, all_latents(r.d), o);
  feed(a, r, 1);
  feed(b, r, 1200);
  MinerOptions o2 = o;
  o2.seed = 12;
  LatentMiner c(r.d, all_latents(r.d), o2);
  feed(c, r, 1200);
  bool seed_matters = false;
  for (size_t l = 0; l < size_t(r.d); l++) {
    const nlohmann::json ja = latent_to_json(a.report(l), {}), jb = latent_to_json(b.report(l), {});
    EXPECT_EQ(ja, jb) << "latent " << l;
    seed_matters |= ja != latent_to_json(c.report(l), {});
  }
  EXPECT_TRUE(seed_matters);
}

TEST(LatentMiner, ResultsDoNotDependOnTheChunkSize) {
  const Rows r = make_rows(7, 5000, 10);
  MinerOptions o = small_options();
  LatentMiner small(r.d, all_latents(r.d), o);
  feed(small, r, 333);
  o.chunk_rows = 32768;
  LatentMiner whole(r.d, all_latents(r.d), o);
  feed(whole, r, 333);
  for (size_t l = 0; l < size_t(r.d); l++)
    EXPECT_EQ(latent_to_json(small.report(l), {}), latent_to_json(whole.report(l), {})) << "latent " << l;
}

TEST(LatentMiner, ResultsDoNotDependOnTheThreadCount) {
  const Rows r = make_rows(9, 20000, 9);
  MinerOptions o = small_options();
  o.threads = 1;
  LatentMiner one(r.d, all_latents(r.d), o);
  feed(one, r, 20000);
  o.threads = 3;
  LatentMiner three(r.d, all_latents(r.d), o);
  feed(three, r, 20000);
  for (size_t l = 0; l < size_t(r.d); l++)
    EXPECT_EQ(latent_to_json(one.report(l), {}), latent_to_json(three.report(l), {})) << "latent " << l;
}

TEST(LatentMiner, OnlyTheChosenLatentsAreReported) {
  const Rows r = make_rows(9, 500, 7);
  LatentMiner m(r.d, {2, 5}, small_options());
  feed(m, r, 77);
  EXPECT_EQ(m.report(0).latent, 2);
  EXPECT_EQ(m.report(1).latent, 5);
  LatentMiner all(r.d, all_latents(r.d), small_options());
  feed(all, r, 77);
  EXPECT_EQ(latent_to_json(m.report(1), {}), latent_to_json(all.report(5), {}));
}

// Each firing is in the quantile reservoir with probability capacity / firings: over many seeds,
// every position's count stays within 5 standard deviations of its expectation, and early and late
// firings are kept equally often.
TEST(LatentMiner, QuantileReservoirIsUniform) {
  Rows r;
  r.d = 1;
  r.n = 200;
  for (int64_t i = 0; i < r.n; i++) {
    r.count.push_back(1);
    r.index.push_back(0);
    r.value.push_back(float(i + 1));  // distinct: the value names the row
    r.token.push_back(0);
    r.doc.push_back(i);
  }
  MinerOptions o;
  o.top = 0;
  o.quantiles = 5;
  o.per_quantile = 2;
  o.contrast = 0;
  o.before = o.after = 0;
  const int seeds = 2000;
  std::vector<int> kept(size_t(r.n), 0);
  for (int s = 0; s < seeds; s++) {
    o.seed = uint64_t(s);
    LatentMiner m(1, {0}, o);
    feed(m, r, 37);
    for (const auto& g : m.report(0).quantiles)
      for (const auto& c : g) kept[size_t(c.row)]++;
  }
  const double p = 10.0 / 200.0, mean = seeds * p, sd = std::sqrt(seeds * p * (1 - p));
  double first = 0, second = 0;
  for (int64_t i = 0; i < r.n; i++) {
    EXPECT_NEAR(kept[size_t(i)], mean, 5 * sd) << "row " << i;
    (i < r.n / 2 ? first : second) += kept[size_t(i)];
  }
  EXPECT_NEAR(first / second, 1.0, 0.05);
}

TEST(LatentMiner, WithoutDocColumnEveryRowIsItsOwnDocument) {
  Rows r = make_rows(4, 300, 8);
  MinerOptions o = small_options();
  LatentMiner m(r.d, all_latents(r.d), o);
  size_t at = 0;
  m.add(r.n, r.count.data(), r.index.data() + at, r.value.data(), nullptr, nullptr);
  m.finish();
  EXPECT_EQ(m.documents(), r.n);
  for (const auto& c : m.report(0).top) {
    EXPECT_EQ(c.tokens, std::vector<int32_t>{-1});
    EXPECT_EQ(c.doc, -1);
    EXPECT_EQ(c.peak, 0);
  }
}

TEST(LatentMiner, HistogramBinsFollowTheirEdges) {
  EXPECT_EQ(hist_bin(0.0f), 0);
  EXPECT_EQ(hist_bin(-1.0f), 0);
  EXPECT_EQ(hist_bin(1e-7f), 0);
  EXPECT_EQ(hist_bin(1.0f), 1 + 6 * kHistPerDecade);  // 10^0 starts bin 49
  EXPECT_EQ(hist_edge(1 + 6 * kHistPerDecade), 1.0);
  EXPECT_EQ(hist_bin(0.999f), 6 * kHistPerDecade);
  EXPECT_EQ(hist_bin(1e7f), kHistBins - 1);
  EXPECT_EQ(hist_edge(0), 0.0);
  EXPECT_TRUE(std::isinf(hist_edge(kHistBins)));
  // every bin holds exactly the values between its edges
  for (int b = 1; b < kHistBins - 1; b++) {
    EXPECT_EQ(hist_bin(float(hist_edge(b))), b);
    EXPECT_EQ(hist_bin(std::nextafter(float(hist_edge(b + 1)), 0.0f)), b);
  }
}
