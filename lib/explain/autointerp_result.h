// What automated interpretability (explain/autointerp.h) found for one latent, as LatentReport
// carries it (report.h) into latents.jsonl and the dashboard: the explanation, or why there is none,
// and the metrics of each scoring method.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace sae {

struct MethodScore {
  std::string method;  // "detection", "fuzzing", "simulation"
  // In a fixed order: detection and fuzzing accuracy, balanced_accuracy, f1, precision, recall,
  // then auc (detection, with log-probs); simulation spearman. A metric that is undefined (one
  // class only, a constant list) is left out.
  std::vector<std::pair<std::string, double>> metrics;
  int64_t n = 0;       // contexts scored
  int64_t failed = 0;  // contexts whose answer could not be parsed (left out)
  std::optional<double> metric(const std::string& name) const {
    for (const auto& [k, v] : metrics)
      if (k == name) return v;
    return std::nullopt;
  }
};

struct AutointerpResult {
  std::optional<std::string> explanation;
  std::string failure;  // why there is no explanation ("" when there is one)
  std::vector<MethodScore> scores;
};

// The "autointerp" value of a latents.jsonl line (docs/autointerp.md): {"explanation", "scores": {METHOD:
// {METRIC: value, ..., "n", "failed"}}}, or {"failed": REASON}. append_latent_jsonl (report.h) writes
// this value into each line.
nlohmann::json autointerp_json(const AutointerpResult& r);

}  // namespace sae
