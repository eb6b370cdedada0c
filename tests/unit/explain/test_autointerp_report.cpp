// autointerp's results in sae-explain's outputs (lib/explain/report.h, autointerp_result.h): the
// "autointerp" value of a latents.jsonl line, written the same by latent_to_json and the fast
// append_latent_jsonl, with the explanation or the failure and each method's metrics; attach_autointerp
// setting `score` from the first method; and the summary's aggregates.
#include <gtest/gtest.h>

#include "explain/autointerp.h"
#include "explain/report.h"

using namespace sae;
using json = nlohmann::json;

namespace {

LatentReport small_report() {
  LatentReport r;
  r.latent = 3;
  r.fires = 10;
  r.rows = 100;
  r.density = 0.1;
  r.max_activation = 2;
  r.mean_activation = 1;
  ContextExample e;
  e.row = 5;
  e.tokens = {1, 2};
  e.acts = {0, 2};
  e.peak = 1;
  e.activation = 2;
  r.top = {e};
  return r;
}

json fast_line(const LatentReport& r) {
  std::string s;
  append_latent_jsonl(s, r, {"a", "b", "c"});
  EXPECT_EQ(s.back(), '\n');
  return json::parse(s);
}

}  // namespace

TEST(AutointerpReport, BothWritersCarryTheResult) {
  LatentReport r = small_report();
  AutointerpResult a;
  a.explanation = "the token \"cat\"\nwith \xE6 bad bytes";
  MethodScore d;
  d.method = "detection";
  d.metrics = {{"accuracy", 0.9}, {"balanced_accuracy", 0.8765432109}, {"auc", 1}};
  d.n = 40;
  d.failed = 2;
  MethodScore s;
  s.method = "simulation";
  s.metrics = {{"spearman", -0.25}};
  s.n = 40;
  a.scores = {d, s};
  attach_autointerp(r, a, {"simulation", "detection"});
  ASSERT_TRUE(r.score.has_value());
  EXPECT_DOUBLE_EQ(*r.score, -0.25);  // the first method's main metric
  const json slow = latent_to_json(r, {"a", "b", "c"});
  EXPECT_EQ(slow, fast_line(r));
  EXPECT_EQ(slow["autointerp"]["scores"]["detection"]["balanced_accuracy"], 0.876543);
  EXPECT_EQ(slow["autointerp"]["scores"]["detection"]["n"], 40);
  EXPECT_EQ(slow["autointerp"]["scores"]["detection"]["failed"], 2);
  EXPECT_EQ(slow["autointerp"]["scores"]["simulation"]["spearman"], -0.25);
  EXPECT_EQ(slow["autointerp"]["explanation"], "the token \"cat\"\nwith \xEF\xBF\xBD bad bytes");
  EXPECT_FALSE(slow["autointerp"].contains("failed"));

  AutointerpResult f;
  f.failure = "refused";
  LatentReport q = small_report();
  attach_autointerp(q, f, {"detection"});
  EXPECT_FALSE(q.explanation.has_value());
  EXPECT_FALSE(q.score.has_value());
  const json fj = latent_to_json(q, {"a", "b", "c"});
  EXPECT_EQ(fj, fast_line(q));
  EXPECT_EQ(fj["autointerp"], json({{"failed", "refused"}}));

  LatentReport none = small_report();
  EXPECT_FALSE(latent_to_json(none, {"a", "b", "c"}).contains("autointerp"));
  EXPECT_FALSE(fast_line(none).contains("autointerp"));
}

TEST(AutointerpReport, SummaryHasTheAggregates) {
  ExplainSummary s;
  EXPECT_FALSE(summary_to_json(s).contains("autointerp"));
  const Aggregate a = aggregate_scores("detection", "balanced_accuracy", {0.5, 1.0}, {1, 3}, 0, 100);
  s.autointerp = {{"detection", aggregate_to_json(a)}};
  const json j = summary_to_json(s);
  EXPECT_EQ(j["autointerp"]["detection"]["uniform_mean"], 0.75);
  EXPECT_EQ(j["autointerp"]["detection"]["weighted_mean"], 0.875);
  EXPECT_EQ(j["autointerp"]["detection"]["latents"], 2);
  EXPECT_EQ(j["autointerp"]["detection"]["uniform_ci95"].size(), 2u);
}
