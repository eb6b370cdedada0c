// Automated interpretability's costs (docs/autointerp.md, "Cost"), as ratios measured in one run
// against the OpenAI-compatible test server (tests/support/mock_llm_server.h, the program
// build/tests/mock_llm_server, built with the tests), which answers by the autointerp rules after a
// fixed delay:
//
//  - achieved concurrency: explanations and detection, fuzzing and simulation scores of 192 mined
//    latents (96 with --quick) through run_autointerp at its default chunk (256 latents, or 4 x parallel) (the
//    tool's path: explanations of one chunk sent together with the scoring of the one before),
//    32 requests in flight, each answered after 200 ms, requests per second ÷ (parallel ÷ delay).
//    Target: at least 0.8.
//  - prompt tokens per latent, at sae-explain's default settings with --score (top 20, 10 quantile
//    groups of 5, contrast 25, batches of 10) and at delphi's default counts (40 explanation
//    examples, 50 scoring examples: top 20 + 10 groups of 4, contrast 30), each method apart.
//    Tokens are counted as the test server counts them: whitespace-separated words of the
//    messages, each token shown as one word (" w123"), so about one per token of the contexts, and
//    the template's words.
//
// Usage: bench_autointerp [--quick] [--parallel N] [--delay-ms D]
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "base/files.h"
#include "explain/autointerp.h"
#include "explain/miner.h"

using namespace sae;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

extern char** environ;

namespace {

// Latents 0..d/4 fire on one token each; the rest at random (as in the unit test).
std::unique_ptr<LatentMiner> mine(int64_t d, int64_t rows, const MinerOptions& mo) {
  std::vector<int64_t> latents;
  for (int64_t i = 0; i < d; i++) latents.push_back(i);
  auto m = std::make_unique<LatentMiner>(d, latents, mo);
  std::mt19937 g(5);
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<uint32_t> count, index;
  std::vector<float> value;
  std::vector<int32_t> token;
  std::vector<int64_t> doc;
  const int64_t known = d / 4;
  for (int64_t r = 0; r < rows; r++) {
    const int32_t t = u(g) < 0.2 ? int32_t(7 + g() % uint32_t(known)) : int32_t(g() % 1000);
    token.push_back(t);
    doc.push_back(r / 128);
    uint32_t c = 0;
    if (t >= 7 && t < 7 + known) {
      index.push_back(uint32_t(t - 7));
      value.push_back(float(0.5 + u(g)));
      c++;
    }
    for (int64_t l = known; l < d; l++)
      if (u(g) < 0.02) {
        index.push_back(uint32_t(l));
        value.push_back(float(0.1 + 2 * u(g)));
        c++;
      }
    count.push_back(c);
  }
  m->add(rows, count.data(), index.data(), value.data(), token.data(), doc.data());
  m->finish();
  return m;
}

struct Server {
  pid_t pid = -1;
  std::string url;
  ~Server() {
    if (pid > 0) {
      ::kill(pid, SIGTERM);
      int st;
      ::waitpid(pid, &st, 0);
    }
  }
};

void start(Server& s, const std::string& exe, const std::string& dir, int delay_ms) {
  const std::string port_file = dir + "/port";
  std::vector<std::string> args = {exe, "--mode", "autointerp", "--delay-ms", std::to_string(delay_ms), "--port-file", port_file};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  if (posix_spawn(&s.pid, exe.c_str(), &fa, nullptr, argv.data(), environ) != 0) {
    std::fprintf(stderr, "bench_autointerp: cannot start %s\n", exe.c_str());
    std::exit(1);
  }
  posix_spawn_file_actions_destroy(&fa);
  for (int i = 0; i < 200 && !fs::exists(port_file); i++) std::this_thread::sleep_for(std::chrono::milliseconds(25));
  if (!fs::exists(port_file)) {
    std::fprintf(stderr, "bench_autointerp: the test server did not start\n");
    std::exit(1);
  }
  s.url = "http://127.0.0.1:" + std::to_string(std::stoi(read_file(port_file))) + "/v1";
}

struct Measured {
  double seconds = 0;
  int64_t requests = 0, prompt_tokens = 0;
};

Measured measure(const LatentMiner& m, const AutointerpOptions& o, const llm::Options& lo,
                 const std::vector<std::string>& text) {
  const auto t0 = Clock::now();
  llm::Options l = lo;
  const AutointerpRun run = run_autointerp(m.latents().size(), [&](size_t k) { return m.report(k); }, o, l, text);
  Measured r;
  r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  r.requests = run.stats.requests;
  r.prompt_tokens = run.stats.usage.prompt_tokens;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  int parallel = 32, delay_ms = 200;
  for (int i = 1; i < argc; i++) {
    if (!std::strcmp(argv[i], "--quick")) quick = true;
    else if (!std::strcmp(argv[i], "--parallel") && i + 1 < argc) parallel = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--delay-ms") && i + 1 < argc) delay_ms = std::atoi(argv[++i]);
  }
  const std::string self = fs::canonical("/proc/self/exe").string();
  const std::string exe = fs::path(self).parent_path().parent_path().string() + "/tests/mock_llm_server";
  if (!fs::exists(exe)) {
    std::fprintf(stderr, "bench_autointerp: %s: not built (configure with the tests and build mock_llm_server)\n", exe.c_str());
    return 1;
  }
  TempDir dir("bench-autointerp");
  Server server;
  start(server, exe, dir.path(), delay_ms);

  std::vector<std::string> text(1000);
  for (size_t i = 0; i < text.size(); i++) text[i] = " w" + std::to_string(i);

  // 1. Achieved concurrency.
  MinerOptions mo;
  mo.contrast = 25;
  const int64_t d = quick ? 96 : 192;
  auto m = mine(d, quick ? 40000 : 80000, mo);
  AutointerpOptions o;
  o.explain = true;
  o.methods = {"detection", "fuzzing", "simulation"};
  llm::Options lo;
  lo.url = server.url;
  lo.model = "mock";
  lo.parallel = parallel;
  lo.retries = 0;
  const Measured c = measure(*m, o, lo, text);
  const double ideal = parallel / (delay_ms / 1000.0);
  const double achieved = double(c.requests) / c.seconds;
  std::printf("achieved concurrency: %lld requests (%lld latents, explanation + 3 scores) in %.2f s = %.1f requests/s; "
              "ideal %d parallel / %.3f s = %.1f/s; ratio %.2f (target >= 0.8)\n",
              static_cast<long long>(c.requests), static_cast<long long>(d), c.seconds, achieved, parallel,
              delay_ms / 1000.0, ideal, achieved / ideal);

  // 2. Prompt tokens per latent, per method, at the defaults and at delphi's counts.
  auto per_latent = [&](const MinerOptions& mopt, const char* label) {
    auto mm = mine(quick ? 24 : 48, quick ? 40000 : 80000, mopt);
    const size_t n = mm->latents().size();
    double ne = 0, ns = 0;
    for (size_t k = 0; k < n; k++) {
      const ExampleSplit s = split_examples(mm->report(k), o.seed);
      ne += double(s.explain.size()) / double(n);
      ns += double(s.activating.size() + s.non_activating.size()) / double(n);
    }
    std::printf("%s, %.1f explanation and %.1f scoring examples per latent:", label, ne, ns);
    int64_t expl_tokens = 0;
    for (const char* method : {"", "detection", "fuzzing", "simulation"}) {
      AutointerpOptions oo = o;
      oo.methods.clear();
      if (*method) oo.methods = {method};
      llm::Options l = lo;
      l.cache_dir = dir / (std::string(label).substr(0, 6) + "-" + (*method ? method : "explain"));
      // Explanations come from the cache after the first run, so each method's tokens are its own.
      if (*method) fs::copy(dir / (std::string(label).substr(0, 6) + "-explain"), l.cache_dir, fs::copy_options::recursive);
      const Measured r = measure(*mm, oo, l, text);
      const double t = double(r.prompt_tokens) / double(n);
      if (!*method) expl_tokens = r.prompt_tokens;
      std::printf(" %s %.0f", *method ? method : "explanation", t);
    }
    (void)expl_tokens;
    std::printf(" prompt tokens per latent\n");
  };
  MinerOptions ours;
  ours.contrast = 25;
  per_latent(ours, "defaults (top 20, 10x5 quantiles, contrast 25)");
  MinerOptions delphi;
  delphi.top = 20;
  delphi.quantiles = 10;
  delphi.per_quantile = 4;
  delphi.contrast = 30;
  per_latent(delphi, "delphi's counts (40 explanation, 50 scoring examples)");
  return 0;
}
