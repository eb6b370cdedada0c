// sae-convert: rewrite any SAE directory load_sae reads (saetools, SAELens 6.x or legacy,
// EleutherAI sparsify, Gemma Scope's params.npz) in the SAELens 6 layout saetools writes,
// optionally in f16/bf16.
// docs/sae-format.md describes the formats and the mapping.
#include "base/cli.h"
#include "base/manual.h"
#include "base/dtype.h"
#include "sae/sae.h"

using namespace sae;

int main(int argc, char** argv) {
  return cli::run("sae-convert", argc, argv, [](int argc, char** argv) {
    namespace po = cli::po;
    po::options_description desc("Options");
    desc.add_options()
        ("input", po::value<std::string>()->required(), "SAE directory to read")
        ("output,o", po::value<std::string>()->required(), "SAE directory to write (replaced atomically)")
        ("dtype", cli::choice({"f32", "f16", "bf16"})->default_value("f32"), "storage dtype of the weights: f32, f16 or bf16");
    po::positional_options_description pos;
    pos.add("input", 1);
    auto vm = cli::parse(argc, argv, desc, "IN_DIR -o OUT_DIR [--dtype f32|f16|bf16]",
                         "Convert an SAE directory (saetools, SAELens 6.x or pre-6.0, EleutherAI sparsify, Gemma\n"
                         "Scope's params.npz) to the SAELens 6 layout: cfg.json + sae_weights.safetensors\n"
                         "(+ sparsity.safetensors when the input has one).",
                         &pos);
    SaveOptions opt;
    try {
      opt.dtype = parse_dtype(vm["dtype"].as<std::string>());
    } catch (const UsageError& e) {
      throw UsageError(std::string("--dtype: ") + e.what());
    }
    const std::string in = vm["input"].as<std::string>();
    Sae s = load_sae(in);
    opt.log10_density = load_sparsity(in, s.d_sae);
    save_sae(s, vm["output"].as<std::string>(), opt);
    return 0;
  });
}
