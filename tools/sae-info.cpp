// sae-info: inspect a stream (header, row count, statistics), print its first rows, or verify it.
#include <cerrno>
#include <cstring>

#include "base/cli.h"
#include "stream/info.h"
#include "stream/stream.h"

namespace po = sae::cli::po;

namespace {
void print(const std::string& s) {
  if (fwrite(s.data(), 1, s.size(), stdout) != s.size()) {
    if (errno == EPIPE) throw sae::cli::BrokenPipe();
    throw sae::InputError(std::string("<stdout>: write failed: ") + std::strerror(errno));
  }
}
}  // namespace

int main(int argc, char** argv) {
  return sae::cli::run("sae-info", argc, argv, [](int argc, char** argv) {
    po::options_description desc("Options");
    desc.add_options()
      ("json", po::bool_switch(), "print the report as JSON instead of a table")
      ("verify", po::bool_switch(),
       "read everything and check it (also NaN/Inf rows and columns missing from some batches); "
       "print one line, exit 1 on any defect")
      ("header", po::bool_switch(), "print only the header (reads just the first frame)")
      ("frames", po::bool_switch(),
       "list the zstd frames of one file (number, offset, bytes, decompressed bytes, type, rows), to locate damage")
      ("head", po::value<int64_t>(), "print the first N rows as tab-separated text and stop")
      ("threads", po::value<int>()->default_value(0), "decompression threads (0: all cores)");
    po::options_description hidden;
    hidden.add_options()("input", po::value<std::vector<std::string>>(), "input streams");
    po::options_description all;
    all.add(desc).add(hidden);
    po::positional_options_description pos;
    pos.add("input", -1);
    auto vm = sae::cli::parse(argc, argv, all, "[options] [STREAM...]",
                              "Shows a stream's header, row count and summary statistics (mean L2 norm of\n"
                              "the rows, range of the per-dimension mean and std, NaN/Inf rows). Several\n"
                              "files are read as one stream; no file or \"-\" reads stdin.",
                              &pos, &desc);
    const bool as_json = vm["json"].as<bool>(), verify = vm["verify"].as<bool>(), header_only = vm["header"].as<bool>();
    const bool head = vm.count("head") > 0, frames = vm["frames"].as<bool>();
    if (int(head) + int(header_only) + int(verify) + int(frames) > 1)
      throw sae::UsageError("--head, --header, --frames and --verify do not go together");
    if (head && as_json) throw sae::UsageError("--head prints text; it does not go with --json");
    int64_t head_rows = head ? vm["head"].as<int64_t>() : 0;
    if (head && head_rows < 0) throw sae::UsageError("--head must be 0 or more");
    int threads = vm["threads"].as<int>();
    if (threads < 0) throw sae::UsageError("--threads must be 0 (all cores) or more");

    auto files = sae::cli::input_files(vm);
    if (frames) {
      if (files.size() != 1) throw sae::UsageError("--frames lists one file");
      if (!as_json) print("#frame\toffset\tbytes\tcontent\ttype\trows\n");
      sae::json list = sae::json::array();
      sae::list_frames(files[0], [&](const sae::json& f) {
        if (as_json) {
          list.push_back(f);
          return;
        }
        print(f["frame"].dump() + "\t" + f["offset"].dump() + "\t" + f["bytes"].dump() + "\t" + f["content"].dump() +
              "\t" + f["type"].get<std::string>() + "\t" + (f.contains("rows") ? f["rows"].dump() : "-") + "\n");
      });
      if (as_json) print(list.dump(2) + "\n");
      return 0;
    }
    sae::ReaderOptions ro;
    ro.threads = threads;
    ro.prefetch = !header_only;
    if (verify) ro.nonfinite = sae::NonFinite::error;
    std::vector<std::string> shown;
    for (const auto& f : files) shown.push_back(f == "-" ? "<stdin>" : f);
    sae::StreamReader r(files, ro);
    if (header_only) {
      sae::json rep{{"files", shown}, {"header", sae::header_json(r.header())}};
      print(as_json ? rep.dump(2) + "\n" : sae::info_table(rep));
      return 0;
    }
    if (head) {
      sae::print_rows(r, head_rows, stdout);
      return 0;
    }
    sae::InfoOptions io;
    io.verify = verify;
    io.stats = !verify || as_json;
    sae::json rep = sae::inspect_stream(r, shown, io);
    if (verify) rep["verified"] = true;
    if (as_json) {
      print(rep.dump(2) + "\n");
    } else if (verify) {
      std::string names;
      for (const auto& f : shown) names += (names.empty() ? "" : " ") + f;
      auto count = [&](const char* k, const char* one, const char* many) {
        return rep[k].dump() + (rep[k] == 1 ? one : many);
      };
      print(names + ": ok (" + count("rows", " row, ", " rows, ") + count("batches", " batch, ", " batches, ") +
            count("streams", " stream)\n", " streams)\n"));
    } else {
      print(sae::info_table(rep));
    }
    return 0;
  });
}
