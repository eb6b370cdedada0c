// sae-eval: structural metrics of an SAE over an activation stream: reconstruction, sparsity,
// dead/dense latents, feature density, decoder geometry, and decoder matching against a second
// SAE. With --model, also the LM-loss metrics of the SAE spliced into the model over text (CE loss
// recovered, KL divergence, delta LM loss; lib/eval/lm_eval.h). JSON report on stdout (or -o), a short
// table on stderr. docs/eval.md and docs/lm-eval.md define every number.
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>

#include "backend/backend.h"
#include "base/cli.h"
#include "base/manual.h"
#include "eval/lm_eval.h"
#include "eval/metrics.h"
#include "sae/sae.h"
#include "sae/stream_check.h"
#include "stream/safetensors.h"
#include "stream/stream.h"

using namespace sae;
namespace po = cli::po;

namespace {

// The LM-loss options (--model and what only applies with it).
po::options_description model_options() {
  const LmEvalOptions d;
  po::options_description g(
      "LM loss (--model): run the model on held-out text with the SAE's reconstruction spliced in at its\n"
      "hook (docs/lm-eval.md). Streams are then read only when named; without one, the structural\n"
      "metrics are those of the hook's activations over the text");
  g.add_options()
    ("model", po::value<std::string>(), "Hugging Face model directory the SAE belongs to (GPT-2, Llama family, Gemma 2/3, "
     "GPT-NeoX)")
    ("text", po::value<std::vector<std::string>>()->multitoken(), "held-out text files (- = stdin); required with --model")
    ("hook", po::value<std::string>()->default_value(""), "hook to splice at (default: the SAE's recorded hook)")
    ("context", po::value<int64_t>()->default_value(0),
     "tokens per window, BOS included (0: the SAE's context_size from its cfg.json, else 128)")
    ("batch", po::value<int64_t>()->default_value(d.batch), "windows per forward pass")
    ("max-tokens", po::value<int64_t>()->default_value(0), "score at most this many tokens (0: all the text)")
    ("keep-error", po::bool_switch(), "also run with the SAE's error term added back (x_hat + (x - x_hat)): "
     "reproduces the clean loss, a check of the splice")
    ("splice-bos", cli::choice({"true", "false", "auto"})->default_value("auto"),
     "replace the BOS position's activations too: true, false, or auto (true only when the SAE's cfg "
     "records that its training activations kept the BOS rows)")
    ("jsonl-field", po::value<std::string>()->default_value(""),
     "read JSONL, one object per line, the text in this field (default: plain text)")
    ("lines", po::bool_switch(), "plain text: one document per line (default: documents separated by blank lines)")
    ("invalid-utf8", cli::choice({"error", "replace"})->default_value("error"),
     "text that is not valid UTF-8: error or replace (each invalid sequence read as U+FFFD)")
    ("compute", cli::choice({"f32", "bf16"})->default_value("f32"),
     "arithmetic of the forward passes: f32, or bf16 (GPU only: weight matrices held in bf16, products of "
     "bf16-rounded activations accumulated in f32; docs/models.md)");
  cli::add_device_option(g);
  return g;
}

LmEvalTextOptions lm_options(const po::variables_map& vm) {
  LmEvalTextOptions o;
  o.model_dir = vm["model"].as<std::string>();
  if (!vm.count("text")) throw UsageError("--model needs --text FILE... (held-out text to run the model on)");
  o.inputs = vm["text"].as<std::vector<std::string>>();
  o.hook = vm["hook"].as<std::string>();
  o.context = vm["context"].as<int64_t>();
  o.eval.batch = vm["batch"].as<int64_t>();
  o.max_tokens = vm["max-tokens"].as<int64_t>();
  o.eval.keep_error = vm["keep-error"].as<bool>();
  const std::string bos = vm["splice-bos"].as<std::string>();
  if (bos == "auto") o.splice_bos = -1;
  else if (bos == "true") o.splice_bos = 1;
  else if (bos == "false") o.splice_bos = 0;
  else throw UsageError("--splice-bos must be true, false or auto, not '" + bos + "'");
  o.jsonl_field = vm["jsonl-field"].as<std::string>();
  o.lines = vm["lines"].as<bool>();
  if (o.lines && !o.jsonl_field.empty()) throw UsageError("--lines is for plain text; JSONL is always one document per line");
  const std::string inv = vm["invalid-utf8"].as<std::string>();
  if (inv != "error" && inv != "replace") throw UsageError("--invalid-utf8 must be error or replace, not '" + inv + "'");
  o.replace_invalid_utf8 = inv == "replace";
  o.device = cli::device_option(vm);
  o.compute = parse_compute_option(vm["compute"].as<std::string>());
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  return cli::run("sae-eval", argc, argv, [](int argc, char** argv) {
    po::options_description desc("Options");
    desc.add_options()
        ("sae", po::value<std::string>()->required(), "SAE directory to evaluate (saetools, SAELens, sparsify or Gemma Scope's params.npz)")
        ("input", po::value<std::vector<std::string>>()->multitoken(), "activation streams (default: stdin)")
        ("output,o", po::value<std::string>()->default_value("-"), "write the report here (default: stdout)")
        ("format", cli::choice({"json", "table"})->default_value("json"),
         "json: JSON report, plus a table on stderr; table: only the table, on stdout or -o")
        ("plots", po::value<std::string>(),
         "write freq_hist.svg, l0_hist.svg and decoder_cos_hist.svg into this directory")
        ("density-out", po::value<std::string>(),
         "write the feature density as a SAELens sparsity.safetensors file (log10 firing frequency)")
        ("compare", po::value<std::string>(),
         "second SAE directory (another seed, or the toy truth): match decoder rows in both directions")
        ("max-rows", po::value<int64_t>()->default_value(0), "evaluate at most this many rows (0: all)")
        ("skip-geometry", po::bool_switch(), "skip the decoder-geometry pass (d_sae^2 * d_in work)");
    po::options_description lm = model_options();
    po::options_description all;
    all.add(desc).add(lm);
    po::positional_options_description pos;
    pos.add("input", -1);
    auto vm = cli::parse(argc, argv, all, "--sae DIR [options] [STREAM...] | --sae DIR --model DIR --text FILE... [STREAM...]",
                         "Evaluate an SAE on activation rows: reconstruction (MSE, FVU, cosine, norm ratio,\n"
                         "relative reconstruction bias), L0/L1, dead and dense latents, feature density and\n"
                         "decoder geometry. Streams only; memory does not grow with the number of rows.\n"
                         "--model adds the LM-loss metrics: CE loss clean, spliced and zero-ablated, CE loss\n"
                         "recovered, KL divergence to the clean model and delta LM loss.",
                         &pos);
    const bool with_model = vm.count("model") > 0;
    if (!with_model)
      for (const auto& opt : lm.options()) {
        const std::string& n = opt->long_name();
        if (vm.count(n) && !vm[n].defaulted())
          throw UsageError("--" + n + " is an option of the LM-loss evaluation: add --model DIR");
      }
    const std::string format = vm["format"].as<std::string>();
    if (format != "json" && format != "table")
      throw UsageError("--format: unknown format '" + format + "' (expected json or table)");
    const int64_t max_rows = vm["max-rows"].as<int64_t>();
    if (max_rows < 0) throw UsageError("--max-rows: must be >= 0");
    // Every output is checked (and its temporary file made) before the work, which with --model
    // can take long: a bad path fails in a second, not after the evaluation.
    if (vm.count("plots")) cli::check_output_dir(vm["plots"].as<std::string>(), "plots");
    std::unique_ptr<cli::Output> density_out;
    if (vm.count("density-out")) density_out = std::make_unique<cli::Output>(vm["density-out"].as<std::string>(), true);
    cli::Output out(vm["output"].as<std::string>(), false);
    LmEvalTextOptions lm_opt;
    if (with_model) lm_opt = lm_options(vm);
    // With --model, streams are only read when named: stdin may be the text.
    const bool streams = !with_model || vm.count("input");
    if (with_model && streams) {
      bool text_stdin = false, stream_stdin = false;
      for (const auto& f : lm_opt.inputs) text_stdin |= f == "-";
      for (const auto& f : cli::input_files(vm)) stream_stdin |= f == "-";
      if (text_stdin && stream_stdin) throw UsageError("--text - and a stream from stdin: only one of them can read stdin");
    }

    EvalReport rep;
    rep.sae_path = vm["sae"].as<std::string>();
    Sae sae = load_sae(rep.sae_path);
    rep.sae = &sae;
    Sae other;
    if (vm.count("compare")) {
      rep.compare_path = vm["compare"].as<std::string>();
      other = load_sae(rep.compare_path);
      if (other.d_in != sae.d_in)
        throw InputError(rep.compare_path + ": d_in " + std::to_string(other.d_in) + " differs from " +
                         rep.sae_path + "'s d_in " + std::to_string(sae.d_in));
    }
    if (sae.normalize_activations == "expected_average_only_in")
      cli::say("note: " + rep.sae_path +
               " has normalize_activations expected_average_only_in; applied as identity (SAELens folds "
               "that factor into the weights)");

    LmEvalReport lm_rep;
    if (with_model) {
      lm_opt.eval.structural = !streams;
      lm_rep = lm_eval_text(sae, rep.sae_path, lm_opt);
      if (!streams) {
        rep.inputs = lm_rep.inputs;
        rep.eval = lm_rep.result.structural;
      }
    }
    if (streams) {
      rep.inputs = cli::input_files(vm);
      const std::string stream_name = streams_display_name(rep.inputs);
      ReaderOptions ropt;
      ropt.nonfinite = NonFinite::error;
      StreamReader reader(rep.inputs, ropt);
      const StreamHeader& h = reader.header();
      check_stream_for_sae(h, stream_name, sae, rep.sae_path, "sae-eval");
      const std::string hook_mismatch = stream_hook_mismatch(h, sae);
      if (!hook_mismatch.empty()) cli::say("warning: " + hook_mismatch);

      SaeEvaluator ev(sae);
      cli::Progress progress;
      auto t0 = std::chrono::steady_clock::now();
      Batch b;
      while (reader.next(b)) {
        int64_t n = b.rows;
        if (max_rows > 0) n = std::min(n, max_rows - ev.rows());
        ev.add(b.x.data(), n);
        double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        progress.update(cli::human_count(double(ev.rows())) + " rows, " +
                        cli::human_count(secs > 0 ? double(ev.rows()) / secs : 0) + " rows/s");
        if (max_rows > 0 && ev.rows() >= max_rows) break;
      }
      progress.done();
      if (ev.rows() == 0) throw InputError(stream_name + ": no rows to evaluate");
      rep.eval = ev.result();
    }

    auto be = make_cpu_backend();
    if (!vm["skip-geometry"].as<bool>()) {
      rep.geometry = decoder_geometry(sae, *be);
      rep.has_geometry = true;
    }
    if (vm.count("compare")) {
      rep.compare = compare_decoders(sae, other, *be, rep.compare_path);
      rep.has_compare = true;
    }

    if (vm.count("plots")) {
      cli::OutputDir dir(vm["plots"].as<std::string>(), "plots");
      for (const auto& [name, svg] : eval_report_plots(rep)) cli::write_file_atomic(dir.tmp_path() + "/" + name, svg);
      dir.commit();
    }
    if (density_out) {
      std::vector<float> dens = rep.eval.log10_density();
      SafeTensorsWriter w;
      w.add("sparsity", {sae.d_sae}, dens.data());
      const std::string bytes = w.serialize();
      density_out->write(bytes.data(), bytes.size());
      density_out->commit();
    }
    std::string table = eval_report_table(rep);
    if (with_model) table += lm_eval_table(lm_rep);
    std::string text;
    if (format == "json") {
      auto j = eval_report_json(rep);
      if (with_model) j["lm_loss"] = lm_eval_json(lm_rep);
      text = j.dump(2) + "\n";
    } else {
      text = table;
    }
    out.write(text.data(), text.size());
    out.commit();
    if (format == "json") fputs(table.c_str(), stderr);
    return 0;
  });
}
