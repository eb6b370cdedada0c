// sae-steer: generate text with SAE latents added, clamped or ablated at their hooks, beside the
// unsteered text and the controls (random directions of equal norm, latents of similar firing
// density), with measures that need no LLM (lib/steer/steer.h). JSONL on stdout (or -o), the
// alpha sweep as a table on stderr, and optionally a static HTML page and an SVG.
#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>

#include "backend/backend.h"
#include "base/cli.h"
#include "base/files.h"
#include "base/manual.h"
#include "base/strings.h"
#include "eval/lm_eval.h"
#include "llm/llm.h"
#include "model/generate.h"
#include "model/model.h"
#include "sae/sae.h"
#include "steer/judge.h"
#include "steer/report.h"
#include "steer/steer.h"
#include "tokenizer/documents.h"
#include "tokenizer/tokenizer.h"

using namespace sae;
namespace po = cli::po;

namespace {

std::vector<double> parse_alphas(const std::string& s) {
  std::vector<double> v;
  for (const std::string& a : split(s, ",")) {
    double x = 0;
    if (!parse_finite(a, x))
      throw UsageError("--alpha: '" + a + "' is not a number (expected a comma-separated list, e.g. 0,5,10)");
    v.push_back(x);
  }
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  return cli::run("sae-steer", argc, argv, [](int argc, char** argv) {
    po::options_description desc("Options");
    desc.add_options()
        ("model", po::value<std::string>()->required(), "Hugging Face model directory (any family sae-collect runs)")
        ("sae", po::value<std::vector<std::string>>()->required(),
         "SAE directory, at the hook its cfg.json records; repeat for interventions at several hooks (numbered from 0)")
        ("hook", po::value<std::string>()->default_value(""), "the hook of the (single) SAE, when its cfg.json records none")
        ("steer", po::value<std::vector<std::string>>()->required(),
         "intervention, repeatable: [S/]LATENT:add[=ALPHA], LATENT:clamp=VALUE, LATENT:ablate[=zero|mean]; "
         "S/ names the S-th --sae")
        ("prompt", po::value<std::vector<std::string>>(), "prompt text, repeatable")
        ("prompts", po::value<std::string>(), "file of prompts, one per line (blank lines skipped)")
        ("alpha", po::value<std::string>(),
         "comma-separated values swept for every --steer without its own value (add: alpha; clamp: the value)")
        ("unit", cli::choice({"abs", "unit", "max"})->default_value("abs"),
         "what alpha multiplies for add: abs, the decoder row; unit, the unit direction; max, the decoder row "
         "times the latent's largest activation on --stats-text")
        ("positions", po::value<std::string>()->default_value("all"),
         "where to intervene: all, prompt, generated, or from:P (positions >= P, 0 = the first token)")
        ("max-new-tokens", po::value<int64_t>()->default_value(32), "tokens to generate per prompt")
        ("temperature", po::value<double>()->default_value(0.0), "sampling temperature; 0 is greedy")
        ("top-k", po::value<int>()->default_value(0), "sample from the k most likely tokens (0: all)")
        ("top-p", po::value<double>()->default_value(1.0), "sample from the smallest set reaching this probability")
        ("seed", po::value<uint64_t>()->default_value(0), "sampling seed, the same for every run")
        ("ignore-eos", po::bool_switch(), "do not stop a continuation at the model's EOS token")
        ("random-controls", po::value<int>()->default_value(3),
         "runs along random directions of the decoder row's norm, per alpha")
        ("density-controls", po::value<int>()->default_value(1),
         "runs on other latents of the nearest firing density, per alpha (needs densities: --stats-text, or "
         "the SAE's sparsity.safetensors)")
        ("control-seed", po::value<uint64_t>()->default_value(1), "seed of the random directions")
        ("target-tokens", po::value<std::string>(),
         "comma-separated strings, each one token of the vocabulary: their total probability is measured")
        ("stats-text", po::value<std::vector<std::string>>()->multitoken(),
         "text files (documents separated by blank lines) to measure each latent's largest and mean "
         "activation and firing density on")
        ("stats-tokens", po::value<int64_t>()->default_value(20000), "read at most this many tokens of --stats-text")
        ("output,o", po::value<std::string>()->default_value("-"), "JSONL records here (default: stdout)")
        ("html", po::value<std::string>(), "write a static HTML page of every run here")
        ("svg", po::value<std::string>(), "write the sweep's effect-against-fluency plot here")
        ("compute", cli::choice({"f32", "bf16"})->default_value("f32"),
         "arithmetic of the forward passes: f32, or bf16 (GPU only: weight matrices held in bf16, products of "
         "bf16-rounded activations accumulated in f32; docs/models.md)");
    cli::add_device_option(desc);
    desc.add_options()
        ("judge-concept", po::value<std::string>(),
         "with --llm-url: the concept the LLM judge looks for in each continuation (e.g. \"the name Lily\")");
    llm::add_options(desc);
    auto vm = cli::parse(argc, argv, desc, "--model DIR --sae DIR --steer SPEC (--prompt TEXT | --prompts FILE) [options]",
                         "Generate from each prompt unsteered, steered, and along control directions, all with\n"
                         "the same sampling seed, and measure each continuation against the unsteered model:\n"
                         "KL of the next-token distributions, perplexity, target-token probability, the latent's\n"
                         "activation, and the most promoted and suppressed tokens (docs/steer.md).\n"
                         "With --llm-url, an LLM judge rates every continuation 0-2 on the concept (--judge-concept),\n"
                         "on following the prompt and on fluency, and their harmonic mean, as AxBench does.");
    // Outputs first: a bad path fails before the model loads.
    cli::Output out(vm["output"].as<std::string>(), false);
    std::unique_ptr<cli::Output> html, svg;
    if (vm.count("html")) html = std::make_unique<cli::Output>(vm["html"].as<std::string>(), false);
    if (vm.count("svg")) svg = std::make_unique<cli::Output>(vm["svg"].as<std::string>(), false);

    // The judge: its options checked, and its client made (which refuses a build without libcurl), before
    // the model loads.
    const llm::Options llm_opt = llm::read_options(vm);
    std::unique_ptr<llm::Client> judge;
    std::string concept;
    if (vm.count("judge-concept")) concept = vm["judge-concept"].as<std::string>();
    if (!llm_opt.url.empty()) {
      if (concept.empty()) throw UsageError("--llm-url needs --judge-concept TEXT, the concept the judge rates each continuation on");
      judge = std::make_unique<llm::Client>(llm_opt);
    } else if (vm.count("judge-concept")) {
      throw UsageError("--judge-concept needs --llm-url, the LLM that judges");
    }

    SteerOptions opt;
    const std::vector<std::string> sae_dirs = vm["sae"].as<std::vector<std::string>>();
    for (const std::string& spec : vm["steer"].as<std::vector<std::string>>())
      opt.interventions.push_back(parse_intervention(spec, int(sae_dirs.size())));
    if (vm.count("alpha")) opt.alphas = parse_alphas(vm["alpha"].as<std::string>());
    const std::string unit = vm["unit"].as<std::string>();
    opt.unit = unit == "unit" ? AlphaUnit::unit : unit == "max" ? AlphaUnit::max_activation : AlphaUnit::absolute;
    const std::string positions = vm["positions"].as<std::string>();
    opt.scope = parse_scope(positions);
    opt.generation.max_new_tokens = vm["max-new-tokens"].as<int64_t>();
    if (opt.generation.max_new_tokens < 1) throw UsageError("--max-new-tokens must be at least 1");
    opt.generation.sampling.temperature = vm["temperature"].as<double>();
    opt.generation.sampling.top_k = vm["top-k"].as<int>();
    opt.generation.sampling.top_p = vm["top-p"].as<double>();
    opt.generation.sampling.seed = vm["seed"].as<uint64_t>();
    opt.generation.stop_at_eos = !vm["ignore-eos"].as<bool>();
    if (!(opt.generation.sampling.temperature >= 0)) throw UsageError("--temperature must be >= 0");
    if (opt.generation.sampling.top_k < 0) throw UsageError("--top-k must be >= 0");
    if (!(opt.generation.sampling.top_p > 0 && opt.generation.sampling.top_p <= 1)) throw UsageError("--top-p must lie in (0, 1]");
    opt.random_controls = vm["random-controls"].as<int>();
    opt.density_controls = vm["density-controls"].as<int>();
    if (opt.random_controls < 0 || opt.density_controls < 0) throw UsageError("--random-controls and --density-controls must be >= 0");
    opt.control_seed = vm["control-seed"].as<uint64_t>();

    std::vector<std::string> prompt_texts;
    if (vm.count("prompt")) prompt_texts = vm["prompt"].as<std::vector<std::string>>();
    if (vm.count("prompts")) {
      TextDocumentReader rd({vm["prompts"].as<std::string>()}, "", true, false);
      TextDocument doc;
      while (rd.next(doc))
        if (!doc.text.empty()) prompt_texts.push_back(doc.text);
    }
    if (prompt_texts.empty()) throw UsageError("no prompts: give --prompt TEXT or --prompts FILE");

    const std::string model_dir = vm["model"].as<std::string>();
    const Compute compute = parse_compute_option(vm["compute"].as<std::string>());
    const Device device = resolve_device(cli::device_option(vm));
    check_compute_device(compute, device);
    auto be = make_backend(device);
    Model model(model_dir, *be, compute);
    const ModelConfig& cfg = model.config();
    auto tok = Tokenizer::load(model_dir);
    const int32_t bos = sequence_bos(tok->bos_id(), cfg, model_dir);

    std::vector<SteerSae> saes;
    const std::string hook_override = vm["hook"].as<std::string>();
    if (!hook_override.empty() && sae_dirs.size() > 1) throw UsageError("--hook applies to a single --sae; record each SAE's hook in its cfg.json");
    for (const std::string& dir : sae_dirs) {
      SteerSae s;
      s.dir = dir;
      s.sae = load_sae(dir);
      s.hook = lm_eval_hook(s.sae, dir, cfg, model_dir, hook_override, nullptr);
      std::vector<float> log10_density = load_sparsity(dir, s.sae.d_sae);
      for (float v : log10_density) s.density.push_back(float(std::pow(10.0, double(v))));
      saes.push_back(std::move(s));
    }
    if (vm.count("stats-text")) {
      const std::vector<std::string> files = vm["stats-text"].as<std::vector<std::string>>();
      const int64_t budget = vm["stats-tokens"].as<int64_t>();
      TextDocumentReader rd(files, "", false, false);
      TextDocument doc;
      std::vector<TextWindow> windows;
      int64_t tokens = 0;
      while (tokens < budget && rd.next(doc)) {
        std::vector<int32_t> ids = encode_document(*tok, doc);
        if (int64_t(ids.size()) > budget - tokens) ids.resize(size_t(budget - tokens));
        tokens += int64_t(ids.size());
        append_windows(ids, 0, bos, std::min<int64_t>(128, cfg.max_positions), windows);
      }
      if (windows.empty()) throw_no_text(files);
      std::vector<std::vector<int32_t>> w;
      for (auto& x : windows) w.push_back(std::move(x.tokens));
      for (SteerSae& s : saes) latent_stats(model, s, w);
    }
    check_interventions(saes, opt.interventions, opt.unit);

    SteerReportContext ctx;
    ctx.prompts = prompt_texts;
    ctx.model_dir = model_dir;
    ctx.sae_dirs = sae_dirs;
    ctx.unit = unit;
    ctx.positions = positions;
    ctx.tokenizer = tok.get();
    if (vm.count("target-tokens")) {
      for (const std::string& t : split(vm["target-tokens"].as<std::string>(), ",")) {
        const std::vector<int32_t> ids = tok->encode(t, false);
        if (ids.size() != 1)
          throw UsageError("--target-tokens: '" + t + "' is " + std::to_string(ids.size()) +
                           " tokens of the model's vocabulary, not one");
        opt.targets.push_back(ids[0]);
        ctx.target_tokens.push_back(t);
      }
    }

    std::vector<std::vector<int32_t>> prompts;
    for (const std::string& p : prompt_texts) {
      std::vector<int32_t> ids = {bos};
      const std::vector<int32_t> text = tok->encode(p, false);
      ids.insert(ids.end(), text.begin(), text.end());
      const int64_t need = int64_t(ids.size()) + opt.generation.max_new_tokens - 1;
      if (int64_t(ids.size()) > cfg.max_positions)
        throw InputError("prompt '" + p.substr(0, 40) + "' is " + std::to_string(ids.size()) + " tokens, longer than the model's " +
                         std::to_string(cfg.max_positions) + " positions (" + cfg.max_positions_field + ")");
      if (need > cfg.max_positions)
        throw UsageError("--max-new-tokens " + std::to_string(opt.generation.max_new_tokens) + " after a prompt of " +
                         std::to_string(ids.size()) + " tokens needs " + std::to_string(need) +
                         " positions, more than the model's " + std::to_string(cfg.max_positions) + " (" +
                         cfg.max_positions_field + ")");
      prompts.push_back(std::move(ids));
    }

    std::vector<SteerRecord> records = run_steering(model, saes, prompts, opt);
    if (judge) {
      // Every continuation's three requests in one batch, --llm-parallel in flight.
      const std::vector<JudgeRatings> ratings = judge_all(*judge, concept, judge_items(records, ctx));
      for (size_t i = 0; i < ratings.size(); i++) {
        records[i].judged = true;
        records[i].judge = ratings[i];
      }
      cli::say(judge->usage_report());
    }
    for (const SteerRecord& r : records) {
      const std::string line = steer_record_json(r, ctx).dump() + "\n";
      out.write(line.data(), line.size());
    }
    const std::vector<SweepRow> rows = sweep_table(records);
    std::fputs(sweep_text(rows, !opt.targets.empty()).c_str(), stderr);
    if (html) {
      const std::string page = steer_html(records, ctx);
      html->write(page.data(), page.size());
      html->commit();
    }
    if (svg) {
      const std::string plot = sweep_svg(rows, !opt.targets.empty());
      svg->write(plot.data(), plot.size());
      svg->commit();
    }
    out.commit();
    return 0;
  });
}
