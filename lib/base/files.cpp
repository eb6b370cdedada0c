#include "base/files.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "base/errors.h"

namespace sae {

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw InputError(path + ": cannot open (" + std::strerror(errno) + ")");
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) throw InputError(path + ": read error");
  return ss.str();
}

nlohmann::json parse_json(const std::string& text, const std::string& path) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw InputError(path + ": invalid JSON (" + e.what() + ")");
  }
}

nlohmann::json read_json_file(const std::string& path) { return parse_json(read_file(path), path); }

std::string temp_directory() {
  const char* env = getenv("TMPDIR");
  return env && *env ? env : "/tmp";
}

int create_unnamed_temp_file(const std::string& dir) {
  int fd = -1;
#ifdef O_TMPFILE
  fd = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
#endif
  // Filesystems without O_TMPFILE (and ENOENT for a missing dir, which mkostemp reports too).
  if (fd < 0) {
    std::string name = dir + "/.saetools.XXXXXX";
    fd = mkostemp(name.data(), O_CLOEXEC);
    if (fd >= 0) ::unlink(name.c_str());  // the name exists only between these two calls
  }
  if (fd < 0) throw InputError(dir + ": cannot create temporary files: " + std::strerror(errno));
  return fd;
}

TempDir::TempDir(const std::string& prefix, const std::string& parent) {
  const std::string in = parent.empty() ? temp_directory() : parent;
  std::string tmpl = in + "/" + prefix + "-XXXXXX";
  if (!mkdtemp(tmpl.data())) throw InputError(in + ": cannot create a temporary directory: " + std::strerror(errno));
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

}  // namespace sae
