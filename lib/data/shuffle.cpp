#include "data/shuffle.h"

#define ZSTD_STATIC_LINKING_ONLY  // ZSTD_estimateCCtxSize_usingCParams (exported by libzstd)
#include <zstd.h>

#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <thread>

#include "base/build_info.h"
#include "base/cli.h"
#include "base/files.h"
#include "base/rng.h"

namespace sae {

namespace {

constexpr int64_t kKiB = 1024, kMiB = 1024 * 1024;
// A scatter writes each bucket's share of the arena in one go; below this size per bucket the
// writes get small enough for syscall overhead to show, so it bounds the fan-out.
constexpr int64_t kMinBucketWrite = 64 * kKiB;
// Fan-out limit: also bounds the open files (a re-split keeps its parent level's files open).
constexpr int kMaxFanout = 256;
constexpr int kIovMax = 1024;  // IOV_MAX on Linux

// ---- random numbers (lib/base/rng.h) ----
// Where a row goes (its split part, its bucket) is drawn from the sub-stream of its row number, so
// the decision does not depend on how reading is cut into batches or spread over threads. Each
// decision has its own labelled stream under the seed, so none is correlated with another.
enum : uint64_t { kKeySplit = 1, kKeyBucket = 2, kKeyFile = 3, kKeySub = 4, kKeyScatter = 5, kKeyPermute = 6 };

std::string mib(double bytes) {
  char buf[32];
  if (bytes >= 10 * kMiB * 1024.0)
    snprintf(buf, sizeof buf, "%.1f GiB", bytes / (1024.0 * kMiB));
  else
    snprintf(buf, sizeof buf, "%.1f MiB", bytes / kMiB);
  return buf;
}

// ---- rows as fixed-size records ----

struct Layout {
  int64_t d = 0;
  DType dtype = DType::f32;
  bool token = false, doc = false, pos = false;
  size_t xbytes = 0, off_token = 0, off_doc = 0, off_pos = 0, rec = 0;

  Layout(int64_t d_, DType t, bool tok, bool dc, bool ps) : d(d_), dtype(t), token(tok), doc(dc), pos(ps) {
    xbytes = size_t(d) * dtype_size(t);
    size_t o = xbytes;
    if (doc) off_doc = o, o += 8;
    if (token) off_token = o, o += 4;
    if (pos) off_pos = o, o += 4;
    rec = o;
  }
  // Values go back to the stream's own dtype, so the round trip through a bucket is exact.
  void pack(const Batch& b, int64_t r, char* dst) const {
    if (b.is_stored())  // (stored as the stream's dtype, which is ours): the bytes, no round trip
      b.row_stored_bytes(d, r, reinterpret_cast<uint8_t*>(dst));
    else
      encode_f32(dtype, b.x.data() + r * d, size_t(d), dst);
    if (doc) memcpy(dst + off_doc, &b.doc[size_t(r)], 8);
    if (token) memcpy(dst + off_token, &b.token[size_t(r)], 4);
    if (pos) memcpy(dst + off_pos, &b.pos[size_t(r)], 4);
  }
  void unpack(const char* src, Batch& b, int64_t r) const {
    decode_f32(dtype, src, size_t(d), b.x.data() + r * d);
    if (doc) memcpy(&b.doc[size_t(r)], src + off_doc, 8);
    if (token) memcpy(&b.token[size_t(r)], src + off_token, 4);
    if (pos) memcpy(&b.pos[size_t(r)], src + off_pos, 4);
  }
  std::string describe_columns() const {
    std::string s;
    for (auto [on, name] : {std::pair{token, "token"}, {doc, "doc"}, {pos, "pos"}})
      if (on) s += (s.empty() ? "" : ",") + std::string(name);
    return s.empty() ? "none" : s;
  }
};

// ---- temporary files ----

// An anonymous file in the temporary directory (base/files.h create_unnamed_temp_file): it has no
// name to leave behind, so the kernel frees it when the descriptor closes, on success, on an
// exception, on SIGINT and even on SIGKILL.
class TempFile {
 public:
  explicit TempFile(const std::string& dir) : dir_(dir), fd_(create_unnamed_temp_file(dir)) {}
  ~TempFile() { close(); }
  TempFile(TempFile&& o) noexcept : dir_(std::move(o.dir_)), fd_(o.fd_), size_(o.size_) { o.fd_ = -1; }
  TempFile& operator=(TempFile&&) = delete;
  TempFile(const TempFile&) = delete;

  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  int64_t size() const { return size_; }

  // Appends the records listed in `iov`; a full disk is an InputError naming the directory.
  void append(struct iovec* iov, int n, const std::function<std::string()>& full_hint) {
    while (n > 0) {
      int k = std::min(n, kIovMax);
      ssize_t w = ::writev(fd_, iov, k);
      if (w < 0) {
        if (errno == EINTR) continue;
        int e = errno;
        if (e == ENOSPC || e == EDQUOT)
          throw InputError(dir_ + ": temporary directory is full (" + std::strerror(e) + ")" + full_hint());
        throw InputError(dir_ + ": cannot write temporary file: " + std::strerror(e));
      }
      size_ += w;
      // Skip what was written, possibly ending inside one iovec.
      size_t left = size_t(w);
      while (k > 0 && left >= iov->iov_len) {
        left -= iov->iov_len;
        iov++, n--, k--;
      }
      if (left) {
        iov->iov_base = static_cast<char*>(iov->iov_base) + left;
        iov->iov_len -= left;
      }
    }
  }

  void read(int64_t off, char* dst, int64_t n) const {
    while (n > 0) {
      ssize_t r = ::pread(fd_, dst, size_t(std::min<int64_t>(n, int64_t(1) << 30)), off);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0)
        throw std::runtime_error(dir_ + ": cannot read back a temporary file: " +
                                 (r < 0 ? std::strerror(errno) : "unexpected end"));
      dst += r, off += r, n -= r;
    }
  }

 private:
  std::string dir_;
  int fd_ = -1;
  int64_t size_ = 0;
};

// ---- the arena: rows in memory, with a tag and an order slot per row ----

// One anonymous mapping for the whole arena. Pages cost memory only once touched, so a small input
// under a large --memory stays small; MAP_NORESERVE keeps a bound larger than the machine's free
// memory from being refused up front (it is the user's bound to choose).
struct Arena {
  size_t rec;
  int64_t cap;
  size_t bytes = 0;
  void* map = nullptr;
  char* data = nullptr;      // cap * rec
  uint32_t* order = nullptr; // cap: a permutation of row numbers
  uint16_t* tag = nullptr;   // cap: destination bucket of each row
  int64_t n = 0;

  Arena(size_t rec_, int64_t cap_) : rec(rec_), cap(cap_) {
    const size_t c = size_t(cap_), records = (c * rec_ + 7) / 8 * 8;
    bytes = records + c * 4 + c * 2;
    map = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (map == MAP_FAILED) throw std::runtime_error(std::string("cannot map the row arena: ") + std::strerror(errno));
    data = static_cast<char*>(map);
    order = reinterpret_cast<uint32_t*>(data + records);
    tag = reinterpret_cast<uint16_t*>(data + records + c * 4);
  }
  ~Arena() { munmap(map, bytes); }
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
  char* row(int64_t i) { return data + size_t(i) * rec; }
};

// Groups the arena's rows [0, n) by tag (a counting sort of row numbers into `order`);
// returns where each tag's rows start (size ntags + 1).
std::vector<int64_t> group_by_tag(Arena& a, int64_t n, int ntags) {
  std::vector<int64_t> start(size_t(ntags) + 1, 0);
  for (int64_t i = 0; i < n; i++) start[a.tag[i] + 1]++;
  for (int t = 0; t < ntags; t++) start[size_t(t) + 1] += start[size_t(t)];
  std::vector<int64_t> at(start.begin(), start.end() - 1);
  for (int64_t i = 0; i < n; i++) a.order[at[a.tag[i]]++] = uint32_t(i);
  return start;
}

// Writes the arena's rows [0, n) to files[tag], in gathered writes of up to 1024 rows; adds the
// bytes to `written` as it goes (so a full-disk message can say how far it got).
void scatter(Arena& a, int64_t n, std::vector<TempFile>& files, int64_t& written,
             const std::function<std::string()>& hint) {
  auto start = group_by_tag(a, n, int(files.size()));
  struct iovec iov[kIovMax];  // one writev call's worth: no per-row list outside the arena
  for (size_t f = 0; f < files.size(); f++) {
    for (int64_t k = start[f]; k < start[f + 1];) {
      int m = 0;
      for (; m < kIovMax && k < start[f + 1]; m++, k++) iov[m] = {a.row(a.order[k]), a.rec};
      files[f].append(iov, m, hint);
      written += m * int64_t(a.rec);
    }
  }
}

// Collects rows into output batches of a fixed size and writes them.
class Sink {
 public:
  Sink(FILE* f, const std::string& name, StreamHeader h, WriterOptions wo, const Layout& L, int64_t batch_rows)
      : w_(std::make_unique<StreamWriter>(f, name, std::move(h), wo)), L_(L), batch_rows_(batch_rows) {}
  void add(const char* rec) {
    if (b_.rows == 0) {
      b_.x.resize(size_t(batch_rows_ * L_.d));
      if (L_.token) b_.token.resize(size_t(batch_rows_));
      if (L_.doc) b_.doc.resize(size_t(batch_rows_));
      if (L_.pos) b_.pos.resize(size_t(batch_rows_));
    }
    L_.unpack(rec, b_, b_.rows++);
    rows_++;
    if (b_.rows == batch_rows_) flush();
  }
  // Writes the rest and the footer, then drops the writer: its threads, zstd contexts and frame
  // buffers would otherwise stay while the other output is written, outside the memory plan.
  void finish() {
    if (!w_) return;
    flush();
    w_->finish();
    w_.reset();
  }
  int64_t rows() const { return rows_; }

 private:
  void flush() {
    if (b_.rows == 0) return;
    b_.x.resize(size_t(b_.rows * L_.d));
    if (L_.token) b_.token.resize(size_t(b_.rows));
    if (L_.doc) b_.doc.resize(size_t(b_.rows));
    if (L_.pos) b_.pos.resize(size_t(b_.rows));
    w_->write(std::move(b_));
    b_ = Batch();
  }
  std::unique_ptr<StreamWriter> w_;
  Layout L_;
  int64_t batch_rows_;
  Batch b_;
  int64_t rows_ = 0;
};

// Total size of the inputs when all are regular files (stdin redirected from a file counts);
// -1 when any is a pipe or terminal, whose size is unknown.
int64_t input_bytes(const std::vector<std::string>& inputs) {
  int64_t total = 0;
  for (const auto& p : inputs) {
    struct stat st;
    int rc = (p == "-" || p.empty()) ? fstat(0, &st) : stat(p.c_str(), &st);
    if (rc != 0 || !S_ISREG(st.st_mode)) return -1;
    if (p == "-" || p.empty()) {
      off_t at = lseek(0, 0, SEEK_CUR);
      total += int64_t(st.st_size) - (at > 0 ? int64_t(at) : 0);
    } else {
      total += int64_t(st.st_size);
    }
  }
  return total;
}

std::string inputs_name(const std::vector<std::string>& inputs) {
  if (inputs.size() == 1) return inputs[0] == "-" ? "<stdin>" : inputs[0];
  return "the input";
}

// The whole shuffle, once the input's shape is known.
class Shuffler {
 public:
  Shuffler(const ShuffleOptions& opt, const Layout& L, const ShuffleBudget& bud, std::vector<Sink*> sinks,
           int64_t in_bytes)
      : opt_(opt), L_(L), bud_(bud), sinks_(std::move(sinks)), in_bytes_(in_bytes), arena_(L.rec, bud.arena_rows) {
    split_ = sinks_.size() > 1;
    const Rng root(opt.seed);
    k_split_ = root.substream(kKeySplit);
    for (int p = 0; p < parts(); p++) key_bucket_.push_back(root.substream(kKeyBucket).substream(uint64_t(p)));
  }

  ShuffleReport& report() { return rep_; }

  // Pass 1: one input batch.
  void add(const Batch& b, int64_t compressed_so_far) {
    // The reader counts a frame's compressed bytes when it returns the batch, so the bytes read so
    // far hold the rows up to the end of this batch.
    covered_rows_ = rep_.rows + b.rows;
    for (int64_t r = 0; r < b.rows; r++) {
      if (arena_.n == arena_.cap) spill(compressed_so_far);
      L_.pack(b, r, arena_.row(arena_.n++));
    }
    rep_.rows += b.rows;
  }

  // End of input: emit everything.
  void finish(int64_t compressed_total) {
    if (files_.empty()) {
      in_memory();
    } else {
      spill(compressed_total);
      pass2();
    }
    rep_.rows_main = sinks_[0]->rows();
    rep_.rows_split = split_ ? sinks_[1]->rows() : 0;
    if (opt_.note) {
      std::string m = "shuffled " + std::to_string(rep_.rows) + " rows";
      if (split_)
        m += " (" + std::to_string(rep_.rows_main) + " to the main output, " + std::to_string(rep_.rows_split) +
             " to '" + opt_.split_name + "')";
      if (rep_.buckets)
        m += " through " + std::to_string(rep_.buckets) + " buckets, " + mib(double(rep_.temp_bytes)) +
             " of temporary files, " + std::to_string(rep_.resplit) + " buckets scattered again";
      else
        m += " in memory";
      opt_.note(m);
    }
  }

 private:
  int parts() const { return split_ ? 2 : 1; }
  int part_of(uint64_t row) const {
    return split_ && k_split_.substream(row).bernoulli(opt_.split_fraction) ? 1 : 0;
  }
  Rng file_key(int part, int64_t bucket) const {
    return Rng(opt_.seed).substream(kKeyFile).substream(uint64_t(part)).substream(uint64_t(bucket));
  }

  std::string full_hint() const {
    std::string s = " after writing " + mib(double(rep_.temp_bytes)) + " of bucket files";
    if (est_bytes_ > 0) s += "; this input needs about " + mib(double(est_bytes_)) + " there";
    return s + " (point --tmp at a directory with more free space)";
  }

  // Decides the buckets at the first spill, when the arena has shown how the input's compressed
  // size relates to its size in records.
  void plan_buckets(int64_t compressed_so_far) {
    if (in_bytes_ > 0 && compressed_so_far > 0)
      est_bytes_ = int64_t(double(in_bytes_) * double(covered_rows_) * double(L_.rec) / double(compressed_so_far));
    const double f = split_ ? opt_.split_fraction : 0.0;
    std::vector<int64_t> counts;
    if (!split_) {
      counts = {est_bytes_ > 0 ? shuffle_bucket_count(est_bytes_, int64_t(L_.rec), bud_.arena_rows, bud_.max_buckets)
                               : int64_t(bud_.max_buckets)};
    } else {
      // Each part gets its own buckets, in proportion to its expected size.
      int held_max = std::max(1, int(std::lround(bud_.max_buckets * f)));
      int main_max = std::max(1, bud_.max_buckets - held_max);
      if (est_bytes_ > 0) {
        counts = {shuffle_bucket_count(int64_t(double(est_bytes_) * (1 - f)), int64_t(L_.rec), bud_.arena_rows, main_max),
                  shuffle_bucket_count(int64_t(double(est_bytes_) * f), int64_t(L_.rec), bud_.arena_rows, held_max)};
      } else {
        counts = {main_max, held_max};
      }
    }
    for (int p = 0; p < parts(); p++) {
      first_file_.push_back(int64_t(files_.size()));
      for (int64_t b = 0; b < counts[size_t(p)]; b++) files_.emplace_back(opt_.tmp_dir);
    }
    first_file_.push_back(int64_t(files_.size()));
    rep_.buckets = int64_t(files_.size());
    if (est_bytes_ > 0) {
      struct statvfs sv;
      if (statvfs(opt_.tmp_dir.c_str(), &sv) == 0) {
        double free_bytes = double(sv.f_bavail) * double(sv.f_frsize);
        if (free_bytes < double(est_bytes_))
          cli::say("warning: " + opt_.tmp_dir + " has " + mib(free_bytes) + " free, but this input needs about " +
                   mib(double(est_bytes_)) + " of temporary files there");
      }
    }
    if (opt_.note) {
      std::string m = "memory " + mib(double(opt_.memory)) + ": " + mib(double(bud_.arena_bytes)) + " for " +
                      std::to_string(bud_.arena_rows) + " rows of " + std::to_string(L_.rec) + " bytes, " +
                      mib(double(bud_.reserve)) + " for reading and writing (compression threads: " +
                      std::to_string(bud_.writer_threads) + "); input " +
                      (est_bytes_ > 0 ? "about " + mib(double(est_bytes_)) : std::string("of unknown size")) +
                      " in records: " + std::to_string(counts[0]) + " buckets";
      if (split_) m += " + " + std::to_string(counts[1]) + " for '" + opt_.split_name + "'";
      opt_.note(m);
    }
  }

  // Pass 1: the arena is full (or the input ended): scatter its rows into the bucket files.
  void spill(int64_t compressed_so_far) {
    if (files_.empty()) plan_buckets(compressed_so_far);
    const int64_t n = arena_.n;
    for (int64_t i = 0; i < n; i++) {
      const uint64_t row = uint64_t(start_row_ + i);
      const int p = part_of(row);
      const int64_t nb = first_file_[size_t(p) + 1] - first_file_[size_t(p)];
      arena_.tag[i] = uint16_t(first_file_[size_t(p)] + int64_t(key_bucket_[size_t(p)].substream(row).below(uint64_t(nb))));
    }
    scatter(arena_, n, files_, rep_.temp_bytes, [this] { return full_hint(); });
    start_row_ += n;
    arena_.n = 0;
  }

  // Everything fit in the arena: permute each part in place and emit it; no temporary files.
  void in_memory() {
    const int64_t n = arena_.n;
    for (int64_t i = 0; i < n; i++) arena_.tag[i] = uint16_t(part_of(uint64_t(i)));
    auto start = group_by_tag(arena_, n, parts());
    for (int p = 0; p < parts(); p++) {
      permute_and_emit(start[size_t(p)], start[size_t(p) + 1], file_key(p, 0), *sinks_[size_t(p)]);
      sinks_[size_t(p)]->finish();
    }
  }

  void permute_and_emit(int64_t lo, int64_t hi, const Rng& key, Sink& sink) {
    uint32_t* o = arena_.order + lo;
    key.substream(kKeyPermute).shuffle(o, size_t(hi - lo));  // Fisher-Yates
    for (int64_t i = 0; i < hi - lo; i++) sink.add(arena_.row(o[i]));
  }

  void pass2() {
    int64_t done = 0;
    const auto t0 = std::chrono::steady_clock::now();
    for (int p = 0; p < parts(); p++) {
      for (int64_t b = first_file_[size_t(p)]; b < first_file_[size_t(p) + 1]; b++) {
        TempFile f = std::move(files_[size_t(b)]);
        emit_bucket(f, file_key(p, b - first_file_[size_t(p)]), *sinks_[size_t(p)]);
        ++done;
        if (opt_.progress) {
          const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          const double left = s / double(done) * double(int64_t(files_.size()) - done);
          opt_.progress("pass 2: bucket " + std::to_string(done) + "/" + std::to_string(files_.size()) + ", " +
                        cli::human_count(double(sinks_[0]->rows() + (split_ ? sinks_[1]->rows() : 0))) +
                        " rows written, ETA " + cli::human_duration(left));
        }
      }
      sinks_[size_t(p)]->finish();
    }
    files_.clear();
  }

  // Pass 2 for one bucket file: permute it in memory, or scatter it again if it outgrew the arena.
  void emit_bucket(TempFile& f, const Rng& key, Sink& sink) {
    const int64_t n = f.size() / int64_t(L_.rec);
    if (n <= arena_.cap) {
      f.read(0, arena_.data, f.size());
      f.close();
      for (int64_t i = 0; i < n; i++) arena_.order[i] = uint32_t(i);
      permute_and_emit(0, n, key, sink);
      return;
    }
    rep_.resplit++;
    const int64_t nb = std::max<int64_t>(2, shuffle_bucket_count(f.size(), int64_t(L_.rec), arena_.cap, bud_.max_buckets));
    std::vector<TempFile> sub;
    for (int64_t j = 0; j < nb; j++) sub.emplace_back(opt_.tmp_dir);
    const Rng ks = key.substream(kKeyScatter);
    for (int64_t at = 0; at < n; at += arena_.cap) {
      const int64_t m = std::min(arena_.cap, n - at);
      f.read(at * int64_t(L_.rec), arena_.data, m * int64_t(L_.rec));
      for (int64_t i = 0; i < m; i++) arena_.tag[i] = uint16_t(ks.substream(uint64_t(at + i)).below(uint64_t(nb)));
      scatter(arena_, m, sub, rep_.temp_bytes, [this] { return full_hint(); });
    }
    f.close();  // frees its disk space before the sub-buckets are read
    for (int64_t j = 0; j < nb; j++) {
      TempFile s = std::move(sub[size_t(j)]);
      emit_bucket(s, key.substream(kKeySub).substream(uint64_t(j)), sink);
    }
  }

  const ShuffleOptions& opt_;
  Layout L_;
  ShuffleBudget bud_;
  std::vector<Sink*> sinks_;
  int64_t in_bytes_;
  Arena arena_;
  bool split_ = false;
  Rng k_split_;
  std::vector<Rng> key_bucket_;
  std::vector<TempFile> files_;
  std::vector<int64_t> first_file_;  // part p's buckets are files_[first_file_[p] .. first_file_[p+1])
  int64_t start_row_ = 0;            // input row number of the arena's first row
  int64_t est_bytes_ = -1;           // estimated input size in records; -1 unknown
  int64_t covered_rows_ = 0;         // see add()
  ShuffleReport rep_;
};

}  // namespace

int64_t shuffle_record_bytes(int64_t d, DType dtype, bool token, bool doc, bool pos) {
  return int64_t(Layout(d, dtype, token, doc, pos).rec);
}

// What reading and writing hold at their peak, following how sae::StreamReader and StreamWriter
// buffer (stream/reader.cpp). F is a decoded batch (f32 values and columns), S its stored size (the
// msgpack payload; a compressed frame is at most about that).
// - Reading, in the caller's thread without read-ahead, after the caller has freed its batch: the
//   batch being decoded (F), the decompressed msgpack (S), and the input chunks (4 MiB, or a frame
//   and 1 MiB; two while one is replaced), plus 1 MiB for the zstd context and the rest.
// - Writing with t background threads: the batch being filled (F); up to 2t+1 batches in flight,
//   each a queued batch (F) and then its frame (~S), with one more frame buffer kept for reuse; and
//   per thread its msgpack buffer (S) and a zstd context, sized by zstd itself for such a batch.
// The peak-RSS test in tests/cli/shuffle.bats checks these against the real process.
static int64_t reader_cost(int64_t f32_batch, int64_t stored_batch) {
  const int64_t chunk = std::max<int64_t>(4 * kMiB, stored_batch + kMiB);
  return f32_batch + stored_batch + 2 * chunk + kMiB;
}
static int64_t writer_cost(int t, int64_t f32_batch, int64_t stored_batch, int level) {
  const int64_t cctx = int64_t(ZSTD_estimateCCtxSize_usingCParams(ZSTD_getCParams(level, uint64_t(stored_batch), 0)));
  const int64_t frame = int64_t(ZSTD_compressBound(size_t(stored_batch)));
  return (2 * t + 2) * (f32_batch + frame) + t * (stored_batch + cctx);
}

ShuffleBudget plan_shuffle_budget(int64_t memory, int64_t d, DType dtype, bool token, bool doc, bool pos,
                                  int64_t in_batch_rows, int64_t out_batch_rows, int level, int threads) {
  ShuffleBudget b;
  b.record_bytes = shuffle_record_bytes(d, dtype, token, doc, pos);
  const int64_t cols = (token ? 4 : 0) + (doc ? 8 : 0) + (pos ? 4 : 0);
  const int64_t f_in = in_batch_rows * (4 * d + cols), s_in = in_batch_rows * b.record_bytes;
  const int64_t f_out = out_batch_rows * (4 * d + cols), s_out = out_batch_rows * b.record_bytes;
  // The reserve depends on the shape only (reading, writing with two threads, or an eighth of the
  // bound), never on `threads`: it fixes the arena, which fixes where rows go.
  b.reserve = std::max({reader_cost(f_in, s_in), writer_cost(2, f_out, s_out, level), memory / 8});
  const int64_t per_row = b.record_bytes + 6;  // record, order slot (4), tag (2)
  const int64_t min_rows = 64;
  b.arena_bytes = memory - b.reserve;
  b.arena_rows = std::min<int64_t>(b.arena_bytes / per_row, int64_t(UINT32_MAX));
  if (b.arena_rows < min_rows) {
    const int64_t need = b.reserve + min_rows * per_row;
    throw UsageError("--memory " + mib(double(memory)) + " is too small for rows of d=" + std::to_string(d) + " " +
                     dtype_name(dtype) + " read in batches of " + std::to_string(in_batch_rows) +
                     " rows and written in batches of " + std::to_string(out_batch_rows) + " (--batch-rows): needs at least " +
                     mib(double(need)));
  }
  const int64_t arena_records = b.arena_rows * b.record_bytes;
  b.max_buckets = int(std::clamp<int64_t>(arena_records / kMinBucketWrite, 2, kMaxFanout));
  int hw = std::max(1, int(std::thread::hardware_concurrency()));
  int cap = threads > 0 ? threads : hw;
  b.writer_threads = 1;
  while (b.writer_threads < cap && writer_cost(b.writer_threads + 1, f_out, s_out, level) <= b.reserve) b.writer_threads++;
  return b;
}

int64_t shuffle_bucket_count(int64_t bytes, int64_t record_bytes, int64_t arena_rows, int max_buckets) {
  // Aim at 7/8 of the arena per bucket: buckets are binomially sized around their mean, and the
  // margin keeps an overflow (and its extra pass) rare unless rows are very wide.
  const double per_bucket = double(arena_rows) * double(record_bytes) * 7.0 / 8.0;
  const double want = std::ceil(double(bytes) / per_bucket);
  return std::clamp<int64_t>(int64_t(want), 1, max_buckets);
}

int64_t parse_memory_size(const std::string& s, const std::string& what) {
  auto bad = [&] {
    return UsageError(what + ": bad size '" + s + "' (expected a number of bytes with an optional K, M, G or T suffix, e.g. 64M)");
  };
  if (s.empty()) throw bad();
  size_t used = 0;
  double v;
  try {
    v = std::stod(s, &used);
  } catch (const std::exception&) {
    throw bad();
  }
  std::string unit = s.substr(used);
  if (!unit.empty() && (unit.back() == 'B' || unit.back() == 'b')) unit.pop_back();
  if (unit.size() > 1 && (unit.back() == 'i')) unit.pop_back();  // "MiB" reads as "M"
  double mul = 1;
  if (unit.empty()) mul = 1;
  else if (unit == "K" || unit == "k") mul = double(kKiB);
  else if (unit == "M" || unit == "m") mul = double(kMiB);
  else if (unit == "G" || unit == "g") mul = double(kMiB) * 1024;
  else if (unit == "T" || unit == "t") mul = double(kMiB) * 1024 * 1024;
  else throw bad();
  if (!std::isfinite(v) || v <= 0 || v * mul > 9e18) throw bad();
  return int64_t(v * mul);
}

StreamHeader shuffled_header(const StreamHeader& in, const ShuffleOptions& opt, const std::string& part) {
  StreamHeader h = in;
  json note = {{"tool", cli::tool()}, {"tool_version", build_info::version()}, {"seed", opt.seed}};
  if (!part.empty())
    note["split"] = {{"name", opt.split_name}, {"fraction", opt.split_fraction}, {"part", part}};
  // A list, so a stream shuffled twice keeps both notes.
  json& s = h.provenance["shuffled"];
  if (s.is_null()) s = json::array();
  if (!s.is_array()) s = json::array({s});
  s.push_back(note);
  return h;
}

ShuffleReport shuffle_streams(const std::vector<std::string>& inputs, FILE* out, const std::string& out_name,
                              FILE* split_out, const std::string& split_out_name, const ShuffleOptions& opt) {
  const bool split = !opt.split_name.empty();
  if (opt.batch_rows < 1) throw UsageError("--batch-rows must be at least 1");
  if (split && !(opt.split_fraction > 0 && opt.split_fraction < 1))
    throw UsageError("--split: the fraction must be between 0 and 1 (exclusive)");
  if (split && !split_out) throw std::logic_error("shuffle_streams: split without a second output");
  {
    struct stat st;
    if (stat(opt.tmp_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
      throw UsageError("--tmp " + opt.tmp_dir + ": no such directory");
    TempFile probe(opt.tmp_dir);  // fail now, not after pass 1, if files cannot be made there
  }
  const int64_t in_bytes = input_bytes(inputs);

  // Reading happens in this thread without read-ahead: the reserve is planned from the first
  // batch, which a read-ahead would have multiplied before the plan exists. Decompression is not
  // the bottleneck; compressing the output is.
  ReaderOptions ro;
  ro.threads = 1;
  ro.prefetch = false;
  ro.keep_stored = true;  // rows are packed in the stream's own dtype: no need to decode them
  StreamReader reader(inputs, ro);
  const StreamHeader& hin = reader.header();
  const std::string iname = inputs_name(inputs);
  if (hin.kind != "activations")
    throw InputError(iname + ": holds " + hin.kind + "; sae-shuffle shuffles activation streams");

  Batch b;
  bool have = false;
  while ((have = reader.next(b)) && b.rows == 0) {}
  const Layout L(hin.d, hin.dtype, have && !b.token.empty(), have && !b.doc.empty(), have && !b.pos.empty());
  const ShuffleBudget bud = plan_shuffle_budget(opt.memory, hin.d, hin.dtype, L.token, L.doc, L.pos,
                                                have ? b.rows : 1, opt.batch_rows, opt.level, opt.threads);
  WriterOptions wo;
  wo.level = opt.level;
  wo.threads = bud.writer_threads;
  std::vector<std::unique_ptr<Sink>> sinks;
  sinks.push_back(std::make_unique<Sink>(out, out_name, shuffled_header(hin, opt, split ? "rest" : ""), wo, L,
                                         opt.batch_rows));
  if (split)
    sinks.push_back(std::make_unique<Sink>(split_out, split_out_name, shuffled_header(hin, opt, opt.split_name), wo,
                                           L, opt.batch_rows));
  std::vector<Sink*> sp;
  for (auto& s : sinks) sp.push_back(s.get());
  Shuffler sh(opt, L, bud, sp, in_bytes);
  const auto t0 = std::chrono::steady_clock::now();
  while (have) {
    if (b.rows > 0) {
      const Layout got(hin.d, hin.dtype, !b.token.empty(), !b.doc.empty(), !b.pos.empty());
      if (got.token != L.token || got.doc != L.doc || got.pos != L.pos)
        throw InputError(reader.where() + " has columns " + got.describe_columns() +
                         " but the first batch had " + L.describe_columns() +
                         " (rows cannot be shuffled together)");
      sh.add(b, reader.compressed_bytes());
      if (opt.progress) {
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        opt.progress("pass 1: " + cli::human_count(double(reader.rows_read())) + " rows read, " +
                     cli::human_count(double(reader.rows_read()) / std::max(s, 1e-3)) + " rows/s");
      }
    }
    b = Batch();  // freed before the reader decodes the next group, not after
    have = reader.next(b);
  }
  b = Batch();
  sh.finish(reader.compressed_bytes());
  ShuffleReport rep = sh.report();
  rep.arena_bytes = bud.arena_bytes;
  rep.record_bytes = int64_t(L.rec);
  rep.reader_threads = 1;
  rep.writer_threads = bud.writer_threads;
  return rep;
}

}  // namespace sae
