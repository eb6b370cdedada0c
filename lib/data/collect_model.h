// sae-collect's model source (docs/models.md): text in, a model's activations at TransformerLens
// hook points out, one activation stream per hook.
//
// Documents are read from plain text (separated by blank lines, or one per line) or JSONL (one
// object per line, the text under a named field). Each is tokenized with the model's own
// tokenizer, without BOS, and cut into windows of context-1 tokens; every window runs with the
// BOS token prepended, so a sequence holds at most `context` tokens. Rows carry the token id, the
// document id (the document's index in the input, counting from 0 over all files, empty documents
// included) and the position in the window (0 = the BOS token, whose row is left out by default).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "base/dtype.h"
#include "model/model.h"
#include "stream/stream.h"
#include "tokenizer/tokenizer.h"

namespace sae {

struct CollectModelOptions {
  std::string model_dir;
  std::vector<std::string> hooks;     // TransformerLens names, one output stream each
  std::vector<std::string> inputs;    // text files; "-" = stdin
  std::string jsonl_field;            // "" = plain text, else JSONL with the text in this field
  bool lines = false;                 // plain text: one document per line (else blank-line separated)
  bool replace_invalid_utf8 = false;  // read invalid UTF-8 as U+FFFD instead of refusing it
  int64_t context = 128;              // tokens per sequence, BOS included
  int64_t batch = 8;                  // sequences per forward pass
  bool exclude_bos = true;            // leave out the BOS rows
  std::string device = "cpu";         // cpu, cuda or auto
  Compute compute = Compute::f32;     // bf16: bf16 weights and GEMM inputs (CUDA only; lib/model/model.h)
  // Where the streams go: "-" (stdout, one hook only), a file, or a pattern with "{hook}" that
  // names one file per hook (required for several hooks).
  std::string output = "-";
  DType dtype = DType::f32;
  int64_t batch_rows = 4096;  // rows per stream batch
  WriterOptions writer;
  std::string progress_label = "collect";  // what the progress line on a terminal starts with
};

struct CollectModelStats {
  int64_t documents = 0, empty_documents = 0, sequences = 0, tokens = 0, rows = 0;
  // Loading the model and tokenizer; then, per document and batch, tokenizing, running the model
  // and writing the streams; total includes all of them.
  double load_seconds = 0, tokenize_seconds = 0, forward_seconds = 0, write_seconds = 0, total_seconds = 0;
};

// The file a hook's stream goes to under `pattern` (every "{hook}" replaced by the hook name).
std::string collect_output_path(const std::string& pattern, const std::string& hook);

// What a row sink learns once the model is loaded, before the first rows.
struct ModelRowsContext {
  const ModelConfig& cfg;
  const std::vector<HookPoint>& points;  // the hooks, in the order of CollectModelOptions::hooks
  const Tokenizer& tokenizer;
  int32_t bos;
  Device device;
};

// Where run_model_rows hands the rows.
class ModelRowSink {
 public:
  virtual ~ModelRowSink() = default;
  virtual void start(const ModelRowsContext& context) = 0;
  // A batch of up to batch_rows rows of one hook (x, token, doc, pos), the caller's to consume.
  // Returning false stops the run after the current forward batch (e.g. enough tokens were seen).
  virtual bool rows(size_t hook, Batch& batch) = 0;
};

// The forward half of collection, for tools that consume the rows themselves (sae-explain):
// every option of `o` except the output ones (output, dtype, writer) applies. Throws what
// collect_model throws for bad options, models and input, and an InputError when there is no text.
CollectModelStats run_model_rows(const CollectModelOptions& o, ModelRowSink& sink);

// Runs the collection; every output appears atomically and only if all were written. Empty
// documents are skipped and counted (the caller reports the count).
CollectModelStats collect_model(const CollectModelOptions& o);

}  // namespace sae
