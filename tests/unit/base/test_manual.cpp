// The man page and bash completion generators (base/manual.h), on a small made-up tool: roff
// escaping, the sections of the hand-written text, option names, defaults, groups and choices.
#include <gtest/gtest.h>

#include <sstream>
#include <string>

#include "base/build_info.h"
#include "base/manual.h"

using namespace sae;
namespace po = cli::po;

namespace {

const char* kManual =
    "do a thing to streams\n"
    "# a comment, never shown\n"
    "DESCRIPTION\n"
    "More words about\n"
    "the thing.\n"
    "\n"
    "EXIT STATUS\n"
    "  0    success\n"
    "  1    bad usage or bad input\n"
    "\n"
    "EXAMPLES\n"
    "Run it:\n"
    "    sae-thing --mode fast -o out.sae in.sae\n"
    "    .starts-with-a-dot \\ backslash\n";

struct Fixture {
  po::options_description shown{"Options"};
  po::options_description all;
  po::positional_options_description positional;
  Fixture() {
    // A caption written over two lines, as sae-collect's model group is.
    po::options_description extra("Extra group: a caption\nover two lines");
    shown.add_options()
      ("output,o", po::value<std::string>()->default_value("-"), "output file (- is stdout)")
      ("mode", cli::choice({"fast", "slow"})->default_value("fast"), "speed: fast or slow")
      ("verbose", po::bool_switch(), "say more")
      (",q", po::bool_switch(), "short name only")
      ("dots", "first line\n.second line starts with a dot");
    extra.add_options()("level", po::value<int>(), "how much, \xc2\xb1 2\xff");  // U+00B1, a stray byte
    shown.add(extra);
    all.add(shown);
    all.add_options()("command", cli::choice({"export", "import"}), "what")(
        "input", po::value<std::vector<std::string>>(), "inputs");
    positional.add("command", 1).add("input", -1);
  }
  cli::ToolHelp help() const {
    return cli::ToolHelp{"sae-thing", "[options] IN\n       sae-thing other [X]", "Does a thing.\nexport: a label line.",
                         shown, all, &positional};
  }
};

bool has_line(const std::string& text, const std::string& line) {
  return ("\n" + text).find("\n" + line + "\n") != std::string::npos;
}

}  // namespace

TEST(Manual, ChoicesAreAttachedToTheirOption) {
  Fixture f;
  const auto* mode = cli::choices_of(f.shown.find("mode", false));
  ASSERT_NE(mode, nullptr);
  EXPECT_EQ(*mode, (std::vector<std::string>{"fast", "slow"}));
  EXPECT_EQ(cli::choices_of(f.shown.find("output", false)), nullptr);
  // A choice option parses and stores like any string option.
  std::string stored;
  po::options_description d;
  d.add_options()("bos", cli::choice({"auto", "never"}, &stored)->default_value("auto"), "b");
  const char* argv[] = {"t", "--bos", "never"};
  po::variables_map vm;
  po::store(po::parse_command_line(3, argv, d), vm);
  po::notify(vm);
  EXPECT_EQ(stored, "never");
}

TEST(Manual, PageHasEverySectionInOrderWithEscapedText) {
  Fixture f;
  cli::register_manual(kManual, "sae-thing sae-other");
  std::ostringstream out;
  cli::write_man_page(out, f.help());
  const std::string page = out.str();
  EXPECT_TRUE(has_line(page, std::string(".TH SAE\\-THING 1 \"") + build_info::commit_date() + "\" \"saetools " +
                                 [] {
                                   std::string v = build_info::version(), r;
                                   for (char c : v) r += c == '-' ? std::string("\\-") : std::string(1, c);
                                   return r;
                                 }() +
                                 "\" \"saetools manual\""))
      << page;
  EXPECT_TRUE(has_line(page, ".nh\n.ad l\n.SH NAME\nsae\\-thing \\- do a thing to streams"));
  // Two synopsis lines, the second without the repeated tool name.
  EXPECT_TRUE(has_line(page, ".B sae\\-thing\n[options] IN\n.br\n.B sae\\-thing\nother [X]")) << page;
  // --help's text, a label line as its own paragraph, then the hand-written description.
  EXPECT_TRUE(has_line(page, ".SH DESCRIPTION\n.PP\nDoes a thing.\n.PP\nexport: a label line.\n.PP\nMore words about\nthe thing."))
      << page;
  EXPECT_EQ(page.find("a comment"), std::string::npos);
  // Options: short and long names, the parameter, the default, group captions, \[uXXXX].
  EXPECT_TRUE(has_line(page, ".TP\n\\fB\\-o\\fR, \\fB\\-\\-output\\fR \\fIarg\\fR\noutput file (\\- is stdout) (default: \\-)"))
      << page;
  EXPECT_TRUE(has_line(page, ".TP\n\\fB\\-\\-verbose\\fR\nsay more"));
  EXPECT_TRUE(has_line(page, ".TP\n\\fB\\-q\\fR\nshort name only")) << page;
  // Each line of a description is its own text line; one starting with a dot is protected.
  EXPECT_TRUE(has_line(page, ".TP\n\\fB\\-\\-dots\\fR\nfirst line\n\\&.second line starts with a dot")) << page;
  EXPECT_TRUE(has_line(page, ".SS Extra group: a caption over two lines\n.TP\n\\fB\\-\\-level\\fR \\fIarg\\fR\nhow much, \\[u00B1] 2\\[uFFFD]")) << page;
  // Items, a literal block with a leading dot protected and a backslash escaped.
  EXPECT_TRUE(has_line(page, ".SH EXIT STATUS\n.TP\n.B 0\nsuccess\n.TP\n.B 1\nbad usage or bad input"));
  EXPECT_TRUE(has_line(page, ".SH EXAMPLES\n.PP\nRun it:\n.PP\n.RS 4\n.nf\nsae\\-thing \\-\\-mode fast \\-o out.sae in.sae\n"
                             "\\&.starts\\-with\\-a\\-dot \\e backslash\n.fi\n.RE"))
      << page;
  EXPECT_TRUE(has_line(page, ".SH SEE ALSO\n\\fBsae\\-other\\fR(1)"));
  // Sections in the conventional order.
  const auto at = [&](const char* s) { return page.find(s); };
  EXPECT_LT(at(".SH NAME"), at(".SH SYNOPSIS"));
  EXPECT_LT(at(".SH SYNOPSIS"), at(".SH DESCRIPTION"));
  EXPECT_LT(at(".SH DESCRIPTION"), at(".SH OPTIONS"));
  EXPECT_LT(at(".SH OPTIONS"), at(".SH EXIT STATUS"));
  EXPECT_LT(at(".SH EXIT STATUS"), at(".SH EXAMPLES"));
  EXPECT_LT(at(".SH EXAMPLES"), at(".SH SEE ALSO"));
}

TEST(Manual, CompletionListsOptionsValuesAndCommands) {
  Fixture f;
  std::ostringstream out;
  cli::write_bash_completion(out, f.help());
  const std::string script = out.str();
  EXPECT_TRUE(has_line(script, "    --mode) COMPREPLY=($(compgen -W 'fast slow' -- \"$cur\")); return ;;")) << script;
  // Options that take a value other than a choice complete file names (the fallback).
  EXPECT_TRUE(has_line(script, "    -o|--output|--level) return ;;")) << script;
  EXPECT_TRUE(has_line(script, "    COMPREPLY=($(compgen -W '-o --output --mode --verbose -q --dots --level' -- \"$cur\"))")) << script;
  EXPECT_TRUE(has_line(script, "    COMPREPLY=($(compgen -W 'export import' -- \"$cur\"))")) << script;
  EXPECT_TRUE(has_line(script, "complete -o default -o bashdefault -F _sae_thing sae-thing"));
}
