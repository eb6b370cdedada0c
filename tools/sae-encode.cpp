// sae-encode: an activations stream in, the SAE's latents out as a sparse latents stream (count,
// index, value per row), with the token, doc and pos columns carried through and the SAE recorded
// in the provenance. The encoding is lib/sae/sparse_encode.h's (each architecture's own rule, on
// the CPU or CUDA); docs/stream-tools.md describes the output.
#include <algorithm>
#include <chrono>
#include <thread>
#include <vector>

#include "backend/backend.h"
#include "base/cli.h"
#include "base/manual.h"
#include "sae/sae.h"
#include "sae/sparse_encode.h"
#include "sae/stream_check.h"
#include "stream/stream.h"

using namespace sae;
namespace po = cli::po;

namespace {

// The SAE as the output's provenance records it (docs/stream-tools.md lists the keys).
json sae_provenance(const Sae& s, const std::string& dir) {
  json j = json::object();
  j["dir"] = dir;
  j["format"] = s.source_format;
  j["architecture"] = s.arch;
  j["d_in"] = s.d_in;
  j["d_sae"] = s.d_sae;
  if (s.arch == "topk") j["k"] = s.k;
  if (!s.hook.empty()) j["hook"] = s.hook;
  if (!s.model.empty()) j["model"] = s.model;
  if (s.normalize_activations != "none") j["normalize_activations"] = s.normalize_activations;
  return j;
}

// Rows waiting to be encoded into one output batch, and which columns they carry.
struct Pending {
  int64_t rows = 0;
  std::vector<float> x;
  std::vector<int32_t> token, pos;
  std::vector<int64_t> doc;
  bool has_token = false, has_doc = false, has_pos = false;
};

}  // namespace

int main(int argc, char** argv) {
  return cli::run("sae-encode", argc, argv, [](int argc, char** argv) {
    po::options_description desc("Options");
    desc.add_options()
      ("sae", po::value<std::string>()->required(),
       "SAE directory (saetools, SAELens, sparsify or Gemma Scope's params.npz)")
      ("output,o", po::value<std::string>()->default_value("-"), "output latents stream (\"-\": stdout, refused if a terminal)")
      ("dtype", cli::choice({"f32", "f16", "bf16"})->default_value("f32"), "storage dtype of the latent values: f32, f16 or bf16")
      ("batch-rows", po::value<int64_t>()->default_value(4096),
       "rows per output batch (lowered where needed so a batch fits in one 1 GiB frame)")
      ("level", po::value<int>()->default_value(3), "zstd compression level (negative: faster, larger)")
      ("shuffle", po::bool_switch(), "byte-shuffle the value payload before compression (smaller f16/bf16 streams)")
      ("threads", po::value<int>()->default_value(0), "CPU threads for encoding, decompression and compression (0: all cores)");
    cli::add_device_option(desc);
    po::options_description hidden;
    hidden.add_options()("input", po::value<std::vector<std::string>>(), "activation streams");
    po::options_description all;
    all.add(desc).add(hidden);
    po::positional_options_description pos;
    pos.add("input", -1);
    auto vm = cli::parse(argc, argv, all, "--sae DIR [options] [STREAM...]",
                         "Encode activation rows with an SAE: reads activations streams (default: stdin) and writes\n"
                         "a latents stream of width d_sae holding each row's active latents (ascending index and\n"
                         "value), with each architecture's own activation rule (standard ReLU, TopK, JumpReLU,\n"
                         "gated) exactly as the SAE defines it. The token, doc and pos columns are carried through\n"
                         "and the SAE is recorded in the provenance (under \"sae\").",
                         &pos, &desc);
    const std::string sae_dir = vm["sae"].as<std::string>();
    const DType dtype = parse_dtype(vm["dtype"].as<std::string>());
    int64_t batch_rows = vm["batch-rows"].as<int64_t>();
    if (batch_rows < 1) throw UsageError("--batch-rows must be at least 1, got " + std::to_string(batch_rows));
    const int threads = vm["threads"].as<int>();
    if (threads < 0) throw UsageError("--threads must be 0 (all cores) or more, got " + std::to_string(threads));
    const Device device = resolve_device(cli::device_option(vm));
    const std::vector<std::string> inputs = cli::input_files(vm);
    const std::string stream_name = streams_display_name(inputs);

    Sae s = load_sae(sae_dir);
    ReaderOptions ro;
    ro.threads = threads;
    ro.nonfinite = NonFinite::error;
    ro.keep_stored = true;
    StreamReader reader(inputs, ro);
    const StreamHeader& in = reader.header();
    check_stream_for_sae(in, stream_name, s, sae_dir, "sae-encode");
    for (const std::string& m : {stream_hook_mismatch(in, s), stream_model_mismatch(in, s)})
      if (!m.empty()) throw InputError(stream_name + ": " + m + " (" + sae_dir + ")");
    if (s.normalize_activations == "expected_average_only_in")
      cli::say("note: " + sae_dir +
               " has normalize_activations expected_average_only_in; applied as identity (SAELens folds "
               "that factor into the weights)");

    // The largest batch a frame can hold when every latent of every row is active, and whose input
    // rows (held as f32 until they are encoded) take at most as much memory.
    const int64_t row_bytes = std::max<int64_t>(4 + 4 + 8 + 4 + s.d_sae * (4 + int64_t(dtype_size(dtype))), 4 * s.d_in);
    batch_rows = std::max<int64_t>(1, std::min<int64_t>(batch_rows, int64_t(kMaxFrameBytes) / row_bytes));

    StreamHeader out_h = make_header("latents", s.d_sae, dtype);
    json prov = in.provenance.is_object() ? in.provenance : json::object();
    prov["tool"] = out_h.provenance["tool"];
    prov["tool_version"] = out_h.provenance["tool_version"];
    prov["sae"] = sae_provenance(s, sae_dir);
    out_h.provenance = prov;
    out_h.extra = in.extra;
    WriterOptions wo;
    wo.level = vm["level"].as<int>();
    wo.threads = threads > 0 ? threads : std::max(1, int(std::thread::hardware_concurrency()));
    wo.byte_shuffle = vm["shuffle"].as<bool>();

    SparseEncoder enc(s, device, threads);
    cli::Output out(vm["output"].as<std::string>(), true);
    StreamWriter writer(out.file(), out.name(), out_h, wo);

    const int64_t d = s.d_in;
    Pending p;
    p.x.resize(size_t(batch_rows * d));
    auto flush = [&] {
      if (p.rows == 0) return;
      Batch b;
      b.rows = p.rows;
      enc.encode(p.x.data(), p.rows, b.count, b.index, b.value);
      if (p.has_token) b.token.swap(p.token);
      if (p.has_doc) b.doc.swap(p.doc);
      if (p.has_pos) b.pos.swap(p.pos);
      p.token.clear();
      p.doc.clear();
      p.pos.clear();
      p.rows = 0;
      writer.write(std::move(b));
    };

    cli::Progress progress;
    const auto t0 = std::chrono::steady_clock::now();
    Batch b;
    while (reader.next(b)) {
      const bool tk = !b.token.empty(), dc = !b.doc.empty(), ps = !b.pos.empty();
      for (int64_t r = 0; r < b.rows;) {
        // A batch holds the same columns on every row: rows with other columns start a new one.
        if (p.rows > 0 && (tk != p.has_token || dc != p.has_doc || ps != p.has_pos)) flush();
        p.has_token = tk;
        p.has_doc = dc;
        p.has_pos = ps;
        const int64_t n = std::min(batch_rows - p.rows, b.rows - r);
        b.rows_f32(d, r, n, p.x.data() + p.rows * d);
        if (tk) p.token.insert(p.token.end(), b.token.begin() + r, b.token.begin() + r + n);
        if (dc) p.doc.insert(p.doc.end(), b.doc.begin() + r, b.doc.begin() + r + n);
        if (ps) p.pos.insert(p.pos.end(), b.pos.begin() + r, b.pos.begin() + r + n);
        p.rows += n;
        r += n;
        if (p.rows == batch_rows) flush();
      }
      if (progress.enabled()) {
        const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        progress.update(cli::human_count(double(reader.rows_read())) + " rows, " +
                        cli::human_count(secs > 0 ? double(reader.rows_read()) / secs : 0) + " rows/s");
      }
    }
    flush();
    progress.done();
    writer.finish();
    out.commit();
    return 0;
  });
}
