// latents.jsonl (lib/explain/report.h, docs/explain.md): a LatentReport survives the trip through
// its JSON line with every field, numbers within the stated rounding (6 significant digits), tokens
// as ids and display strings (unknown ids as "[ID]"), strings escaped, optional fields only when
// present; and the run summary's JSON.
#include <gtest/gtest.h>

#include <cmath>

#include "explain/report.h"

using namespace sae;
using json = nlohmann::json;

namespace {

std::vector<std::string> vocab() {
  return {"<s>", " the", "\n", "<script>", "a\"b\\c", " cat", "\xE6", "\t", "", "&amp;", " sat", "on"};
}

ContextExample example(int64_t row, int64_t doc, int32_t peak, std::vector<int32_t> tokens, std::vector<float> acts) {
  ContextExample e;
  e.row = row;
  e.doc = doc;
  e.peak = peak;
  e.activation = acts.at(size_t(peak));
  e.tokens = std::move(tokens);
  e.acts = std::move(acts);
  return e;
}

LatentReport full_report() {
  LatentReport r;
  r.latent = 7;
  r.fires = 123;
  r.rows = 10007;
  r.density = 123.0 / 10007.0;
  r.max_activation = 3.14159265f;
  r.mean_activation = 1.23456789;
  r.hist_edges = {0.1, 0.2, 0.4, 0.8, 1.6, 3.2};
  r.hist_counts = {1, 20, 30, 40, 32};
  r.top = {example(100, 3, 2, {1, 5, 3, -1, 99}, {0, 0.5f, 3.14159265f, 0, 0.001234567f}),
           example(5, 0, 0, {10, 11, 2}, {2.5f, 1e-7f, 0})};
  r.quantiles = {{example(40, 1, 1, {4, 6, 7}, {0, 0.12345678f, 0})},
                 {},
                 {example(41, 1, 0, {8, 9}, {1.75f, 0}), example(42, 2, 1, {0, 1}, {0, 1.5f})}};
  r.quantile_edges = {0.01, 0.5, 1.0, 3.14159265};
  r.contrast = {example(900, 12, 1, {1, 2, 3}, {0, 0, 0})};
  r.has_logit_lens = true;
  r.logit_top = {{3, 1.23456789f}, {5, 0.5f}};
  r.logit_bottom = {{1, -2.5f}};
  r.logit_top_corrected = {{5, 0.75f}, {-1, 0.25f}};
  r.logit_bottom_corrected = {{11, -0.125f}};
  r.decoder_neighbours = {{12, 0.987654321f}, {3, 0.5f}};
  r.cofire_neighbours = {{40, 0.333333333f}};
  r.explanation = "fires on <script> & \"quotes\"\nand a second line";
  r.score = 0.7512345678;
  return r;
}

// Within the stated rounding: 6 significant digits.
void expect_near6(double got, double want) {
  EXPECT_NEAR(got, want, 5.01e-6 * std::abs(want) + 1e-300) << "want " << want;
}

void expect_example(const json& j, const ContextExample& e, const std::vector<std::string>& v) {
  EXPECT_EQ(j.at("row").get<int64_t>(), e.row);
  EXPECT_EQ(j.at("doc").get<int64_t>(), e.doc);
  EXPECT_EQ(j.at("peak").get<int32_t>(), e.peak);
  expect_near6(j.at("activation").get<double>(), e.activation);
  ASSERT_EQ(j.at("tokens").size(), e.tokens.size());
  ASSERT_EQ(j.at("text").size(), e.tokens.size());
  ASSERT_EQ(j.at("acts").size(), e.acts.size());
  for (size_t i = 0; i < e.tokens.size(); i++) {
    const int32_t id = e.tokens[i];
    EXPECT_EQ(j["tokens"][i].get<int32_t>(), id);
    const std::string want = id >= 0 && size_t(id) < v.size() ? v[size_t(id)] : "[" + std::to_string(id) + "]";
    if (id == 6) EXPECT_EQ(j["text"][i].get<std::string>(), "\xEF\xBF\xBD");  // invalid UTF-8 replaced
    else EXPECT_EQ(j["text"][i].get<std::string>(), want);
    expect_near6(j["acts"][i].get<double>(), e.acts[i]);
  }
}

}  // namespace

TEST(LatentJson, RoundTripHoldsEveryField) {
  const auto v = vocab();
  const LatentReport r = full_report();
  const std::string line = latent_to_json(r, v).dump();
  EXPECT_EQ(line.find('\n'), std::string::npos) << "one line per latent";
  const json j = json::parse(line);

  EXPECT_EQ(j.at("latent").get<int64_t>(), 7);
  EXPECT_EQ(j.at("fires").get<int64_t>(), 123);
  EXPECT_EQ(j.at("rows").get<int64_t>(), 10007);
  expect_near6(j.at("density").get<double>(), r.density);
  expect_near6(j.at("max_activation").get<double>(), r.max_activation);
  expect_near6(j.at("mean_activation").get<double>(), r.mean_activation);
  ASSERT_EQ(j.at("histogram").at("edges").size(), r.hist_edges.size());
  for (size_t i = 0; i < r.hist_edges.size(); i++) expect_near6(j["histogram"]["edges"][i].get<double>(), r.hist_edges[i]);
  EXPECT_EQ(j["histogram"]["counts"].get<std::vector<int64_t>>(), r.hist_counts);

  ASSERT_EQ(j.at("top").size(), r.top.size());
  for (size_t i = 0; i < r.top.size(); i++) expect_example(j["top"][i], r.top[i], v);
  ASSERT_EQ(j.at("quantiles").size(), r.quantiles.size());
  for (size_t g = 0; g < r.quantiles.size(); g++) {
    const json& q = j["quantiles"][g];
    expect_near6(q.at("min").get<double>(), r.quantile_edges[g]);
    expect_near6(q.at("max").get<double>(), r.quantile_edges[g + 1]);
    ASSERT_EQ(q.at("examples").size(), r.quantiles[g].size());
    for (size_t i = 0; i < r.quantiles[g].size(); i++) expect_example(q["examples"][i], r.quantiles[g][i], v);
  }
  ASSERT_EQ(j.at("contrast").size(), 1u);
  expect_example(j["contrast"][0], r.contrast[0], v);

  const json& ll = j.at("logit_lens");
  auto expect_scores = [&](const json& a, const std::vector<TokenScore>& want) {
    ASSERT_EQ(a.size(), want.size());
    for (size_t i = 0; i < want.size(); i++) {
      EXPECT_EQ(a[i].at("token").get<int32_t>(), want[i].token);
      const int32_t id = want[i].token;
      EXPECT_EQ(a[i].at("text").get<std::string>(), id >= 0 ? v[size_t(id)] : "[" + std::to_string(id) + "]");
      expect_near6(a[i].at("score").get<double>(), want[i].score);
    }
  };
  expect_scores(ll.at("top"), r.logit_top);
  expect_scores(ll.at("bottom"), r.logit_bottom);
  expect_scores(ll.at("top_corrected"), r.logit_top_corrected);
  expect_scores(ll.at("bottom_corrected"), r.logit_bottom_corrected);

  ASSERT_EQ(j.at("decoder_neighbours").size(), 2u);
  EXPECT_EQ(j["decoder_neighbours"][0].at("latent").get<int64_t>(), 12);
  expect_near6(j["decoder_neighbours"][0].at("cosine").get<double>(), 0.987654321f);
  ASSERT_EQ(j.at("cofire_neighbours").size(), 1u);
  EXPECT_EQ(j["cofire_neighbours"][0].at("latent").get<int64_t>(), 40);
  expect_near6(j["cofire_neighbours"][0].at("jaccard").get<double>(), 0.333333333f);

  EXPECT_EQ(j.at("explanation").get<std::string>(), *r.explanation);
  expect_near6(j.at("score").get<double>(), *r.score);
}

TEST(LatentJson, NumbersAreWrittenWithSixSignificantDigits) {
  const std::string line = latent_to_json(full_report(), vocab()).dump();
  EXPECT_NE(line.find("\"max_activation\":3.14159"), std::string::npos) << line.substr(0, 400);
  EXPECT_EQ(line.find("3.1415927"), std::string::npos);
  EXPECT_NE(line.find("0.00123457"), std::string::npos);  // 0.001234567f
  EXPECT_NE(line.find("1e-07"), std::string::npos);       // 1e-7f, not 1.0000000116860974e-07
  EXPECT_NE(line.find("\"score\":0.751235"), std::string::npos);
}

TEST(LatentJson, OptionalFieldsOnlyWhenPresent) {
  LatentReport r = full_report();
  r.explanation.reset();
  r.score.reset();
  r.has_logit_lens = false;
  const json j = latent_to_json(r, vocab());
  EXPECT_FALSE(j.contains("explanation"));
  EXPECT_FALSE(j.contains("score"));
  EXPECT_FALSE(j.contains("logit_lens"));
  for (const char* k : {"latent", "fires", "rows", "density", "max_activation", "mean_activation", "histogram", "top",
                        "quantiles", "contrast", "decoder_neighbours", "cofire_neighbours"})
    EXPECT_TRUE(j.contains(k)) << k;
}

TEST(LatentJson, UnknownTokenIdsShowTheIdInBrackets) {
  LatentReport r;
  r.top = {example(0, 0, 0, {-1, 12, 1000000, 0}, {1, 0, 0, 0})};
  const json j = latent_to_json(r, vocab());
  EXPECT_EQ(j["top"][0]["text"], json({"[-1]", "[12]", "[1000000]", "<s>"}));
  EXPECT_EQ(j["top"][0]["tokens"], json({-1, 12, 1000000, 0}));
  // An empty table: every token is unknown.
  const json k = latent_to_json(r, {});
  EXPECT_EQ(k["top"][0]["text"][3], "[0]");
}

TEST(LatentJson, StringsAreEscapedAndValidUtf8) {
  const std::string line = latent_to_json(full_report(), vocab()).dump();
  // JSON escaping: the quote and backslash token, the newline token, the explanation's newline.
  EXPECT_NE(line.find(R"("a\"b\\c")"), std::string::npos);
  EXPECT_NE(line.find(R"("\n")"), std::string::npos);
  EXPECT_NE(line.find(R"(\"quotes\"\nand)"), std::string::npos);
  // "<script>" is just a string to JSON; a reader gets it back exactly.
  const json j = json::parse(line);
  EXPECT_EQ(j["top"][0]["text"][2], "<script>");
  // The lone byte 0xE6 (not UTF-8) became U+FFFD; dump() would have thrown otherwise.
  EXPECT_EQ(j["quantiles"][0]["examples"][0]["text"][1], "\xEF\xBF\xBD");
}

TEST(LatentJson, QuantileBoundsFallBackToTheExamples) {
  LatentReport r = full_report();
  r.quantile_edges.clear();
  const json j = latent_to_json(r, vocab());
  expect_near6(j["quantiles"][0]["min"].get<double>(), 0.12345678f);
  expect_near6(j["quantiles"][0]["max"].get<double>(), 0.12345678f);
  EXPECT_FALSE(j["quantiles"][1].contains("min"));  // no examples, no bounds
  EXPECT_TRUE(j["quantiles"][1]["examples"].empty());
  expect_near6(j["quantiles"][2]["min"].get<double>(), 1.5);
  expect_near6(j["quantiles"][2]["max"].get<double>(), 1.75);
}

TEST(LatentJson, NonFiniteNumbersAreNull) {
  LatentReport r;
  r.mean_activation = std::nan("");
  r.score = INFINITY;
  const json j = json::parse(latent_to_json(r, {}).dump());
  EXPECT_TRUE(j["mean_activation"].is_null());
  EXPECT_TRUE(j["score"].is_null());
}

// append_latent_jsonl (which latent_to_json parses): one line of valid JSON appended to what the
// buffer holds, for every kind of report.
TEST(LatentJson, TheLineIsAppendedWholeAndValid) {
  std::vector<LatentReport> cases;
  cases.push_back(full_report());
  LatentReport bare = full_report();
  bare.explanation.reset();
  bare.score.reset();
  bare.has_logit_lens = false;
  bare.quantile_edges.clear();
  cases.push_back(bare);
  cases.push_back(LatentReport{});  // never fired, nothing mined
  LatentReport odd;
  odd.latent = 16383;
  odd.mean_activation = std::nan("");
  odd.score = -INFINITY;
  odd.explanation = std::string("bad byte \xFF and a tab\t and \x01 and \xE2\x80\xA8");
  odd.top = {example(1, 2, 0, {-5, 6, 2, 1000}, {-1.5f, 1e-30f, 3e30f, 0})};
  cases.push_back(odd);
  const auto v = vocab();
  for (size_t i = 0; i < cases.size(); i++) {
    std::string out = "previous line\n";
    append_latent_jsonl(out, cases[i], v);
    ASSERT_EQ(out.compare(0, 14, "previous line\n"), 0);
    const std::string line = out.substr(14);
    ASSERT_FALSE(line.empty());
    EXPECT_EQ(line.back(), '\n');
    EXPECT_EQ(line.find('\n'), line.size() - 1) << "case " << i;
    EXPECT_TRUE(json::accept(line)) << "case " << i << ": " << line;
  }
}

TEST(SummaryJson, HoldsEveryField) {
  ExplainSummary s;
  s.sae = "runs/sae";
  s.model = "stories260K";
  s.hook = "blocks.2.hook_resid_post";
  s.architecture = "topk";
  s.d_sae = 128;
  s.d_in = 64;
  s.rows = 50000;
  s.documents = 150;
  s.latents_reported = 128;
  s.dead = 3;
  s.density_edges = {-5, -4, -3, -2, -1, 0};
  s.density_counts = {1, 10, 50, 60, 4};
  s.cofire_rows = 40000;
  s.options = {{"top", 20}, {"seed", 0}};
  const json j = json::parse(summary_to_json(s).dump());
  EXPECT_EQ(j["sae"], "runs/sae");
  EXPECT_EQ(j["model"], "stories260K");
  EXPECT_EQ(j["hook"], "blocks.2.hook_resid_post");
  EXPECT_EQ(j["architecture"], "topk");
  EXPECT_EQ(j["d_sae"], 128);
  EXPECT_EQ(j["d_in"], 64);
  EXPECT_EQ(j["rows"], 50000);
  EXPECT_EQ(j["documents"], 150);
  EXPECT_EQ(j["latents_reported"], 128);
  EXPECT_EQ(j["dead"], 3);
  EXPECT_EQ(j["density_histogram"]["log10_edges"], json({-5, -4, -3, -2, -1, 0}));
  EXPECT_EQ(j["density_histogram"]["counts"], json({1, 10, 50, 60, 4}));
  EXPECT_EQ(j["cofire_rows"], 40000);
  EXPECT_EQ(j["options"]["top"], 20);
}
