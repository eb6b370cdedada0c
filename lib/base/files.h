// Reading a whole small file (configs, vocabularies, checkpoint metadata), with the one-line
// InputError messages every tool uses: "PATH: cannot open (reason)", "PATH: read error",
// "PATH: invalid JSON (parser's reason)".
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace sae {

std::string read_file(const std::string& path);
nlohmann::json read_json_file(const std::string& path);
// JSON text already read from `path` (for callers that also need the bytes).
nlohmann::json parse_json(const std::string& text, const std::string& path);

// Where temporary files go when a tool is not told (--tmp): $TMPDIR when it is set and not
// empty, else /tmp. Every temporary file and directory the tools make starts from here.
std::string temp_directory();

// An unnamed temporary file in `dir`, open for reading and writing: made with O_TMPFILE, or
// created and unlinked at once, so it disappears when closed and is never left behind, even on
// SIGKILL. Failing to make one is an input/environment problem, not a bug: InputError
// "DIR: cannot create temporary files: REASON".
int create_unnamed_temp_file(const std::string& dir);

// A fresh directory PREFIX-XXXXXX under `parent`, or when that is empty under temp_directory(),
// removed with everything in it when the object dies. Failing to make it is an InputError
// "DIR: cannot create a temporary directory: REASON". Every test and benchmark that needs scratch
// space uses this one.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "saetools", const std::string& parent = "");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace sae
