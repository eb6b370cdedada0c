// Text in: documents from text files (blank-line separated, one per line, or JSONL), their token
// ids, and the windows a model runs on. sae-collect --model and sae-eval --model read text this
// way, so a window of one is a window of the other.
//
// Each document is tokenized with the model's own tokenizer, without BOS, and cut into windows of
// context-1 tokens; every window runs with the BOS token prepended, so a sequence holds at most
// `context` tokens.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace sae {

// One document of the input and where it starts, for messages.
struct TextDocument {
  std::string text;
  std::string file;  // "<stdin>" for "-"
  int64_t line = 0;  // first line of the document (1-based)
};

class Tokenizer;
// The document's token ids (no BOS); a tokenizer error (invalid UTF-8) names the document's file
// and first line.
std::vector<int32_t> encode_document(const Tokenizer& tok, const TextDocument& doc);

// One sequence for the model: BOS, then up to context-1 text tokens of document `doc`.
struct TextWindow {
  std::vector<int32_t> tokens;
  int64_t doc = 0;
};

// Appends the windows of one document's tokens (without BOS) to `out`, as sae-collect cuts them:
// consecutive runs of context-1 tokens, the last one shorter, each with `bos` prepended.
void append_windows(const std::vector<int32_t>& ids, int64_t doc, int32_t bos, int64_t context,
                    std::vector<TextWindow>& out);

// The one policy for text that holds no documents (an empty input, or only blank lines or
// documents that tokenize to nothing), followed by every tool that reads text as documents
// (sae-collect --model, sae-eval --model): it is an input error, so a pipeline stops at the step
// that got no text instead of passing an empty stream on. Throws InputError
// "NAMES: no text (the input is empty or holds only blank documents)".
[[noreturn]] void throw_no_text(const std::vector<std::string>& inputs);

// Reads documents one at a time from text files, in order: documents separated by blank lines, or
// one per line (`lines`), or JSONL with the text under `jsonl_field` (when not empty); "-" is stdin.
// Invalid UTF-8 is an InputError naming the file, the line and the byte offset, or is replaced.
class TextDocumentReader {
 public:
  TextDocumentReader(std::vector<std::string> inputs, std::string jsonl_field, bool lines, bool replace_invalid_utf8);
  ~TextDocumentReader();
  TextDocumentReader(const TextDocumentReader&) = delete;
  TextDocumentReader& operator=(const TextDocumentReader&) = delete;
  bool next(TextDocument& doc);  // false after the last document of the last file

 private:
  bool read_line(std::string& line);  // one line without its ending; false at the end of the file
  bool open_next();
  void check_utf8(std::string& s, int64_t line, uint64_t offset) const;
  std::vector<std::string> inputs_;
  std::string field_;
  bool lines_, replace_;
  size_t next_input_ = 0;
  FILE* f_ = nullptr;
  std::string name_;
  int64_t line_no_ = 0;
  uint64_t offset_ = 0;  // byte offset of the next line in the file
  char* buf_ = nullptr;
  size_t cap_ = 0;
};

}  // namespace sae
