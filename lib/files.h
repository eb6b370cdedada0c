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

}  // namespace sae
