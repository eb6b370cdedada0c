// The OpenAI-compatible test server (support/mock_llm_server.h).
#include "support/mock_llm_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <stdexcept>

namespace sae::test {

using json = nlohmann::json;

namespace {

std::mutex g_modes_mu;
std::map<std::string, MockRule>& modes() {
  static std::map<std::string, MockRule> m;
  return m;
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string trim(const std::string& s) {
  size_t a = 0, b = s.size();
  while (a < b && std::isspace(static_cast<unsigned char>(s[a]))) a++;
  while (b > a && std::isspace(static_cast<unsigned char>(s[b - 1]))) b--;
  return s.substr(a, b - a);
}

// The text between `open` and the last `close` after it; false when absent.
bool between(const std::string& s, const std::string& open, const std::string& close, std::string& out) {
  const size_t a = s.find(open);
  if (a == std::string::npos) return false;
  const size_t b = s.rfind(close);
  if (b == std::string::npos || b < a + open.size()) return false;
  out = s.substr(a + open.size(), b - a - open.size());
  return true;
}

std::string last_user(const json& req) {
  std::string u;
  if (req.contains("messages") && req["messages"].is_array())
    for (const auto& m : req["messages"])
      if (m.value("role", "") == "user" && m.contains("content") && m["content"].is_string()) u = m["content"];
  return u;
}

std::string all_text(const json& req) {
  std::string u;
  if (req.contains("messages") && req["messages"].is_array())
    for (const auto& m : req["messages"])
      if (m.contains("content") && m["content"].is_string()) u += m["content"].get<std::string>() + " ";
  return u;
}

int64_t words(const std::string& s) {
  int64_t n = 0;
  bool in = false;
  for (char c : s) {
    const bool sp = std::isspace(static_cast<unsigned char>(c));
    if (!sp && !in) n++;
    in = !sp;
  }
  return n;
}

MockRule mode_rule(const std::string& mode) {
  {
    std::lock_guard<std::mutex> lk(g_modes_mu);
    auto it = modes().find(mode);
    if (it != modes().end()) return it->second;
  }
  if (mode == "echo") return [](const json& r) { return "echo: " + last_user(r); };
  if (mode == "judge") return mock_judge_answer;
  if (mode == "autointerp") return mock_autointerp_answer;
  throw std::runtime_error("unknown mode '" + mode + "' (echo, judge, autointerp)");
}

std::string reason_phrase(int status) {
  switch (status) {
    case 200: return "OK";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    default: return "Error";
  }
}

void send_all(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    const ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return;
    off += size_t(n);
  }
}

}  // namespace

void register_mock_mode(const std::string& name, MockRule rule) {
  std::lock_guard<std::mutex> lk(g_modes_mu);
  modes()[name] = std::move(rule);
}

std::string mock_judge_answer(const json& request) {
  const std::string prompt = last_user(request);
  std::string text;
  between(prompt, "<text>", "</text>", text);
  text = trim(text);
  const bool empty = text.empty();
  int rating = 0;
  std::string aspect;
  const size_t c = prompt.find("\nConcept: ");
  std::string instruction;
  if (c != std::string::npos || prompt.rfind("Concept: ", 0) == 0) {
    aspect = "concept";
    const size_t start = c == std::string::npos ? 9 : c + 10;
    const std::string concept_text = trim(prompt.substr(start, prompt.find('\n', start) - start));
    rating = !concept_text.empty() && lower(text).find(lower(concept_text)) != std::string::npos ? 2 : 0;
  } else if (between(prompt, "<instruction>", "</instruction>", instruction)) {
    aspect = "instruction";
    instruction = trim(instruction);
    const std::string first = instruction.substr(0, std::min(instruction.size(), instruction.find_first_of(" \t\n")));
    rating = empty ? 0 : (!first.empty() && lower(text).find(lower(first)) != std::string::npos ? 2 : 1);
  } else {
    aspect = "fluency";
    rating = empty ? 0 : text.find('.') != std::string::npos ? 2 : 1;
  }
  return "On a scale of [[0]] to [[2]], the " + aspect + " of this text earns the rating below.\nRating: [[" +
         std::to_string(rating) + "]]";
}

json MockLlmStats::to_json() const {
  return {{"requests", requests}, {"answered", answered}, {"max_in_flight", max_in_flight}, {"max_same", max_same},
          {"arrivals", arrivals}};
}

MockLlmServer::MockLlmServer(MockLlmOptions opt) : opt_(std::move(opt)) {
  mode_rule(opt_.mode);  // an unknown mode fails here, not at the first request
  t0_ = now_s();
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  if (listen_fd_ < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
  int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(uint16_t(opt_.port));
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(listen_fd_, 256) != 0) {
    const std::string e = std::strerror(errno);
    ::close(listen_fd_);
    throw std::runtime_error("port " + std::to_string(opt_.port) + ": " + e);
  }
  socklen_t len = sizeof a;
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
  port_ = ntohs(a.sin_port);
  write_stats();
  acceptor_ = std::thread([this] { accept_loop(); });
}

MockLlmServer::~MockLlmServer() { stop(); }

void MockLlmServer::stop() {
  if (stop_.exchange(true)) return;
  if (acceptor_.joinable()) acceptor_.join();
  ::close(listen_fd_);
  std::vector<std::thread> w;
  {
    std::lock_guard<std::mutex> lk(mu_);
    w.swap(workers_);
  }
  for (auto& t : w) t.join();
}

MockLlmStats MockLlmServer::stats() const {
  std::lock_guard<std::mutex> lk(mu_);
  return stats_;
}

void MockLlmServer::write_stats() {
  if (opt_.stats_path.empty()) return;
  // The snapshot is taken under the file's lock: taken before it, a connection thread could
  // write an older count over a newer one another thread had just written.
  static std::mutex file_mu;
  std::lock_guard<std::mutex> file_lk(file_mu);
  std::string s;
  {
    std::lock_guard<std::mutex> lk(mu_);
    s = stats_.to_json().dump() + "\n";
  }
  const std::string tmp = opt_.stats_path + ".tmp";
  if (FILE* f = std::fopen(tmp.c_str(), "w")) {
    std::fputs(s.c_str(), f);
    std::fclose(f);
    std::rename(tmp.c_str(), opt_.stats_path.c_str());
  }
}

bool MockLlmServer::sleep_ms(int ms) {
  const double end = now_s() + ms / 1000.0;
  while (now_s() < end) {
    if (stop_) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min(10, std::max(1, int((end - now_s()) * 1000)))));
  }
  return true;
}

void MockLlmServer::accept_loop() {
  while (!stop_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    const int fd = ::accept(listen_fd_, nullptr, nullptr);
    if (fd < 0) continue;
    std::lock_guard<std::mutex> lk(mu_);
    workers_.emplace_back([this, fd] { serve(fd); });
  }
}

void MockLlmServer::serve(int fd) {
  std::string buf;
  char chunk[65536];
  size_t header_end = std::string::npos;
  size_t content_length = 0;
  std::map<std::string, std::string> headers;
  std::string method, path;
  const double deadline = now_s() + 30;
  while (!stop_ && now_s() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n <= 0) break;
    buf.append(chunk, size_t(n));
    if (header_end == std::string::npos) {
      header_end = buf.find("\r\n\r\n");
      if (header_end == std::string::npos) continue;
      const std::string head = buf.substr(0, header_end);
      size_t eol = head.find("\r\n");
      const std::string first = head.substr(0, eol);
      const size_t sp1 = first.find(' '), sp2 = first.find(' ', sp1 + 1);
      method = first.substr(0, sp1);
      path = first.substr(sp1 + 1, sp2 - sp1 - 1);
      size_t pos = eol == std::string::npos ? head.size() : eol + 2;
      while (pos < head.size()) {
        size_t e = head.find("\r\n", pos);
        if (e == std::string::npos) e = head.size();
        const std::string line = head.substr(pos, e - pos);
        const size_t colon = line.find(':');
        if (colon != std::string::npos) headers[lower(line.substr(0, colon))] = trim(line.substr(colon + 1));
        pos = e + 2;
      }
      if (headers.count("content-length")) content_length = size_t(std::stoul(headers["content-length"]));
    }
    if (buf.size() >= header_end + 4 + content_length) {
      const std::string reply = answer(path, method, headers, buf.substr(header_end + 4, content_length));
      write_stats();  // before the answer goes out: a client that has its answer sees it counted
      send_all(fd, reply);
      break;
    }
  }
  ::shutdown(fd, SHUT_WR);
  ::close(fd);
}

std::string MockLlmServer::answer(const std::string& path, const std::string& method,
                                  const std::map<std::string, std::string>& headers, const std::string& body) {
  auto reply = [](int status, const std::string& content, const std::string& extra = "") {
    return "HTTP/1.1 " + std::to_string(status) + " " + reason_phrase(status) +
           "\r\nContent-Type: application/json\r\nConnection: close\r\n" + extra +
           "Content-Length: " + std::to_string(content.size()) + "\r\n\r\n" + content;
  };
  auto error = [&](int status, const std::string& msg, const std::string& extra = "") {
    return reply(status, json{{"error", {{"message", msg}, {"type", "mock"}}}}.dump(), extra);
  };
  if (method == "GET" && path == "/stats") return reply(200, stats().to_json().dump());
  const std::string suffix = "/chat/completions";
  if (method != "POST" || path.size() < suffix.size() || path.compare(path.size() - suffix.size(), suffix.size(), suffix) != 0)
    return error(404, "no route " + method + " " + path);

  int64_t n = 0;
  {
    std::lock_guard<std::mutex> lk(mu_);
    n = ++stats_.requests;
    stats_.arrivals.push_back(now_s() - t0_);
    stats_.max_same = std::max(stats_.max_same, ++seen_[body]);
    stats_.max_in_flight = std::max(stats_.max_in_flight, ++in_flight_);
  }
  struct Leave {
    MockLlmServer* s;
    ~Leave() {
      std::lock_guard<std::mutex> lk(s->mu_);
      s->in_flight_--;
    }
  } leave{this};

  json req;
  try {
    req = json::parse(body);
  } catch (...) {
    return error(400, "the request body is not JSON");
  }
  const auto auth = headers.find("authorization");
  const std::string sent_key = auth == headers.end() ? "" : auth->second.substr(std::min<size_t>(7, auth->second.size()));
  if (!opt_.key.empty() && sent_key != opt_.key) return error(401, "Incorrect API key provided: " + sent_key);

  const bool failing = !opt_.fail.empty() && (opt_.fail_first < 0 || n <= opt_.fail_first);
  if (failing) {
    if (opt_.fail == "401") return error(401, "Incorrect API key provided: " + sent_key);
    if (opt_.fail == "429") {
      const std::string ra = opt_.retry_after >= 0 ? "Retry-After: " + std::to_string(int(opt_.retry_after)) + "\r\n" : "";
      return error(429, "Rate limit reached", ra);
    }
    if (opt_.fail == "500") return error(500, "mock internal error");
    if (opt_.fail == "malformed") return reply(200, "{\"choices\": [{\"message\": ");
    if (opt_.fail == "no-choices") return reply(200, R"({"id":"mock","object":"chat.completion","choices":[]})");
    if (opt_.fail == "slow" && !sleep_ms(opt_.slow_ms)) return "";
  }
  if (opt_.delay_ms > 0 && !sleep_ms(opt_.delay_ms)) return "";

  std::string content;
  try {
    content = mode_rule(opt_.mode)(req);
  } catch (const std::exception& e) {
    return error(400, e.what());
  }
  json choice = {{"index", 0}, {"message", {{"role", "assistant"}, {"content", content}}}, {"finish_reason", "stop"}};
  if (req.value("logprobs", false)) {
    // One entry per word of the answer: logprob -0.1 * (i + 1); alternatives "WORD~k" below it.
    const int top = req.value("top_logprobs", 0);
    json lp = json::array();
    size_t pos = 0;
    int i = 0;
    while (pos < content.size()) {
      size_t e = content.find(' ', pos);
      if (e == std::string::npos) e = content.size();
      const std::string w = content.substr(pos, e - pos);
      json t = {{"token", w}, {"logprob", -0.1 * (i + 1)}, {"top_logprobs", json::array()}};
      for (int k = 0; k < top; k++) t["top_logprobs"].push_back({{"token", w + "~" + std::to_string(k)}, {"logprob", -0.1 * (i + 1) - k - 1}});
      lp.push_back(t);
      pos = e + 1;
      i++;
    }
    choice["logprobs"] = {{"content", lp}};
  }
  const int64_t pt = words(all_text(req)), ct = words(content);
  json resp = {{"id", "mock-" + std::to_string(n)},
               {"object", "chat.completion"},
               {"model", req.value("model", "")},
               {"choices", json::array({choice})},
               {"usage", {{"prompt_tokens", pt}, {"completion_tokens", ct}, {"total_tokens", pt + ct}}}};
  {
    std::lock_guard<std::mutex> lk(mu_);
    stats_.answered++;
  }
  return reply(200, resp.dump());
}


// ---- autointerp (added for sae-explain --explain/--score; lib/explain/autointerp.h)
namespace {

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t e = s.find('\n', pos);
    if (e == std::string::npos) e = s.size();
    out.push_back(s.substr(pos, e - pos));
    pos = e + 1;
  }
  return out;
}

// The spans marked <<...>> in a line.
std::vector<std::string> marked_spans(const std::string& line) {
  std::vector<std::string> out;
  size_t pos = 0;
  while ((pos = line.find("<<", pos)) != std::string::npos) {
    const size_t e = line.find(">>", pos + 2);
    if (e == std::string::npos) break;
    out.push_back(line.substr(pos + 2, e - pos - 2));
    pos = e + 2;
  }
  return out;
}

std::string answer_list(const std::vector<int>& v) {
  std::string s = "I first thought [0, 1], but looking at each context again:\nAnswer: [";
  for (size_t i = 0; i < v.size(); i++) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

}  // namespace

std::string mock_autointerp_answer(const json& request) {
  const std::vector<std::string> lines = lines_of(last_user(request));
  std::string kind, explanation;
  std::vector<std::string> examples;
  for (const std::string& l : lines) {
    const std::string t = trim(l);
    if (kind.empty() && t.rfind("# ", 0) == 0) kind = lower(t.substr(2));
    if (explanation.empty() && t.rfind("Explanation: ", 0) == 0) explanation = trim(t.substr(13));
    if (t.rfind("Example ", 0) == 0) {
      const size_t colon = t.find(": ");
      examples.push_back(colon == std::string::npos ? "" : t.substr(colon + 2));
    }
  }
  if (kind.rfind("explain", 0) == 0) {
    std::map<std::string, int> count;
    for (const std::string& e : examples)
      for (const std::string& s : marked_spans(e)) count[s]++;
    std::string best;
    int most = 0;
    for (const auto& [s, c] : count)
      if (c > most) {
        best = s;
        most = c;
      }
    if (most == 0) return "I'm sorry, but I cannot find a pattern in these examples.";
    return "Explanation: (a first guess) something about these examples\nThe marked tokens are mostly " + best +
           ".\nExplanation: the token \"" + best + "\"";
  }
  // The token the explanation names: between its first and last double quote (else all of it).
  std::string token = explanation;
  const size_t q1 = explanation.find('"'), q2 = explanation.rfind('"');
  if (q1 != std::string::npos && q2 > q1) token = explanation.substr(q1 + 1, q2 - q1 - 1);
  std::vector<int> v;
  for (const std::string& e : examples) {
    const bool has = !token.empty() && e.find(token) != std::string::npos;
    if (kind == "detection") v.push_back(has);
    else if (kind == "simulation") v.push_back(has ? 10 : 0);
    else if (kind == "fuzzing") {
      const std::vector<std::string> spans = marked_spans(e);
      bool right = !spans.empty();
      for (std::string s : spans) {  // a run of marked tokens is one span: right when it is X repeated
        for (size_t p; !token.empty() && (p = s.find(token)) != std::string::npos;) s.erase(p, token.size());
        right = right && s.empty();
      }
      v.push_back(right);
    } else {
      throw std::runtime_error("autointerp: the prompt has no '# Explain', '# Detection', '# Fuzzing' or '# Simulation' heading");
    }
  }
  return answer_list(v);
}
}  // namespace sae::test
