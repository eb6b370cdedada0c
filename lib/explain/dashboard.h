// sae-explain's static dashboard (docs/explain.md, "The dashboard"): index.html, a sortable and
// filterable table of every reported latent, and one viewer page latent.html#N that loads latent
// N's data from data/latents-CCCC.js (64 latents a file, CCCC = N / 64) with a <script> tag, so the
// whole directory opens from file:// with no server and no network.
//
// The writer streams: add() appends a latent to the current chunk and writes the chunk when the
// next latent belongs to another one; only a small summary row per latent is kept for the index,
// and a bit per vocabulary id (data/tokens.js holds only the tokens the pages show).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "explain/report.h"

namespace sae {

// Latents per data/latents-CCCC.js file.
constexpr int64_t kDashboardChunk = 64;
// "data/latents-0003.js" for latent 200: the file, relative to the dashboard, that holds `latent`.
std::string dashboard_chunk_file(int64_t latent);

// Writes the static dashboard into `dir` (an existing empty directory: the tool's OutputDir
// temporary). token_text[id] is the display text of vocabulary id `id` (Tokenizer::token_text);
// ids outside it are shown as "[ID]". Write failures throw InputError "PATH: write failed: REASON".
class DashboardWriter {
 public:
  DashboardWriter(const std::string& dir, const ExplainSummary& summary, const std::vector<std::string>& token_text);
  ~DashboardWriter();
  DashboardWriter(const DashboardWriter&) = delete;
  DashboardWriter& operator=(const DashboardWriter&) = delete;
  void add(const LatentReport& r);  // latents in ascending order (std::invalid_argument otherwise)
  void finish();                    // writes what is left: the last chunk, the index, the tokens

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sae
