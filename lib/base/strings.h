// Small string helpers the option parsers share: splitting a list, trimming, and reading a whole
// string as a number.
#pragma once
#include <string>
#include <vector>

namespace sae {

// The pieces of s between any of the separator characters in seps, empty pieces included
// ("a,,b" gives "a", "", "b"; "" gives one empty piece).
std::vector<std::string> split(const std::string& s, const std::string& seps);

// s without leading and trailing spaces, tabs, carriage returns and newlines.
std::string trim(const std::string& s);

// The whole of s read as a finite number (strtod's syntax, no surrounding spaces); false for
// anything else, "", "1x", "inf" and "nan" included.
bool parse_finite(const std::string& s, double& out);

}  // namespace sae
