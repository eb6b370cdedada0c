// What this binary is: its version and the facts a bug report needs (compiler, build type, which
// optional parts are built in, and what the linked libraries chose on this machine). `--version`
// prints report(); streams and SAE directories record version().
#pragma once
#include <string>

namespace sae::build_info {

// "0.1.0" outside git, else from `git describe` ("0.1.0-191-gf50b056", "-dirty" when tracked files
// differed from the commit). Generated at every build (cmake/version.cmake).
const char* version();
// The commit's date, YYYY-MM-DD, or "" when not built from git.
const char* commit_date();

// A fact known only at run time, added by the area that owns it (the backend adds the OpenBLAS
// kernel set and the CUDA devices). `describe` runs when the report is printed. Call it from a
// static initialiser: `static const bool added = build_info::add_runtime_fact("OpenBLAS", fn);`.
bool add_runtime_fact(const char* name, std::string (*describe)());

// The --version text: "TOOL VERSION" on the first line, then one "name: value" line per fact.
std::string report(const std::string& tool);

}  // namespace sae::build_info
