// mock_llm_server: the OpenAI-compatible test server (support/mock_llm_server.h) as a program, for the
// Bats tests. Prints "port N" on stdout once it listens (and writes N to --port-file), serves until
// SIGTERM or SIGINT, then exits 0.
//   mock_llm_server [--port N] [--port-file F] [--mode echo|judge|autointerp] [--delay-ms D]
//                   [--fail 401|429|500|malformed|no-choices|slow] [--fail-first N]
//                   [--retry-after S] [--slow-ms MS] [--key K] [--stats FILE]
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "support/mock_llm_server.h"

int main(int argc, char** argv) {
  sae::test::MockLlmOptions o;
  std::string port_file;
  for (int i = 1; i < argc; i++) {
    const std::string a = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr, "mock_llm_server: %s needs a value\n", a.c_str());
      return 1;
    }
    const std::string v = argv[++i];
    if (a == "--port") o.port = std::atoi(v.c_str());
    else if (a == "--port-file") port_file = v;
    else if (a == "--mode") o.mode = v;
    else if (a == "--delay-ms") o.delay_ms = std::atoi(v.c_str());
    else if (a == "--fail") o.fail = v;
    else if (a == "--fail-first") o.fail_first = std::atoi(v.c_str());
    else if (a == "--retry-after") o.retry_after = std::atof(v.c_str());
    else if (a == "--slow-ms") o.slow_ms = std::atoi(v.c_str());
    else if (a == "--key") o.key = v;
    else if (a == "--stats") o.stats_path = v;
    else {
      std::fprintf(stderr, "mock_llm_server: unknown option %s\n", a.c_str());
      return 1;
    }
  }
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);  // before the server's threads start: they inherit it
  try {
    sae::test::MockLlmServer server(o);
    if (!port_file.empty()) {
      const std::string tmp = port_file + ".tmp";
      FILE* f = std::fopen(tmp.c_str(), "w");
      if (!f) throw std::runtime_error(port_file + ": cannot write");
      std::fprintf(f, "%d\n", server.port());
      std::fclose(f);
      std::rename(tmp.c_str(), port_file.c_str());
    }
    std::printf("port %d\n", server.port());
    std::fflush(stdout);
    int sig = 0;
    sigwait(&set, &sig);
    server.stop();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mock_llm_server: %s\n", e.what());
    return 1;
  }
  return 0;
}
