// sae-explain: what each latent of an SAE means, from one streaming pass over a model's text, an
// activations stream or a latents stream: statistics, top and quantile-sampled contexts, contrast
// contexts, the logit lens, decoder and co-firing neighbours (lib/explain), written as
// latents.jsonl, summary.json and a static dashboard (index.html, latent.html) in one directory.
#include <string>
#include <vector>

#include "base/cli.h"
#include "base/manual.h"
#include "base/strings.h"
#include "explain/autointerp.h"
#include "explain/explain.h"
#include "llm/llm.h"

using namespace sae;
namespace po = cli::po;

int main(int argc, char** argv) {
  return cli::run("sae-explain", argc, argv, [](int argc, char** argv) {
    ExplainOptions o;
    const MinerOptions& m = o.miner;
    po::options_description desc("Options");
    desc.add_options()
        ("output,o", po::value<std::string>(), "the output directory (required; refused if it exists, unless --force)")
        ("force", po::bool_switch(), "replace an existing output directory (only once the new one is complete)")
        ("sae", po::value<std::string>(), "SAE directory (required unless the input is a latents stream)")
        ("model", po::value<std::string>(),
         "Hugging Face model directory: its tokenizer shows the tokens, its unembedding gives the logit lens, "
         "and with --text it is run up to the SAE's hook")
        ("text", po::value<std::vector<std::string>>()->multitoken(), "text files to run --model over (instead of streams)")
        ("hook", po::value<std::string>(), "with --text: the hook, when the SAE records none (or to override it)")
        ("jsonl-field", po::value<std::string>()->default_value(""), "with --text: read JSONL with the text under this field")
        ("lines", po::bool_switch(), "with --text: one document per line (default: documents separated by blank lines)")
        ("invalid-utf8", cli::choice({"error", "replace"})->default_value("error"),
         "with --text: refuse invalid UTF-8 (error) or read it as U+FFFD (replace)")
        ("context", po::value<int64_t>()->default_value(o.context), "with --text: tokens per sequence, BOS included")
        ("batch", po::value<int64_t>()->default_value(o.batch), "with --text: sequences per forward pass")
        ("compute", cli::choice({"f32", "bf16"})->default_value("f32"), "with --text: arithmetic of the forward pass (bf16: GPU only)")
        ("latents", po::value<std::string>(), "the latents to report, e.g. 0-99,512 (default: all)")
        ("top", po::value<int>()->default_value(m.top), "max-activating contexts per latent")
        ("quantiles", po::value<int>()->default_value(m.quantiles), "quantile groups of the activation range")
        ("per-quantile", po::value<int>()->default_value(m.per_quantile), "contexts sampled from each quantile group")
        ("contrast", po::value<int>()->default_value(m.contrast), "random contexts where the latent does not fire")
        ("before", po::value<int>()->default_value(m.before), "tokens of context before the peak")
        ("after", po::value<int>()->default_value(m.after), "tokens of context after the peak")
        ("logit-tokens", po::value<int>()->default_value(o.logit_tokens), "tokens in each logit-lens list")
        ("neighbours", po::value<int>()->default_value(o.neighbours), "decoder and co-firing neighbours per latent")
        ("cofire-rows", po::value<int64_t>()->default_value(m.cofire_rows),
         "rows sampled (uniformly) to count co-firing on; exact when the input has no more")
        ("seed", po::value<uint64_t>()->default_value(m.seed), "seed of the quantile, contrast and co-firing samples")
        ("max-tokens", po::value<int64_t>()->default_value(0), "stop after this many tokens (rows); 0: read everything")
        ("no-dashboard", po::bool_switch(), "write latents.jsonl and summary.json only")
        ("threads", po::value<int>()->default_value(0), "threads for encoding, reading and the decoder products (0: all cores)");
    cli::add_device_option(desc);
    // Automated interpretability (docs/autointerp.md).
    desc.add_options()
        ("explain", po::bool_switch(), "ask an LLM (--llm-url, --llm-model) for a short explanation of each latent")
        ("score", po::value<std::string>(),
         "score the explanations on held-out contexts: detection, fuzzing, simulation or all, comma-separated "
         "(implies --explain; raises the --contrast default to 25)")
        ("mark-fraction", po::value<double>()->default_value(0),
         "explanation prompt: mark the tokens whose activation exceeds this fraction of the latent's max (and the peak)")
        ("show-activations", po::bool_switch(), "explanation prompt: list each marked token's activation (0-10)")
        ("score-batch", po::value<int>()->default_value(10), "scoring contexts per request")
        ("no-logprobs", po::bool_switch(), "do not ask for log-probabilities (no detection AUC), for endpoints that refuse them")
        ("prompt-dir", po::value<std::string>(),
         "prompt templates (explain.txt, detection.txt, fuzzing.txt, simulation.txt) replacing the built-in ones");
    llm::add_options(desc, "OUT.llm-cache");  // OUT: the -o directory (below)
    po::options_description hidden;
    hidden.add_options()("input", po::value<std::vector<std::string>>(), "");
    po::options_description all;
    all.add(desc).add(hidden);
    po::positional_options_description pos;
    pos.add("input", -1);
    auto vm = cli::parse(argc, argv, all,
                         "-o DIR (--sae DIR [--model DIR] [STREAM...] | --model DIR --sae DIR --text FILE...) [options]",
                         "Explain each latent of an SAE from one pass over its input: firing statistics and an\n"
                         "activation histogram, the top contexts, quantile-sampled and contrast contexts, the\n"
                         "logit lens of its decoder row, and its nearest latents by decoder cosine and by\n"
                         "co-firing. Writes latents.jsonl, summary.json and a static dashboard (open\n"
                         "DIR/index.html) into -o DIR. The input is a model run over --text, an activations\n"
                         "stream (encoded with --sae) or a latents stream from sae-encode (docs/explain.md).",
                         &pos, &desc);
    if (!vm.count("output")) throw UsageError("-o DIR is required: the directory to write the dashboard into");
    o.output = vm["output"].as<std::string>();
    o.force = vm["force"].as<bool>();
    if (vm.count("sae")) o.sae_dir = vm["sae"].as<std::string>();
    if (vm.count("model")) o.model_dir = vm["model"].as<std::string>();
    if (vm.count("text")) o.text = vm["text"].as<std::vector<std::string>>();
    if (vm.count("hook")) o.hook = vm["hook"].as<std::string>();
    o.jsonl_field = vm["jsonl-field"].as<std::string>();
    o.lines = vm["lines"].as<bool>();
    o.replace_invalid_utf8 = vm["invalid-utf8"].as<std::string>() == "replace";
    o.context = vm["context"].as<int64_t>();
    o.batch = vm["batch"].as<int64_t>();
    o.compute = vm["compute"].as<std::string>();
    if (o.text.empty()) {
      for (const char* n : {"hook", "jsonl-field", "lines", "invalid-utf8", "context", "batch", "compute"})
        if (vm.count(n) && !vm[n].defaulted()) throw UsageError(std::string("--") + n + " is an option of --text input");
      o.streams = cli::input_files(vm);
    } else if (vm.count("input")) {
      throw UsageError("give either --text (with --model) or activation/latent streams, not both");
    }
    if (vm.count("latents")) o.latents = vm["latents"].as<std::string>();
    auto non_negative = [&](const char* name) {
      const int v = vm[name].as<int>();
      if (v < 0) throw UsageError(std::string("--") + name + " must be >= 0, got " + std::to_string(v));
      return v;
    };
    o.miner.top = non_negative("top");
    o.miner.quantiles = non_negative("quantiles");
    o.miner.per_quantile = non_negative("per-quantile");
    o.miner.contrast = non_negative("contrast");
    o.miner.before = non_negative("before");
    o.miner.after = non_negative("after");
    o.logit_tokens = non_negative("logit-tokens");
    o.neighbours = non_negative("neighbours");
    o.threads = non_negative("threads");
    o.miner.cofire_rows = vm["cofire-rows"].as<int64_t>();
    if (o.miner.cofire_rows < 0) throw UsageError("--cofire-rows must be >= 0");
    o.miner.seed = vm["seed"].as<uint64_t>();
    o.max_tokens = vm["max-tokens"].as<int64_t>();
    if (o.max_tokens < 0) throw UsageError("--max-tokens must be >= 0");
    o.dashboard = !vm["no-dashboard"].as<bool>();
    o.device = cli::device_option(vm);
    // Automated interpretability (docs/autointerp.md).
    AutointerpOptions& ai = o.autointerp;
    ai.explain = vm["explain"].as<bool>() || vm.count("score");
    if (vm.count("score")) ai.methods = parse_score_methods(vm["score"].as<std::string>());
    ai.mark_fraction = vm["mark-fraction"].as<double>();
    if (!(ai.mark_fraction >= 0 && ai.mark_fraction <= 1)) throw UsageError("--mark-fraction must be between 0 and 1");
    ai.show_activations = vm["show-activations"].as<bool>();
    ai.batch = vm["score-batch"].as<int>();
    if (ai.batch < 1) throw UsageError("--score-batch must be at least 1");
    ai.logprobs = !vm["no-logprobs"].as<bool>();
    if (vm.count("prompt-dir")) ai.prompt_dir = vm["prompt-dir"].as<std::string>();
    ai.seed = o.miner.seed;
    o.llm = llm::read_options(vm);
    if (ai.explain) {
      if (o.llm.url.empty())
        throw UsageError("--explain and --score need an LLM: --llm-url URL --llm-model NAME (docs/autointerp.md)");
      if (o.llm.cache_dir.empty() || vm["llm-cache"].defaulted()) {  // beside the output, renamed into place only at the end
        std::string base = o.output;
        while (base.size() > 1 && base.back() == '/') base.pop_back();
        o.llm.cache_dir = base + ".llm-cache";
      }
      load_prompts(ai.prompt_dir);  // a bad --prompt-dir fails before the pass, not after it
      if (!ai.methods.empty() && vm["contrast"].defaulted()) o.miner.contrast = 25;
    } else if (!o.llm.url.empty()) {
      throw UsageError("--llm-url is for --explain or --score");
    }

    const ExplainStats st = run_explain(o);
    if (ai.explain && o.llm.dry_run) {
      cli::say("dry run: " + std::to_string(st.dry_run_requests) + (st.dry_run_requests == 1 ? " request" : " requests") +
               " written to " + o.llm.cache_dir +
               "/dry-run.jsonl; nothing sent, no output written");
      return 0;
    }
    if (ai.explain) {
      cli::say("autointerp: " + std::to_string(st.explained) + " latents explained, " + std::to_string(st.explain_failed) +
               " failed, in " + cli::human_duration(st.autointerp_seconds));
      if (!st.autointerp.empty())
        for (const std::string& line : split(aggregate_table(st.autointerp), "\n")) cli::say(line);
      cli::say(st.llm_usage);
    }
    for (const std::string& n : st.notes) cli::say(n);
    cli::say(std::to_string(st.latents) + " latents (" + std::to_string(st.dead) + " never fired) from " +
             cli::human_count(double(st.rows)) + " tokens in " + cli::human_duration(st.total_seconds) + " (mining " +
             cli::human_duration(st.mine_seconds) + ", decoder " + cli::human_duration(st.lens_seconds) + ", writing " +
             cli::human_duration(st.write_seconds) + "); examples held " +
             cli::human_count(double(st.example_bytes)) + "B, token ids " + cli::human_count(double(st.row_bytes)) + "B");
    cli::say("open " + o.output + (o.dashboard ? "/index.html" : "/latents.jsonl"));
    return 0;
  });
}
