// A client for OpenAI-compatible chat completions (POST {url}/chat/completions), as vLLM,
// llama.cpp's server, Ollama and the hosted APIs speak it, on libcurl: many requests in flight at
// once (a batch: submit them all, get each as it completes and all of them in order), timeouts,
// retries with exponential backoff and jitter on 429, 5xx and connection errors (honouring
// Retry-After), a budget of requests and tokens, usage accounting from each response's `usage`,
// a cache on disk so that a re-run never pays twice, and a dry run that writes the prompts and calls
// nothing. docs/llm.md is the user's page.
//
// The API key is read from an environment variable (Options::key_env) when the client is made and
// goes only into the Authorization header: never into argv, messages, logs or the cache. Every
// message the client makes has the key scrubbed from it, in case a server echoes it back.
//
// Users: sae-steer's judge (steer/judge.h); the automated interpretability of sae-explain.
#pragma once
#include <boost/program_options.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace sae::llm {

struct Message {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

struct Request {
  std::vector<Message> messages;
  double temperature = 0;
  int max_tokens = 256;
  bool logprobs = false;  // ask for the log-probability of each generated token
  int top_logprobs = 0;   // and of this many alternatives at each (implies logprobs)
};

struct TokenLogprob {
  std::string token;
  double logprob = 0;
  std::vector<std::pair<std::string, double>> top;  // the alternatives, most likely first
};

struct Usage {
  int64_t prompt_tokens = 0, completion_tokens = 0;
  int64_t total() const { return prompt_tokens + completion_tokens; }
};

struct Response {
  bool ok = false;
  std::string error;   // one line when !ok: what failed, naming the URL (never the key)
  bool not_sent = false;  // !ok because the run stopped first (an earlier error, the budget, a dry run, a signal), before it was sent or retried
  std::string text;    // choices[0].message.content ("" when null)
  std::string finish_reason;  // "stop", "length", ...
  Usage usage;
  std::vector<TokenLogprob> logprobs;  // when asked for and returned
  bool cached = false;  // read from the cache: nothing was sent
  int attempts = 0;     // HTTP requests made for it (retries included)
};

struct Options {
  std::string url;    // base URL ("http://localhost:8000/v1"); "/chat/completions" is appended
  std::string model;  // sent as "model"; part of the cache key (the URL is not)
  std::string key_env = "OPENAI_API_KEY";  // the environment variable holding the API key
  int parallel = 8;                        // requests in flight
  double timeout = 120;                    // seconds per HTTP request
  int retries = 4;                         // further tries on 429, 5xx, connection errors and timeouts
  double backoff = 1;                      // seconds before the first retry; doubles each time, with jitter
  double max_backoff = 60;
  int64_t max_requests = 0;  // budget: requests sent (cache hits are free); 0 = no limit
  int64_t max_tokens = 0;    // budget: total tokens of the responses' usage; 0 = no limit
  std::string cache_dir;     // "" = no cache
  bool dry_run = false;      // write the requests (JSONL) to dry_run_path and send nothing
  std::string dry_run_path;  // "" = CACHE_DIR/dry-run.jsonl with a cache, else stderr
};

// The --llm-* options, spelt the same by every tool: --llm-url, --llm-model, --llm-key-env,
// --llm-parallel, --llm-timeout, --llm-retries, --llm-max-requests, --llm-max-tokens, --llm-cache,
// --llm-dry-run. `cache_default` is the --llm-cache default a tool offers ("" = none).
void add_options(boost::program_options::options_description& desc, const std::string& cache_default = "");
// Reads them back; bad values (parallel < 1, a timeout <= 0, a URL without http:// or https://)
// are a UsageError naming the option. An empty url means the tool's LLM part is off.
Options read_options(const boost::program_options::variables_map& vm);

// The request body as sent, without "model" (the cache key hashes it with the model).
nlohmann::ordered_json request_body(const Request& r);
// The cache key: sha256 of (model, messages, parameters). The URL is not part of it, so a cache
// filled from one server answers for another serving the same model.
std::string cache_key(const std::string& model, const Request& r);
// Parses a chat-completions response body; on failure returns !ok with `error` saying why
// ("the response is not JSON: ...", "the response has no choices") after "WHERE: ".
Response parse_response(const std::string& body, const std::string& where);

// The first error among responses ("" when all are ok), preferring one that is not "not sent".
std::string first_error(const std::vector<Response>& responses);

struct Stats {
  int64_t requests = 0;       // sent (first tries)
  int64_t http_requests = 0;  // tries, retries included
  int64_t retries = 0;
  int64_t cached = 0;         // answered from the cache
  int64_t failed = 0;
  Usage usage;                // of the responses received now (not of cached ones)
  Usage cached_usage;         // of the cached responses: what the cache saved
  int max_in_flight = 0;
};

class Client {
 public:
  // Throws UsageError "built without libcurl" when the build has no libcurl (unless dry_run), and
  // when url or model is empty.
  explicit Client(Options opt);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Answers every request, with at most `parallel` in flight. `on_done(i, response)` is called, on
  // the caller's thread, as each completes (cache hits first). Returns the responses in the order
  // of `requests`. Identical requests (one cache key) are sent once and answer each.
  // Per-request failures do not throw: after the first one (once retries are spent)
  // no new request is sent, those in flight finish (and are cached), and the rest come back
  // !ok with not_sent set. Use first_error() to turn a failed batch into one message. The budget
  // stops the batch the same way. Throws cli::Interrupted on SIGINT/SIGTERM in graceful mode,
  // after the requests in flight are done.
  std::vector<Response> run(const std::vector<Request>& requests,
                            const std::function<void(size_t, const Response&)>& on_done = {});
  Response complete(const Request& r);  // one request

  const Stats& stats() const;
  const Options& options() const;
  // One line: "llm: 12 requests (3 from the cache, 1 retry), 1234 prompt + 456 completion tokens".
  std::string usage_report() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sae::llm
