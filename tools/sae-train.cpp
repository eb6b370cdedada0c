// sae-train: train sparse autoencoders (relu, topk, batchtopk, jumprelu, gated, matryoshka) on
// activation streams and write SAELens-loadable SAE directories. The loop lives in lib/sae/trainer.*,
// the architectures in lib/sae/arch_*.cpp; this file parses options and wires them together.
#include <unistd.h>

#include <cmath>
#include <iostream>

#include "backend/backend.h"
#include "base/cli.h"
#include "base/manual.h"
#include "sae/arch.h"
#include "sae/ops.h"
#include "sae/trainer.h"

namespace {

using namespace sae;
namespace po = cli::po;

std::vector<std::string> arch_names() {
  std::vector<std::string> names;
  for (const auto& a : arch_registry()) names.push_back(a.name);
  return names;
}

const char* kAbout =
    "Train sparse autoencoders on activation streams (FILEs in order, or stdin) and write each as a\n"
    "SAELens-loadable directory (cfg.json, sae_weights.safetensors, sparsity.safetensors).\n"
    "Architectures: relu (L1 weighted by decoder norms), topk (+AuxK), batchtopk, jumprelu (L0,\n"
    "optional quadratic frequency penalty), gated, matryoshka (nested prefixes over batchtopk).\n"
    "Inputs are scaled so that E||x||^2 = d_in during training; the scale is folded into the exported\n"
    "weights. --sweep trains several SAEs from one read of the input, -o then names a directory\n"
    "holding one SAE directory per run. SIGINT/SIGTERM write a checkpoint; --resume continues it.";

// Sparsity coefficients that give sensible L0s on inputs scaled to E||x||^2 = d_in.
float default_lambda(const std::string& arch) {
  if (arch == "relu") return 5.0f;
  if (arch == "gated") return 5.0f;
  if (arch == "jumprelu") return 1.0f;
  return 0.0f;
}

// Options that define the run: fixed by a checkpoint, refused with --resume.
const char* kRunOptions[] = {"arch",        "latents",       "k",           "k-aux",          "aux-coef",
                             "lambda",      "bandwidth",     "init-threshold", "freq-scale",   "prefixes",
                             "threshold-lr", "dec-init-norm", "batch",       "tokens",         "epochs",
                             "lr",          "beta1",         "beta2",       "lr-warmup",      "lr-decay",
                             "l1-warmup",   "clip",          "init-rows",   "no-scale",       "dead-tokens",
                             "resample-every", "density-window", "seed",    "sweep",          "dtype",
                             "skip-nonfinite"};

std::vector<int64_t> parse_prefixes(const std::string& s) {
  std::vector<int64_t> out;
  std::string cur;
  for (size_t i = 0; i <= s.size(); i++) {
    if (i == s.size() || s[i] == ',') {
      if (cur.empty()) throw UsageError("--prefixes: expected comma-separated sizes, got '" + s + "'");
      try {
        size_t used = 0;
        long long v = std::stoll(cur, &used);
        if (used != cur.size()) throw std::invalid_argument(cur);
        out.push_back(v);
      } catch (const std::exception&) {
        throw UsageError("--prefixes: '" + cur + "' is not an integer");
      }
      cur.clear();
    } else if (s[i] != ' ') {
      cur += s[i];
    }
  }
  return out;
}

int body(int argc, char** argv) {
  po::options_description desc("Options");
  // clang-format off
  desc.add_options()
    ("input", po::value<std::vector<std::string>>()->multitoken(), "activation streams (default: stdin)")
    ("output,o", po::value<std::string>(), "SAE directory to write (with --sweep: the directory holding one per run)")
    ("arch", cli::choice(arch_names())->default_value("topk"), "architecture: relu, topk, batchtopk, jumprelu, gated, matryoshka")
    ("latents", po::value<int64_t>()->default_value(0), "number of latents d_sae (0: 16 x d_in)")
    ("k", po::value<int>()->default_value(32), "topk/batchtopk/matryoshka: active latents per row (batch mean for batch variants)")
    ("k-aux", po::value<int>()->default_value(0), "AuxK: dead latents used per row (0: d_in/2)")
    ("aux-coef", po::value<float>()->default_value(1.0f / 32, "0.03125"), "AuxK loss coefficient (0: no AuxK)")
    ("lambda", po::value<float>(), "sparsity coefficient: relu/gated L1, jumprelu L0 (default: relu 5, gated 5, jumprelu 1)")
    ("bandwidth", po::value<float>()->default_value(0.001f, "0.001"), "jumprelu: straight-through rectangle kernel width")
    ("init-threshold", po::value<float>()->default_value(0.001f, "0.001"), "jumprelu: initial threshold")
    ("freq-scale", po::value<float>()->default_value(0.0f, "0"), "jumprelu: quadratic frequency penalty lambda*sum p(1+p/s) with scale s (0: plain L0)")
    ("prefixes", po::value<std::string>()->default_value(""), "matryoshka: nested prefix sizes, ascending, ending at --latents (default: d_sae/64,/16,/4,d_sae)")
    ("threshold-lr", po::value<float>()->default_value(0.01f, "0.01"), "batchtopk/matryoshka: moving-average rate of the inference threshold")
    ("dec-init-norm", po::value<float>()->default_value(0.1f, "0.1"), "relu: initial decoder row norm")
    ("batch", po::value<int64_t>()->default_value(4096), "rows per training step")
    ("tokens", po::value<int64_t>()->default_value(0), "rows to train on over all epochs (0: all of the input)")
    ("epochs", po::value<int>()->default_value(1), "passes over the input files (more than 1 needs regular files: not stdin or a FIFO)")
    ("lr", po::value<float>()->default_value(3e-4f, "0.0003"), "Adam learning rate")
    ("beta1", po::value<float>()->default_value(0.9f, "0.9"), "Adam beta1")
    ("beta2", po::value<float>()->default_value(0.999f, "0.999"), "Adam beta2")
    ("lr-warmup", po::value<double>()->default_value(0.0, "0"), "fraction of --tokens with a linear learning-rate warm-up")
    ("lr-decay", po::value<double>()->default_value(0.0, "0"), "fraction of --tokens at the end with a linear decay to 0")
    ("l1-warmup", po::value<double>()->default_value(0.05, "0.05"), "fraction of --tokens with a linear warm-up of --lambda (needs --tokens)")
    ("clip", po::value<float>()->default_value(1.0f, "1"), "clip the global gradient norm to this (0: no clipping)")
    ("init-rows", po::value<int64_t>()->default_value(4096), "first rows used to estimate the input scale and the b_dec geometric median")
    ("no-scale", po::bool_switch(), "do not scale inputs to E||x||^2 = d_in")
    ("dead-tokens", po::value<int64_t>()->default_value(10000000), "a latent that has not fired for this many tokens is dead (AuxK, resampling, dead fraction)")
    ("resample-every", po::value<int64_t>()->default_value(0), "relu: resample dead latents every this many tokens (0: never)")
    ("density-window", po::value<int64_t>()->default_value(10000000), "tokens over which sparsity.safetensors densities are measured (the last 1-2 windows)")
    ("seed", po::value<uint64_t>()->default_value(1), "random seed of the initialisation")
    ("sweep", po::value<std::string>(), "train several SAEs from one read: \"k=16,32;seed=1,2\" (all combinations) or @FILE (one run per line)")
    ("checkpoint", po::value<std::string>(), "checkpoint directory (default: OUTPUT.ckpt; with --resume: the resumed one)")
    ("checkpoint-every", po::value<int64_t>()->default_value(0), "write a checkpoint every this many tokens (0: only on SIGINT/SIGTERM and --stop-after)")
    ("stop-after", po::value<int64_t>()->default_value(0), "write a checkpoint and exit 0 after this many tokens (0: never)")
    ("resume", po::value<std::string>(), "continue the run checkpointed in DIR (same input; run options come from it)")
    ("log", po::value<std::string>(), "write metrics as JSON lines to FILE, one whole line at a time (a resumed run appends)")
    ("log-every", po::value<int64_t>()->default_value(10), "steps between log lines")
    ("skip-nonfinite", po::bool_switch(), "skip rows with NaN/Inf values (counted) instead of stopping with an error")
    ("dtype", cli::choice({"f32", "f16", "bf16"})->default_value("f32"), "storage dtype of the exported weights: f32, f16, bf16");
  // clang-format on
  cli::add_device_option(desc);
  po::positional_options_description pos;
  pos.add("input", -1);
  auto vm = cli::parse(argc, argv, desc, "[options] -o DIR [FILE...]", kAbout, &pos);

  const bool resuming = vm.count("resume") > 0;
  if (resuming) {
    for (const char* k : kRunOptions)
      if (vm.count(k) && !vm[k].defaulted() && !(vm[k].value().type() == typeid(bool) && !vm[k].as<bool>()))
        throw UsageError(std::string("--") + k + " cannot be given with --resume (the checkpoint fixes the run's options)");
  } else if (!vm.count("output")) {
    throw UsageError("missing -o DIR (the SAE directory to write)");
  }
  auto nonneg = [&](const char* k) {
    if (vm[k].as<int64_t>() < 0) throw UsageError(std::string("--") + k + " must be >= 0");
  };
  for (const char* k : {"tokens", "checkpoint-every", "stop-after", "dead-tokens", "resample-every", "latents"}) nonneg(k);
  if (vm["log-every"].as<int64_t>() < 1) throw UsageError("--log-every must be at least 1");

  std::unique_ptr<SaeOps> ops = make_ops(resolve_device(cli::device_option(vm)));

  std::unique_ptr<Trainer> trainer;
  std::unique_ptr<StreamRowSource> src;
  std::vector<std::string> inputs = vm.count("input") ? cli::input_files(vm) : std::vector<std::string>{};

  if (resuming) {
    const std::string dir = vm["resume"].as<std::string>();
    trainer = Trainer::resume(dir, *ops, [&](TrainOptions& o) {
      if (vm.count("output")) o.output = vm["output"].as<std::string>();
      if (vm.count("log")) o.log_path = vm["log"].as<std::string>();
      o.log_every = vm["log-every"].as<int64_t>();
      o.checkpoint_every = vm["checkpoint-every"].as<int64_t>();
      o.stop_after = vm["stop-after"].as<int64_t>();
      o.checkpoint_dir = vm.count("checkpoint") ? vm["checkpoint"].as<std::string>() : dir;
    });
    if (inputs.empty()) {
      // The checkpoint's files, unless it read stdin.
      inputs = trainer->checkpoint_inputs();
      bool stdin_used = inputs.empty();
      for (const auto& f : inputs) stdin_used |= f == "-";
      if (stdin_used) inputs = {"-"};
      else {
        for (const auto& f : inputs)
          if (access(f.c_str(), R_OK) != 0) throw InputError(f + ": cannot read the checkpoint's input (give the input files again)");
      }
    }
    cli::check_output_dir(trainer->options().output, "output");  // before the input is read
    src = std::make_unique<StreamRowSource>(inputs, trainer->options().skip_nonfinite);
  } else {
    if (inputs.empty()) inputs = {"-"};
    const int epochs = vm["epochs"].as<int>();
    if (epochs < 1) throw UsageError("--epochs must be at least 1");
    // Up front: a second epoch would reopen a FIFO and wait for a writer that never comes.
    for (const auto& f : inputs) {
      const std::string why = epochs > 1 ? cli::not_rereadable(f) : "";
      if (!why.empty()) throw UsageError("--epochs " + std::to_string(epochs) + " needs input files (" + why + ")");
    }
    TrainOptions o;
    o.batch = vm["batch"].as<int64_t>();
    if (o.batch < 1) throw UsageError("--batch must be at least 1");
    o.tokens = vm["tokens"].as<int64_t>();
    o.epochs = epochs;
    o.beta1 = vm["beta1"].as<float>();
    o.beta2 = vm["beta2"].as<float>();
    if (!(o.beta1 >= 0 && o.beta1 < 1) || !(o.beta2 >= 0 && o.beta2 < 1))
      throw UsageError("--beta1 and --beta2 must be in [0, 1)");
    o.lr_warmup = vm["lr-warmup"].as<double>();
    o.lr_decay = vm["lr-decay"].as<double>();
    o.l1_warmup = vm["l1-warmup"].as<double>();
    for (auto [k, v] : {std::pair<const char*, double>{"lr-warmup", o.lr_warmup}, {"lr-decay", o.lr_decay},
                        {"l1-warmup", o.l1_warmup}})
      if (!(v >= 0 && v <= 1)) throw UsageError(std::string("--") + k + " must be a fraction in [0, 1]");
    if (o.tokens == 0) {
      if (!vm["lr-warmup"].defaulted() && o.lr_warmup > 0) throw UsageError("--lr-warmup needs --tokens (it is a fraction of it)");
      if (!vm["lr-decay"].defaulted() && o.lr_decay > 0) throw UsageError("--lr-decay needs --tokens (it is a fraction of it)");
      if (!vm["l1-warmup"].defaulted() && o.l1_warmup > 0) throw UsageError("--l1-warmup needs --tokens (it is a fraction of it)");
    }
    o.clip = vm["clip"].as<float>();
    if (!(o.clip >= 0)) throw UsageError("--clip must be >= 0");
    o.init_rows = vm["init-rows"].as<int64_t>();
    if (o.init_rows < 1) throw UsageError("--init-rows must be at least 1");
    o.scale_inputs = !vm["no-scale"].as<bool>();
    o.dead_tokens = vm["dead-tokens"].as<int64_t>();
    o.resample_every = vm["resample-every"].as<int64_t>();
    o.density_window = vm["density-window"].as<int64_t>();
    if (o.density_window < 1 || o.density_window > 1000000000)
      throw UsageError("--density-window must be in 1..1000000000");
    o.checkpoint_every = vm["checkpoint-every"].as<int64_t>();
    o.stop_after = vm["stop-after"].as<int64_t>();
    o.output = vm["output"].as<std::string>();
    while (o.output.size() > 1 && o.output.back() == '/') o.output.pop_back();
    o.checkpoint_dir = vm.count("checkpoint") ? vm["checkpoint"].as<std::string>() : o.output + ".ckpt";
    // Outputs are checked before the input is read: a FIFO's writer may be slow to come.
    cli::check_output_dir(o.output, "output");
    cli::check_output_dir(o.checkpoint_dir, "checkpoint");
    o.sweep = vm.count("sweep") > 0;
    if (vm.count("log")) o.log_path = vm["log"].as<std::string>();
    o.log_every = vm["log-every"].as<int64_t>();
    o.dtype = parse_dtype(vm["dtype"].as<std::string>());
    o.skip_nonfinite = vm["skip-nonfinite"].as<bool>();

    RunSpec base;
    ArchConfig& a = base.arch;
    a.arch = vm["arch"].as<std::string>();
    a.k = vm["k"].as<int>();
    a.k_aux = vm["k-aux"].as<int>();
    a.aux_coef = vm["aux-coef"].as<float>();
    a.lambda = vm.count("lambda") ? vm["lambda"].as<float>() : default_lambda(a.arch);
    a.bandwidth = vm["bandwidth"].as<float>();
    a.init_threshold = vm["init-threshold"].as<float>();
    a.freq_scale = vm["freq-scale"].as<float>();
    a.threshold_lr = vm["threshold-lr"].as<float>();
    a.dec_init_norm = vm["dec-init-norm"].as<float>();
    a.seed = vm["seed"].as<uint64_t>();
    base.lr = vm["lr"].as<float>();
    if (!(base.lr > 0)) throw UsageError("--lr must be > 0");
    const std::string prefixes = vm["prefixes"].as<std::string>();

    // The stream header gives d_in (and the metadata); the first batch must back it with a row of
    // that width before an SAE is sized from it (a header alone may claim d = 2^31).
    src = std::make_unique<StreamRowSource>(inputs, o.skip_nonfinite);
    if (!src->first_row()) throw InputError(src->name() + ": no activation rows to train on");
    a.d_in = src->d();
    a.d_sae = vm["latents"].as<int64_t>() > 0 ? vm["latents"].as<int64_t>() : 16 * a.d_in;
    std::vector<RunSpec> runs = o.sweep ? parse_sweep(vm["sweep"].as<std::string>(), base) : std::vector<RunSpec>{base};
    for (RunSpec& r : runs) {
      if (!vm.count("lambda") && r.arch.arch != a.arch && r.arch.lambda == a.lambda)
        r.arch.lambda = default_lambda(r.arch.arch);  // a swept arch takes its own default
      r.arch.prefixes = prefixes.empty() ? default_matryoshka_prefixes(r.arch.d_sae) : parse_prefixes(prefixes);
      validate_arch_config(r.arch);
      if (!(r.lr > 0)) throw UsageError("--sweep: lr must be > 0");
    }
    trainer = std::make_unique<Trainer>(o, runs, *ops);
    trainer->set_provenance(src->header().provenance, inputs);
  }
  if (trainer->options().sweep) {
    // Each run's directory inside the output: refuse before training, not after.
    for (size_t i = 0; i < trainer->runs(); i++) (void)trainer->output_dir(i);
  }

  cli::set_graceful_interrupt(true);
  Trainer::Status st = trainer->train(*src);
  cli::set_graceful_interrupt(false);
  const std::string ck = trainer->options().checkpoint_dir;
  if (st == Trainer::Status::interrupted) {
    cli::say("interrupted after " + std::to_string(trainer->tokens_seen()) + " tokens; checkpoint written to " + ck +
             " (continue with --resume " + ck + ")");
    return 130;
  }
  if (st == Trainer::Status::stopped) {
    cli::say("stopped after " + std::to_string(trainer->tokens_seen()) + " tokens; checkpoint written to " + ck +
             " (continue with --resume " + ck + ")");
    return 0;
  }
  if (src->skipped() > 0) cli::say("skipped " + std::to_string(src->skipped()) + " rows with NaN or Inf values");
  trainer->export_all();
  if (isatty(2)) {
    for (size_t i = 0; i < trainer->runs(); i++) {
      const StepMetrics& m = trainer->last_metrics(i);
      char buf[256];
      snprintf(buf, sizeof buf, "wrote %s (%s, %lld latents, %lld tokens; last batch FVU %.4f, L0 %.1f)",
               trainer->output_dir(i).c_str(), trainer->spec(i).arch.arch.c_str(),
               (long long)trainer->spec(i).arch.d_sae, (long long)trainer->tokens_seen(), m.fvu, m.l0);
      cli::say(buf);
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return sae::cli::run("sae-train", argc, argv, body); }
