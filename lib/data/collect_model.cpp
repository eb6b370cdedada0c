// sae-collect --model: documents -> tokens -> windows -> batched forward passes -> one activation
// stream per hook.
#include "data/collect_model.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>

#include "backend/backend.h"
#include "base/cli.h"
#include "base/utf8.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace sae {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }
}  // namespace

// ---- documents ----

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

// ---- collection ----

std::string collect_output_path(const std::string& pattern, const std::string& hook) {
  std::string out = pattern;
  for (size_t at = out.find("{hook}"); at != std::string::npos; at = out.find("{hook}", at + hook.size()))
    out.replace(at, 6, hook);
  return out;
}

namespace {

// One hook's output: the file, the stream, and the rows gathered for the next stream batch.
struct HookOutput {
  HookPoint hook;
  std::unique_ptr<cli::Output> out;
  std::unique_ptr<StreamWriter> writer;
  Batch pending;
};

}  // namespace

CollectModelStats collect_model(const CollectModelOptions& o) {
  const auto start = Clock::now();
  CollectModelStats st;
  if (o.hooks.empty()) throw UsageError("--hook: give at least one hook (e.g. blocks.0.hook_resid_post)");
  if (o.batch < 1) throw UsageError("--batch must be at least 1, got " + std::to_string(o.batch));
  if (o.batch_rows < 1) throw UsageError("--batch-rows must be at least 1, got " + std::to_string(o.batch_rows));
  if (o.context < 2)
    throw UsageError("--context must be at least 2 (the BOS token and one token of text), got " + std::to_string(o.context));
  std::set<std::string> seen;
  for (const auto& h : o.hooks)
    if (!seen.insert(h).second) throw UsageError("--hook: " + h + " is given twice");
  const bool pattern = o.output.find("{hook}") != std::string::npos;
  if (o.hooks.size() > 1 && !pattern)
    throw UsageError("--hook: " + std::to_string(o.hooks.size()) +
                     " hooks need one output each: give -o a pattern with {hook}, e.g. -o acts.{hook}.sae");

  const Device dev = resolve_device(o.device);
  check_compute_device(o.compute, dev);
  auto be = make_backend(dev);
  Model model(o.model_dir, *be, o.compute);
  const ModelConfig& cfg = model.config();
  std::vector<HookPoint> points;
  for (const auto& h : o.hooks) {
    try {
      points.push_back(parse_hook(h, cfg));
    } catch (const UsageError& e) {
      throw UsageError(std::string("--hook: ") + e.what());
    }
  }
  if (o.context > cfg.max_positions)
    throw UsageError("--context " + std::to_string(o.context) + " is longer than the model's " +
                     std::to_string(cfg.max_positions) + " positions (" + cfg.max_positions_field + " in " +
                     o.model_dir + "/config.json)");
  auto tok = Tokenizer::load(o.model_dir);
  int32_t bos = tok->bos_id() >= 0 ? tok->bos_id() : int32_t(cfg.bos_token_id);
  if (bos < 0) throw InputError(o.model_dir + ": the model has no BOS token to start each window with");
  if (bos >= cfg.vocab)
    throw InputError(o.model_dir + ": the BOS token id " + std::to_string(bos) + " is outside the model's vocabulary");
  st.load_seconds = since(start);

  // Outputs are opened before any work, so that a bad path fails at once.
  std::vector<HookOutput> outs(points.size());
  for (size_t i = 0; i < points.size(); i++) {
    HookOutput& h = outs[i];
    h.hook = points[i];
    const std::string path = collect_output_path(o.output, o.hooks[i]);
    for (size_t j = 0; j < i; j++)
      if (outs[j].out->name() == path && path != "-")
        throw UsageError("-o: hooks " + o.hooks[j] + " and " + o.hooks[i] + " would both write " + path);
    h.out = std::make_unique<cli::Output>(path, true);
    StreamHeader head = make_header("activations", cfg.d_model, o.dtype);
    head.provenance["model"] = o.model_dir;
    if (!cfg.name.empty()) head.provenance["model_name"] = cfg.name;
    head.provenance["model_type"] = cfg.model_type;
    head.provenance["hook"] = o.hooks[i];
    head.provenance["layer"] = points[i].layer;
    head.provenance["context"] = o.context;
    head.provenance["prepend_bos"] = true;
    head.provenance["exclude_bos"] = o.exclude_bos;
    head.provenance["bos_token_id"] = bos;
    head.provenance["tokenizer"] = tok->identity();
    head.provenance["device"] = device_name(be->device());
    head.provenance["compute"] = compute_name(o.compute);
    h.writer = std::make_unique<StreamWriter>(h.out->file(), h.out->name(), head, o.writer);
  }

  const int64_t D = cfg.d_model;
  auto flush = [&](HookOutput& h) {
    if (h.pending.rows == 0) return;
    h.writer->write(std::move(h.pending));
    h.pending = Batch();
  };
  std::vector<TextWindow> pending;
  ForwardOptions fo;
  fo.capture = points;
  ForwardResult r;  // reused: its buffers keep their memory from batch to batch
  auto run_batch = [&] {
    if (pending.empty()) return;
    int64_t T = 0;
    for (const auto& w : pending) T = std::max<int64_t>(T, int64_t(w.tokens.size()));
    const int64_t B = int64_t(pending.size());
    // Shorter windows are padded after their end (with BOS): causal attention keeps the padding
    // from reaching their rows, which are the only ones kept.
    std::vector<int32_t> ids(size_t(B * T), bos);
    for (int64_t b = 0; b < B; b++) std::copy(pending[size_t(b)].tokens.begin(), pending[size_t(b)].tokens.end(), ids.begin() + b * T);
    auto t0 = Clock::now();
    model.forward(ids.data(), B, T, fo, r);
    st.forward_seconds += since(t0);
    t0 = Clock::now();
    const int64_t first = o.exclude_bos ? 1 : 0;
    for (size_t k = 0; k < outs.size(); k++) {
      HookOutput& h = outs[k];
      const std::vector<float>& acts = r.captured[k];
      for (int64_t b = 0; b < B; b++) {
        const TextWindow& w = pending[size_t(b)];
        for (int64_t p = first; p < int64_t(w.tokens.size()); p++) {
          const float* row = acts.data() + (b * T + p) * D;
          h.pending.x.insert(h.pending.x.end(), row, row + D);
          h.pending.token.push_back(w.tokens[size_t(p)]);
          h.pending.doc.push_back(w.doc);
          h.pending.pos.push_back(int32_t(p));
          h.pending.rows++;
          if (h.pending.rows == o.batch_rows) flush(h);
        }
      }
    }
    for (const auto& w : pending) st.rows += int64_t(w.tokens.size()) - first;
    st.write_seconds += since(t0);
    st.sequences += B;
    pending.clear();
  };

  cli::Progress progress;
  TextDocumentReader reader(o.inputs, o.jsonl_field, o.lines, o.replace_invalid_utf8);
  TextDocument doc;
  std::vector<TextWindow> doc_windows;  // one document's, handed to `pending` a batch at a time
  for (int64_t doc_id = 0;; doc_id++) {
    auto t0 = Clock::now();
    if (!reader.next(doc)) break;
    std::vector<int32_t> ids = encode_document(*tok, doc);
    st.tokenize_seconds += since(t0);
    st.documents++;
    if (ids.empty()) {
      st.empty_documents++;
      continue;
    }
    st.tokens += int64_t(ids.size());
    doc_windows.clear();
    append_windows(ids, doc_id, bos, o.context, doc_windows);
    for (auto& w : doc_windows) {
      pending.push_back(std::move(w));
      if (int64_t(pending.size()) == o.batch) run_batch();
    }
    if (progress.enabled()) {
      const double s = since(start);
      progress.update("collect: " + cli::human_count(double(st.documents)) + " documents, " +
                      cli::human_count(double(st.tokens)) + " tokens, " +
                      cli::human_count(double(st.tokens) / std::max(s, 1e-9)) + " tokens/s");
    }
  }
  run_batch();
  progress.done();
  auto t0 = Clock::now();
  for (auto& h : outs) {
    flush(h);
    h.writer->finish();
  }
  st.write_seconds += since(t0);
  for (auto& h : outs) h.out->commit();
  st.total_seconds = since(start);
  return st;
}

}  // namespace sae
