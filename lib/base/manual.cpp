#include "base/manual.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <ostream>
#include <regex>
#include <sstream>
#include <stdexcept>

#include "base/build_info.h"
#include "base/utf8.h"

namespace sae::cli {

namespace {

class ChoiceValue final : public po::typed_value<std::string> {
 public:
  ChoiceValue(std::vector<std::string> values, std::string* store)
      : po::typed_value<std::string>(store), values_(std::move(values)) {}
  const std::vector<std::string>& values() const { return values_; }

 private:
  std::vector<std::string> values_;
};

struct Manual {
  std::string text;
  std::vector<std::string> tools;
};
Manual& manual() {
  static Manual m;
  return m;
}

std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> lines;
  std::istringstream in(s);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(' ');
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(' ') - b + 1);
}

std::string upper(std::string s) {
  for (char& c : s) c = char(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

// Text for a roff text line: backslashes and hyphens escaped (so options read "--x", not dashes),
// non-ASCII characters as \[uXXXX] (groff needs no input encoding then; a malformed UTF-8
// sequence shows as U+FFFD), and a leading . or ' (which roff would read as a request) protected.
std::string roff(const std::string& text) {
  const std::string s = utf8_replace_invalid(text);
  std::string r;
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      char buf[16];
      snprintf(buf, sizeof buf, "\\[u%04X]", unsigned(utf8_next(s, i)));
      r += buf;
      continue;
    }
    r += c == '\\' ? "\\e" : c == '-' ? "\\-" : std::string(1, char(c));
    ++i;
  }
  if (!r.empty() && (r[0] == '.' || r[0] == '\'')) r = "\\&" + r;
  return r;
}

// The names an option is given by, short first: {"-o", "--output"} from boost's "-o [ --output ]".
std::vector<std::string> names_of(const po::option_description& o) {
  std::vector<std::string> names;
  const std::string f = o.format_name();
  if (f.size() >= 2 && f[0] == '-' && f[1] != '-') names.push_back(f.substr(0, 2));
  if (!o.long_name().empty()) names.push_back("--" + o.long_name());
  return names;
}

bool takes_value(const po::option_description& o) { return o.semantic()->max_tokens() > 0; }

// The option's parameter and default from boost's "arg (=topk)": {"arg", "topk"}.
std::pair<std::string, std::string> parameter_of(const po::option_description& o) {
  const std::string p = o.format_parameter();
  const size_t d = p.find(" (=");
  if (d == std::string::npos) return {p, ""};
  return {p.substr(0, d), p.substr(d + 3, p.size() - d - 4)};
}

// The captions --help prints before each group ("Toy source (--toy): ..."), keyed by the long name
// of the group's first option (boost keeps captions private, so they are read off its output).
std::vector<std::pair<std::string, std::string>> captions_of(const po::options_description& desc) {
  std::ostringstream printed;
  printed << desc;
  std::vector<std::pair<std::string, std::string>> captions;
  std::string pending, caption_lines;  // a long caption is wrapped over several lines
  static const std::regex option_line(R"(^  (?:-. \[ )?--([A-Za-z0-9_-]+))");
  for (const auto& line : split_lines(printed.str())) {
    std::smatch m;
    if (line.empty()) {
      caption_lines.clear();
    } else if (line[0] != ' ') {
      caption_lines += (caption_lines.empty() ? "" : " ") + line;
      if (line.back() == ':') {
        pending = caption_lines.substr(0, caption_lines.size() - 1);
        caption_lines.clear();
      }
    } else if (!pending.empty() && std::regex_search(line, m, option_line)) {
      captions.emplace_back(m[1], pending);
      pending.clear();
    }
  }
  return captions;
}

// Running text, literal blocks and items (the docs/man format described in manual.h).
void write_body(std::ostream& out, const std::vector<std::string>& lines) {
  enum class Mode { none, text, literal } mode = Mode::none;
  auto end_literal = [&] {
    if (mode == Mode::literal) out << ".fi\n.RE\n";
  };
  for (const auto& line : lines) {
    if (trim(line).empty()) {
      end_literal();
      mode = Mode::none;
    } else if (line.rfind("    ", 0) == 0) {
      if (mode != Mode::literal) {
        out << ".PP\n.RS 4\n.nf\n";
        mode = Mode::literal;
      }
      out << roff(line.substr(4)) << "\n";
    } else if (line.rfind("  ", 0) == 0) {
      end_literal();
      const std::string item = trim(line);
      const size_t gap = item.find("  ");
      out << ".TP\n.B " << roff(item.substr(0, gap)) << "\n";
      if (gap != std::string::npos) out << roff(trim(item.substr(gap))) << "\n";
      mode = Mode::text;
    } else {
      if (mode == Mode::literal) end_literal();
      if (mode != Mode::text) out << ".PP\n";
      out << roff(trim(line)) << "\n";
      mode = Mode::text;
    }
  }
  end_literal();
}

struct ManualText {
  std::string summary;
  std::vector<std::pair<std::string, std::vector<std::string>>> sections;
};

ManualText parse_manual(const std::string& text) {
  ManualText m;
  static const std::regex heading("^[A-Z][A-Z ]*[A-Z]$");
  for (const auto& line : split_lines(text)) {
    if (!line.empty() && line[0] == '#') continue;
    if (m.summary.empty() && m.sections.empty()) {
      m.summary = trim(line);
    } else if (std::regex_match(line, heading)) {
      m.sections.push_back({line, {}});
    } else if (!m.sections.empty()) {
      m.sections.back().second.push_back(line);
    } else if (!trim(line).empty()) {
      throw std::logic_error("manual text: '" + line + "' before the first section heading");
    }
  }
  return m;
}

// The text of --help's description, as paragraphs: a line that starts an option ("--model: ...")
// or a label ("export: ...") starts a new one; the other lines continue the one before.
void write_about(std::ostream& out, const std::string& about) {
  static const std::regex starts_paragraph(R"(^(--[a-z]|[A-Za-z-]+: ))");
  bool open = false;
  for (const auto& line : split_lines(about)) {
    if (trim(line).empty()) {
      open = false;
      continue;
    }
    if (!open || std::regex_search(line, starts_paragraph)) out << ".PP\n";
    out << roff(trim(line)) << "\n";
    open = true;
  }
}

std::string shell_function_name(const std::string& tool) {
  std::string f = "_" + tool;
  std::replace(f.begin(), f.end(), '-', '_');
  return f;
}

std::string join(const std::vector<std::string>& words, const std::string& sep) {
  std::string r;
  for (const auto& w : words) r += (r.empty() ? "" : sep) + w;
  return r;
}

}  // namespace

po::typed_value<std::string>* choice(std::vector<std::string> values, std::string* store) {
  return new ChoiceValue(std::move(values), store);
}

const std::vector<std::string>* choices_of(const po::option_description& option) {
  const auto* c = dynamic_cast<const ChoiceValue*>(option.semantic().get());
  return c ? &c->values() : nullptr;
}

bool register_manual(const char* text, const char* tools) {
  manual().text = text;
  std::istringstream in(tools);
  for (std::string t; in >> t;) manual().tools.push_back(t);
  return true;
}

void write_man_page(std::ostream& out, const ToolHelp& h) {
  const ManualText m = parse_manual(manual().text);
  out << ".\\\" Generated by `" << h.tool << " --man` from its options and docs/man/" << h.tool
      << ".txt; do not edit.\n";
  out << ".TH " << roff(upper(h.tool)) << " 1 \"" << build_info::commit_date() << "\" \"saetools "
      << roff(build_info::version()) << "\" \"saetools manual\"\n";
  // Left-aligned and unhyphenated: option names and paths must read as typed.
  out << ".nh\n.ad l\n";
  out << ".SH NAME\n" << roff(h.tool) << " \\- " << roff(m.summary.empty() ? h.about : m.summary) << "\n";

  out << ".SH SYNOPSIS\n";
  bool first = true;
  for (const auto& line : split_lines(h.usage)) {
    std::string args = trim(line);
    if (!first) {
      out << ".br\n";
      if (args.rfind(h.tool, 0) == 0) args = trim(args.substr(h.tool.size()));
    }
    out << ".B " << roff(h.tool) << "\n" << roff(args) << "\n";
    first = false;
  }

  out << ".SH DESCRIPTION\n";
  write_about(out, h.about);
  for (const auto& [title, lines] : m.sections)
    if (title == "DESCRIPTION") write_body(out, lines);

  out << ".SH OPTIONS\n";
  // Group captions as subsections, where there is more than one group.
  auto captions = captions_of(h.shown);
  if (captions.size() < 2) captions.clear();
  for (const auto& o : h.shown.options()) {
    for (const auto& [first_option, caption] : captions)
      if (first_option == o->long_name()) out << ".SS " << roff(caption) << "\n";
    std::vector<std::string> names;
    for (const auto& name : names_of(*o)) names.push_back("\\fB" + roff(name) + "\\fR");
    out << ".TP\n" << join(names, ", ");
    const auto [param, def] = parameter_of(*o);
    if (takes_value(*o)) out << " \\fI" << roff(param) << "\\fR";
    // A description written over several lines: each line is a text line of its own.
    std::vector<std::string> description;
    for (const auto& line : split_lines(o->description())) description.push_back(roff(trim(line)));
    out << "\n" << join(description, "\n");
    if (!def.empty()) out << " (default: " << roff(def) << ")";
    out << "\n";
  }

  for (const auto& [title, lines] : m.sections) {
    if (title == "DESCRIPTION") continue;
    out << ".SH " << roff(title) << "\n";
    write_body(out, lines);
  }

  std::vector<std::string> others;
  for (const auto& t : manual().tools)
    if (t != h.tool) others.push_back("\\fB" + roff(t) + "\\fR(1)");
  out << ".SH SEE ALSO\n" << join(others, ",\n") << (others.empty() ? "" : "\n");
  out << ".PP\nThe saetools documentation: README.md and docs/, installed under share/saetools/doc.\n";
}

void write_bash_completion(std::ostream& out, const ToolHelp& h) {
  std::vector<std::string> all_names, value_names, file_names;
  std::vector<std::pair<std::vector<std::string>, const std::vector<std::string>*>> with_choices;
  for (const auto& o : h.shown.options()) {
    const std::vector<std::string> names = names_of(*o);
    all_names.insert(all_names.end(), names.begin(), names.end());
    if (!takes_value(*o)) continue;
    value_names.insert(value_names.end(), names.begin(), names.end());
    if (const auto* values = choices_of(*o))
      with_choices.emplace_back(names, values);
    else
      file_names.insert(file_names.end(), names.begin(), names.end());
  }
  // The first positional argument may be a command with fixed values (sae-npy export|import).
  const std::vector<std::string>* commands = nullptr;
  if (h.positional && h.positional->max_total_count() > 0) {
    const std::string& name = h.positional->name_for_position(0);
    if (const auto* o = h.all.find_nothrow(name, false)) commands = choices_of(*o);
  }

  const std::string f = shell_function_name(h.tool);
  out << "# bash completion for " << h.tool << ", generated by `" << h.tool << " --completion` (saetools "
      << build_info::version() << ").\n"
      << "# Options complete from the list below, enumerated values from their lists; other values\n"
      << "# and operands fall back to file names (complete -o default).\n"
      << f << "() {\n"
      << "  local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} i w skip=0 operands=0\n"
      << "  # --opt=value arrives as three words: --opt, '=', value.\n"
      << "  if [[ $cur == = ]]; then\n"
      << "    cur=\n"
      << "  elif [[ $prev == = && $COMP_CWORD -ge 2 ]]; then\n"
      << "    prev=${COMP_WORDS[COMP_CWORD-2]}\n"
      << "  fi\n"
      << "  case $prev in\n";
  for (const auto& [names, values] : with_choices)
    out << "    " << join(names, "|") << ") COMPREPLY=($(compgen -W '" << join(*values, " ") << "' -- \"$cur\")); return ;;\n";
  if (!file_names.empty()) out << "    " << join(file_names, "|") << ") return ;;\n";
  out << "  esac\n"
      << "  if [[ $cur == -* ]]; then\n"
      << "    COMPREPLY=($(compgen -W '" << join(all_names, " ") << "' -- \"$cur\"))\n"
      << "    return\n"
      << "  fi\n";
  if (commands) {
    out << "  local takes_value=' " << join(value_names, " ") << " '\n"
        << "  for ((i = 1; i < COMP_CWORD; i++)); do\n"
        << "    w=${COMP_WORDS[i]}\n"
        << "    if ((skip)); then skip=0; continue; fi\n"
        << "    case $w in\n"
        << "      =) skip=1 ;;\n"
        << "      -*) [[ $takes_value == *\" $w \"* && ${COMP_WORDS[i+1]} != = ]] && skip=1 ;;\n"
        << "      *) operands=$((operands + 1)) ;;\n"
        << "    esac\n"
        << "  done\n"
        << "  if ((operands == 0)); then\n"
        << "    COMPREPLY=($(compgen -W '" << join(*commands, " ") << "' -- \"$cur\"))\n"
        << "  fi\n";
  }
  out << "}\n"
      << "complete -o default -o bashdefault -F " << f << " " << h.tool << "\n";
}

}  // namespace sae::cli
