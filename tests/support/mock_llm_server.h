// A local OpenAI-compatible chat-completions server for the tests of the LLM client (lib/llm) and
// of the tools that use it: POSIX sockets, HTTP/1.1 (one request per connection), POST
// .../chat/completions with JSON in and out, GET /stats with what it has seen. The unit tests run it
// in-process (MockLlmServer); the Bats tests run build/tests/mock_llm_server (mock_llm_server_main.cpp).
//
// Its answers are deterministic and derived from the prompt, by a rule chosen with `mode`:
//   echo   "echo: " + the last user message.
//   judge  sae-steer's judge (steer/judge.h). The text under judgement is what stands between
//          "<text>" and "</text>", trimmed. The aspect is read from the prompt:
//            a line "Concept: C"            -> concept: 2 if the text contains C (ASCII case
//                                              folded), else 0;
//            "<instruction>I</instruction>" -> instruction: 0 for an empty text, else 2 if the
//                                              text contains I's first word (case folded), else 1;
//            neither                        -> fluency: 0 for an empty text, 2 if it holds a '.',
//                                              else 1.
//          The answer is a sentence with decoys ("on a scale of [[0]] to [[2]]") before
//          "Rating: [[N]]", so the parser's robustness is tested on every answer.
//   autointerp  sae-explain --explain/--score (explain/autointerp.h), by the prompt's heading line:
//          "# Explain ..."  the span most often marked <<...>> in the "Example N: " lines (ties: the
//                           first in byte order), answered as 'Explanation: the token "X"' after a
//                           decoy "Explanation:" line; no marks at all: a refusal ("I'm sorry ...");
//          "# Detection"    1 for each example line that contains X (the explanation's text between
//                           its first and last double quote, else all of it), else 0;
//          "# Fuzzing"      1 when the example has marks and every marked span is X (or X repeated:
//                           adjacent marked tokens make one span), else 0;
//          "# Simulation"   10 for each example that contains X, else 0;
//          the scoring answers end "Answer: [a, b, ...]" after a decoy list.
// New rules (autointerp's explanation, detection, fuzzing and simulation prompts) are added as
// modes: register_mock_mode("explain", rule) before the server starts, or a case in mode_rule().
//
// Failure behaviours, for the first `fail_first` requests (all when -1), then normal answers:
//   401         status 401; its message echoes the key the client sent (as some APIs do), to test
//               that the client never repeats it
//   429         status 429 with "Retry-After: retry_after" (seconds; none when < 0)
//   500         status 500
//   malformed   status 200 and a body that is not JSON
//   no-choices  status 200 and "choices": []
//   slow        the answer after slow_ms
// `delay_ms` delays every answer. With `key` set, a request without "Authorization: Bearer KEY"
// gets a 401.
#pragma once
#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

namespace sae::test {

struct MockLlmOptions {
  int port = 0;  // 0: the system picks one (port() says which)
  std::string mode = "echo";
  int delay_ms = 0;
  std::string fail;    // "", "401", "429", "500", "malformed", "no-choices", "slow"
  int fail_first = -1;
  double retry_after = 1;
  int slow_ms = 5000;
  std::string key;
  std::string stats_path;  // when set, the stats JSON is rewritten there after every answer
};

// A mode's rule: the request body (JSON) to the answer's text.
using MockRule = std::function<std::string(const nlohmann::json& request)>;
void register_mock_mode(const std::string& name, MockRule rule);
std::string mock_judge_answer(const nlohmann::json& request);
std::string mock_autointerp_answer(const nlohmann::json& request);

struct MockLlmStats {
  int64_t requests = 0;   // chat-completions requests received (failed ones included)
  int64_t answered = 0;   // of which answered normally (status 200 with choices)
  int max_in_flight = 0;  // most requests being handled at once
  int max_same = 0;       // most times one request body was received (1: none sent twice)
  std::vector<double> arrivals;  // seconds since the server started, per request
  nlohmann::json to_json() const;
};

class MockLlmServer {
 public:
  explicit MockLlmServer(MockLlmOptions opt);  // listens on 127.0.0.1 and serves on threads
  ~MockLlmServer();                            // stop()
  MockLlmServer(const MockLlmServer&) = delete;
  MockLlmServer& operator=(const MockLlmServer&) = delete;
  int port() const { return port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/v1"; }
  MockLlmStats stats() const;
  void stop();  // closes the socket, waits for the connections being served

 private:
  void accept_loop();
  void serve(int fd);
  std::string answer(const std::string& path, const std::string& method, const std::map<std::string, std::string>& headers,
                     const std::string& body);
  bool sleep_ms(int ms);  // false when stopped meanwhile
  void write_stats();

  MockLlmOptions opt_;
  int listen_fd_ = -1, port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread acceptor_;
  mutable std::mutex mu_;
  std::vector<std::thread> workers_;
  MockLlmStats stats_;
  std::map<std::string, int> seen_;
  int in_flight_ = 0;
  double t0_ = 0;
};

}  // namespace sae::test
