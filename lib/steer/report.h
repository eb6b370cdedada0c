// What sae-steer writes: one JSON object per record (JSONL), a static HTML page with the steered
// text beside the unsteered text and the controls, and the alpha sweep as a table and an SVG of
// effect against fluency (the "Golden Gate curve").
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "steer/steer.h"
#include "tokenizer/tokenizer.h"

namespace sae {

struct SteerReportContext {
  std::vector<std::string> prompts;  // the prompts' text
  std::string model_dir;
  std::vector<std::string> sae_dirs;
  std::string unit, positions;
  std::vector<std::string> target_tokens;
  const Tokenizer* tokenizer = nullptr;  // for the text of generated and promoted tokens
};

nlohmann::ordered_json steer_record_json(const SteerRecord& r, const SteerReportContext& c);

// Mean over prompts, per setting and alpha (controls pooled): the sweep's rows.
struct SweepRow {
  std::string setting;
  double alpha = 0;
  int n = 0;
  double mean_kl = 0, perplexity = 0, target_prob = 0, latent_act = 0;
  // The LLM judge's means (concept, instruction, fluency, harmonic), each over the runs that have
  // that rating (judge_n of them; 0 when none was judged).
  double judge[4] = {0, 0, 0, 0};
  int judge_n[4] = {0, 0, 0, 0};
};
std::vector<SweepRow> sweep_table(const std::vector<SteerRecord>& records);
// The table as text: one line per row, columns aligned; the judge's columns when some row has them.
std::string sweep_text(const std::vector<SweepRow>& rows, bool with_targets);
// Effect (target-token probability with --target-tokens, else the mean KL) against perplexity, one
// series per setting, one point per alpha.
std::string sweep_svg(const std::vector<SweepRow>& rows, bool with_targets);

// A self-contained HTML page (no scripts, no network): per prompt, a table of every setting's
// continuation and measures, the unsteered one first.
std::string steer_html(const std::vector<SteerRecord>& records, const SteerReportContext& c);

// What the LLM judge rates for each record: its prompt's text and its continuation, as the JSONL's
// "prompt_text" and "text" hold them.
std::vector<JudgeItem> judge_items(const std::vector<SteerRecord>& records, const SteerReportContext& c);

}  // namespace sae
