// sae-info's statistics: checked against a plain double-precision computation over all rows at
// once, for dense and latent streams; frame listing.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <limits>

#include "stream/info.h"
#include "support/stream_util.h"

using namespace sae;
using namespace sae::test;

namespace {

struct Plain {
  double norm = 0, mean_min = INFINITY, mean_max = -INFINITY, std_min = INFINITY, std_max = -INFINITY;
};

// Two passes over a dense rows x d matrix in double: the textbook definition.
Plain plain_stats(const std::vector<float>& x, int64_t rows, int64_t d) {
  Plain p;
  for (int64_t r = 0; r < rows; r++) {
    double s = 0;
    for (int64_t j = 0; j < d; j++) s += double(x[size_t(r * d + j)]) * x[size_t(r * d + j)];
    p.norm += std::sqrt(s);
  }
  p.norm /= double(rows);
  for (int64_t j = 0; j < d; j++) {
    double m = 0;
    for (int64_t r = 0; r < rows; r++) m += x[size_t(r * d + j)];
    m /= double(rows);
    double v = 0;
    for (int64_t r = 0; r < rows; r++) v += (x[size_t(r * d + j)] - m) * (x[size_t(r * d + j)] - m);
    double sd = std::sqrt(v / double(rows));
    p.mean_min = std::min(p.mean_min, m);
    p.mean_max = std::max(p.mean_max, m);
    p.std_min = std::min(p.std_min, sd);
    p.std_max = std::max(p.std_max, sd);
  }
  return p;
}

}  // namespace

// Batches of different sizes, a large offset on one dimension (where a one-pass sum of squares
// would lose digits), and NaN rows that must be left out. Both sides work in double over the same
// f32 values, so they agree to rounding: relative 1e-9 leaves room for a few hundred thousand
// additions' worth of rounding error (about 1e-16 each) and nothing more.
TEST(StreamInfo, DenseStatsMatchAPlainComputation) {
  const int64_t d = 8;
  StreamHeader h = header("activations", d, DType::f32);
  std::vector<Batch> in;
  std::vector<float> all;
  int64_t rows = 0;
  for (int i = 0; i < 7; i++) {
    Batch b = dense_batch(3 + 17 * i, d, uint32_t(i));
    for (int64_t r = 0; r < b.rows; r++) b.x[size_t(r * d + 2)] += 1e4f;
    all.insert(all.end(), b.x.begin(), b.x.end());
    rows += b.rows;
    in.push_back(b);
  }
  Batch nan = dense_batch(2, d, 99);
  nan.x[3] = std::numeric_limits<float>::quiet_NaN();
  nan.x[d + 1] = -std::numeric_limits<float>::infinity();
  in.insert(in.begin() + 3, nan);
  std::string s = write_stream(h, in);
  StreamReader r(s.data(), s.size(), "<memory>");
  json rep = inspect_stream(r, {"m.sae"}, InfoOptions{});
  Plain p = plain_stats(all, rows, d);
  const json& st = rep["stats"];
  EXPECT_EQ(rep["rows"], rows + 2);
  EXPECT_EQ(rep["batches"], 8);
  EXPECT_EQ(st["nonfinite_rows"], 2);
  EXPECT_NEAR(st["mean_l2_norm"].get<double>(), p.norm, 1e-9 * p.norm);
  EXPECT_NEAR(st["dim_mean_min"].get<double>(), p.mean_min, 1e-9 * std::fabs(p.mean_min) + 1e-12);
  EXPECT_NEAR(st["dim_mean_max"].get<double>(), p.mean_max, 1e-9 * p.mean_max);
  EXPECT_NEAR(st["dim_std_min"].get<double>(), p.std_min, 1e-9 * p.std_min);
  EXPECT_NEAR(st["dim_std_max"].get<double>(), p.std_max, 1e-9 * p.std_max);
  float lo = INFINITY, hi = -INFINITY;
  for (float v : all) {
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  EXPECT_EQ(st["value_min"].get<double>(), double(lo));
  EXPECT_EQ(st["value_max"].get<double>(), double(hi));
}

// Latents: statistics over the dense rows the sparse ones stand for (absent entries are zeros).
TEST(StreamInfo, LatentStatsMatchTheDenseEquivalent) {
  const int64_t d = 400;  // wide enough that about 300 entries leave some latents dead
  StreamHeader h = header("latents", d, DType::f32);
  std::vector<Batch> in;
  std::vector<float> dense;
  int64_t rows = 0, nnz = 0;
  std::vector<int> active(size_t(d), 0);
  for (int i = 0; i < 5; i++) {
    Batch b = latent_batch(20 + i, d, 6, uint32_t(i), {true, false, true});
    size_t o = 0;
    for (int64_t r = 0; r < b.rows; r++) {
      std::vector<float> row(size_t(d), 0.f);
      for (uint32_t k = 0; k < b.count[size_t(r)]; k++, o++) {
        row[b.index[o]] = b.value[o];
        active[b.index[o]] = 1;
      }
      dense.insert(dense.end(), row.begin(), row.end());
    }
    rows += b.rows;
    nnz += int64_t(b.index.size());
    in.push_back(b);
  }
  std::string s = write_stream(h, in);
  StreamReader r(s.data(), s.size(), "<memory>");
  json rep = inspect_stream(r, {"l.sae"}, InfoOptions{});
  const json& st = rep["stats"];
  Plain p = plain_stats(dense, rows, d);
  int dead = 0;
  for (int a : active) dead += !a;
  EXPECT_GT(dead, 0);  // the test data leaves some latents unused, so the count is exercised
  EXPECT_EQ(st["dead_latents"], dead);
  EXPECT_NEAR(st["l0_mean"].get<double>(), double(nnz) / double(rows), 1e-12);
  EXPECT_NEAR(st["mean_l2_norm"].get<double>(), p.norm, 1e-9 * p.norm);
  EXPECT_NEAR(st["dim_mean_max"].get<double>(), p.mean_max, 1e-9 * p.mean_max);
  EXPECT_EQ(st["dim_mean_min"].get<double>(), 0.0);  // a dead latent
  EXPECT_NEAR(st["dim_std_max"].get<double>(), p.std_max, 1e-9 * p.std_max);
  EXPECT_EQ(rep["columns"]["token"], rows);
  EXPECT_EQ(rep["columns"]["doc"], 0);
  EXPECT_EQ(rep["columns"]["pos"], rows);
  std::string table = info_table(rep);
  EXPECT_NE(table.find("dead latents    " + std::to_string(dead) + "\n"), std::string::npos) << table;
  EXPECT_NE(table.find("columns         token, pos\n"), std::string::npos) << table;
}

// Past 2^22 latents the per-latent sums live in a hash map of the latents that occur: the same
// entries in a stream 2^31 wide give the same statistics as in a narrow one (dense sums), and the
// latents never seen count as dead, with mean and deviation 0.
TEST(StreamInfo, WideLatentStatsFollowTheDataNotTheHeader) {
  const int64_t narrow = 400, wide = int64_t(1) << 31;
  std::vector<Batch> in;
  for (int i = 0; i < 4; i++) in.push_back(latent_batch(30, narrow / 2, 5, uint32_t(i + 10)));  // latents < 200 only
  auto stats = [&](int64_t d) {
    std::string s = write_stream(header("latents", d, DType::f32), in);
    StreamReader r(s.data(), s.size(), "<memory>");
    return inspect_stream(r, {"l.sae"}, InfoOptions{})["stats"];
  };
  const json a = stats(narrow), b = stats(wide);
  for (const char* k : {"dim_mean_min", "dim_mean_max", "dim_std_min", "dim_std_max", "mean_l2_norm", "l0_mean",
                        "value_min", "value_max"})
    EXPECT_EQ(a[k], b[k]) << k;
  EXPECT_EQ(a["dim_mean_min"].get<double>(), 0.0);
  EXPECT_EQ(a["dim_std_min"].get<double>(), 0.0);
  EXPECT_GE(a["dead_latents"].get<int64_t>(), narrow / 2);
  EXPECT_EQ(b["dead_latents"].get<int64_t>() - a["dead_latents"].get<int64_t>(), wide - narrow);
}

TEST(StreamInfo, EmptyStreamHasNullStats) {
  std::string s = write_stream(header("activations", 4, DType::bf16), {});
  StreamReader r(s.data(), s.size(), "<memory>");
  json rep = inspect_stream(r, {"e.sae"}, InfoOptions{});
  EXPECT_EQ(rep["rows"], 0);
  EXPECT_TRUE(rep["stats"]["mean_l2_norm"].is_null());
  EXPECT_TRUE(rep["stats"]["dim_std_max"].is_null());
  EXPECT_TRUE(rep["bytes_per_value"].is_null());
  EXPECT_NE(info_table(rep).find("dim std         - .. -\n"), std::string::npos);
}

TEST(StreamInfo, ListFramesWalksAFile) {
  TempDir tmp;
  const std::string& dir = tmp.path();
  std::string s = write_stream(header("activations", 4, DType::f32), {dense_batch(3, 4, 1), dense_batch(5, 4, 2)});
  std::ofstream(dir + "/a.sae", std::ios::binary) << s;
  std::vector<json> frames;
  list_frames(dir + "/a.sae", [&](const json& f) { frames.push_back(f); });
  auto offs = frame_offsets(s);
  ASSERT_EQ(frames.size(), 4u);
  const char* types[] = {"header", "batch", "batch", "footer"};
  for (size_t i = 0; i < 4; i++) {
    EXPECT_EQ(frames[i]["offset"], offs[i]);
    EXPECT_EQ(frames[i]["bytes"], offs[i + 1] - offs[i]);
    EXPECT_EQ(frames[i]["type"], types[i]);
  }
  EXPECT_EQ(frames[2]["rows"], 5);
  EXPECT_EQ(frames[3]["rows"], 8);
  std::ofstream(dir + "/cut.sae", std::ios::binary) << s.substr(0, offs[2] + 5);
  frames.clear();
  try {
    list_frames(dir + "/cut.sae", [&](const json& f) { frames.push_back(f); });
    FAIL();
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()), dir + "/cut.sae: frame 2 at offset " + std::to_string(offs[2]) + ": truncated");
  }
  EXPECT_EQ(frames.size(), 2u);
}
