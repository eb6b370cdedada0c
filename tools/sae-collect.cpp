// sae-collect: write a stream of activations from a source. Sources: --toy (synthetic activations
// with known ground-truth features, lib/toy.h). A real-model source (--model/--hook/--text) joins
// later as its own option group and its own branch below; the output options are shared.
#include <string>

#include "cli.h"
#include "stream.h"
#include "toy.h"

namespace po = sae::cli::po;

namespace {

// Stream output options shared by every source.
po::options_description output_options() {
  const sae::toy::ToyOutput def;
  const sae::WriterOptions w;
  po::options_description g("Output");
  g.add_options()
    ("output,o", po::value<std::string>()->default_value("-"), "output stream (- = stdout; never a terminal)")
    ("dtype", po::value<std::string>()->default_value("f32"), "storage dtype of the activations: f32, f16 or bf16")
    ("batch-rows", po::value<int64_t>()->default_value(def.batch_rows), "rows per stream batch")
    ("level", po::value<int>()->default_value(w.level), "zstd compression level (negative = faster, larger)")
    ("byte-shuffle", po::bool_switch(), "store payload bytes plane by plane (compresses 16-bit dtypes better)")
    ("threads", po::value<int>()->default_value(0), "worker threads for generation and compression (0 = all cores)");
  return g;
}

}  // namespace

int main(int argc, char** argv) {
  return sae::cli::run("sae-collect", argc, argv, [](int argc, char** argv) {
    po::options_description source("Source (choose one)");
    source.add_options()("toy", po::bool_switch(), "synthetic activations with known features (options below)");
    po::options_description toy = sae::toy::toy_options();
    po::options_description all;
    all.add(source).add(output_options()).add(toy);
    auto vm = sae::cli::parse(
        argc, argv, all, "--toy [options]",
        "Write a stream of activations (kind activations) to stdout or -o FILE.\n"
        "--toy: rows are sparse non-negative combinations of known unit feature directions plus\n"
        "Gaussian noise; the same options and seed give byte-identical output (docs/toy.md).");

    if (!vm["toy"].as<bool>()) {
      for (const auto& opt : toy.options())
        if (vm.count(opt->long_name()) && !vm[opt->long_name()].defaulted())
          throw sae::UsageError("--" + opt->long_name() + " is an option of the toy source: add --toy");
      throw sae::UsageError("no source given: use --toy (synthetic activations)");
    }

    sae::toy::ToyOutput out;
    out.path = vm["output"].as<std::string>();
    try {
      out.dtype = sae::parse_dtype(vm["dtype"].as<std::string>());
    } catch (const sae::UsageError& e) {
      throw sae::UsageError(std::string("--dtype: ") + e.what());
    }
    out.batch_rows = vm["batch-rows"].as<int64_t>();
    out.writer.level = vm["level"].as<int>();
    out.writer.byte_shuffle = vm["byte-shuffle"].as<bool>();
    out.threads = vm["threads"].as<int>();
    if (out.threads < 0) throw sae::UsageError("--threads must be non-negative, got " + std::to_string(out.threads));
    sae::toy::toy_output_paths(vm, out);
    sae::toy::write_toy(sae::toy::toy_config(vm), out);
    return 0;
  });
}
