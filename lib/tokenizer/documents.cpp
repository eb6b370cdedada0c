// Documents from text files, their token ids and windows (tokenizer/documents.h).
#include "tokenizer/documents.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>

#include "base/cli.h"
#include "base/errors.h"
#include "base/utf8.h"
#include "tokenizer/tokenizer.h"

namespace sae {

using json = nlohmann::json;

std::vector<int32_t> encode_document(const Tokenizer& tok, const TextDocument& doc) {
  try {
    return tok.encode(doc.text);
  } catch (const InputError& e) {
    throw InputError(doc.file + ": line " + std::to_string(doc.line) + ": " + e.what());
  }
}

void append_windows(const std::vector<int32_t>& ids, int64_t doc, int32_t bos, int64_t context,
                    std::vector<TextWindow>& out) {
  if (context < 2) throw UsageError("--context must be at least 2 (the BOS token and one token of text), got " + std::to_string(context));
  const int64_t body = context - 1, n = int64_t(ids.size());
  for (int64_t s = 0; s < n; s += body) {
    TextWindow w;
    w.doc = doc;
    w.tokens.reserve(size_t(std::min(n - s, body) + 1));
    w.tokens.push_back(bos);
    w.tokens.insert(w.tokens.end(), ids.begin() + s, ids.begin() + std::min(n, s + body));
    out.push_back(std::move(w));
  }
}

void throw_no_text(const std::vector<std::string>& inputs) {
  std::string names;
  for (const auto& p : inputs) names += (names.empty() ? "" : ", ") + (p == "-" || p.empty() ? std::string("<stdin>") : p);
  throw InputError((names.empty() ? std::string("<stdin>") : names) +
                   ": no text (the input is empty or holds only blank documents)");
}

TextDocumentReader::TextDocumentReader(std::vector<std::string> inputs, std::string jsonl_field, bool lines,
                                       bool replace_invalid_utf8)
    : inputs_(std::move(inputs)), field_(std::move(jsonl_field)), lines_(lines), replace_(replace_invalid_utf8) {
  if (inputs_.empty()) inputs_.push_back("-");
}

TextDocumentReader::~TextDocumentReader() {
  if (f_ && f_ != stdin) fclose(f_);
  std::free(buf_);
}

bool TextDocumentReader::open_next() {
  if (f_ && f_ != stdin) fclose(f_);
  f_ = nullptr;
  if (next_input_ >= inputs_.size()) return false;
  const std::string& path = inputs_[next_input_++];
  f_ = cli::open_input(path);
  name_ = path == "-" || path.empty() ? "<stdin>" : path;
  line_no_ = 0;
  offset_ = 0;
  return true;
}

bool TextDocumentReader::read_line(std::string& line) {
  if (!f_) return false;
  ssize_t n = getline(&buf_, &cap_, f_);
  if (n < 0) {
    if (ferror(f_)) throw InputError(name_ + ": read error: " + std::strerror(errno));
    return false;
  }
  line_no_++;
  offset_ += uint64_t(n);
  size_t len = size_t(n);
  if (len && buf_[len - 1] == '\n') len--;
  if (len && buf_[len - 1] == '\r') len--;
  line.assign(buf_, len);
  return true;
}

// The same policy and message as sae-tokenize: refuse invalid UTF-8 naming where it is, or (with
// --invalid-utf8 replace) read each ill-formed sequence as U+FFFD.
void TextDocumentReader::check_utf8(std::string& s, int64_t line, uint64_t offset) const {
  size_t bad = utf8_find_invalid(s);
  if (bad == std::string::npos) return;
  if (replace_) {
    s = utf8_replace_invalid(s);
    return;
  }
  const int64_t at_line = line + std::count(s.begin(), s.begin() + long(bad), '\n');
  char b[8];
  snprintf(b, sizeof b, "0x%02X", static_cast<unsigned char>(s[bad]));
  throw InputError(name_ + ": line " + std::to_string(at_line) + ": invalid UTF-8 at byte offset " +
                   std::to_string(offset + bad) + " (byte " + b + "); --invalid-utf8 replace reads it as U+FFFD");
}

bool TextDocumentReader::next(TextDocument& doc) {
  std::string line;
  for (;;) {
    if (!f_ && !open_next()) return false;
    const uint64_t start_offset = offset_;
    if (!read_line(line)) {  // end of this file: on to the next
      if (f_ != stdin) fclose(f_);
      f_ = nullptr;
      continue;
    }
    doc.file = name_;
    doc.line = line_no_;
    if (!field_.empty()) {
      // JSONL: one object per line; blank lines are not documents.
      if (line.find_first_not_of(" \t") == std::string::npos) continue;
      check_utf8(line, line_no_, start_offset);
      json j;
      try {
        j = json::parse(line);
      } catch (const std::exception& e) {
        throw InputError(name_ + ": line " + std::to_string(line_no_) + ": invalid JSON (" + e.what() + ")");
      }
      if (!j.is_object() || !j.contains(field_) || !j[field_].is_string())
        throw InputError(name_ + ": line " + std::to_string(line_no_) + ": no string field \"" + field_ +
                         "\" (--jsonl-field names the field that holds the text)");
      doc.text = j[field_].get<std::string>();
      return true;
    }
    if (lines_) {
      check_utf8(line, line_no_, start_offset);
      doc.text = std::move(line);
      return true;
    }
    // Blank-line separated: skip blank lines, then gather lines up to the next blank line.
    auto blank = [](const std::string& s) { return s.find_first_not_of(" \t\f\v") == std::string::npos; };
    if (blank(line)) continue;
    doc.text = line;
    std::string more;
    while (read_line(more) && !blank(more)) {
      doc.text += '\n';
      doc.text += more;
    }
    check_utf8(doc.text, doc.line, start_offset);
    return true;
  }
}

}  // namespace sae
