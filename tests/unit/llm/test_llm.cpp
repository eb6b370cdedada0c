// The OpenAI-compatible client (llm/llm.h) against the test server (support/mock_llm_server.h), run
// in-process on a port of its own: answers, parallelism, every error path with its message, retries
// with Retry-After, the budget, the cache, the dry run, and the key kept out of every message.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <cstdlib>
#include <set>

#include "base/errors.h"
#include "base/files.h"
#include "llm/llm.h"
#include "support/mock_llm_server.h"

using namespace sae;
using sae::test::MockLlmOptions;
using sae::test::MockLlmServer;

namespace {

constexpr const char* kKeyVar = "SAE_TEST_LLM_KEY";
constexpr const char* kSecret = "sk-test-DO-NOT-PRINT-4f2a9c";

llm::Options options(const MockLlmServer& s) {
  llm::Options o;
  o.url = s.url();
  o.model = "mock-model";
  o.key_env = kKeyVar;
  o.parallel = 4;
  o.timeout = 10;
  o.retries = 2;
  o.backoff = 0.01;
  return o;
}

llm::Request ask(const std::string& text) {
  llm::Request r;
  r.messages = {{"system", "You are a test."}, {"user", text}};
  return r;
}

std::vector<llm::Request> asks(int n) {
  std::vector<llm::Request> v;
  for (int i = 0; i < n; i++) v.push_back(ask("question number " + std::to_string(i)));
  return v;
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// A port nothing listens on: one the system gave a server that is gone.
int dead_port() {
  MockLlmServer s(MockLlmOptions{});
  const int p = s.port();
  s.stop();
  return p;
}

#ifdef SAE_HAVE_CURL
#define NEED_CURL()
#else
#define NEED_CURL() GTEST_SKIP() << "built without libcurl"
#endif

// The one error of a single failed request.
std::string error_of(const llm::Options& o) {
  llm::Client c(o);
  const llm::Response r = c.complete(ask("hello"));
  EXPECT_FALSE(r.ok);
  return r.error;
}

}  // namespace

TEST(Llm, WithoutCurlTheClientRefusesClearly) {
#ifdef SAE_HAVE_CURL
  GTEST_SKIP() << "this build has libcurl";
#else
  llm::Options o;
  o.url = "http://127.0.0.1:1/v1";
  o.model = "m";
  try {
    llm::Client c(o);
    FAIL() << "no error";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("built without libcurl"), std::string::npos) << e.what();
  }
#endif
}

TEST(Llm, AnswersInOrderWithUsage) {
  NEED_CURL();
  MockLlmServer server({});
  llm::Client c(options(server));
  const auto reqs = asks(10);
  std::set<size_t> seen;
  const auto rs = c.run(reqs, [&](size_t i, const llm::Response& r) {
    EXPECT_TRUE(r.ok);
    EXPECT_TRUE(seen.insert(i).second) << "index " << i << " reported twice";
  });
  ASSERT_EQ(rs.size(), 10u);
  EXPECT_EQ(seen.size(), 10u);
  int64_t prompt = 0, completion = 0;
  for (size_t i = 0; i < rs.size(); i++) {
    ASSERT_TRUE(rs[i].ok) << rs[i].error;
    EXPECT_EQ(rs[i].text, "echo: question number " + std::to_string(i));
    EXPECT_EQ(rs[i].finish_reason, "stop");
    // the server counts words: "You are a test. question number i" is 7, "echo: question number i" 4
    EXPECT_EQ(rs[i].usage.prompt_tokens, 7);
    EXPECT_EQ(rs[i].usage.completion_tokens, 4);
    EXPECT_FALSE(rs[i].cached);
    prompt += rs[i].usage.prompt_tokens;
    completion += rs[i].usage.completion_tokens;
  }
  EXPECT_EQ(c.stats().usage.prompt_tokens, prompt);
  EXPECT_EQ(c.stats().usage.completion_tokens, completion);
  EXPECT_EQ(c.stats().requests, 10);
  EXPECT_EQ(server.stats().requests, 10);
  EXPECT_EQ(server.stats().max_same, 1) << "a request was sent twice";
  EXPECT_NE(c.usage_report().find("10 requests sent"), std::string::npos) << c.usage_report();
  EXPECT_NE(c.usage_report().find("70 prompt + 40 completion tokens"), std::string::npos) << c.usage_report();
}

TEST(Llm, Logprobs) {
  NEED_CURL();
  MockLlmServer server({});
  llm::Client c(options(server));
  llm::Request r = ask("two words");
  r.top_logprobs = 2;
  const auto a = c.complete(r);
  ASSERT_TRUE(a.ok) << a.error;
  ASSERT_EQ(a.logprobs.size(), 3u);  // "echo:", "two", "words"
  EXPECT_EQ(a.logprobs[1].token, "two");
  EXPECT_NEAR(a.logprobs[1].logprob, -0.2, 1e-12);
  ASSERT_EQ(a.logprobs[1].top.size(), 2u);
  EXPECT_EQ(a.logprobs[1].top[1].first, "two~1");
}

TEST(Llm, KeepsParallelRequestsInFlight) {
  NEED_CURL();
  MockLlmOptions so;
  so.delay_ms = 400;
  MockLlmServer server(so);
  llm::Options o = options(server);
  o.parallel = 4;
  llm::Client c(o);
  const auto t0 = std::chrono::steady_clock::now();
  const auto rs = c.run(asks(12));
  const double wall = seconds_since(t0);
  for (const auto& r : rs) ASSERT_TRUE(r.ok) << r.error;
  // 12 requests, 4 at a time, 0.4 s each: 1.2 s; one at a time would take 4.8 s.
  EXPECT_GE(wall, 1.15);
  EXPECT_LT(wall, 2.4);
  EXPECT_EQ(server.stats().max_in_flight, 4);
  EXPECT_EQ(c.stats().max_in_flight, 4);
  EXPECT_EQ(server.stats().max_same, 1);
}

TEST(Llm, ConnectionRefused) {
  NEED_CURL();
  llm::Options o;
  o.url = "http://127.0.0.1:" + std::to_string(dead_port()) + "/v1";
  o.model = "m";
  o.retries = 1;
  o.backoff = 0.01;
  const std::string e = error_of(o);
  EXPECT_EQ(e.rfind(o.url + "/chat/completions: cannot connect (", 0), 0u) << e;
  EXPECT_NE(e.find("is the server running? (after 2 tries)"), std::string::npos) << e;
}

TEST(Llm, Unauthorized401NamesTheVariableNeverTheKey) {
  NEED_CURL();
  ::setenv(kKeyVar, kSecret, 1);
  MockLlmOptions so;
  so.key = "the-right-key";  // the server echoes the wrong key it got
  MockLlmServer server(so);
  llm::Options o = options(server);
  const std::string e = error_of(o);
  EXPECT_EQ(e, server.url() + "/chat/completions: HTTP 401, the key was refused: check the key in $" +
                   std::string(kKeyVar) + " (--llm-key-env names the variable)");
  EXPECT_EQ(e.find(kSecret), std::string::npos);
  EXPECT_EQ(server.stats().requests, 1) << "a 401 is not retried";
  ::unsetenv(kKeyVar);
  EXPECT_EQ(error_of(o), server.url() + "/chat/completions: HTTP 401, the key was refused: $" + std::string(kKeyVar) +
                             " is not set (--llm-key-env names the variable)");
}

TEST(Llm, TheKeyIsSentAndNeverStored) {
  NEED_CURL();
  ::setenv(kKeyVar, kSecret, 1);
  MockLlmOptions so;
  so.key = kSecret;
  MockLlmServer server(so);
  TempDir dir;
  llm::Options o = options(server);
  o.cache_dir = dir / "cache";
  llm::Client c(o);
  const auto r = c.complete(ask("with a key"));
  ::unsetenv(kKeyVar);
  ASSERT_TRUE(r.ok) << r.error;
  const std::string key = llm::cache_key(o.model, ask("with a key"));
  const std::string entry = read_file(o.cache_dir + "/" + key.substr(0, 2) + "/" + key + ".json");
  EXPECT_NE(entry.find("with a key"), std::string::npos);
  EXPECT_EQ(entry.find(kSecret), std::string::npos);
  EXPECT_EQ(c.usage_report().find(kSecret), std::string::npos);
}

TEST(Llm, RetriesA429HonouringRetryAfter) {
  NEED_CURL();
  MockLlmOptions so;
  so.fail = "429";
  so.fail_first = 2;
  so.retry_after = 1;
  MockLlmServer server(so);
  llm::Options o = options(server);
  o.retries = 3;
  o.backoff = 0.01;  // without Retry-After the retries would come after 10-20 ms
  llm::Client c(o);
  const auto r = c.complete(ask("patience"));
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.attempts, 3);
  EXPECT_EQ(c.stats().retries, 2);
  const auto st = server.stats();
  ASSERT_EQ(st.requests, 3);
  EXPECT_GE(st.arrivals[1] - st.arrivals[0], 0.95);
  EXPECT_GE(st.arrivals[2] - st.arrivals[1], 0.95);
}

TEST(Llm, A429AfterTheRetriesAreSpent) {
  NEED_CURL();
  MockLlmOptions so;
  so.fail = "429";
  so.retry_after = 0;
  MockLlmServer server(so);
  llm::Options o = options(server);
  o.retries = 2;
  EXPECT_EQ(error_of(o), server.url() + "/chat/completions: HTTP 429, rate limited (after 3 tries); lower "
                                        "--llm-parallel or raise --llm-retries");
  EXPECT_EQ(server.stats().requests, 3);
}

TEST(Llm, ServerError500) {
  NEED_CURL();
  MockLlmOptions so;
  so.fail = "500";
  MockLlmServer server(so);
  llm::Options o = options(server);
  o.retries = 1;
  EXPECT_EQ(error_of(o), server.url() + "/chat/completions: HTTP 500 (server error: mock internal error) (after 2 tries)");
  EXPECT_EQ(server.stats().requests, 2);
}

TEST(Llm, A500ThenSuccessIsRetried) {
  NEED_CURL();
  MockLlmOptions so;
  so.fail = "500";
  so.fail_first = 1;
  MockLlmServer server(so);
  llm::Client c(options(server));
  const auto r = c.complete(ask("again"));
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.attempts, 2);
}

TEST(Llm, MalformedJson) {
  NEED_CURL();
  MockLlmOptions so;
  so.fail = "malformed";
  MockLlmServer server(so);
  EXPECT_EQ(error_of(options(server)),
            server.url() + "/chat/completions: the response is not JSON: '{\"choices\": [{\"message\": '");
}

TEST(Llm, NoChoices) {
  NEED_CURL();
  MockLlmOptions so;
  so.fail = "no-choices";
  MockLlmServer server(so);
  EXPECT_EQ(error_of(options(server)), server.url() + "/chat/completions: the response has no choices");
}

TEST(Llm, Timeout) {
  NEED_CURL();
  MockLlmOptions so;
  so.fail = "slow";
  so.slow_ms = 3000;
  MockLlmServer server(so);
  llm::Options o = options(server);
  o.timeout = 0.5;
  o.retries = 0;
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(error_of(o), server.url() + "/chat/completions: no answer within --llm-timeout 0.5 s");
  EXPECT_LT(seconds_since(t0), 2.0);
}

TEST(Llm, AnErrorStopsNewRequestsAndKeepsWhatCompleted) {
  NEED_CURL();
  MockLlmOptions so;
  so.fail = "500";
  so.fail_first = -1;
  MockLlmServer server(so);
  llm::Options o = options(server);
  o.parallel = 1;
  o.retries = 0;
  llm::Client c(o);
  const auto rs = c.run(asks(5));
  EXPECT_EQ(server.stats().requests, 1);
  EXPECT_FALSE(rs[0].not_sent);
  for (size_t i = 1; i < rs.size(); i++) {
    EXPECT_TRUE(rs[i].not_sent);
    EXPECT_EQ(rs[i].error, rs[0].error);
  }
  EXPECT_EQ(llm::first_error(rs), rs[0].error);
}

TEST(Llm, RequestBudgetStops) {
  NEED_CURL();
  MockLlmServer server({});
  TempDir dir;
  llm::Options o = options(server);
  o.parallel = 1;
  o.max_requests = 3;
  o.cache_dir = dir / "cache";
  llm::Client c(o);
  const auto rs = c.run(asks(6));
  EXPECT_EQ(server.stats().requests, 3);
  int ok = 0;
  for (const auto& r : rs) ok += r.ok;
  EXPECT_EQ(ok, 3);
  EXPECT_EQ(llm::first_error(rs), server.url() + "/chat/completions: the budget is spent (--llm-max-requests 3); the "
                                                 "answers received are kept in " + o.cache_dir);
  // The next run answers the first three from the cache and sends the other three.
  llm::Options o2 = o;
  o2.max_requests = 0;
  llm::Client c2(o2);
  const auto rs2 = c2.run(asks(6));
  EXPECT_EQ(llm::first_error(rs2), "");
  EXPECT_EQ(c2.stats().cached, 3);
  EXPECT_EQ(server.stats().requests, 6);
  EXPECT_EQ(server.stats().max_same, 1);
}

TEST(Llm, TokenBudgetStops) {
  NEED_CURL();
  MockLlmServer server({});
  llm::Options o = options(server);
  o.parallel = 1;
  o.max_tokens = 25;  // 11 tokens per answer: the third request takes the total to 33, then none more
  llm::Client c(o);
  const auto rs = c.run(asks(6));
  EXPECT_EQ(server.stats().requests, 3);
  EXPECT_EQ(c.stats().usage.total(), 33);
  EXPECT_NE(llm::first_error(rs).find("--llm-max-tokens 25, 33 used"), std::string::npos) << llm::first_error(rs);
}

TEST(Llm, TheCacheAnswersWithoutARequestWhateverTheUrl) {
  NEED_CURL();
  TempDir dir;
  MockLlmServer a({}), b({});
  llm::Options o = options(a);
  o.cache_dir = dir / "cache";
  {
    llm::Client c(o);
    for (const auto& r : c.run(asks(4))) ASSERT_TRUE(r.ok) << r.error;
  }
  o.url = b.url();
  llm::Client c(o);
  const auto rs = c.run(asks(4));
  for (size_t i = 0; i < rs.size(); i++) {
    ASSERT_TRUE(rs[i].ok);
    EXPECT_TRUE(rs[i].cached);
    EXPECT_EQ(rs[i].text, "echo: question number " + std::to_string(i));
  }
  EXPECT_EQ(a.stats().requests, 4);
  EXPECT_EQ(b.stats().requests, 0);
  EXPECT_EQ(c.stats().cached, 4);
  EXPECT_EQ(c.stats().usage.total(), 0);
  EXPECT_EQ(c.stats().cached_usage.total(), 44);
  // Another model, or other parameters, is another key.
  llm::Request hot = ask("question number 0");
  hot.temperature = 1;
  EXPECT_NE(llm::cache_key("mock-model", hot), llm::cache_key("mock-model", ask("question number 0")));
  EXPECT_NE(llm::cache_key("other", ask("question number 0")), llm::cache_key("mock-model", ask("question number 0")));
}

TEST(Llm, DryRunSendsNothing) {
  NEED_CURL();
  MockLlmServer server({});
  TempDir dir;
  llm::Options o = options(server);
  o.dry_run = true;
  o.cache_dir = dir / "cache";
  llm::Client c(o);
  const auto rs = c.run(asks(3));
  EXPECT_EQ(server.stats().requests, 0);
  for (const auto& r : rs) EXPECT_TRUE(r.not_sent);
  const std::string lines = read_file(o.cache_dir + "/dry-run.jsonl");
  EXPECT_EQ(std::count(lines.begin(), lines.end(), '\n'), 3);
  EXPECT_NE(lines.find("question number 2"), std::string::npos);
}

TEST(Llm, ParsesResponses) {
  const auto ok = llm::parse_response(
      R"({"choices":[{"message":{"role":"assistant","content":null},"finish_reason":"length"}],"usage":{"prompt_tokens":5,"completion_tokens":0}})",
      "X");
  EXPECT_TRUE(ok.ok);
  EXPECT_EQ(ok.text, "");
  EXPECT_EQ(ok.finish_reason, "length");
  EXPECT_EQ(ok.usage.prompt_tokens, 5);
  EXPECT_EQ(llm::parse_response("[1]", "X").error, "X: the response is not a chat completion: not an object");
  EXPECT_EQ(llm::parse_response(R"({"choices":[]})", "X").error, "X: the response has no choices");
  EXPECT_EQ(llm::parse_response(R"({"choices":[{"index":0}]})", "X").error,
            "X: the response is not a chat completion: choices[0] has no message");
  EXPECT_EQ(llm::parse_response(R"({"error":{"message":"model not found"}})", "X").error,
            "X: the response has no choices (model not found)");
}

TEST(Llm, IdenticalRequestsInABatchAreSentOnce) {
  NEED_CURL();
  MockLlmServer server({});
  llm::Client c(options(server));
  std::vector<llm::Request> reqs = {ask("same"), ask("other"), ask("same"), ask("same")};
  std::vector<int> reported(4, 0);
  const auto rs = c.run(reqs, [&](size_t i, const llm::Response&) { reported.at(i)++; });
  for (size_t i = 0; i < rs.size(); i++) {
    ASSERT_TRUE(rs[i].ok) << rs[i].error;
    EXPECT_EQ(rs[i].text, "echo: " + reqs[i].messages[1].content);
    EXPECT_EQ(reported[i], 1) << i;
  }
  EXPECT_EQ(server.stats().requests, 2);
  EXPECT_EQ(server.stats().max_same, 1);
}
