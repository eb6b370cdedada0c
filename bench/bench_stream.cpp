// Stream throughput, measured against the zstd library on the same bytes in the same run:
//   - write (StreamWriter, one thread) vs ZSTD_compress2 at the same level on the stored payload;
//   - read (StreamReader, 1 and 2 decode threads) vs ZSTD_decompressDCtx on the same frames' worth
//     of payload, and vs memcpy: the reader that keeps payloads as stored (what the target is
//     about), the same reader with its rows then converted to f32 the way sae-train copies them
//     out, and the reader that decodes every batch to f32 itself;
//   - compressed bytes per activation value for f32, bf16 and bf16 with byte shuffle.
// Throughput is MB/s of stored payload (rows * d * bytes per value); "per core" divides by the
// threads doing the work. This machine is shared: only ratios within one run mean much.
//
// Usage: bench_stream [STREAM]   (default: synthetic activations; a stream file is read into
//                                memory and its rows used instead)
#include <zstd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "stream/stream.h"

using namespace sae;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kReps = 3;
constexpr int kLong = 4;  // reads go over the stream concatenated this many times

double cpu_now() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

// Wall time and CPU time (all threads of this process) of one run; the best of kReps runs of each.
// Per-core throughput uses CPU time: on a shared, loaded machine it still counts only the work
// done, not the time spent waiting for a core. Thread scaling needs wall time (and a quiet machine).
struct Times {
  double wall = 1e30, cpu = 1e30;
};
Times measure(const std::function<void()>& f) {
  Times best;
  for (int i = 0; i < kReps; i++) {
    double c0 = cpu_now();
    auto t0 = Clock::now();
    f();
    best.wall = std::min(best.wall, std::chrono::duration<double>(Clock::now() - t0).count());
    best.cpu = std::min(best.cpu, cpu_now() - c0);
  }
  return best;
}

// Activation-like data: per-dimension scales spread over two orders of magnitude, a few outlier
// dimensions, heavy-ish tails. Real residual streams look like this to a compressor: the exponent
// bytes repeat, the low mantissa bytes are noise.
std::vector<Batch> synthetic(int64_t rows, int64_t d, int64_t batch_rows) {
  std::mt19937 g(1);
  std::normal_distribution<float> n(0.f, 1.f);
  std::vector<float> scale(static_cast<size_t>(d));
  for (auto& s : scale) s = std::exp(n(g));
  for (int k = 0; k < 4; k++) scale[size_t(g() % uint64_t(d))] *= 30.f;
  std::vector<Batch> out;
  for (int64_t r0 = 0; r0 < rows; r0 += batch_rows) {
    Batch b;
    b.rows = std::min(batch_rows, rows - r0);
    b.x.resize(size_t(b.rows * d));
    for (int64_t r = 0; r < b.rows; r++)
      for (int64_t j = 0; j < d; j++) {
        float z = n(g);
        b.x[size_t(r * d + j)] = scale[size_t(j)] * z * (1.f + 0.1f * z * z);
      }
    out.push_back(std::move(b));
  }
  return out;
}

// Writes the stream into `out`, a buffer allocated and touched beforehand (so the writer is not
// charged for the page faults of a growing output), and returns the bytes written.
size_t write_all(const StreamHeader& h, const std::vector<Batch>& bs, WriterOptions o, std::string& out) {
  FILE* f = fmemopen(out.data(), out.size(), "wb");
  setvbuf(f, nullptr, _IONBF, 0);
  {
    StreamWriter w(f, "bench", h, o);
    for (const auto& b : bs) w.write(b);
    w.finish();
  }
  size_t n = size_t(ftell(f));
  fclose(f);
  return n;
}

// The stored bytes of each batch's payload (what zstd is measured on).
std::vector<std::string> stored_payloads(DType t, const std::vector<Batch>& bs) {
  std::vector<std::string> out;
  for (const auto& b : bs) {
    std::string s(b.x.size() * dtype_size(t), '\0');
    encode_f32(t, b.x.data(), b.x.size(), s.data());
    out.push_back(std::move(s));
  }
  return out;
}

struct Row {
  std::string name;
  double payload_mb;
  double zc, w1, w2, zd, r1, r2, bytes_per_value;
};

}  // namespace

int main(int argc, char** argv) {
  std::vector<Batch> batches;
  int64_t d = 1024;
  std::string source;
  if (argc > 1) {
    StreamReader r({argv[1]});
    if (r.header().kind != "activations") {
      fprintf(stderr, "bench_stream: %s is not an activations stream\n", argv[1]);
      return 1;
    }
    d = r.header().d;
    Batch b;
    while (r.next(b)) batches.push_back(b);
    source = argv[1];
  } else {
    batches = synthetic(16384, d, 1024);
    source = "synthetic activations";
  }
  int64_t rows = 0;
  for (const auto& b : batches) rows += b.rows;
  const double values = double(rows) * double(d);
  double load[1] = {0};
  getloadavg(load, 1);
  printf("bench_stream: %lld rows x d=%lld (%s), %zu batches; best of %d runs; load average %.1f on %u cores\n",
         (long long)rows, (long long)d, source.c_str(), batches.size(), kReps, load[0],
         std::thread::hardware_concurrency());
  printf("MB/s are of stored payload (rows * d * bytes per value); 'per core' = payload / CPU seconds used.\n");

  std::vector<float> dst(batches.empty() ? 0 : batches[0].x.size());
  Times tm = measure([&] {
    for (const auto& b : batches) {
      if (dst.size() < b.x.size()) dst.resize(b.x.size());
      memcpy(dst.data(), b.x.data(), b.x.size() * 4);
    }
  });
  printf("memcpy of the f32 payload: %.0f MB/s per core\n\n", values * 4 / tm.cpu / 1e6);

  struct Config {
    const char* name;
    DType t;
    int level;
    bool shuffle;
  };
  const Config configs[] = {{"f32  level 3 (default)", DType::f32, 3, false},
                            {"f32  level -5 (fastest)", DType::f32, -5, false},
                            {"bf16 level 3 (default)", DType::bf16, 3, false},
                            {"bf16 level -5 (fastest)", DType::bf16, -5, false},
                            {"bf16 level 3 + shuffle", DType::bf16, 3, true},
                            {"bf16 level -5 + shuffle", DType::bf16, -5, true}};
  printf("%-24s| %-25s| %-63s| %-26s| %s\n", "", "write, MB/s per core", "read, MB/s per core",
         "read (stored), wall MB/s", "bytes");
  printf("%-24s| %7s %7s %6s  | %7s %7s %7s %7s %7s %6s %6s %6s  | %7s %7s %6s  | %s\n", "dtype, setting", "zstd",
         "writer", "ratio", "zstd", "+to f32", "stored", "+to f32", "decoded", "ratio", "ratio2", "ratio3", "1 thr",
         "2 thr", "scale", "/value");
  double worst_read = 1e9;
  for (const Config& c : configs) {
    StreamHeader h = make_header("activations", d, c.t);
    const double payload = values * double(dtype_size(c.t));
    auto mbs = [&](double s) { return payload / s / 1e6; };
    WriterOptions wo;
    wo.level = c.level;
    wo.byte_shuffle = c.shuffle;
    wo.threads = 0;  // in the caller's thread: per-core cost of writing
    std::string sink(size_t(payload * 1.05) + (size_t(1) << 20), 'x');
    size_t len = 0;
    Times w = measure([&] { len = write_all(h, batches, wo, sink); });
    std::string stream = sink.substr(0, len);

    // zstd alone on the bytes the writer stores (the dtype's bytes, shuffled if asked), per batch.
    std::vector<std::string> raw = stored_payloads(c.t, batches);
    if (c.shuffle)
      for (auto& s : raw) {
        std::string p(s.size(), '\0');
        const size_t n = s.size() / 2;
        for (size_t i = 0; i < n; i++) {
          p[i] = s[2 * i];
          p[n + i] = s[2 * i + 1];
        }
        s.swap(p);
      }
    std::vector<std::string> z(raw.size());
    ZSTD_CCtx* cc = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, c.level);
    ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, 1);
    std::string zbuf(ZSTD_compressBound(raw[0].size()), '\0');
    Times zc = measure([&] {
      for (size_t i = 0; i < raw.size(); i++) {
        size_t n = ZSTD_compress2(cc, zbuf.data(), zbuf.size(), raw[i].data(), raw[i].size());
        z[i].assign(zbuf.data(), n);
      }
    });
    ZSTD_freeCCtx(cc);
    ZSTD_DCtx* dc = ZSTD_createDCtx();
    std::string out(raw[0].size(), '\0');
    Times zd = measure([&] {
      for (size_t i = 0; i < z.size(); i++) ZSTD_decompressDCtx(dc, out.data(), out.size(), z[i].data(), z[i].size());
    });
    // The least any reader handing out f32 rows must do: decompress, then convert to f32.
    std::vector<float> f32(batches[0].x.size());
    Times zf = measure([&] {
      for (size_t i = 0; i < z.size(); i++) {
        size_t n = ZSTD_decompressDCtx(dc, out.data(), out.size(), z[i].data(), z[i].size());
        decode_f32(c.t, out.data(), n / dtype_size(c.t), f32.data());
      }
    });
    ZSTD_freeDCtx(dc);

    // Read the stream concatenated kLong times: steady state, where batch buffers are recycled (the
    // first few batches of a reader allocate theirs).
    std::string longer;
    for (int i = 0; i < kLong; i++) longer += stream;
    // mode 0: payloads kept as stored; 1: kept, then every row converted to f32 into a buffer
    // (sae-train's copy); 2: decoded to f32 by the reader.
    std::vector<float> rowbuf(batches[0].x.size());
    auto read_with = [&](int threads, int mode) {
      Times t = measure([&] {
        ReaderOptions ro;
        ro.threads = threads;
        ro.keep_stored = mode != 2;
        StreamReader r(longer.data(), longer.size(), "bench", ro);
        Batch b;
        int64_t n = 0;
        while (r.next(b)) {
          if (mode == 1) {
            if (rowbuf.size() < size_t(b.rows * d)) rowbuf.resize(size_t(b.rows * d));
            b.rows_f32(d, 0, b.rows, rowbuf.data());
          }
          n += b.rows;
        }
        if (n != kLong * rows) abort();
      });
      t.wall /= kLong;
      t.cpu /= kLong;
      return t;
    };
    Times r1 = read_with(1, 0), r2 = read_with(2, 0), rc = read_with(1, 1), rd = read_with(1, 2);
    worst_read = std::min(worst_read, zd.cpu / r1.cpu);
    printf("%-24s| %7.0f %7.0f %6.2f  | %7.0f %7.0f %7.0f %7.0f %7.0f %6.2f %6.2f %6.2f  | %7.0f %7.0f %6.2f  | %.3f\n",
           c.name, mbs(zc.cpu), mbs(w.cpu), zc.cpu / w.cpu, mbs(zd.cpu), mbs(zf.cpu), mbs(r1.cpu), mbs(rc.cpu),
           mbs(rd.cpu), zd.cpu / r1.cpu, zf.cpu / rc.cpu, zf.cpu / rd.cpu, mbs(r1.wall), mbs(r2.wall),
           r1.wall / r2.wall, double(stream.size()) / values);
  }
  printf("\nwrite ratio = zstd's CPU time / the writer's on the same bytes (1.00: no overhead).\n"
         "read: 'stored' = StreamReader keeping payloads as stored (ReaderOptions::keep_stored);\n"
         "'+to f32' = the same, then every row converted to f32 into a buffer, as sae-train copies rows\n"
         "out; 'decoded' = the reader converting each batch into Batch::x itself. ratio = zstd / stored;\n"
         "ratio2 = (zstd + the f32 conversion alone) / (stored + to f32); ratio3 = the same over decoded.\n"
         "Reads are of the stream concatenated %d times (steady state). scale = wall time with 1 decode\n"
         "thread / with 2 (needs idle cores to mean anything).\n"
         "lowest read ratio (stored reader vs zstd): %.2f (target >= 0.70)\n",
         kLong, worst_read);
  return 0;
}
