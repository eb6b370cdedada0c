// What sae-explain knows about each latent once its pass is over (docs/explain.md): the numbers,
// the example contexts and the logit-lens and neighbour lists, as plain structs that the JSONL
// writer (latents.jsonl) and the dashboard writer (dashboard.h) both read.
//
// Examples hold token ids, never strings: the strings come from one table of display texts per
// vocabulary id (Tokenizer::token_text), so 16,384 latents' worth of examples stay small.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "explain/autointerp_result.h"

namespace sae {

// A window of tokens inside one document, around the row where the example was taken.
struct ContextExample {
  int64_t row = 0;        // the row's index in the input stream (counting from 0)
  int64_t doc = -1;       // its document id
  int32_t peak = 0;       // index of that row within `tokens`
  float activation = 0;   // the latent's activation at the peak
  std::vector<int32_t> tokens;  // the window's token ids, in order
  std::vector<float> acts;      // the latent's activation on each token of the window (0 = not firing)
};

struct TokenScore {
  int32_t token = 0;
  float score = 0;
};

struct Neighbour {
  int64_t latent = 0;
  float score = 0;  // decoder cosine, or Jaccard of firing sets
};

struct LatentReport {
  int64_t latent = 0;
  int64_t fires = 0;        // rows where the activation is nonzero
  int64_t rows = 0;         // rows processed (the denominator of density)
  double density = 0;       // fires / rows
  float max_activation = 0; // 0 when it never fired
  double mean_activation = 0;  // over the rows where it fired
  // Histogram of the nonzero activations: counts[b] over [edges[b], edges[b+1]); edges are
  // log-spaced and trimmed to the populated range (empty when it never fired).
  std::vector<double> hist_edges;
  std::vector<int64_t> hist_counts;

  std::vector<ContextExample> top;                    // highest first, ties by stream order
  std::vector<std::vector<ContextExample>> quantiles; // lowest group first, each sorted by activation, highest first
  // The groups' activation bounds when the miner knows them: group g covers [quantile_edges[g],
  // quantile_edges[g+1]] (quantiles.size() + 1 values). Empty: the outputs label each group with
  // the lowest and highest peak activation of its examples instead.
  std::vector<double> quantile_edges;
  std::vector<ContextExample> contrast;               // contexts where it does not fire anywhere in the window

  // Logit lens of the decoder direction (docs/explain.md says how it is computed).
  std::vector<TokenScore> logit_top, logit_bottom;                      // raw scores
  std::vector<TokenScore> logit_top_corrected, logit_bottom_corrected;  // minus each token's mean over latents
  bool has_logit_lens = false;

  std::vector<Neighbour> decoder_neighbours;  // nearest by decoder cosine, highest first
  std::vector<Neighbour> cofire_neighbours;   // highest Jaccard first (only latents that co-fire)

  // From autointerp, when present.
  std::optional<std::string> explanation;
  std::optional<double> score;
  // The whole autointerp result (explain/autointerp_result.h, docs/autointerp.md): written as
  // "autointerp" in latents.jsonl and as the scores section of the latent's page.
  std::optional<AutointerpResult> autointerp;
};

// The whole run: what the index page shows above its table.
struct ExplainSummary {
  std::string sae;         // the SAE directory or the stream's recorded SAE
  std::string model;       // the model directory or name ("" when none)
  std::string hook;
  std::string architecture;
  int64_t d_sae = 0, d_in = 0;
  int64_t rows = 0;        // rows (tokens) processed
  int64_t documents = 0;
  int64_t latents_reported = 0;
  int64_t dead = 0;        // reported latents that never fired
  // Histogram over reported latents of log10(density) for the ones that fired: counts[b] over
  // [edges[b], edges[b+1]).
  std::vector<double> density_edges;
  std::vector<int64_t> density_counts;
  int64_t cofire_rows = 0;  // rows the co-firing Jaccard was measured on
  nlohmann::json options = nlohmann::json::object();  // the settings of the run, for the record
  // autointerp (docs/autointerp.md): per scoring method, its aggregates (aggregate_to_json); null when off.
  nlohmann::json autointerp;
};

// One latent as the line of latents.jsonl (docs/explain.md has the schema), appended to `out`,
// '\n' included; `token_text` maps a token id to its display text. Keys in schema order, numbers
// spelt by std::to_chars into one buffer: the one writer of the schema.
void append_latent_jsonl(std::string& out, const LatentReport& r, const std::vector<std::string>& token_text);
// The same line as a JSON value (it is parsed from append_latent_jsonl's text).
nlohmann::json latent_to_json(const LatentReport& r, const std::vector<std::string>& token_text);
nlohmann::json summary_to_json(const ExplainSummary& s);

// The activation bounds of quantile group g, as the outputs label it: quantile_edges[g] and
// [g+1] when the miner set them, else the lowest and highest peak activation of the group's
// examples; false when neither is known (no edges, no examples).
bool quantile_bounds(const LatentReport& r, size_t g, double& lo, double& hi);

}  // namespace sae
