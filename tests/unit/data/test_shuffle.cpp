// sae-shuffle's library: the output is a permutation of the input with columns attached to their
// rows, it is statistically uniform, it is deterministic (and independent of threads), the split
// sends each row to exactly one output, the memory plan follows from the bound and the data's
// shape, and temporary files never outlive a run.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "base/files.h"
#include "data/shuffle.h"

using namespace sae;
namespace fs = std::filesystem;

namespace {

// Row i carries its number everywhere: x[0] = i (exact in f32 below 2^24, and in f16 below 2048),
// token = i, doc = i / 100, pos = i % 100; the other values are a function of i, so every row
// is distinct and its hash identifies it.
float value(int64_t i, int64_t j) {
  uint64_t h = uint64_t(i) * 0x9e3779b97f4a7c15ull + uint64_t(j) * 0xbf58476d1ce4e5b9ull;
  h ^= h >> 29;
  return float(int64_t(h % 2001) - 1000) / 64.0f;  // multiples of 1/64 in [-15.6, 15.6]: exact in f16
}

struct InputSpec {
  int64_t rows = 1000, d = 8, batch = 1000;  // the memory plans below assume batches of 1000
  bool token = true, doc = true, pos = true;
  DType dtype = DType::f32;
  int level = 1;
  std::string kind = "activations";
};

void write_input(const std::string& path, const InputSpec& s) {
  FILE* f = fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  StreamHeader h = make_header(s.kind, s.d, s.dtype);
  h.provenance["model"] = "test-model";
  h.provenance["hook"] = "blocks.0.hook_resid_post";
  WriterOptions wo;
  wo.level = s.level;
  StreamWriter w(f, path, h, wo);
  for (int64_t at = 0; at < s.rows; at += s.batch) {
    Batch b;
    b.rows = std::min(s.batch, s.rows - at);
    for (int64_t r = 0; r < b.rows; r++) {
      int64_t i = at + r;
      for (int64_t j = 0; j < s.d; j++) b.x.push_back(j == 0 ? float(i) : value(i, j));
      if (s.token) b.token.push_back(int32_t(i));
      if (s.doc) b.doc.push_back(i / 100);
      if (s.pos) b.pos.push_back(int32_t(i % 100));
    }
    w.write(std::move(b));
  }
  w.finish();
  fclose(f);
}

// An output captured in memory.
struct MemOut {
  char* buf = nullptr;
  size_t size = 0;
  FILE* f = nullptr;
  MemOut() { f = open_memstream(&buf, &size); }
  ~MemOut() {
    if (f) fclose(f);
    free(buf);
  }
  std::string bytes() {
    fflush(f);
    return std::string(buf, size);
  }
};

struct Rows {
  StreamHeader header;
  std::vector<int64_t> id;       // x[0] of each row, in output order
  std::vector<uint64_t> hash;    // hash of the row's values and columns
  std::vector<int64_t> batch_rows;
};

uint64_t hash_row(const float* x, int64_t d, int32_t tok, int64_t doc, int32_t pos) {
  uint64_t h = 1469598103934665603ull;
  auto eat = [&](const void* p, size_t n) {
    for (size_t k = 0; k < n; k++) h = (h ^ static_cast<const uint8_t*>(p)[k]) * 1099511628211ull;
  };
  eat(x, size_t(d) * 4);
  eat(&tok, 4);
  eat(&doc, 8);
  eat(&pos, 4);
  return h;
}

Rows parse(const std::string& bytes) {
  Rows out;
  auto batches = read_stream_bytes(bytes, &out.header);
  const int64_t d = out.header.d;
  for (const auto& b : batches) {
    out.batch_rows.push_back(b.rows);
    for (int64_t r = 0; r < b.rows; r++) {
      const float* x = b.x.data() + r * d;
      int32_t tok = b.token.empty() ? -1 : b.token[size_t(r)];
      int64_t doc = b.doc.empty() ? -1 : b.doc[size_t(r)];
      int32_t pos = b.pos.empty() ? -1 : b.pos[size_t(r)];
      out.id.push_back(int64_t(x[0]));
      out.hash.push_back(hash_row(x, d, tok, doc, pos));
    }
  }
  return out;
}

// Hashes of the input rows, computed from the spec (not by reading the file back).
std::vector<uint64_t> input_hashes(const InputSpec& s) {
  std::vector<uint64_t> h;
  std::vector<float> x(size_t(s.d));
  for (int64_t i = 0; i < s.rows; i++) {
    for (int64_t j = 0; j < s.d; j++) x[size_t(j)] = j == 0 ? float(i) : value(i, j);
    h.push_back(hash_row(x.data(), s.d, s.token ? int32_t(i) : -1, s.doc ? i / 100 : -1,
                         s.pos ? int32_t(i % 100) : -1));
  }
  return h;
}

struct Result {
  std::string main, held;
  ShuffleReport rep;
};

Result shuffle(const std::vector<std::string>& inputs, ShuffleOptions opt) {
  MemOut a, b;
  Result r;
  r.rep = shuffle_streams(inputs, a.f, "<main>", opt.split_name.empty() ? nullptr : b.f, "<held>", opt);
  r.main = a.bytes();
  if (!opt.split_name.empty()) r.held = b.bytes();
  return r;
}

// Memory bounds that put the test inputs (d=8 f32 with all three columns, batches of 1000 rows,
// output batches of 256) through each code path: the bound is the planned reserve for reading and
// writing batches plus the arena wanted.
int64_t memory_for_arena(int64_t arena_bytes) {
  auto b = plan_shuffle_budget(16 << 20, 8, DType::f32, true, true, true, 1000, 256, 3, 1);
  EXPECT_GT(b.reserve, (16 << 20) / 8) << "the reserve is not the batches' cost; pick another probe";
  return b.reserve + arena_bytes;
}
ShuffleOptions opts_in_memory(const std::string& tmp) {
  ShuffleOptions o;
  o.seed = 7;
  o.tmp_dir = tmp;
  o.memory = 256 << 20;
  o.batch_rows = 256;
  return o;
}
ShuffleOptions opts_on_disk(const std::string& tmp) {  // a few buckets
  ShuffleOptions o = opts_in_memory(tmp);
  o.memory = memory_for_arena(1 << 20);
  return o;
}
ShuffleOptions opts_resplit(const std::string& tmp) {  // fan-out 2: buckets overflow
  ShuffleOptions o = opts_in_memory(tmp);
  o.memory = memory_for_arena(150 << 10);
  return o;
}

// The three code paths by number: 0 in memory, 1 on disk, 2 on disk with re-split buckets.
ShuffleOptions opts_mode(int mode, const std::string& tmp) {
  return mode == 0 ? opts_in_memory(tmp) : mode == 1 ? opts_on_disk(tmp) : opts_resplit(tmp);
}

void expect_permutation(const Rows& out, const InputSpec& in) {
  auto want = input_hashes(in);
  auto got = out.hash;
  ASSERT_EQ(got.size(), want.size());
  std::sort(got.begin(), got.end());
  std::sort(want.begin(), want.end());
  EXPECT_TRUE(got == want) << "the output rows are not the input rows";
}

// Chi-square statistic of the 4x4 table (input quarter of a row) x (output quarter of its
// position): with every row placed uniformly at random, all 16 cells expect n/16 rows. Both
// margins are fixed (each quarter has n/4 rows), so the statistic has (4-1)*(4-1) = 9 degrees of
// freedom; at significance 0.001 the critical value is 27.877. The seed is fixed, so the test is
// deterministic; a failure means the order is not uniform (or an unlucky seed, 1 in 1000).
double chi_square_quarters(const std::vector<int64_t>& ids) {
  const int64_t n = int64_t(ids.size());
  double table[4][4] = {};
  for (int64_t p = 0; p < n; p++) table[ids[size_t(p)] * 4 / n][p * 4 / n] += 1;
  const double e = double(n) / 16;
  double chi = 0;
  for (auto& row : table)
    for (double o : row) chi += (o - e) * (o - e) / e;
  return chi;
}
constexpr double kChi2Df9Alpha001 = 27.877;

// Ascents (positions where the next row has a larger input number) of a uniform permutation of n:
// mean (n-1)/2, variance (n+1)/12. Rows left in input order inside buckets would show as far too
// many ascents, which the quarter test above cannot see. Accept within 5 standard deviations
// (two-sided significance about 6e-7).
void expect_ascents_uniform(const std::vector<int64_t>& ids) {
  const double n = double(ids.size());
  double asc = 0;
  for (size_t p = 0; p + 1 < ids.size(); p++) asc += ids[p + 1] > ids[p];
  EXPECT_NEAR(asc, (n - 1) / 2, 5 * std::sqrt((n + 1) / 12));
}

}  // namespace

TEST(ShuffleParse, MemorySizes) {
  EXPECT_EQ(parse_memory_size("64M"), int64_t(64) << 20);
  EXPECT_EQ(parse_memory_size("1.5G"), int64_t(3) << 29);
  EXPECT_EQ(parse_memory_size("512K"), int64_t(512) << 10);
  EXPECT_EQ(parse_memory_size("2GiB"), int64_t(2) << 30);
  EXPECT_EQ(parse_memory_size("1000000"), 1000000);
  for (const char* bad : {"", "M", "abc", "-1M", "0", "10X", "1e30T"}) {
    try {
      parse_memory_size(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const UsageError& e) {
      EXPECT_EQ(std::string(e.what()), std::string("--memory: bad size '") + bad +
                                           "' (expected a number of bytes with an optional K, M, G or T suffix, e.g. 64M)");
    }
  }
}

TEST(ShuffleBudget, SharesTheBoundAndIgnoresThreads) {
  auto a = plan_shuffle_budget(64 << 20, 768, DType::f32, true, true, true, 1024, 1024, 3, 1);
  auto b = plan_shuffle_budget(64 << 20, 768, DType::f32, true, true, true, 1024, 1024, 3, 16);
  EXPECT_EQ(a.record_bytes, 768 * 4 + 16);
  EXPECT_EQ(a.arena_bytes + a.reserve, int64_t(64) << 20);
  EXPECT_EQ(a.arena_rows, a.arena_bytes / (a.record_bytes + 6));
  // The arena (which decides where rows go) must not depend on the thread count.
  EXPECT_EQ(a.arena_bytes, b.arena_bytes);
  EXPECT_EQ(a.arena_rows, b.arena_rows);
  EXPECT_EQ(a.max_buckets, b.max_buckets);
  EXPECT_EQ(a.writer_threads, 1);
  EXPECT_GE(b.writer_threads, 2);  // the reserve always holds two writing threads
  // A bound of 1G keeps an eighth for batches.
  auto big = plan_shuffle_budget(int64_t(1) << 30, 768, DType::bf16, false, false, false, 1024, 1024, 3, 1);
  EXPECT_EQ(big.reserve, int64_t(1) << 27);
  EXPECT_EQ(big.record_bytes, 768 * 2);
  EXPECT_EQ(big.max_buckets, 256);
}

TEST(ShuffleBudget, TooLittleMemoryIsAUsageError) {
  try {
    plan_shuffle_budget(8 << 20, 4096, DType::f32, false, false, false, 1024, 1024, 3, 1);
    FAIL() << "accepted 8M for batches of 16 MiB";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("--memory 8.0 MiB is too small for rows of d=4096 f32 read in batches of 1024 "
                                         "rows and written in batches of 1024 (--batch-rows): needs at least "),
              std::string::npos)
        << e.what();
  }
}

TEST(ShuffleBudget, BucketCountFollowsSizeAndMemory) {
  // Buckets aim at 7/8 of the arena.
  EXPECT_EQ(shuffle_bucket_count(100, 10, 1000, 256), 1);
  EXPECT_EQ(shuffle_bucket_count(8750, 10, 1000, 256), 1);
  EXPECT_EQ(shuffle_bucket_count(8751, 10, 1000, 256), 2);
  EXPECT_EQ(shuffle_bucket_count(87500, 10, 1000, 256), 10);
  EXPECT_EQ(shuffle_bucket_count(87500, 10, 2000, 256), 5);  // twice the memory, half the buckets
  EXPECT_EQ(shuffle_bucket_count(int64_t(1) << 40, 10, 1000, 256), 256);  // capped; overflow re-splits
}

TEST(ShuffleRun, PermutationWithColumnsInMemoryOnDiskAndResplit) {
  TempDir dir, tmp;
  InputSpec in;
  in.rows = 60000;
  std::string path = dir.path() + "/in.sae";
  write_input(path, in);
  for (int mode = 0; mode < 3; mode++) {
    SCOPED_TRACE("mode " + std::to_string(mode));
    ShuffleOptions o = opts_mode(mode, tmp.path());
    Result r = shuffle({path}, o);
    Rows out = parse(r.main);
    expect_permutation(out, in);
    EXPECT_EQ(r.rep.rows, in.rows);
    EXPECT_EQ(r.rep.rows_main, in.rows);
    if (mode == 0) {
      EXPECT_EQ(r.rep.buckets, 0);
      EXPECT_EQ(r.rep.temp_bytes, 0);
    } else if (mode == 1) {
      EXPECT_GT(r.rep.buckets, 1);
      EXPECT_EQ(r.rep.resplit, 0);
      EXPECT_EQ(r.rep.temp_bytes, in.rows * r.rep.record_bytes);  // every row written once
    } else {
      EXPECT_GT(r.rep.resplit, 0);
      EXPECT_GT(r.rep.temp_bytes, in.rows * r.rep.record_bytes);  // some rows written twice
    }
    // Output batches are --batch-rows long, except the last.
    for (size_t k = 0; k + 1 < out.batch_rows.size(); k++) EXPECT_EQ(out.batch_rows[k], 256);
    // The order changed, and the chi-square test of uniformity passes.
    int64_t fixed = 0;
    for (size_t p = 0; p < out.id.size(); p++) fixed += out.id[p] == int64_t(p);
    EXPECT_LT(fixed, 10);  // a uniform permutation has 1 fixed point on average
    EXPECT_LT(chi_square_quarters(out.id), kChi2Df9Alpha001);
    expect_ascents_uniform(out.id);
    EXPECT_TRUE(fs::is_empty(tmp.path())) << "temporary files left in " << tmp.path();
  }
}

TEST(ShuffleRun, HeaderKeepsProvenanceAndNotesTheSeed) {
  TempDir dir, tmp;
  InputSpec in;
  std::string path = dir.path() + "/in.sae";
  write_input(path, in);
  Result r = shuffle({path}, opts_in_memory(tmp.path()));
  Rows out = parse(r.main);
  EXPECT_EQ(out.header.d, in.d);
  EXPECT_EQ(out.header.provenance["model"], "test-model");
  EXPECT_EQ(out.header.provenance["hook"], "blocks.0.hook_resid_post");
  ASSERT_TRUE(out.header.provenance["shuffled"].is_array());
  ASSERT_EQ(out.header.provenance["shuffled"].size(), 1u);
  EXPECT_EQ(out.header.provenance["shuffled"][0]["seed"], 7);
  // Shuffling again appends a second note.
  std::string again = dir.path() + "/once.sae";
  std::ofstream(again, std::ios::binary) << r.main;
  ShuffleOptions o = opts_in_memory(tmp.path());
  o.seed = 8;
  Rows twice = parse(shuffle({again}, o).main);
  ASSERT_EQ(twice.header.provenance["shuffled"].size(), 2u);
  EXPECT_EQ(twice.header.provenance["shuffled"][1]["seed"], 8);
}

TEST(ShuffleRun, SameSeedSameBytesWhateverTheThreads) {
  TempDir dir, tmp;
  InputSpec in;
  in.rows = 30000;
  std::string path = dir.path() + "/in.sae";
  write_input(path, in);
  for (int mode = 0; mode < 3; mode++) {
    SCOPED_TRACE("mode " + std::to_string(mode));
    ShuffleOptions o = opts_mode(mode, tmp.path());
    o.threads = 1;
    Result first = shuffle({path}, o);
    EXPECT_EQ(first.rep.buckets > 0, mode > 0);
    EXPECT_EQ(first.rep.resplit > 0, mode == 2);
    std::string a = first.main;
    o.threads = 4;
    std::string b = shuffle({path}, o).main;
    EXPECT_TRUE(a == b) << "output depends on the thread count";
    std::string c = shuffle({path}, o).main;
    EXPECT_TRUE(a == c) << "output differs between two runs with the same seed";
    o.seed = 8;
    EXPECT_FALSE(a == shuffle({path}, o).main) << "a different seed gave the same order";
  }
}

TEST(ShuffleRun, SeveralInputsReadAsOne) {
  TempDir dir, tmp;
  InputSpec in;
  in.rows = 2000;
  std::string path = dir.path() + "/in.sae";
  write_input(path, in);
  Rows out = parse(shuffle({path, path}, opts_on_disk(tmp.path())).main);
  ASSERT_EQ(out.hash.size(), size_t(2 * in.rows));
  std::map<uint64_t, int> count;
  for (auto h : out.hash) count[h]++;
  auto want = input_hashes(in);
  for (auto h : want) EXPECT_EQ(count[h], 2);
}

TEST(ShuffleRun, SplitSendsEachRowToExactlyOneOutput) {
  TempDir dir, tmp;
  InputSpec in;
  in.rows = 40000;
  std::string path = dir.path() + "/in.sae";
  write_input(path, in);
  for (int mode = 0; mode < 2; mode++) {
    SCOPED_TRACE("mode " + std::to_string(mode));
    ShuffleOptions o = opts_mode(mode, tmp.path());
    o.split_name = "heldout";
    o.split_fraction = 0.05;
    Result r = shuffle({path}, o);
    Rows a = parse(r.main), b = parse(r.held);
    EXPECT_EQ(r.rep.buckets > 0, mode == 1);
    // Together they are the input, each row once.
    Rows all = a;
    all.hash.insert(all.hash.end(), b.hash.begin(), b.hash.end());
    expect_permutation(all, in);
    // The held-out count is binomial(40000, 0.05): mean 2000, sd 43.6; 5 sd either side.
    EXPECT_NEAR(double(b.hash.size()), 2000, 5 * 43.6);
    EXPECT_EQ(r.rep.rows_split, int64_t(b.hash.size()));
    EXPECT_EQ(a.header.provenance["shuffled"][0]["split"]["part"], "rest");
    EXPECT_EQ(b.header.provenance["shuffled"][0]["split"]["part"], "heldout");
    EXPECT_EQ(b.header.provenance["shuffled"][0]["split"]["fraction"], 0.05);
    // Both outputs are uniformly ordered.
    // Input quarters by rank among the rows each output received.
    for (auto* p : {&a, &b}) {
      std::vector<int64_t> ids = p->id, sorted = p->id;
      std::sort(sorted.begin(), sorted.end());
      for (auto& v : ids) v = std::lower_bound(sorted.begin(), sorted.end(), v) - sorted.begin();
      EXPECT_LT(chi_square_quarters(ids), kChi2Df9Alpha001);
      expect_ascents_uniform(ids);
    }
    // The split depends on the seed only, not on the memory: the same rows are held out in
    // memory and on disk.
    static std::vector<int64_t> held_ids;
    std::vector<int64_t> ids = b.id;
    std::sort(ids.begin(), ids.end());
    if (mode == 0) {
      held_ids = ids;
    } else {
      EXPECT_TRUE(ids == held_ids);
    }
  }
}

TEST(ShuffleRun, F16AndNoColumnsRoundTripExactly) {
  TempDir dir, tmp;
  InputSpec in;
  in.rows = 1500;  // x[0] = row number must be exact in f16 (integers up to 2048 are)
  in.dtype = DType::f16;
  in.token = in.doc = in.pos = false;
  std::string path = dir.path() + "/in.sae";
  write_input(path, in);
  Result r = shuffle({path}, opts_on_disk(tmp.path()));
  Rows out = parse(r.main);
  EXPECT_EQ(out.header.dtype, DType::f16);
  expect_permutation(out, in);
}

TEST(ShuffleRun, EmptyInputGivesAnEmptyStream) {
  TempDir dir, tmp;
  InputSpec in;
  in.rows = 0;
  std::string path = dir.path() + "/in.sae";
  write_input(path, in);
  Result r = shuffle({path}, opts_in_memory(tmp.path()));
  Rows out = parse(r.main);
  EXPECT_EQ(out.hash.size(), 0u);
  EXPECT_EQ(out.header.d, in.d);
}

TEST(ShuffleErrors, LatentsAreRefused) {
  TempDir dir, tmp;
  std::string path = dir.path() + "/lat.sae";
  FILE* f = fopen(path.c_str(), "wb");
  StreamWriter w(f, path, make_header("latents", 16, DType::f32));
  w.finish();
  fclose(f);
  try {
    shuffle({path}, opts_in_memory(tmp.path()));
    FAIL();
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()), path + ": holds latents; sae-shuffle shuffles activation streams");
  }
}

TEST(ShuffleErrors, ColumnsMustAgreeAcrossBatches) {
  TempDir dir, tmp;
  InputSpec with, without;
  without.token = without.doc = without.pos = false;
  std::string a = dir.path() + "/a.sae", b = dir.path() + "/b.sae";
  write_input(a, with);
  write_input(b, without);
  try {
    shuffle({a, b}, opts_on_disk(tmp.path()));
    FAIL();
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()), b + ": batch 1 has columns none but the first batch had token,doc,pos "
                                         "(rows cannot be shuffled together)");
  }
  EXPECT_TRUE(fs::is_empty(tmp.path()));
}

TEST(ShuffleErrors, BadInputAfterSpillingLeavesNoTemporaryFiles) {
  TempDir dir, tmp;
  InputSpec in;
  in.rows = 60000;
  std::string path = dir.path() + "/in.sae";
  write_input(path, in);
  // Cut the file in the middle: the reader fails after pass 1 has written bucket files.
  fs::resize_file(path, fs::file_size(path) * 3 / 4);
  EXPECT_THROW(shuffle({path}, opts_on_disk(tmp.path())), InputError);
  EXPECT_TRUE(fs::is_empty(tmp.path()));
}

TEST(ShuffleErrors, MissingTempDirectory) {
  TempDir dir;
  InputSpec in;
  std::string path = dir.path() + "/in.sae";
  write_input(path, in);
  ShuffleOptions o = opts_in_memory(dir.path() + "/nope");
  try {
    shuffle({path}, o);
    FAIL();
  } catch (const UsageError& e) {
    EXPECT_EQ(std::string(e.what()), "--tmp " + dir.path() + "/nope: no such directory");
  }
}
