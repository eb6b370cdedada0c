// What a tool says about itself beyond --help: its manual page (`--man`, roff) and its bash
// completion script (`--completion`), both generated from the same option definitions that
// --help prints, so none of them can drift from the options the tool parses.
//
// The hand-written parts of a tool's manual live in docs/man/TOOL.txt; the build embeds that
// file in the tool (cmake/embed-manual.cmake), which registers it here before main runs. Format:
//   - the first line is the one-line summary (the NAME section: "TOOL - summary");
//   - a line in capitals ("DESCRIPTION", "EXIT STATUS", "EXAMPLES") starts a section;
//     DESCRIPTION follows the tool's own --help text, the others follow OPTIONS in file order;
//   - in a section, lines indented by four or more spaces are literal (commands, output), a line
//     indented by two spaces is an item: a term, two or more spaces, its text
//     ("  1   bad usage or bad input"); other lines are running text, a blank line ends a
//     paragraph; lines starting with # are comments.
#pragma once
#include <boost/program_options.hpp>
#include <iosfwd>
#include <string>
#include <vector>

namespace sae::cli {

namespace po = boost::program_options;

// A string option that takes one of `values`: completion offers them. The tool still checks the
// value itself (with its own message); tests/cli/install.bats checks that --help names each one.
po::typed_value<std::string>* choice(std::vector<std::string> values, std::string* store = nullptr);
// The values given to choice() for this option, or nullptr for any other option.
const std::vector<std::string>* choices_of(const po::option_description& option);

// Called by the code the build generates from docs/man/TOOL.txt: the manual text, and the names of
// all the tools (for SEE ALSO), space-separated.
bool register_manual(const char* text, const char* tools);

// Everything a tool passes to cli::parse, which is what the generators read.
struct ToolHelp {
  std::string tool;
  std::string usage;  // after "Usage: TOOL "; may hold several lines, each after the first "       TOOL ..."
  std::string about;
  const po::options_description& shown;             // what --help lists
  const po::options_description& all;               // shown + hidden positional carriers
  const po::positional_options_description* positional;
};

// The manual page in man(7) roff.
void write_man_page(std::ostream& out, const ToolHelp& help);
// A bash completion script defining _TOOL and registering it with `complete`.
void write_bash_completion(std::ostream& out, const ToolHelp& help);

}  // namespace sae::cli
