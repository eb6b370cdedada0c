// sae-eval: structural metrics of an SAE over an activation stream: reconstruction, sparsity,
// dead/dense latents, feature density, decoder geometry, and decoder matching against a second
// SAE. JSON report on stdout (or -o), a short table on stderr. docs/eval.md defines every number.
#include <chrono>
#include <cstdio>
#include <iostream>

#include "backend.h"
#include "cli.h"
#include "metrics.h"
#include "sae.h"
#include "safetensors.h"
#include "stream.h"

using namespace sae;

int main(int argc, char** argv) {
  return cli::run("sae-eval", argc, argv, [](int argc, char** argv) {
    namespace po = cli::po;
    po::options_description desc("Options");
    desc.add_options()
        ("sae", po::value<std::string>()->required(), "SAE directory to evaluate (saetools, SAELens or sparsify)")
        ("input", po::value<std::vector<std::string>>()->multitoken(), "activation streams (default: stdin)")
        ("output,o", po::value<std::string>()->default_value("-"), "write the report here (default: stdout)")
        ("format", po::value<std::string>()->default_value("json"),
         "json: JSON report, plus a table on stderr; table: only the table, on stdout or -o")
        ("plots", po::value<std::string>(),
         "write freq_hist.svg, l0_hist.svg and decoder_cos_hist.svg into this directory")
        ("density-out", po::value<std::string>(),
         "write the feature density as a SAELens sparsity.safetensors file (log10 firing frequency)")
        ("compare", po::value<std::string>(),
         "second SAE directory (another seed, or the toy truth): match decoder rows in both directions")
        ("max-rows", po::value<int64_t>()->default_value(0), "evaluate at most this many rows (0: all)")
        ("skip-geometry", po::bool_switch(), "skip the decoder-geometry pass (d_sae^2 * d_in work)");
    po::positional_options_description pos;
    pos.add("input", -1);
    auto vm = cli::parse(argc, argv, desc, "--sae DIR [options] [STREAM...]",
                         "Evaluate an SAE on activation rows: reconstruction (MSE, FVU, cosine, norm ratio,\n"
                         "relative reconstruction bias), L0/L1, dead and dense latents, feature density and\n"
                         "decoder geometry. Streams only; memory does not grow with the number of rows.",
                         &pos);
    const std::string format = vm["format"].as<std::string>();
    if (format != "json" && format != "table")
      throw UsageError("--format: unknown format '" + format + "' (expected json or table)");
    const int64_t max_rows = vm["max-rows"].as<int64_t>();
    if (max_rows < 0) throw UsageError("--max-rows: must be >= 0");

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

    rep.inputs = cli::input_files(vm);
    const std::string stream_name = rep.inputs.size() == 1 ? (rep.inputs[0] == "-" ? "<stdin>" : rep.inputs[0])
                                                           : rep.inputs[0] + " (and " +
                                                                 std::to_string(rep.inputs.size() - 1) + " more)";
    ReaderOptions ropt;
    ropt.nonfinite = NonFinite::error;
    StreamReader reader(rep.inputs, ropt);
    const StreamHeader& h = reader.header();
    if (h.kind != "activations")
      throw InputError(stream_name + ": is a " + h.kind + " stream; sae-eval needs an activations stream");
    if (h.d != sae.d_in)
      throw InputError(stream_name + ": rows have d=" + std::to_string(h.d) + " but " + rep.sae_path +
                       " expects d_in=" + std::to_string(sae.d_in));
    if (!h.hook().empty() && !sae.hook.empty() && h.hook() != sae.hook)
      cli::say("warning: stream hook '" + h.hook() + "' differs from the SAE's hook '" + sae.hook + "'");

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
      cli::OutputDir dir(vm["plots"].as<std::string>());
      for (const auto& [name, svg] : eval_report_plots(rep)) cli::write_file_atomic(dir.tmp_path() + "/" + name, svg);
      dir.commit();
    }
    if (vm.count("density-out")) {
      std::vector<float> dens = rep.eval.log10_density();
      SafeTensorsWriter w;
      w.add("sparsity", {sae.d_sae}, dens.data());
      w.write(vm["density-out"].as<std::string>());
    }
    std::string table = eval_report_table(rep);
    cli::Output out(vm["output"].as<std::string>(), false);
    std::string text = format == "json" ? eval_report_json(rep).dump(2) + "\n" : table;
    out.write(text.data(), text.size());
    out.commit();
    if (format == "json") fputs(table.c_str(), stderr);
    return 0;
  });
}
