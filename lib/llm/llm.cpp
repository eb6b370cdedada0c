// The OpenAI-compatible chat-completions client (llm/llm.h): one curl multi handle, at most
// `parallel` easy handles on it, retries scheduled on a clock, a cache of one JSON file per request.
#include "llm/llm.h"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <mutex>
#include <random>

#include "base/cli.h"
#include "base/errors.h"
#include "base/files.h"
#include "base/sha256.h"

#ifdef SAE_HAVE_CURL
#include <curl/curl.h>
#endif

namespace sae::llm {

namespace po = boost::program_options;
using ojson = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

void add_options(po::options_description& desc, const std::string& cache_default) {
  auto cache = po::value<std::string>();
  if (!cache_default.empty()) cache->default_value(cache_default);
  desc.add_options()
      ("llm-url", po::value<std::string>(),
       "base URL of an OpenAI-compatible API, e.g. http://localhost:8000/v1 (/chat/completions is appended)")
      ("llm-model", po::value<std::string>(), "the model name the endpoint serves (sent as \"model\")")
      ("llm-key-env", po::value<std::string>()->default_value("OPENAI_API_KEY"),
       "environment variable holding the API key (sent as a Bearer token; unset: no key)")
      ("llm-parallel", po::value<int>()->default_value(8), "LLM requests in flight at once")
      ("llm-timeout", po::value<double>()->default_value(120), "seconds before an LLM request is given up (then retried)")
      ("llm-retries", po::value<int>()->default_value(4),
       "further tries of an LLM request after a 429, a 5xx, a connection error or a timeout")
      ("llm-max-requests", po::value<int64_t>()->default_value(0), "budget: LLM requests to send at most (0: no limit)")
      ("llm-max-tokens", po::value<int64_t>()->default_value(0),
       "budget: no new LLM request once the responses' usage (prompt + completion tokens) reaches this (0: no limit)")
      ("llm-cache", cache, "directory caching every LLM request and response: a re-run never pays twice")
      ("llm-dry-run", po::bool_switch(),
       "write the LLM requests (JSONL, to LLM-CACHE/dry-run.jsonl, or stderr without --llm-cache) and send none");
}

Options read_options(const po::variables_map& vm) {
  Options o;
  if (vm.count("llm-url")) o.url = vm["llm-url"].as<std::string>();
  while (!o.url.empty() && o.url.back() == '/') o.url.pop_back();
  if (!o.url.empty() && o.url.rfind("http://", 0) != 0 && o.url.rfind("https://", 0) != 0)
    throw UsageError("--llm-url: '" + o.url + "' is not an http:// or https:// URL");
  if (vm.count("llm-model")) o.model = vm["llm-model"].as<std::string>();
  o.key_env = vm["llm-key-env"].as<std::string>();
  if (o.key_env.empty()) throw UsageError("--llm-key-env: empty variable name");
  o.parallel = vm["llm-parallel"].as<int>();
  if (o.parallel < 1) throw UsageError("--llm-parallel must be at least 1");
  o.timeout = vm["llm-timeout"].as<double>();
  if (!(o.timeout > 0)) throw UsageError("--llm-timeout must be a positive number of seconds");
  o.retries = vm["llm-retries"].as<int>();
  if (o.retries < 0) throw UsageError("--llm-retries must be >= 0");
  o.max_requests = vm["llm-max-requests"].as<int64_t>();
  o.max_tokens = vm["llm-max-tokens"].as<int64_t>();
  if (o.max_requests < 0 || o.max_tokens < 0) throw UsageError("--llm-max-requests and --llm-max-tokens must be >= 0");
  if (vm.count("llm-cache")) o.cache_dir = vm["llm-cache"].as<std::string>();
  o.dry_run = vm["llm-dry-run"].as<bool>();
  if (!o.url.empty() && o.model.empty() && !o.dry_run)
    throw UsageError("--llm-url needs --llm-model (the name the endpoint serves the model under)");
  return o;
}

ojson request_body(const Request& r) {
  ojson j;
  ojson msgs = ojson::array();
  for (const Message& m : r.messages) msgs.push_back({{"role", m.role}, {"content", m.content}});
  j["messages"] = msgs;
  j["temperature"] = r.temperature;
  j["max_tokens"] = r.max_tokens;
  if (r.logprobs || r.top_logprobs > 0) {
    j["logprobs"] = true;
    if (r.top_logprobs > 0) j["top_logprobs"] = r.top_logprobs;
  }
  return j;
}

std::string cache_key(const std::string& model, const Request& r) {
  ojson j;
  j["model"] = model;
  j["request"] = request_body(r);
  return sha256_hex(j.dump());
}

namespace {

std::string excerpt(const std::string& s, size_t n = 80) {
  std::string out;
  for (char c : s.substr(0, n)) out += (c == '\n' || c == '\r' || c == '\t') ? ' ' : c;
  if (s.size() > n) out += "...";
  return out;
}

std::string seconds_text(double s) {
  char b[32];
  std::snprintf(b, sizeof b, "%g", s);
  return b;
}

// The server's own error message, if the body is OpenAI's {"error": {"message": ...}}.
std::string server_message(const std::string& body) {
  try {
    const auto j = nlohmann::json::parse(body);
    if (j.is_object() && j.contains("error")) {
      const auto& e = j["error"];
      if (e.is_object() && e.contains("message") && e["message"].is_string()) return e["message"].get<std::string>();
      if (e.is_string()) return e.get<std::string>();
    }
  } catch (...) {
  }
  return excerpt(body);
}

}  // namespace

Response parse_response(const std::string& body, const std::string& where) {
  Response r;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(body);
  } catch (const std::exception&) {
    r.error = where + ": the response is not JSON: '" + excerpt(body, 60) + "'";
    return r;
  }
  try {
    if (!j.is_object()) throw std::runtime_error("not an object");
    if (!j.contains("choices") || !j["choices"].is_array() || j["choices"].empty()) {
      r.error = where + ": the response has no choices";
      if (j.contains("error")) r.error += " (" + server_message(body) + ")";
      return r;
    }
    const auto& c = j["choices"][0];
    if (c.contains("message") && c["message"].is_object()) {
      const auto& m = c["message"];
      if (m.contains("content") && m["content"].is_string()) r.text = m["content"].get<std::string>();
    } else if (c.contains("text") && c["text"].is_string()) {
      r.text = c["text"].get<std::string>();
    } else {
      throw std::runtime_error("choices[0] has no message");
    }
    if (c.contains("finish_reason") && c["finish_reason"].is_string()) r.finish_reason = c["finish_reason"].get<std::string>();
    if (j.contains("usage") && j["usage"].is_object()) {
      const auto& u = j["usage"];
      if (u.contains("prompt_tokens") && u["prompt_tokens"].is_number()) r.usage.prompt_tokens = u["prompt_tokens"].get<int64_t>();
      if (u.contains("completion_tokens") && u["completion_tokens"].is_number())
        r.usage.completion_tokens = u["completion_tokens"].get<int64_t>();
    }
    if (c.contains("logprobs") && c["logprobs"].is_object() && c["logprobs"].contains("content") &&
        c["logprobs"]["content"].is_array()) {
      for (const auto& t : c["logprobs"]["content"]) {
        TokenLogprob tl;
        tl.token = t.at("token").get<std::string>();
        tl.logprob = t.at("logprob").get<double>();
        if (t.contains("top_logprobs") && t["top_logprobs"].is_array())
          for (const auto& a : t["top_logprobs"]) tl.top.emplace_back(a.at("token").get<std::string>(), a.at("logprob").get<double>());
        r.logprobs.push_back(std::move(tl));
      }
    }
  } catch (const std::exception& e) {
    r = Response();
    r.error = where + ": the response is not a chat completion: " + e.what();
    return r;
  }
  r.ok = true;
  return r;
}

std::string first_error(const std::vector<Response>& responses) {
  std::string not_sent;
  for (const Response& r : responses) {
    if (r.ok) continue;
    if (!r.not_sent) return r.error;
    if (not_sent.empty()) not_sent = r.error;
  }
  return not_sent;
}

// ---- the client ----

struct Client::Impl {
  Options opt;
  std::string key;  // from the environment; never printed
  std::string endpoint;
  Stats stats;
  std::mt19937_64 jitter{std::random_device{}()};

  std::string scrub(std::string s) const {
    if (key.size() >= 4)
      for (size_t p; (p = s.find(key)) != std::string::npos;) s.replace(p, key.size(), "***");
    return s;
  }

  std::string cache_path(const std::string& k) const { return opt.cache_dir + "/" + k.substr(0, 2) + "/" + k + ".json"; }

  bool cache_get(const std::string& k, Response& out) const {
    if (opt.cache_dir.empty()) return false;
    struct stat st;
    const std::string p = cache_path(k);
    if (::stat(p.c_str(), &st) != 0) return false;
    try {
      const auto j = nlohmann::json::parse(read_file(p));
      Response r = parse_response(j.at("response").dump(), p);
      if (!r.ok) return false;
      r.cached = true;
      out = std::move(r);
      return true;
    } catch (...) {
      return false;  // a damaged entry is asked again, and rewritten
    }
  }

  void cache_put(const std::string& k, const ojson& body, const std::string& response) const {
    if (opt.cache_dir.empty()) return;
    const std::string dir = opt.cache_dir + "/" + k.substr(0, 2);
    ::mkdir(opt.cache_dir.c_str(), 0777);
    ::mkdir(dir.c_str(), 0777);
    ojson j;
    j["key"] = k;
    j["request"] = body;
    j["response"] = ojson::parse(response);
    cli::write_file_atomic(cache_path(k), j.dump(1) + "\n");
  }

  double backoff_seconds(int attempt, double retry_after) {
    if (retry_after >= 0) return retry_after;
    const double base = std::min(opt.max_backoff, opt.backoff * std::pow(2.0, attempt - 1));
    return base * std::uniform_real_distribution<double>(0.5, 1.0)(jitter);
  }

  bool budget_left(int64_t sent) const {
    if (opt.max_requests > 0 && sent >= opt.max_requests) return false;
    if (opt.max_tokens > 0 && stats.usage.total() >= opt.max_tokens) return false;
    return true;
  }
  std::string budget_message() const {
    if (opt.max_requests > 0 && stats.requests >= opt.max_requests)
      return endpoint + ": the budget is spent (--llm-max-requests " + std::to_string(opt.max_requests) +
             "); the answers received are kept" + (opt.cache_dir.empty() ? "" : " in " + opt.cache_dir);
    return endpoint + ": the budget is spent (--llm-max-tokens " + std::to_string(opt.max_tokens) + ", " +
           std::to_string(stats.usage.total()) + " used); the answers received are kept" +
           (opt.cache_dir.empty() ? "" : " in " + opt.cache_dir);
  }

  std::vector<Response> run(const std::vector<Request>& requests, const std::function<void(size_t, const Response&)>& on_done);
  std::vector<Response> run_unique(const std::vector<Request>& requests, const std::function<void(size_t, const Response&)>& on_done);
  void dry_run(const std::vector<Request>& requests, std::vector<Response>& out);
};

Client::Client(Options opt) : impl_(std::make_unique<Impl>()) {
  impl_->opt = std::move(opt);
  Options& o = impl_->opt;
  while (!o.url.empty() && o.url.back() == '/') o.url.pop_back();
  if (o.url.empty()) throw UsageError("the LLM client needs a URL (--llm-url)");
  if (o.model.empty() && !o.dry_run) throw UsageError("the LLM client needs a model name (--llm-model)");
  if (o.parallel < 1) o.parallel = 1;
  impl_->endpoint = o.url + "/chat/completions";
#ifndef SAE_HAVE_CURL
  if (!o.dry_run)
    throw UsageError("this saetools was built without libcurl, so it cannot call an LLM (install libcurl4-openssl-dev "
                     "and rebuild; --llm-dry-run works without it)");
#else
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
#endif
  if (const char* k = std::getenv(o.key_env.c_str())) impl_->key = k;
}

Client::~Client() = default;

const Stats& Client::stats() const { return impl_->stats; }
const Options& Client::options() const { return impl_->opt; }

std::string Client::usage_report() const {
  const Stats& s = impl_->stats;
  std::string r = "llm: " + std::to_string(s.requests) + " request" + (s.requests == 1 ? "" : "s") + " sent";
  if (s.retries) r += " (" + std::to_string(s.retries) + " retr" + (s.retries == 1 ? "y" : "ies") + ")";
  r += ", " + std::to_string(s.cached) + " answered from the cache";
  if (s.failed) r += ", " + std::to_string(s.failed) + " failed";
  r += "; " + std::to_string(s.usage.prompt_tokens) + " prompt + " + std::to_string(s.usage.completion_tokens) +
       " completion tokens";
  if (s.cached) r += " (the cache saved " + std::to_string(s.cached_usage.total()) + ")";
  return r;
}

Response Client::complete(const Request& r) { return run({r}).at(0); }

std::vector<Response> Client::run(const std::vector<Request>& requests,
                                  const std::function<void(size_t, const Response&)>& on_done) {
  return impl_->run(requests, on_done);
}

void Client::Impl::dry_run(const std::vector<Request>& requests, std::vector<Response>& out) {
  std::string path = opt.dry_run_path;
  if (path.empty() && !opt.cache_dir.empty()) {
    ::mkdir(opt.cache_dir.c_str(), 0777);
    path = opt.cache_dir + "/dry-run.jsonl";
  }
  std::string lines;
  for (size_t i = 0; i < requests.size(); i++) {
    ojson j;
    j["key"] = cache_key(opt.model, requests[i]);
    j["url"] = endpoint;
    j["model"] = opt.model;
    const ojson body = request_body(requests[i]);
    for (auto& [k, v] : body.items()) j[k] = v;
    lines += j.dump() + "\n";
    out[i].not_sent = true;
    out[i].error = endpoint + ": not sent (--llm-dry-run)";
  }
  if (path.empty() || path == "-") {
    std::fputs(lines.c_str(), stderr);
  } else {
    cli::write_file_atomic(path, lines);
  }
}

#ifdef SAE_HAVE_CURL
namespace {

struct Transfer {
  size_t index = 0;
  int attempt = 0;  // 1 for the first try
  std::string body, response;
  double retry_after = -1;
  CURL* easy = nullptr;
  curl_slist* headers = nullptr;
  char errbuf[CURL_ERROR_SIZE] = {0};
};

size_t on_write(char* p, size_t size, size_t n, void* user) {
  static_cast<Transfer*>(user)->response.append(p, size * n);
  return size * n;
}

size_t on_header(char* p, size_t size, size_t n, void* user) {
  std::string line(p, size * n);
  const std::string name = "retry-after:";
  if (line.size() > name.size()) {
    std::string head = line.substr(0, name.size());
    std::transform(head.begin(), head.end(), head.begin(), [](unsigned char c) { return char(std::tolower(c)); });
    if (head == name) {
      char* end = nullptr;
      const double v = std::strtod(line.c_str() + name.size(), &end);
      if (end != line.c_str() + name.size() && std::isfinite(v) && v >= 0) static_cast<Transfer*>(user)->retry_after = std::min(v, 600.0);
    }
  }
  return size * n;
}

}  // namespace
#endif

// Identical requests (one cache key) in a batch are sent once, and the answer given to each.
std::vector<Response> Client::Impl::run(const std::vector<Request>& requests,
                                        const std::function<void(size_t, const Response&)>& on_done) {
  std::vector<Request> unique;
  std::vector<std::vector<size_t>> users;  // per unique request, its indices in `requests`
  std::map<std::string, size_t> seen;
  for (size_t i = 0; i < requests.size(); i++) {
    auto [it, fresh] = seen.emplace(cache_key(opt.model, requests[i]), unique.size());
    if (fresh) {
      unique.push_back(requests[i]);
      users.emplace_back();
    }
    users[it->second].push_back(i);
  }
  std::function<void(size_t, const Response&)> each;
  if (on_done)
    each = [&](size_t u, const Response& r) {
      for (size_t i : users[u]) on_done(i, r);
    };
  const std::vector<Response> got = run_unique(unique, each);
  std::vector<Response> out(requests.size());
  for (size_t u = 0; u < unique.size(); u++)
    for (size_t i : users[u]) out[i] = got[u];
  return out;
}

std::vector<Response> Client::Impl::run_unique(const std::vector<Request>& requests,
                                        const std::function<void(size_t, const Response&)>& on_done) {
  std::vector<Response> out(requests.size());
  std::vector<std::string> keys(requests.size());
  std::deque<size_t> pending;
  for (size_t i = 0; i < requests.size(); i++) {
    keys[i] = cache_key(opt.model, requests[i]);
    if (cache_get(keys[i], out[i])) {
      stats.cached++;
      stats.cached_usage.prompt_tokens += out[i].usage.prompt_tokens;
      stats.cached_usage.completion_tokens += out[i].usage.completion_tokens;
      if (on_done) on_done(i, out[i]);
    } else {
      pending.push_back(i);
    }
  }
  if (pending.empty()) return out;
  if (opt.dry_run) {
    std::vector<Request> todo;
    std::vector<Response> resp(pending.size());
    for (size_t i : pending) todo.push_back(requests[i]);
    dry_run(todo, resp);
    for (size_t k = 0; k < pending.size(); k++) out[pending[k]] = resp[k];
    return out;
  }
#ifndef SAE_HAVE_CURL
  throw UsageError("this saetools was built without libcurl, so it cannot call an LLM");
#else
  CURLM* multi = curl_multi_init();
  if (!multi) throw std::runtime_error("curl_multi_init failed");
  struct Delayed {
    Clock::time_point when;
    size_t index;
    int attempt;
  };
  std::vector<Delayed> delayed;
  std::map<CURL*, std::unique_ptr<Transfer>> active;
  std::string fatal;  // the first error: no new request after it
  bool stop_interrupted = false;
  const long timeout_ms = long(std::ceil(opt.timeout * 1000));

  auto start = [&](size_t index, int attempt) {
    auto t = std::make_unique<Transfer>();
    t->index = index;
    t->attempt = attempt;
    ojson body = request_body(requests[index]);
    ojson full;
    full["model"] = opt.model;
    for (auto& [k, v] : body.items()) full[k] = v;
    t->body = full.dump();
    t->easy = curl_easy_init();
    if (!t->easy) throw std::runtime_error("curl_easy_init failed");
    t->headers = curl_slist_append(t->headers, "Content-Type: application/json");
    t->headers = curl_slist_append(t->headers, "Expect:");
    if (!key.empty()) t->headers = curl_slist_append(t->headers, ("Authorization: Bearer " + key).c_str());
    CURL* e = t->easy;
    curl_easy_setopt(e, CURLOPT_URL, endpoint.c_str());
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, t->body.c_str());
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, long(t->body.size()));
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, t.get());
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, t.get());
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, std::min(timeout_ms, 30000L));
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(e, CURLOPT_USERAGENT, "saetools");
    curl_multi_add_handle(multi, e);
    if (attempt == 1) stats.requests++;
    stats.http_requests++;
    active[e] = std::move(t);
    stats.max_in_flight = std::max(stats.max_in_flight, int(active.size()));
  };

  auto finish = [&](size_t index, Response r) {
    if (r.ok) {
      stats.usage.prompt_tokens += r.usage.prompt_tokens;
      stats.usage.completion_tokens += r.usage.completion_tokens;
    } else {
      r.error = scrub(r.error);
      stats.failed++;
      if (fatal.empty()) fatal = r.error;
    }
    out[index] = std::move(r);
    if (on_done) on_done(index, out[index]);
  };

  auto done = [&](Transfer& t, CURLcode code) {
    long status = 0;
    curl_easy_getinfo(t.easy, CURLINFO_RESPONSE_CODE, &status);
    const std::string tries = t.attempt == 1 ? "" : " (after " + std::to_string(t.attempt) + " tries)";
    std::string err;
    bool retryable = false;
    if (code != CURLE_OK) {
      retryable = true;
      if (code == CURLE_OPERATION_TIMEDOUT)
        err = endpoint + ": no answer within --llm-timeout " + seconds_text(opt.timeout) + " s" + tries;
      else if (code == CURLE_COULDNT_CONNECT || code == CURLE_COULDNT_RESOLVE_HOST)
        err = endpoint + ": cannot connect (" + (t.errbuf[0] ? std::string(t.errbuf) : curl_easy_strerror(code)) +
              "); is the server running?" + tries;
      else
        err = endpoint + ": " + (t.errbuf[0] ? std::string(t.errbuf) : curl_easy_strerror(code)) + tries;
    } else if (status == 401 || status == 403) {
      err = endpoint + ": HTTP " + std::to_string(status) + ", the key was refused: " +
            (key.empty() ? "$" + opt.key_env + " is not set" : "check the key in $" + opt.key_env) +
            " (--llm-key-env names the variable)";
    } else if (status == 429) {
      retryable = true;
      err = endpoint + ": HTTP 429, rate limited" + tries + "; lower --llm-parallel or raise --llm-retries";
    } else if (status >= 500) {
      retryable = true;
      err = endpoint + ": HTTP " + std::to_string(status) + " (server error: " + server_message(t.response) + ")" + tries;
    } else if (status != 200) {
      err = endpoint + ": HTTP " + std::to_string(status) + ": " + server_message(t.response) +
            (status == 404 ? " (is the URL right, ending in /v1, and the model name one the server serves?)" : "");
    }
    if (err.empty()) {
      Response r = parse_response(t.response, endpoint);
      r.attempts = t.attempt;
      if (r.ok) {
        try {
          cache_put(keys[t.index], request_body(requests[t.index]), t.response);
        } catch (const std::exception& e) {
          r.ok = false;
          r.error = std::string("cannot write the LLM cache: ") + e.what();
        }
      }
      finish(t.index, std::move(r));
      return;
    }
    if (retryable && t.attempt <= opt.retries && fatal.empty() && !stop_interrupted) {
      stats.retries++;
      delayed.push_back({Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(
                                            backoff_seconds(t.attempt, t.retry_after))),
                         t.index, t.attempt + 1});
      return;
    }
    Response r;
    r.error = err;
    r.attempts = t.attempt;
    // A failure that would have been retried but for an earlier fatal error (or a signal) did not
    // stop the run: marked like a request never sent, so that first_error() names the one that did.
    r.not_sent = retryable && t.attempt <= opt.retries;
    finish(t.index, std::move(r));
  };

  try {
    while (!pending.empty() || !delayed.empty() || !active.empty()) {
      if (cli::interrupted()) stop_interrupted = true;
      const bool may_send = fatal.empty() && !stop_interrupted;
      const auto now = Clock::now();
      // Retries whose time has come go first, then new requests while the budget lasts.
      if (may_send) {
        for (size_t k = 0; k < delayed.size() && int(active.size()) < opt.parallel;) {
          if (delayed[k].when <= now) {
            start(delayed[k].index, delayed[k].attempt);
            delayed.erase(delayed.begin() + long(k));
          } else {
            k++;
          }
        }
        while (!pending.empty() && int(active.size()) < opt.parallel && budget_left(stats.requests)) {
          start(pending.front(), 1);
          pending.pop_front();
        }
        if (!pending.empty() && active.empty() && delayed.empty() && !budget_left(stats.requests)) {
          fatal = budget_message();
        }
      }
      if (!may_send || !fatal.empty()) {
        // Nothing new goes out; what waits for a retry is given up with its last error.
        for (const Delayed& d : delayed) {
          Response r;
          r.not_sent = true;
          r.error = fatal.empty() ? endpoint + ": interrupted" : fatal;
          out[d.index] = std::move(r);
        }
        delayed.clear();
        if (active.empty()) break;
      }
      int running = 0;
      curl_multi_perform(multi, &running);
      while (true) {
        int left = 0;
        CURLMsg* m = curl_multi_info_read(multi, &left);
        if (!m) break;
        if (m->msg != CURLMSG_DONE) continue;
        CURL* e = m->easy_handle;
        const CURLcode code = m->data.result;
        auto it = active.find(e);
        std::unique_ptr<Transfer> t = std::move(it->second);
        active.erase(it);
        curl_multi_remove_handle(multi, e);
        done(*t, code);
        curl_easy_cleanup(e);
        curl_slist_free_all(t->headers);
      }
      if (active.empty() && pending.empty() && delayed.empty()) break;
      int wait_ms = 100;
      if (!delayed.empty()) {
        auto next = std::min_element(delayed.begin(), delayed.end(), [](const Delayed& a, const Delayed& b) { return a.when < b.when; });
        const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(next->when - Clock::now()).count();
        wait_ms = int(std::clamp<int64_t>(ms, 0, 100));
      }
      if (!active.empty() || wait_ms > 0) curl_multi_poll(multi, nullptr, 0, wait_ms, nullptr);
    }
  } catch (...) {
    for (auto& [e, t] : active) {
      curl_multi_remove_handle(multi, e);
      curl_easy_cleanup(e);
      curl_slist_free_all(t->headers);
    }
    curl_multi_cleanup(multi);
    throw;
  }
  curl_multi_cleanup(multi);
  const std::string why = !fatal.empty() ? fatal : endpoint + ": interrupted";
  for (size_t i : pending) {
    out[i].not_sent = true;
    out[i].error = why;
  }
  if (stop_interrupted) throw cli::Interrupted();
  return out;
#endif
}

}  // namespace sae::llm
