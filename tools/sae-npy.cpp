// sae-npy: convert between saetools streams and NumPy .npy arrays.
//   sae-npy export [options] [STREAM...]   streams -> one .npy array
//   sae-npy import [options] [ARRAY.npy]   .npy array -> stream
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <thread>

#include "base/cli.h"
#include "base/manual.h"
#include "base/files.h"
#include "stream/npy_convert.h"
#include "stream/stream.h"

namespace po = sae::cli::po;

namespace {

int threads_option(const po::variables_map& vm) {
  int t = vm["threads"].as<int>();
  if (t < 0) throw sae::UsageError("--threads must be 0 (all cores) or more");
  return t ? t : std::max(1, int(std::thread::hardware_concurrency()));
}

// --meta KEY=VALUE: VALUE is taken as JSON when it parses (numbers, true, [1,2]), else as a string.
sae::json meta_value(const std::string& v) {
  if (sae::json::accept(v)) return sae::json::parse(v);
  return v;
}

// Copies a finished spool file to the output (stdout cannot be rewritten in place).
void copy_out(FILE* from, sae::cli::Output& out) {
  if (fseek(from, 0, SEEK_SET) != 0) throw std::runtime_error("cannot rewind the spool file");
  std::vector<char> buf(size_t(1) << 20);
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), from)) > 0) out.write(buf.data(), n);
  if (ferror(from)) throw std::runtime_error("cannot read back the spool file");
}

}  // namespace

int main(int argc, char** argv) {
  return sae::cli::run("sae-npy", argc, argv, [](int argc, char** argv) {
    po::options_description common("Options");
    common.add_options()
      ("output,o", po::value<std::string>()->default_value("-"), "output file (\"-\": stdout, refused if a terminal)")
      ("threads", po::value<int>()->default_value(0),
       "export: decompression threads; import: compression threads (0: all cores)")
      ("dtype", sae::cli::choice({"auto", "f32", "f16", "bf16"})->default_value("auto"),
       "export: array dtype, auto|f32|f16 (auto: f16 for f16 streams, else f32); "
       "import: stream dtype, auto|f32|f16|bf16 (auto: f16 for <f2 arrays, else f32)");
    po::options_description exp("Export options (stream -> .npy)");
    exp.add_options()
      ("column", sae::cli::choice({"x", "token", "doc", "pos"})->default_value("x"),
       "what to export: x (activations, shape (rows, d)), token, doc or pos (shape (rows,))")
      ("nonfinite", sae::cli::choice({"allow", "skip", "error"})->default_value("allow"),
       "rows with NaN/Inf: allow, skip (drop them) or error");
    po::options_description imp("Import options (.npy -> stream)");
    imp.add_options()
      ("batch-rows", po::value<int64_t>()->default_value(1024), "rows per stream batch (lowered where needed so a batch fits in one 1 GiB frame)")
      ("level", po::value<int>()->default_value(3), "zstd compression level (negative: fastest)")
      ("shuffle", po::bool_switch(), "byte-shuffle the payload before compression (smaller f16/bf16 streams)")
      ("hook", po::value<std::string>(), "provenance: hook name (streams with different hooks do not concatenate)")
      ("model", po::value<std::string>(), "provenance: model name")
      ("meta", po::value<std::vector<std::string>>()->composing(),
       "provenance KEY=VALUE (repeatable; VALUE is JSON if it parses, else a string)")
      ("token", po::value<std::string>(), ".npy of integers, one token id per row")
      ("doc", po::value<std::string>(), ".npy of integers, one document id per row")
      ("pos", po::value<std::string>(), ".npy of integers, one position per row");
    po::options_description hidden;
    hidden.add_options()
      ("command", sae::cli::choice({"export", "import"}), "export or import")
      ("input", po::value<std::vector<std::string>>(), "inputs");
    po::options_description all;
    all.add(common).add(exp).add(imp);
    po::options_description parse_desc;
    parse_desc.add(all).add(hidden);
    po::positional_options_description pos;
    pos.add("command", 1).add("input", -1);
    auto vm = sae::cli::parse(argc, argv, parse_desc,
                              "export [options] [STREAM...]\n       sae-npy import [options] [ARRAY.npy]",
                              "Converts between saetools streams and NumPy .npy arrays.\n"
                              "export: one or more streams (or stdin) -> one array of shape (rows, d)\n"
                              "        (or (rows,) for --column token|doc|pos).\n"
                              "import: an array of shape (..., d), every dimension but the last counting\n"
                              "        rows (<f4, <f2 or <f8, C order; .npy versions 1.0-3.0) -> a stream.",
                              &pos, &all);
    if (!vm.count("command")) throw sae::UsageError("missing command: export or import");
    const std::string cmd = vm["command"].as<std::string>();
    if (cmd != "export" && cmd != "import")
      throw sae::UsageError("unknown command '" + cmd + "' (expected export or import)");
    auto only = [&](const po::options_description& d, const char* which) {
      for (const auto& o : d.options())
        if (vm.count(o->long_name()) && !vm[o->long_name()].defaulted())
          throw sae::UsageError("--" + o->long_name() + " applies to " + which + " only");
    };
    const int threads = threads_option(vm);
    const std::string dtype = vm["dtype"].as<std::string>();

    if (cmd == "export") {
      only(imp, "import");
      if (dtype != "auto" && dtype != "f32" && dtype != "f16")
        throw sae::UsageError("--dtype: '" + dtype + "' is not an array dtype for export (expected auto, f32 or f16)");
      sae::npy::ExportOptions eo;
      eo.column = vm["column"].as<std::string>();
      eo.dtype = dtype;
      if (eo.column != "x" && eo.column != "token" && eo.column != "doc" && eo.column != "pos")
        throw sae::UsageError("--column: unknown column '" + eo.column + "' (expected x, token, doc or pos)");
      sae::ReaderOptions ro;
      ro.threads = threads;
      std::string nf = vm["nonfinite"].as<std::string>();
      if (nf == "allow") ro.nonfinite = sae::NonFinite::allow;
      else if (nf == "skip") ro.nonfinite = sae::NonFinite::skip;
      else if (nf == "error") ro.nonfinite = sae::NonFinite::error;
      else throw sae::UsageError("--nonfinite: unknown policy '" + nf + "' (expected allow, skip or error)");
      auto files = sae::cli::input_files(vm);
      sae::cli::Output out(vm["output"].as<std::string>(), true);
      sae::StreamReader r(files, ro);
      if (out.is_stdout() || fseeko(out.file(), 0, SEEK_CUR) != 0) {
        // stdout or a named pipe: build the array in an unnamed temporary file in $TMPDIR (the
        // header's row count is rewritten at the end), then copy it.
        const int fd = sae::create_unnamed_temp_file(sae::temp_directory());
        std::unique_ptr<FILE, int (*)(FILE*)> spool(fdopen(fd, "w+b"), fclose);
        if (!spool) {
          ::close(fd);
          throw std::runtime_error(std::string("fdopen of a temporary file: ") + std::strerror(errno));
        }
        sae::npy::export_npy(r, spool.get(), "temporary file in " + sae::temp_directory(), eo);
        copy_out(spool.get(), out);
      } else {
        sae::npy::export_npy(r, out.file(), out.name(), eo);
      }
      out.commit();
      return 0;
    }

    only(exp, "export");
    if (dtype != "auto") {
      try {
        sae::parse_dtype(dtype);
      } catch (const sae::UsageError& e) {
        throw sae::UsageError(std::string("--dtype: ") + e.what());
      }
    }
    sae::npy::ImportOptions io;
    io.dtype = dtype;
    io.batch_rows = vm["batch-rows"].as<int64_t>();
    if (io.batch_rows < 1) throw sae::UsageError("--batch-rows must be at least 1");
    io.writer.level = vm["level"].as<int>();
    io.writer.threads = threads;
    io.writer.byte_shuffle = vm["shuffle"].as<bool>();
    if (vm.count("hook")) io.provenance["hook"] = vm["hook"].as<std::string>();
    if (vm.count("model")) io.provenance["model"] = vm["model"].as<std::string>();
    if (vm.count("meta"))
      for (const auto& kv : vm["meta"].as<std::vector<std::string>>()) {
        auto eq = kv.find('=');
        if (eq == std::string::npos || eq == 0) throw sae::UsageError("--meta: expected KEY=VALUE, got '" + kv + "'");
        io.provenance[kv.substr(0, eq)] = meta_value(kv.substr(eq + 1));
      }
    for (const char* c : {"token", "doc", "pos"}) {
      if (!vm.count(c)) continue;
      std::string f = vm[c].as<std::string>();
      (c[0] == 't' ? io.token : c[0] == 'd' ? io.doc : io.pos) = f;
    }
    auto files = sae::cli::input_files(vm);
    if (files.size() > 1) throw sae::UsageError("import takes one .npy file (got " + std::to_string(files.size()) + ")");
    sae::cli::Output out(vm["output"].as<std::string>(), true);
    sae::npy::import_npy(files[0], out.file(), out.name(), io);
    out.commit();
    return 0;
  });
}
