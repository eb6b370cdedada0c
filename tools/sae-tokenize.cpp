// sae-tokenize: text in, token ids out, with the model's own tokenizer (docs/tokenizers.md). For
// checking what sae-collect will feed the model; --decode goes the other way.
#include <algorithm>
#include <climits>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "base/cli.h"
#include "base/manual.h"
#include "tokenizer/tokenizer.h"

namespace {

using sae::InputError;
using sae::Tokenizer;
using json = nlohmann::json;

std::string read_all(const std::string& path) {
  FILE* f = sae::cli::open_input(path);
  std::string s;
  char buf[1 << 16];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
  bool err = ferror(f);
  if (f != stdin) fclose(f);
  if (err) throw InputError((path == "-" ? "<stdin>" : path) + ": read error");
  return s;
}

// Token text with the characters that would break a line-oriented format escaped.
std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      case '\\': out += "\\\\"; break;
      default: out += c;
    }
  }
  return out;
}

struct Options {
  std::string bos, format, invalid;
  bool parse_special = true;
};

std::string encode_one(const Tokenizer& tok, const std::string& text, const Options& o) {
  std::vector<int32_t> ids;
  if (o.bos == "always" || (o.bos == "auto" && tok.add_bos())) {
    if (tok.bos_id() < 0) throw InputError(tok.source() + ": the tokenizer has no BOS token");
    ids.push_back(tok.bos_id());
  }
  std::vector<int32_t> body = tok.encode(text, o.parse_special);
  ids.insert(ids.end(), body.begin(), body.end());
  if (o.bos == "auto" && tok.add_eos()) ids.push_back(tok.eos_id());
  std::string out;
  if (o.format == "ids") {
    for (size_t i = 0; i < ids.size(); ++i) out += (i ? " " : "") + std::to_string(ids[i]);
    out += '\n';
  } else if (o.format == "tsv") {
    for (int32_t id : ids) out += std::to_string(id) + "\t" + escape(tok.token_text(id)) + "\n";
    out += '\n';
  } else {  // json
    json tokens = json::array();
    for (int32_t id : ids) tokens.push_back(tok.token_text(id));
    out = json{{"ids", ids}, {"tokens", tokens}}.dump() + "\n";
  }
  return out;
}

// Ids separated by white space, one text per line.
std::vector<int32_t> parse_ids(const std::string& line, const std::string& where) {
  std::vector<int32_t> ids;
  std::istringstream ss(line);
  std::string w;
  while (ss >> w) {
    size_t used = 0;
    long v = -1;
    try {
      v = std::stol(w, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != w.size() || v < 0 || v > INT32_MAX)
      throw InputError(where + ": " + json(w).dump() + " is not a token id");
    ids.push_back(static_cast<int32_t>(v));
  }
  return ids;
}

}  // namespace

int main(int argc, char** argv) {
  return sae::cli::run("sae-tokenize", argc, argv, [](int argc, char** argv) {
    namespace po = sae::cli::po;
    po::options_description desc("Options");
    Options o;
    std::string model, out_path;
    desc.add_options()
      ("model,m", po::value<std::string>(&model)->required(),
       "Hugging Face model directory (tokenizer.json, tokenizer.model, or vocab.json + merges.txt)")
      ("bos", sae::cli::choice({"auto", "always", "never"}, &o.bos)->default_value("auto"),
       "auto: BOS/EOS as the model's HF tokenizer adds them; always: prepend BOS (as "
       "TransformerLens and sae-collect do); never: no BOS/EOS")
      ("format", sae::cli::choice({"ids", "tsv", "json"}, &o.format)->default_value("ids"),
       "ids: ids separated by spaces, one line per text; tsv: one 'id<TAB>token' line per token, "
       "a blank line after each text; json: {\"ids\":[...],\"tokens\":[...]} per text")
      ("lines", "each input line is a text of its own (without its line ending); otherwise each "
                "input file is one text")
      ("no-special", "special tokens written in the text (e.g. <|endoftext|>) are plain text")
      ("invalid-utf8", sae::cli::choice({"error", "replace"}, &o.invalid)->default_value("error"),
       "error: refuse text that is not valid UTF-8, naming the byte offset; replace: read each "
       "invalid sequence as U+FFFD first")
      ("decode", "read token ids (one text per line) and write the text they stand for")
      ("info", "print the tokenizer's kind, identity, vocabulary size and BOS/EOS as JSON, and exit")
      ("output,o", po::value<std::string>(&out_path)->default_value("-"), "output file")
      ("input", po::value<std::vector<std::string>>()->multitoken(), "input files (default stdin)");
    po::positional_options_description pos;
    pos.add("input", -1);
    auto vm = sae::cli::parse(argc, argv, desc, "--model DIR [options] [FILE...]",
                              "Tokenize text with a model's own tokenizer, or decode token ids.",
                              &pos);
    if (o.bos != "auto" && o.bos != "always" && o.bos != "never")
      throw sae::UsageError("--bos must be auto, always or never, not '" + o.bos + "'");
    if (o.format != "ids" && o.format != "tsv" && o.format != "json")
      throw sae::UsageError("--format must be ids, tsv or json, not '" + o.format + "'");
    if (o.invalid != "error" && o.invalid != "replace")
      throw sae::UsageError("--invalid-utf8 must be error or replace, not '" + o.invalid + "'");
    o.parse_special = !vm.count("no-special");
    bool lines = vm.count("lines") > 0, decode = vm.count("decode") > 0;

    auto tok = Tokenizer::load(model);
    if (vm.count("info")) {
      sae::cli::Output out(out_path, false);
      std::string s = json{{"kind", tok->kind()},        {"identity", tok->identity()},
                           {"source", tok->source()},    {"vocab_size", tok->vocab_size()},
                           {"bos_id", tok->bos_id()},    {"eos_id", tok->eos_id()},
                           {"add_bos", tok->add_bos()},  {"add_eos", tok->add_eos()}}
                          .dump(1) + "\n";
      out.write(s.data(), s.size());
      out.commit();
      return 0;
    }

    auto files = sae::cli::input_files(vm);
    sae::cli::Output out(out_path, false);
    for (const auto& f : files) {
      const std::string name = f == "-" ? "<stdin>" : f;
      std::string data = read_all(f);
      if (decode) {
        size_t start = 0, line_no = 0;
        while (start < data.size()) {
          size_t nl = data.find('\n', start);
          size_t end = nl == std::string::npos ? data.size() : nl;
          ++line_no;
          std::string where = name + ": line " + std::to_string(line_no);
          std::vector<int32_t> ids = parse_ids(data.substr(start, end - start), where);
          std::string text;
          try {
            text = tok->decode(ids);
          } catch (const InputError& e) {
            throw InputError(where + ": " + e.what());
          }
          text += '\n';
          out.write(text.data(), text.size());
          start = end + 1;
        }
        continue;
      }
      if (o.invalid == "error") {
        size_t bad = sae::utf8_find_invalid(data);
        if (bad != std::string::npos) {
          size_t line_no = 1 + std::count(data.begin(), data.begin() + bad, '\n');
          char b[8];
          snprintf(b, sizeof b, "0x%02X", static_cast<unsigned char>(data[bad]));
          throw InputError(name + ": line " + std::to_string(line_no) +
                           ": invalid UTF-8 at byte offset " + std::to_string(bad) + " (byte " +
                           b + "); --invalid-utf8 replace reads it as U+FFFD");
        }
      } else {
        data = sae::utf8_replace_invalid(data);
      }
      if (!lines) {
        std::string s = encode_one(*tok, data, o);
        out.write(s.data(), s.size());
        continue;
      }
      size_t start = 0;
      while (start < data.size()) {
        size_t nl = data.find('\n', start);
        size_t end = nl == std::string::npos ? data.size() : nl;
        size_t text_end = end > start && data[end - 1] == '\r' ? end - 1 : end;
        std::string s = encode_one(*tok, data.substr(start, text_end - start), o);
        out.write(s.data(), s.size());
        start = end + 1;
      }
    }
    out.commit();
    return 0;
  });
}
