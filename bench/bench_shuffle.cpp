// Benchmark: sae-shuffle's throughput as a fraction of a plain read+write (decode every batch,
// encode it again) of the same stream, both measured in this run on this machine. The target is
// at least 0.4 with a small memory bound. Absolute rates on a shared machine are noise; the ratio
// is what to read.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <thread>

#include "base/cli.h"
#include "base/files.h"
#include "data/shuffle.h"

namespace fs = std::filesystem;
using namespace sae;

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// Activation-like rows: roughly Gaussian values (sum of three uniforms) with full random mantissas, which
// compress about as poorly as real activations do; token, doc and pos columns as a model writes.
void write_input(const std::string& path, int64_t rows, int64_t d, DType dtype, int64_t batch) {
  FILE* f = fopen(path.c_str(), "wb");
  if (!f) throw std::runtime_error("cannot create " + path);
  StreamHeader h = make_header("activations", d, dtype);
  h.provenance["model"] = "bench";
  h.provenance["hook"] = "bench";
  WriterOptions wo;
  wo.threads = std::max(1, int(std::thread::hardware_concurrency()));
  StreamWriter w(f, path, h, wo);
  uint64_t s = 88172645463325252ull;
  auto next = [&] {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  };
  for (int64_t at = 0; at < rows; at += batch) {
    Batch b;
    b.rows = std::min(batch, rows - at);
    b.x.resize(size_t(b.rows * d));
    for (auto& v : b.x) {
      uint64_t r = next();
      v = float(int64_t(r & 0xffff) + int64_t((r >> 16) & 0xffff) + int64_t((r >> 32) & 0xffff) - 3 * 32768) / 32768.0f;
    }
    for (int64_t r = 0; r < b.rows; r++) {
      b.token.push_back(int32_t((at + r) % 50257));
      b.doc.push_back((at + r) / 128);
      b.pos.push_back(int32_t((at + r) % 128));
    }
    w.write(std::move(b));
  }
  w.finish();
  fclose(f);
}

double plain_copy(const std::string& in, const std::string& out, int level) {
  double t0 = now();
  StreamReader r({in});
  FILE* f = fopen(out.c_str(), "wb");
  WriterOptions wo;
  wo.level = level;
  wo.threads = std::max(1, int(std::thread::hardware_concurrency()));
  StreamWriter w(f, out, r.header(), wo);
  Batch b;
  while (r.next(b)) w.write(std::move(b));
  w.finish();
  fclose(f);
  return now() - t0;
}

}  // namespace

int main(int argc, char** argv) {
  return cli::run("bench_shuffle", argc, argv, [](int argc, char** argv) {
    namespace po = cli::po;
    po::options_description desc("Options");
    desc.add_options()
      ("rows", po::value<int64_t>()->default_value(60000), "rows in the benchmark stream")
      ("d", po::value<int64_t>()->default_value(768), "row width")
      ("dtype", po::value<std::string>()->default_value("f32"), "stored dtype")
      ("memory", po::value<std::string>()->default_value("64M"), "sae-shuffle --memory")
      ("batch-rows", po::value<int64_t>()->default_value(1024), "rows per batch, in and out")
      ("level", po::value<int>()->default_value(3), "zstd level of the outputs")
      ("repeat", po::value<int>()->default_value(2), "runs of each; the best time counts")
      ("tmp", po::value<std::string>()->default_value("/tmp"), "directory for the input, outputs and buckets");
    auto vm = cli::parse(argc, argv, desc, "[options]",
                         "Throughput of sae-shuffle relative to a plain read+write of the same stream.");
    const int64_t rows = vm["rows"].as<int64_t>(), d = vm["d"].as<int64_t>();
    const int64_t batch = vm["batch-rows"].as<int64_t>();
    const DType dtype = parse_dtype(vm["dtype"].as<std::string>());
    const int level = vm["level"].as<int>();
    TempDir tmp("bench-shuffle", vm["tmp"].as<std::string>());
    const std::string dir = tmp.path();
    cli::register_temp(dir);  // removed on Ctrl-C too
    const std::string in = dir + "/in.sae", out = dir + "/out.sae";

    write_input(in, rows, d, dtype, batch);
    const double in_mb = double(fs::file_size(in)) / 1e6;
    const double raw_mb = double(rows) * double(d) * double(dtype_size(dtype)) / 1e6;
    ShuffleOptions opt;
    opt.seed = 1;
    opt.memory = parse_memory_size(vm["memory"].as<std::string>());
    opt.tmp_dir = dir;
    opt.batch_rows = batch;
    opt.level = level;
    printf("stream: %lld rows, d=%lld %s, %.0f MB payload, %.0f MB compressed; %u cores\n", (long long)rows,
           (long long)d, dtype_name(dtype), raw_mb, in_mb, std::thread::hardware_concurrency());

    double best_plain = 1e30, best_shuffle = 1e30;
    ShuffleReport rep;
    for (int i = 0; i < vm["repeat"].as<int>(); i++) {
      best_plain = std::min(best_plain, plain_copy(in, out, level));
      fs::remove(out);
      double t0 = now();
      FILE* f = fopen(out.c_str(), "wb");
      rep = shuffle_streams({in}, f, out, nullptr, "", opt);
      fclose(f);
      best_shuffle = std::min(best_shuffle, now() - t0);
      fs::remove(out);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("plain read+write: %.2f s (%.0f MB/s of payload)\n", best_plain, raw_mb / best_plain);
    printf("sae-shuffle --memory %s: %.2f s (%.0f MB/s); %lld buckets, %lld re-split, %.0f MB of temporary files, "
           "%d writer threads\n",
           vm["memory"].as<std::string>().c_str(), best_shuffle, raw_mb / best_shuffle, (long long)rep.buckets,
           (long long)rep.resplit, double(rep.temp_bytes) / 1e6, rep.writer_threads);
    printf("ratio (shuffle throughput / plain throughput): %.2f (target >= 0.4)\n", best_plain / best_shuffle);
    printf("peak RSS of this process: %.0f MB\n", double(ru.ru_maxrss) / 1024);
    return 0;
  });
}
