// Helpers for the tokenizer tests: temporary model directories, byte-level strings, ../shared.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "base/files.h"
#include "tokenizer/internal.h"

namespace tokenizer_test {

using json = nlohmann::json;

// A fresh directory (lib/base/files.h's TempDir) with helpers to fill it.
class TempDir : public sae::TempDir {
 public:
  TempDir() : sae::TempDir("sae-tok-test") {}
  std::string file(const std::string& name) const { return *this / name; }
  void write(const std::string& name, const std::string& contents) const {
    std::ofstream f(file(name), std::ios::binary);
    f << contents;
  }
  void write_json(const std::string& name, const json& j) const { write(name, j.dump()); }
};

// ../shared (or $SAE_SHARED), or "" when absent.
inline std::string shared_dir() {
  const char* env = std::getenv("SAE_SHARED");
  std::string d = env && *env ? env : std::string(SAE_SOURCE_DIR) + "/../shared";
  return std::filesystem::is_directory(d + "/models") ? d : "";
}

#define NEED_SHARED(var)                                                   \
  std::string var = tokenizer_test::shared_dir();                          \
  if (var.empty()) GTEST_SKIP() << "../shared is absent (test data lives there)"

#ifdef SAE_HAVE_SENTENCEPIECE
#define NEED_SENTENCEPIECE() (void)0
#else
#define NEED_SENTENCEPIECE() GTEST_SKIP() << "saetools was built without libsentencepiece"
#endif

inline std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The byte-level spelling of raw bytes ("Ġ" for a space), as vocab keys are written.
inline std::string bl(std::string_view raw) {
  const auto& m = sae::tok::ByteLevelMap::get();
  std::string out;
  for (unsigned char b : raw) sae::utf8_append(out, m.byte_to_cp[b]);
  return out;
}

// A vocab holding the 256 byte-level characters, id = byte value.
inline json byte_vocab() {
  json v = json::object();
  for (int b = 0; b < 256; ++b) v[bl(std::string(1, static_cast<char>(b)))] = b;
  return v;
}

inline std::vector<int32_t> ids_of(std::string_view raw) {  // byte_vocab ids of raw bytes
  std::vector<int32_t> out;
  for (unsigned char b : raw) out.push_back(b);
  return out;
}

inline std::vector<int32_t> cat(std::initializer_list<std::vector<int32_t>> parts) {
  std::vector<int32_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

}  // namespace tokenizer_test
