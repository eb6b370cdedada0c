#include "base/build_info.h"

#include <algorithm>
#include <utility>
#include <vector>

// The build facts CMake knows (build type, host tuning, CUDA version and GPU targets), generated
// into the build tree from cmake/build_config.h.in.
#include <saetools_build_config.h>  // generated: angle brackets, as it is not under lib/

namespace sae::build_info {

namespace {

std::vector<std::pair<const char*, std::string (*)()>>& runtime_facts() {
  static std::vector<std::pair<const char*, std::string (*)()>> facts;
  return facts;
}

std::string compiler() {
#if defined(__clang__)
  return "clang " __clang_version__;
#elif defined(__GNUC__)
  return "GCC " __VERSION__;
#else
  return "unknown compiler";
#endif
}

}  // namespace

bool add_runtime_fact(const char* name, std::string (*describe)()) {
  runtime_facts().emplace_back(name, describe);
  return true;
}

std::string report(const std::string& tool) {
  std::string r = tool + " " + version() + "\n";
  auto line = [&](const std::string& name, const std::string& value) { r += name + ": " + value + "\n"; };
  line("compiler", compiler() + ", C++" + std::to_string(__cplusplus / 100 % 100) + ", " SAE_BUILD_TYPE);
  line("host code", SAE_HOST_TUNING);
#ifdef SAE_HAVE_CUDA
  line("CUDA backend", "built in (" SAE_CUDA_BUILD ")");
#else
  line("CUDA backend", "not built in (nvcc was not found at build time, or SAE_CUDA=OFF)");
#endif
#ifdef SAE_HAVE_MPI
  line("MPI", "built in");
#else
  line("MPI", "not built in");
#endif
#ifdef SAE_HAVE_SENTENCEPIECE
  line("sentencepiece", "built in (SentencePiece tokenizer.model files load)");
#else
  line("sentencepiece", "not built in (tokenizer.model files do not load; tokenizer.json does)");
#endif
#ifdef SAE_HAVE_CURL
  line("libcurl", "built in");
#else
  line("libcurl", "not built in");
#endif
  // Sorted by name: static initialisers, which add the facts, run in no fixed order.
  auto facts = runtime_facts();
  std::sort(facts.begin(), facts.end(), [](const auto& a, const auto& b) { return std::string(a.first) < b.first; });
  bool blas = false;
  for (const auto& [name, describe] : facts) {
    line(name, describe());
    blas = blas || std::string(name) == "OpenBLAS";
  }
  if (!blas) line("OpenBLAS", "not used by " + tool);
  return r;
}

}  // namespace sae::build_info
