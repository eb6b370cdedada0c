// Automated interpretability for sae-explain (docs/autointerp.md): an LLM explains each latent from
// its top and quantile-sampled contexts, and the explanation is scored on held-out contexts that were
// never in the explanation prompt, by detection, fuzzing and simulation; the scores are then
// aggregated over latents, uniformly and weighted by firing count, with bootstrap intervals and a
// mean per firing-frequency decile.
//
// The LLM is reached through lib/llm (any OpenAI-compatible endpoint, parallel requests, retries,
// budget, the cache that lets an interrupted run resume). Prompts are templates a user can replace
// (load_prompts); the defaults are lib/explain/prompts/*.txt, compiled in by cmake/embed-prompts.cmake.
//
// Examples are split per latent, deterministically from the seed (split_examples):
//   explanation: the top contexts and the first half of each quantile group (seeded shuffle);
//   scoring:     the other half of each quantile group (activating) and the contrast contexts
//                (not activating); a row already in the explanation set is dropped from scoring,
//                so the two sets are disjoint by row.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "explain/autointerp_result.h"
#include "explain/report.h"
#include "llm/llm.h"

namespace sae {

struct AutointerpOptions {
  bool explain = false;                // ask for explanations
  std::vector<std::string> methods;    // scoring methods: "detection", "fuzzing", "simulation" (needs explain)
  double mark_fraction = 0;            // mark tokens whose activation > mark_fraction * the latent's max (the peak always)
  bool show_activations = false;       // append each marked token's activation (0-10) to the explanation examples
  int batch = 10;                      // scoring contexts per request
  bool logprobs = true;                // ask detection for log-probs (AUC) where the endpoint gives them
  int max_answer_tokens = 512;         // max_tokens of each request
  uint64_t seed = 0;                   // the split, the fuzzing marks, the order of scoring contexts, the bootstrap
  std::string prompt_dir;              // "" = the built-in templates
  size_t chunk = 256;                  // latents per step (at least 4 x parallel; the splits of two chunks are held)
  int bootstrap = 1000;                // bootstrap resamples of the aggregates
};

// The scoring methods by name; throws UsageError naming --score for an unknown one.
std::vector<std::string> parse_score_methods(const std::string& spec);

// ---- prompts

// A template is split at its first line "----": the system message above it, the user message
// below (no such line: all of it is the user message). Placeholders: {{examples}}, {{count}},
// {{explanation}}.
struct PromptTemplate {
  std::string system, user;
};
struct PromptTemplates {
  PromptTemplate explain, detection, fuzzing, simulation;
};
// The built-in text of prompt NAME ("explain", "detection", "fuzzing", "simulation").
const std::string& default_prompt_text(const std::string& name);
PromptTemplate parse_prompt(const std::string& text);
// The built-in templates, with DIR/NAME.txt replacing each one that DIR holds ("" = none). A DIR
// that is not a directory, or holds none of the four, is an InputError.
PromptTemplates load_prompts(const std::string& dir);

// One context as a line of a prompt: the tokens' display texts joined, newlines shown as "\n",
// tokens with mark[i] set wrapped in <<...>> (a run of marked tokens in one pair).
std::string render_context(const ContextExample& e, const std::vector<std::string>& token_text,
                           const std::vector<char>& mark);
// The marks of the explanation prompt: activation > fraction * max, and the peak.
std::vector<char> activation_marks(const ContextExample& e, double fraction, double max_activation);

// ---- the split

struct ExampleSplit {
  std::vector<ContextExample> explain;         // in the explanation prompt
  std::vector<ContextExample> activating;      // held out, activating (from every quantile group)
  std::vector<ContextExample> non_activating;  // held out, not activating (the contrast contexts)
};
ExampleSplit split_examples(const LatentReport& r, uint64_t seed);

// ---- explanations

llm::Request explanation_request(const PromptTemplate& t, const ExampleSplit& s, const LatentReport& r,
                                 const AutointerpOptions& o, const std::vector<std::string>& token_text);
struct ParsedExplanation {
  bool ok = false;
  std::string text;     // the explanation (ok)
  std::string failure;  // why not (!ok): "empty answer", "refused", "echoed the prompt's markers", ...
};
// The last "Explanation:" line (or the next non-empty line when it holds nothing more); an answer
// of one short line without it is taken whole.
ParsedExplanation parse_explanation(const std::string& answer);

// ---- scoring

// The last [...] list of the answer, when it holds exactly n integers in [lo, hi]; else empty.
std::vector<int> parse_answer_list(const std::string& answer, size_t n, int lo, int hi);
// P(label 1) of each of the last n 0/1 tokens of the answer, from the response's log-probs; empty
// when they do not give n such tokens.
std::vector<double> label_probabilities(const std::vector<llm::TokenLogprob>& lp, size_t n);

struct ScoringItem {
  std::string line;  // the context as the prompt shows it
  int truth = 0;     // detection, fuzzing: 0/1; simulation: the quantised activation 0-10
};
struct ScoringBatch {
  std::string method;
  std::vector<ScoringItem> items;
  llm::Request request;
};
// The requests of one method for one latent (batches of o.batch contexts).
std::vector<ScoringBatch> scoring_batches(const std::string& method, const PromptTemplates& t, const std::string& explanation,
                                          const ExampleSplit& s, const LatentReport& r, const AutointerpOptions& o,
                                          const std::vector<std::string>& token_text);

struct BinaryMetrics {
  int64_t n = 0, positives = 0;
  double accuracy = 0, balanced_accuracy = 0, f1 = 0, precision = 0, recall = 0;
  std::optional<double> auc;
};
// Balanced accuracy is the mean of the recalls of the classes present.
BinaryMetrics binary_metrics(const std::vector<int>& truth, const std::vector<int>& predicted,
                             const std::vector<double>& probability /* empty: no AUC */);
double roc_auc(const std::vector<int>& truth, const std::vector<double>& score);  // ties count half; NaN with one class
double spearman(const std::vector<double>& a, const std::vector<double>& b);     // average ranks for ties; NaN when constant

// ---- the results of one latent (what latents.jsonl and the dashboard carry)

// The main score of each method: detection and fuzzing balanced_accuracy, simulation spearman.
const char* main_metric(const std::string& method);

// ---- aggregates over latents

struct DecileMean {
  int64_t latents = 0;
  int64_t fires_lo = 0, fires_hi = 0;  // the firing counts the decile covers
  double mean = 0;
};
struct Aggregate {
  std::string method, metric;
  int64_t latents = 0;  // with a score
  double uniform = 0, uniform_lo = 0, uniform_hi = 0;     // mean, bootstrap 95% interval
  double weighted = 0, weighted_lo = 0, weighted_hi = 0;  // weights = firing counts
  std::vector<DecileMean> deciles;                        // by firing count, lowest first
};
Aggregate aggregate_scores(const std::string& method, const std::string& metric, const std::vector<double>& score,
                           const std::vector<int64_t>& fires, uint64_t seed, int bootstrap);
nlohmann::json aggregate_to_json(const Aggregate& a);
// The table on stderr: a row per method, the two means side by side.
std::string aggregate_table(const std::vector<Aggregate>& a);

// Puts a latent's result into its report: explanation, `score` (the main metric of the first of
// `methods`) and the whole result.
void attach_autointerp(LatentReport& report, const AutointerpResult& r, const std::vector<std::string>& methods);

// ---- the driver

struct AutointerpRun {
  std::vector<AutointerpResult> results;  // per latent (index k of the miner's list)
  std::vector<Aggregate> aggregates;      // per method
  int64_t explained = 0, failed = 0;      // explanations
  int64_t dry_run_requests = 0;           // written, not sent
  std::string usage;                      // the client's usage line
  llm::Stats stats;                       // the client's counts
};
// Explains and scores `n` latents; report_of(k) builds the k-th (it is called twice per latent: for
// the explanation and for scoring, a chunk at a time). A request that fails for good throws an
// InputError naming the endpoint (and the cache that keeps what was received); SIGINT throws
// cli::Interrupted once the requests in flight are in the cache.
AutointerpRun run_autointerp(size_t n, const std::function<LatentReport(size_t)>& report_of, const AutointerpOptions& o,
                             const llm::Options& lo, const std::vector<std::string>& token_text);

}  // namespace sae
