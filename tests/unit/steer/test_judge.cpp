// sae-steer's LLM judge (steer/judge.h): reading ratings out of free-form answers, the harmonic
// mean, and a batch against the test server's judge rules (support/mock_llm_server.h), whose
// ratings the test predicts from the texts.
#include <gtest/gtest.h>

#include <cmath>

#include "base/errors.h"
#include "steer/judge.h"
#include "support/mock_llm_server.h"

using namespace sae;

TEST(Judge, ParsesRatingsRobustly) {
  EXPECT_EQ(parse_rating("Rating: [[2]]"), 2);
  EXPECT_EQ(parse_rating("The text mentions dragons twice.\nRating: [[1]]\n"), 1);
  EXPECT_EQ(parse_rating("On a scale of [[0]] to [[2]] I give it.\nRating: [[1]]"), 1);
  EXPECT_EQ(parse_rating("Rating: [[1]]. A [[2]] would need more of the concept."), 1);  // "Rating:" first
  EXPECT_EQ(parse_rating("I would say [[2]]."), 2);
  EXPECT_EQ(parse_rating("**Rating:** [[0]]"), 0);
  EXPECT_EQ(parse_rating("rating: 2"), 2);
  EXPECT_EQ(parse_rating("Rating: **2**"), 2);
  EXPECT_EQ(parse_rating("Rating: [[ 1 ]]"), 1);
  EXPECT_EQ(parse_rating("Rating: [[1.5]]"), 1.5);
  EXPECT_TRUE(std::isnan(parse_rating("")));
  EXPECT_TRUE(std::isnan(parse_rating("I cannot rate this text.")));
  EXPECT_TRUE(std::isnan(parse_rating("Rating: [[5]]")));  // out of range
  EXPECT_TRUE(std::isnan(parse_rating("Rating: [[N]]")));
}

TEST(Judge, HarmonicMean) {
  EXPECT_EQ(harmonic_mean(2, 2, 2), 2);
  EXPECT_DOUBLE_EQ(harmonic_mean(1, 2, 2), 1.5);
  EXPECT_EQ(harmonic_mean(0, 2, 2), 0);
  EXPECT_TRUE(std::isnan(harmonic_mean(2, NAN, 2)));
}

TEST(Judge, AnUnparsableAnswerIsRecordedNotThrown) {
  const JudgeRatings r = ratings_from_answers("Rating: [[2]]", "Rating: [[1]]", "As an AI, I prefer not to.");
  EXPECT_EQ(r.concept, 2);
  EXPECT_EQ(r.instruction, 1);
  EXPECT_TRUE(std::isnan(r.fluency));
  EXPECT_TRUE(std::isnan(r.harmonic));
  ASSERT_EQ(r.failed.size(), 1u);
  EXPECT_EQ(r.failed[0], "fluency: 'As an AI, I prefer not to.'");
}

TEST(Judge, PromptsHoldTheirParts) {
  const auto rs = judge_requests("dragons", "Once upon a time", "a dragon {concept} flew");
  ASSERT_EQ(rs.size(), 3u);
  const std::string& c = rs[0].messages.at(0).content;
  EXPECT_NE(c.find("Concept: dragons\n"), std::string::npos);
  EXPECT_NE(c.find("<text>\na dragon {concept} flew\n</text>"), std::string::npos);  // the text is not expanded
  EXPECT_NE(rs[1].messages.at(0).content.find("<instruction>\nOnce upon a time\n</instruction>"), std::string::npos);
  EXPECT_EQ(rs[2].messages.at(0).content.find("dragons"), std::string::npos);  // fluency knows no concept
  for (const auto& r : rs) EXPECT_EQ(r.temperature, 0);
}

#ifdef SAE_HAVE_CURL
namespace {
llm::Options options(const test::MockLlmServer& s) {
  llm::Options o;
  o.url = s.url();
  o.model = "judge";
  o.parallel = 6;
  o.retries = 0;
  return o;
}
}  // namespace

TEST(Judge, RatesABatchAsTheServersRulesSay) {
  test::MockLlmOptions so;
  so.mode = "judge";
  so.delay_ms = 100;
  test::MockLlmServer server(so);
  llm::Client client(options(server));
  const std::vector<JudgeItem> items = {
      {"Once upon a time", "a Dragon flew over the hill. Once more"},  // concept 2, instruction 2, fluency 2
      {"Once upon a time", "the cat sat"},                             // 0, 1, 1
      {"The dragon", "   "},                                           // 0, 0, 0
      {"Lily went", "dragons everywhere"},                             // 2, 1, 1
  };
  const auto r = judge_all(client, "dragon", items);
  ASSERT_EQ(r.size(), 4u);
  const double want[4][4] = {{2, 2, 2, 2}, {0, 1, 1, 0}, {0, 0, 0, 0}, {2, 1, 1, 3.0 / 2.5}};
  for (size_t i = 0; i < 4; i++) {
    EXPECT_TRUE(r[i].failed.empty());
    EXPECT_EQ(r[i].concept, want[i][0]) << i;
    EXPECT_EQ(r[i].instruction, want[i][1]) << i;
    EXPECT_EQ(r[i].fluency, want[i][2]) << i;
    EXPECT_DOUBLE_EQ(r[i].harmonic, want[i][3]) << i;
  }
  EXPECT_EQ(server.stats().requests, 12);
  EXPECT_EQ(server.stats().max_in_flight, 6);  // all continuations' requests went out together
  EXPECT_EQ(server.stats().max_same, 1);
}

TEST(Judge, AnswersWithoutARatingAreFailedRatings) {
  test::register_mock_mode("judge-refuses", [](const nlohmann::json&) { return std::string("I'd rather not say."); });
  test::MockLlmOptions so;
  so.mode = "judge-refuses";
  test::MockLlmServer server(so);
  llm::Client client(options(server));
  const auto r = judge_all(client, "dragon", {{"Once", "upon"}});
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].failed.size(), 3u);
  EXPECT_TRUE(std::isnan(r[0].harmonic));
}

TEST(Judge, AFailedRequestIsAnInputError) {
  test::MockLlmOptions so;
  so.mode = "judge";
  so.fail = "no-choices";
  test::MockLlmServer server(so);
  llm::Client client(options(server));
  try {
    judge_all(client, "dragon", {{"Once", "upon"}});
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()), "judge: " + server.url() + "/chat/completions: the response has no choices");
  }
}
#endif
