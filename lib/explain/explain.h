// sae-explain's run (docs/explain.md): one pass over a model's text, an activations stream or a
// latents stream; the miner (miner.h), the logit lens and decoder neighbours (lens.h), then
// latents.jsonl, summary.json and the dashboard (dashboard.h), all in one output directory that
// appears only when it is complete.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "base/dtype.h"
#include "explain/autointerp.h"
#include "explain/miner.h"
#include "llm/llm.h"

namespace sae {

struct ExplainOptions {
  std::string sae_dir;    // required unless the input is a latents stream
  std::string model_dir;  // tokenizer, unembedding and (with text) the forward pass
  std::string hook;       // overrides the SAE's recorded hook (text input only)
  // Text input (needs model_dir and sae_dir): the documents, read as sae-collect reads them.
  std::vector<std::string> text;
  std::string jsonl_field;
  bool lines = false;
  bool replace_invalid_utf8 = false;
  int64_t context = 128, batch = 8;
  std::string compute = "f32";
  // Otherwise: activation or latent streams ("-" = stdin).
  std::vector<std::string> streams;

  std::string latents;  // "0-99,512"; "" = every latent
  MinerOptions miner;
  int logit_tokens = 10;
  int neighbours = 5;
  int64_t max_tokens = 0;  // stop after this many rows (0: all)
  int threads = 0;
  std::string device = "cpu";
  std::string output;
  bool force = false;
  bool dashboard = true;  // off: latents.jsonl and summary.json only
  // Automated interpretability (docs/autointerp.md): on with autointerp.explain (--explain,
  // --score), through the LLM client llm (the --llm-* options).
  AutointerpOptions autointerp;
  llm::Options llm;
};

struct ExplainStats {
  int64_t rows = 0, documents = 0, latents = 0, dead = 0;
  double mine_seconds = 0, lens_seconds = 0, write_seconds = 0, total_seconds = 0;
  size_t example_bytes = 0, row_bytes = 0;  // what the miner held (docs/explain.md's formula)
  std::vector<std::string> notes;           // what was left out and why (no logit lens, ...)
  // Automated interpretability, when on (docs/autointerp.md).
  std::vector<Aggregate> autointerp;        // per scoring method
  int64_t explained = 0, explain_failed = 0, dry_run_requests = 0;
  std::string llm_usage;
  double autointerp_seconds = 0;
};

// "0-99,512" -> the latents, ascending and distinct. UsageError naming --latents for syntax
// errors and for latents outside [0, d_sae).
std::vector<int64_t> parse_latent_list(const std::string& spec, int64_t d_sae);

ExplainStats run_explain(const ExplainOptions& o);

}  // namespace sae
