// Automated interpretability (lib/explain/autointerp.h): the built-in prompts equal their files,
// explanation and answer parsing, the split into explanation and held-out scoring contexts (disjoint
// by row), the metrics, the aggregates, and the whole chain against the test server's autointerp
// mode (tests/support/mock_llm_server.h) on mined rows where some latents fire exactly on one known
// token: those score 1, random latents score near chance, and a re-run from the cache sends nothing.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <set>

#include "base/errors.h"
#include "base/cli.h"
#include "base/files.h"
#include "explain/autointerp.h"
#include "explain/miner.h"
#include "support/mock_llm_server.h"

using namespace sae;
using sae::test::MockLlmOptions;
using sae::test::MockLlmServer;

namespace {

#ifdef SAE_HAVE_CURL
#define NEED_CURL()
#else
#define NEED_CURL() GTEST_SKIP() << "built without libcurl"
#endif

ContextExample ex(int64_t row, float act, std::vector<int32_t> tokens = {1, 2, 3}, std::vector<float> acts = {}) {
  ContextExample e;
  e.row = row;
  e.activation = act;
  e.tokens = std::move(tokens);
  e.peak = int32_t(e.tokens.size() / 2);
  e.acts = acts.empty() ? std::vector<float>(e.tokens.size(), 0) : acts;
  if (acts.empty() && act > 0) e.acts[size_t(e.peak)] = act;
  return e;
}

std::set<int64_t> rows_of(const std::vector<ContextExample>& v) {
  std::set<int64_t> s;
  for (const auto& e : v) s.insert(e.row);
  return s;
}

}  // namespace

TEST(Autointerp, BuiltInPromptsEqualTheirFiles) {
  for (const char* name : {"explain", "detection", "fuzzing", "simulation"}) {
    const std::string path = std::string(SAE_SOURCE_DIR) + "/lib/explain/prompts/" + name + ".txt";
    EXPECT_EQ(default_prompt_text(name), read_file(path)) << path << " and the built-in prompt (embedded by cmake/embed-prompts.cmake) differ";
    const PromptTemplate t = parse_prompt(default_prompt_text(name));
    EXPECT_FALSE(t.system.empty()) << name;
    EXPECT_NE(t.user.find("{{examples}}"), std::string::npos) << name;
  }
}

TEST(Autointerp, PromptDirReplacesSomeTemplates) {
  TempDir d;
  cli::write_file_atomic(d / "detection.txt", "SYSTEM\n----\n# Detection\n{{explanation}} {{count}}\n{{examples}}\n");
  const PromptTemplates p = load_prompts(d.path());
  EXPECT_EQ(p.detection.system, "SYSTEM");
  EXPECT_EQ(p.detection.user, "# Detection\n{{explanation}} {{count}}\n{{examples}}");
  EXPECT_EQ(p.explain.user, parse_prompt(default_prompt_text("explain")).user);
  TempDir empty;
  EXPECT_THROW(load_prompts(empty.path()), InputError);
  EXPECT_THROW(load_prompts(d / "nope"), InputError);
  EXPECT_EQ(parse_prompt("only user").user, "only user");
}

TEST(Autointerp, ParsesTheLastExplanationLine) {
  auto ok = [](const std::string& a) {
    const ParsedExplanation p = parse_explanation(a);
    EXPECT_TRUE(p.ok) << a << ": " << p.failure;
    return p.text;
  };
  EXPECT_EQ(ok("Explanation: first\nthinking...\nExplanation: the word \"cat\""), "the word \"cat\"");
  EXPECT_EQ(ok("**Explanation:** plural nouns."), "plural nouns");
  EXPECT_EQ(ok("Reasoning here.\nExplanation:\n\n  dates in the past\n"), "dates in the past");
  EXPECT_EQ(ok("\"closing brackets\""), "closing brackets");  // one short line, no label
  auto fails = [](const std::string& a) {
    const ParsedExplanation p = parse_explanation(a);
    EXPECT_FALSE(p.ok) << a;
    return p.failure;
  };
  EXPECT_EQ(fails(""), "empty answer");
  EXPECT_EQ(fails("  \n "), "empty answer");
  EXPECT_EQ(fails("I'm sorry, but I cannot help with that."), "refused");
  EXPECT_EQ(fails("Explanation: <<the>> and <<a>>"), "echoed the prompt's <<markers>>");
  EXPECT_EQ(fails("Explanation: <a short explanation>"), "echoed the prompt's placeholder");
  EXPECT_EQ(fails("line one\nline two\nno label anywhere"), "no \"Explanation:\" line");
}

TEST(Autointerp, ParsesTheLastAnswerList) {
  EXPECT_EQ(parse_answer_list("I thought [0, 1]\nAnswer: [1, 0, 1]", 3, 0, 1), (std::vector<int>{1, 0, 1}));
  EXPECT_EQ(parse_answer_list("Answer: [\"1\", '0']", 2, 0, 1), (std::vector<int>{1, 0}));
  EXPECT_TRUE(parse_answer_list("Answer: [1, 0]", 3, 0, 1).empty());   // wrong length
  EXPECT_TRUE(parse_answer_list("Answer: [1, 2]", 2, 0, 1).empty());   // out of range
  EXPECT_TRUE(parse_answer_list("Answer: [1, x]", 2, 0, 1).empty());
  EXPECT_TRUE(parse_answer_list("no list", 1, 0, 1).empty());
  EXPECT_EQ(parse_answer_list("[10, 0, 7]", 3, 0, 10), (std::vector<int>{10, 0, 7}));
}

TEST(Autointerp, LabelProbabilitiesFromLogprobs) {
  std::vector<llm::TokenLogprob> lp;
  auto tok = [&](const std::string& t, double l, std::vector<std::pair<std::string, double>> top) {
    lp.push_back({t, l, std::move(top)});
  };
  tok("Answer", -0.1, {});
  tok(":", -0.1, {});
  tok(" [", -0.1, {});
  tok("1", std::log(0.8), {{"0", std::log(0.2)}});
  tok(",", -0.1, {});
  tok(" 0", std::log(0.6), {{" 1", std::log(0.3)}, {"0", std::log(0.1)}});
  tok("]", -0.1, {});
  const std::vector<double> p = label_probabilities(lp, 2);
  ASSERT_EQ(p.size(), 2u);
  EXPECT_NEAR(p[0], 0.8, 1e-9);
  EXPECT_NEAR(p[1], 0.3 / 1.0, 1e-9);
  EXPECT_TRUE(label_probabilities(lp, 3).empty());
}

TEST(Autointerp, MarksAndRendering) {
  ContextExample e = ex(5, 2, {0, 1, 2, 3}, {0, 2, 1.5f, 0.1f});
  e.peak = 1;
  const std::vector<char> all = activation_marks(e, 0, 2);
  EXPECT_EQ(render_context(e, {"a", "b", "c", "d\n"}, all), "a<<bcd\\n>>");
  EXPECT_EQ(render_context(e, {"a", "b", "c", "d"}, activation_marks(e, 0.5, 2)), "a<<bc>>d");
  EXPECT_EQ(render_context(e, {}, {}), "[0][1][2][3]");
}

TEST(Autointerp, SplitIsDisjointByRowAndDeterministic) {
  LatentReport r;
  r.latent = 3;
  for (int i = 0; i < 10; i++) r.top.push_back(ex(100 + i, 10 - i * 0.1f));
  r.quantiles.resize(4);
  int64_t row = 0;
  for (int g = 0; g < 4; g++)
    for (int i = 0; i < 6; i++) r.quantiles[size_t(g)].push_back(ex(row++, float(g + 1)));
  r.quantiles[3][0].row = 100;  // a top row sampled into a quantile group too
  r.quantiles[3][1].row = 101;
  for (int i = 0; i < 5; i++) r.contrast.push_back(ex(1000 + i, 0));
  const ExampleSplit s = split_examples(r, 7);
  const std::set<int64_t> e = rows_of(s.explain), a = rows_of(s.activating), n = rows_of(s.non_activating);
  EXPECT_EQ(e.size(), s.explain.size());  // no row twice
  for (int64_t x : a) EXPECT_FALSE(e.count(x)) << x;
  for (int64_t x : n) EXPECT_FALSE(e.count(x) || a.count(x)) << x;
  EXPECT_EQ(n.size(), 5u);
  // The top contexts explain; 3 of each group's 6 explain, the other 3 are held out.
  for (int i = 0; i < 10; i++) EXPECT_TRUE(e.count(100 + i));
  EXPECT_GE(s.activating.size(), 10u);
  EXPECT_LE(s.activating.size(), 12u);
  for (int g = 0; g < 4; g++) {
    int held = 0;
    for (const auto& x : r.quantiles[size_t(g)]) held += a.count(x.row);
    EXPECT_GE(held, 1) << "group " << g;  // every group is scored
  }
  const ExampleSplit again = split_examples(r, 7), other = split_examples(r, 8);
  EXPECT_EQ(rows_of(again.activating), a);
  EXPECT_EQ(rows_of(again.explain), e);
  (void)other;
}

TEST(Autointerp, Metrics) {
  const BinaryMetrics m = binary_metrics({1, 1, 1, 0, 0, 0, 0, 0}, {1, 1, 0, 1, 0, 0, 0, 0}, {0.9, 0.8, 0.3, 0.7, 0.1, 0.2, 0.2, 0.4});
  EXPECT_DOUBLE_EQ(m.accuracy, 6.0 / 8);
  EXPECT_DOUBLE_EQ(m.balanced_accuracy, (2.0 / 3 + 4.0 / 5) / 2);
  EXPECT_DOUBLE_EQ(m.f1, 4.0 / 6);
  ASSERT_TRUE(m.auc.has_value());
  // Pairs (pos, neg) ranked right: 0.9 and 0.8 beat all 5; 0.3 beats 0.1, 0.2, 0.2 -> 13 of 15.
  EXPECT_DOUBLE_EQ(*m.auc, 13.0 / 15);
  EXPECT_DOUBLE_EQ(binary_metrics({1, 1}, {1, 0}, {}).balanced_accuracy, 0.5);  // one class: its recall
  EXPECT_FALSE(binary_metrics({1, 1}, {1, 0}, {0.5, 0.5}).auc.has_value());
  EXPECT_DOUBLE_EQ(roc_auc({1, 0, 1, 0}, {0.5, 0.5, 0.5, 0.5}), 0.5);
  EXPECT_DOUBLE_EQ(spearman({1, 2, 3, 4}, {10, 20, 30, 40}), 1);
  EXPECT_DOUBLE_EQ(spearman({1, 2, 3, 4}, {4, 3, 2, 1}), -1);
  EXPECT_TRUE(std::isnan(spearman({1, 2, 3}, {5, 5, 5})));
  EXPECT_NEAR(spearman({0, 0, 10, 10}, {0, 1, 9, 10}), 0.894427, 1e-6);
}

TEST(Autointerp, AggregatesUniformWeightedDeciles) {
  std::vector<double> s;
  std::vector<int64_t> f;
  for (int i = 0; i < 100; i++) {
    s.push_back(i < 50 ? 0.5 : 1.0);
    f.push_back(i < 50 ? 1 : 99);
  }
  s.push_back(std::nan(""));  // a latent without a score is left out
  f.push_back(1000000);
  const Aggregate a = aggregate_scores("detection", "balanced_accuracy", s, f, 1, 500);
  EXPECT_EQ(a.latents, 100);
  EXPECT_DOUBLE_EQ(a.uniform, 0.75);
  EXPECT_DOUBLE_EQ(a.weighted, (50 * 0.5 + 50 * 99 * 1.0) / (50 + 50 * 99));
  EXPECT_LT(a.uniform_lo, a.uniform);
  EXPECT_GT(a.uniform_hi, a.uniform);
  EXPECT_LE(a.weighted_lo, a.weighted);
  EXPECT_GE(a.weighted_hi, a.weighted);
  ASSERT_EQ(a.deciles.size(), 10u);
  EXPECT_DOUBLE_EQ(a.deciles.front().mean, 0.5);
  EXPECT_DOUBLE_EQ(a.deciles.back().mean, 1.0);
  EXPECT_EQ(a.deciles.back().fires_hi, 99);
  const std::string t = aggregate_table({a});
  EXPECT_NE(t.find("uniform mean [95% CI]"), std::string::npos) << t;
  EXPECT_NE(t.find("weighted by firing [95% CI]"), std::string::npos) << t;
  EXPECT_NE(t.find("0.750 ["), std::string::npos) << t;
  EXPECT_EQ(parse_score_methods("detection, simulation"), (std::vector<std::string>{"detection", "simulation"}));
  EXPECT_EQ(parse_score_methods("all").size(), 3u);
  EXPECT_THROW(parse_score_methods("detect"), UsageError);
}

namespace {

// Rows in documents of 64 tokens over a vocabulary of 300: latents 0-3 fire (at 1.0) exactly on
// tokens 7, 8, 9, 10 (each about 5% of tokens); latents 4-19 fire at random (3% of rows, values
// in [0.1, 2]).
std::unique_ptr<LatentMiner> mine_known(int64_t rows) {
  const int64_t d = 20;
  std::vector<int64_t> latents;
  for (int64_t i = 0; i < d; i++) latents.push_back(i);
  MinerOptions mo;
  mo.contrast = 20;
  auto m = std::make_unique<LatentMiner>(d, latents, mo);
  std::mt19937 g(11);
  std::vector<uint32_t> count, index;
  std::vector<float> value;
  std::vector<int32_t> token;
  std::vector<int64_t> doc;
  for (int64_t r = 0; r < rows; r++) {
    const int32_t t = std::uniform_real_distribution<double>(0, 1)(g) < 0.2 ? int32_t(7 + g() % 4) : int32_t(g() % 300);
    token.push_back(t);
    doc.push_back(r / 64);
    uint32_t c = 0;
    if (t >= 7 && t <= 10) {
      index.push_back(uint32_t(t - 7));
      value.push_back(1.0f);
      c++;
    }
    for (uint32_t l = 4; l < d; l++)
      if (std::uniform_real_distribution<double>(0, 1)(g) < 0.03) {
        index.push_back(l);
        value.push_back(float(std::uniform_real_distribution<double>(0.1, 2)(g)));
        c++;
      }
    count.push_back(c);
  }
  m->add(rows, count.data(), index.data(), value.data(), token.data(), doc.data());
  m->finish();
  return m;
}

}  // namespace

TEST(Autointerp, KnownTokenLatentsScoreOneRandomOnesChanceAndTheCacheAnswersARerun) {
  NEED_CURL();
  const auto mp = mine_known(20000);
  const LatentMiner& m = *mp;
  MockLlmOptions so;
  so.mode = "autointerp";
  MockLlmServer server(so);
  TempDir cache;
  llm::Options lo;
  lo.url = server.url();
  lo.model = "mock";
  lo.parallel = 8;
  lo.cache_dir = cache / "llm";
  AutointerpOptions o;
  o.explain = true;
  o.methods = {"detection", "fuzzing", "simulation"};
  o.chunk = 7;  // several chunks: the pipelining of explanations and scoring is exercised
  const size_t n = m.latents().size();
  const AutointerpRun run = run_autointerp(n, [&](size_t k) { return m.report(k); }, o, lo, {});
  ASSERT_EQ(run.results.size(), n);
  EXPECT_EQ(run.explained, int64_t(n));
  for (size_t k = 0; k < 4; k++) {
    const AutointerpResult& r = run.results[k];
    ASSERT_TRUE(r.explanation) << k << ": " << r.failure;
    EXPECT_EQ(*r.explanation, "the token \"[" + std::to_string(7 + k) + "]\"");
    ASSERT_EQ(r.scores.size(), 3u);
    EXPECT_EQ(r.scores[0].metric("balanced_accuracy"), 1.0) << k;
    EXPECT_EQ(r.scores[0].metric("auc"), 1.0) << k;
    EXPECT_EQ(r.scores[1].metric("balanced_accuracy"), 1.0) << k;
    EXPECT_EQ(r.scores[2].metric("spearman"), 1.0) << k;
    EXPECT_GE(r.scores[0].n, 30) << k;
    EXPECT_EQ(r.scores[0].failed, 0) << k;
  }
  double det = 0, sim = 0, fuzz = 0;
  for (size_t k = 4; k < n; k++) {
    const AutointerpResult& r = run.results[k];
    ASSERT_EQ(r.scores.size(), 3u) << k << ": " << r.failure;
    det += r.scores[0].metric("balanced_accuracy").value_or(0.5);
    fuzz += r.scores[1].metric("balanced_accuracy").value_or(0.5);
    sim += r.scores[2].metric("spearman").value_or(0);
  }
  det /= double(n - 4);
  fuzz /= double(n - 4);
  sim /= double(n - 4);
  EXPECT_NEAR(det, 0.5, 0.15);
  EXPECT_NEAR(fuzz, 0.5, 0.15);
  EXPECT_NEAR(sim, 0, 0.2);
  ASSERT_EQ(run.aggregates.size(), 3u);
  EXPECT_EQ(run.aggregates[0].latents, int64_t(n));
  // The known-token latents fire more often than the random ones: the weighted mean is higher.
  EXPECT_GT(run.aggregates[0].weighted, run.aggregates[0].uniform);
  const int64_t sent = server.stats().requests;
  EXPECT_EQ(server.stats().max_same, 1);
  EXPECT_GE(sent, int64_t(n) * 4);

  const AutointerpRun again = run_autointerp(n, [&](size_t k) { return m.report(k); }, o, lo, {});
  EXPECT_EQ(server.stats().requests, sent);
  for (size_t k = 0; k < n; k++) {
    EXPECT_EQ(again.results[k].explanation, run.results[k].explanation);
    EXPECT_EQ(again.results[k].scores[0].metrics, run.results[k].scores[0].metrics);
  }
}

TEST(Autointerp, ADownEndpointFailsWithOneLineNamingTheCache) {
  NEED_CURL();
  int port;
  {
    MockLlmServer s(MockLlmOptions{});
    port = s.port();
  }
  const auto mp = mine_known(3000);
  const LatentMiner& m = *mp;
  llm::Options lo;
  lo.url = "http://127.0.0.1:" + std::to_string(port) + "/v1";
  lo.model = "mock";
  lo.retries = 0;
  TempDir tmp;
  lo.cache_dir = tmp / "cache";
  AutointerpOptions o;
  o.explain = true;
  try {
    run_autointerp(2, [&](size_t k) { return m.report(k); }, o, lo, {});
    FAIL() << "no error";
  } catch (const InputError& e) {
    const std::string s = e.what();
    EXPECT_NE(s.find("cannot connect"), std::string::npos) << s;
    EXPECT_NE(s.find("kept in " + tmp / "cache"), std::string::npos) << s;
    EXPECT_EQ(s.find('\n'), std::string::npos) << s;
  }
}

TEST(Autointerp, ADryRunWritesEveryChunksPromptsAndSendsNothing) {
  NEED_CURL();
  const auto mp = mine_known(3000);
  const LatentMiner& m = *mp;
  MockLlmServer server(MockLlmOptions{});
  TempDir tmp;
  llm::Options lo;
  lo.url = server.url();
  lo.model = "mock";
  lo.parallel = 1;
  lo.dry_run = true;
  lo.cache_dir = tmp / "cache";
  AutointerpOptions o;
  o.explain = true;
  o.methods = {"detection"};
  o.chunk = 2;  // 4 latents a chunk (4 x parallel): 8 latents are two chunks, two batches
  const AutointerpRun run = run_autointerp(8, [&](size_t k) { return m.report(k); }, o, lo, {});
  EXPECT_EQ(server.stats().requests, 0);
  EXPECT_EQ(run.dry_run_requests, 8);
  const std::string lines = read_file(tmp / "cache/dry-run.jsonl");
  EXPECT_EQ(std::count(lines.begin(), lines.end(), '\n'), 8);
  EXPECT_NE(lines.find("# Explain a latent"), std::string::npos);
  for (const AutointerpResult& r : run.results) EXPECT_EQ(r.failure, "not sent");
}
