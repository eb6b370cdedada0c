// Error classes that map to exit codes, shared by every tool.
#pragma once
#include <stdexcept>
#include <string>

namespace sae {

// Exit codes, documented once in README.md.
constexpr int kExitOk = 0;
constexpr int kExitInput = 1;     // bad usage or bad input
constexpr int kExitInternal = 2;  // internal error (a bug, or the machine failed us)

// Bad command-line usage: unknown options, bad values. Exit 1.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Bad input data: corrupt streams, missing files, shapes that do not agree. Exit 1.
// The message should name the file and what is wrong.
struct InputError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Anything else thrown as std::exception ends the tool with exit 2.

}  // namespace sae
