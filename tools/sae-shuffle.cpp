// sae-shuffle: a uniformly random permutation of the rows of activation streams, in bounded
// memory (an external two-pass shuffle through temporary bucket files; see lib/data/shuffle.h and
// docs/shuffle.md).
#include <malloc.h>

#include <cstdlib>

#include "base/cli.h"
#include "base/files.h"
#include "data/shuffle.h"

int main(int argc, char** argv) {
  // Large buffers are mapped and unmapped, never kept on the heap: with glibc's default the
  // threshold grows after the first large free, and freed batches then linger in the heap, which
  // would make resident memory depend on the allocation history rather than on --memory.
  mallopt(M_MMAP_THRESHOLD, 256 * 1024);
  return sae::cli::run("sae-shuffle", argc, argv, [](int argc, char** argv) {
    namespace po = sae::cli::po;
    const std::string tmp_default = sae::temp_directory();
    po::options_description desc("Options");
    desc.add_options()
      ("input", po::value<std::vector<std::string>>()->multitoken(), "input streams (default stdin)")
      ("output,o", po::value<std::string>()->default_value("-"), "output stream (- is stdout)")
      ("seed", po::value<uint64_t>()->default_value(0), "random seed; the same seed and options give the same bytes")
      ("memory", po::value<std::string>()->default_value("1G"),
       "bound on the memory used for rows and batches (K, M, G, T suffixes, powers of 1024)")
      ("tmp", po::value<std::string>()->default_value(tmp_default),
       "directory for the temporary bucket files (default $TMPDIR, else /tmp); needs about the "
       "input's uncompressed size free")
      ("batch-rows", po::value<int64_t>()->default_value(1024), "rows per output batch")
      ("split", po::value<std::string>(),
       "NAME=FRACTION: send each row with probability FRACTION to a second output named NAME "
       "(e.g. heldout=0.05), the rest to the main output")
      ("split-output", po::value<std::string>(), "file for the --split rows (required with --split)")
      ("level", po::value<int>()->default_value(3), "zstd level of the output (negative is faster)")
      ("threads", po::value<int>()->default_value(0), "compression threads (0: all cores, as memory allows)")
      ("verbose,v", po::bool_switch(), "print the plan (memory, buckets) and a summary on stderr");
    po::positional_options_description pos;
    pos.add("input", -1);
    auto vm = sae::cli::parse(argc, argv, desc, "[options] [FILE...]",
                              "Shuffle the rows of activation streams (read as one) into a uniformly random "
                              "order, in bounded memory.\nToken, document and position columns move with their rows.",
                              &pos);

    sae::ShuffleOptions opt;
    opt.seed = vm["seed"].as<uint64_t>();
    opt.memory = sae::parse_memory_size(vm["memory"].as<std::string>());
    opt.tmp_dir = vm["tmp"].as<std::string>();
    opt.batch_rows = vm["batch-rows"].as<int64_t>();
    opt.level = vm["level"].as<int>();
    opt.threads = vm["threads"].as<int>();
    if (opt.threads < 0) throw sae::UsageError("--threads must be 0 (all cores) or more");
    std::string split_out;
    if (vm.count("split")) {
      std::string s = vm["split"].as<std::string>();
      size_t eq = s.find('=');
      std::string name = eq == std::string::npos ? "" : s.substr(0, eq);
      if (name.empty() || name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.") !=
                              std::string::npos)
        throw sae::UsageError("--split: expected NAME=FRACTION with a name of letters, digits, '_', '-' or '.' "
                              "(e.g. heldout=0.05), got '" + s + "'");
      double f = 0;
      try {
        size_t used = 0;
        f = std::stod(s.substr(eq + 1), &used);
        if (used != s.size() - eq - 1) f = -1;
      } catch (const std::exception&) {
        f = -1;
      }
      if (!(f > 0 && f < 1))
        throw sae::UsageError("--split: the fraction in '" + s + "' must be a number between 0 and 1 (exclusive)");
      opt.split_name = name;
      opt.split_fraction = f;
      if (!vm.count("split-output")) throw sae::UsageError("--split needs --split-output FILE for the '" + name + "' rows");
      split_out = vm["split-output"].as<std::string>();
    } else if (vm.count("split-output")) {
      throw sae::UsageError("--split-output is only used with --split NAME=FRACTION");
    }
    const std::string out_path = vm["output"].as<std::string>();
    const bool out_std = out_path.empty() || out_path == "-";
    if (!opt.split_name.empty() && out_std && (split_out.empty() || split_out == "-"))
      throw sae::UsageError("--split-output and the main output cannot both be stdout");

    auto inputs = sae::cli::input_files(vm);
    sae::cli::Progress progress;
    if (progress.enabled()) opt.progress = [&](const std::string& s) { progress.update(s); };
    if (vm["verbose"].as<bool>()) opt.note = [](const std::string& s) { sae::cli::say(s); };

    sae::cli::Output out(out_path, true);
    std::unique_ptr<sae::cli::Output> held;
    if (!opt.split_name.empty()) held = std::make_unique<sae::cli::Output>(split_out, true);
    sae::shuffle_streams(inputs, out.file(), out.name(), held ? held->file() : nullptr, held ? held->name() : "",
                         opt);
    progress.done();
    out.commit();
    if (held) held->commit();
    return 0;
  });
}
