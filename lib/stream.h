// The saetools activation stream (docs/stream-format.md): a sequence of zstd frames, each holding
// one msgpack map: a header, then batches, then a footer. Concatenated streams read as one when
// their headers agree.
#pragma once
#include <cstdint>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dtype.h"

namespace sae {

using json = nlohmann::json;

constexpr const char* kStreamFormat = "saetools-stream";
constexpr int kStreamVersion = 1;

struct StreamHeader {
  std::string kind = "activations";  // "activations" (dense rows) or "latents" (sparse rows)
  int64_t d = 0;                     // row width (latents: number of latents)
  DType dtype = DType::f32;          // storage dtype of the payload
  json provenance = json::object();  // model, hook, layer, context, tokenizer, tool, tool_version, seed...
  json extra = json::object();       // unknown top-level keys: kept, passed through, ignored

  std::string hook() const;  // provenance["hook"] or ""
};

// One batch of rows, always decoded to f32 in memory. Optional per-row columns are either empty or
// hold exactly `rows` entries.
struct Batch {
  int64_t rows = 0;
  std::vector<float> x;  // activations: rows * d, row-major

  std::vector<int32_t> token;  // token id per row
  std::vector<int64_t> doc;    // document id per row
  std::vector<int32_t> pos;    // position in the context per row

  // latents: row r holds count[r] (index, value) pairs, rows laid out one after another.
  std::vector<uint32_t> count;
  std::vector<uint32_t> index;
  std::vector<float> value;

  void clear();
};

struct WriterOptions {
  int level = 3;              // zstd level (negative levels are the fastest)
  int threads = 1;            // batches compressed in parallel
  bool byte_shuffle = false;  // store payload bytes plane by plane (helps 16-bit dtypes compress)
};

// Writes one stream to a FILE* (an Output's file). Batches may be buffered to compress them in
// parallel; finish() writes everything and the footer.
class StreamWriter {
 public:
  StreamWriter(FILE* out, std::string name, StreamHeader header, WriterOptions opt = {});
  ~StreamWriter();
  const StreamHeader& header() const { return header_; }
  void write(const Batch& b);
  void write(Batch&& b);
  void finish();
  int64_t rows_written() const { return rows_; }
  int64_t bytes_written() const { return bytes_; }

 private:
  void flush_pending();
  void put(const std::string& frame);
  FILE* out_;
  std::string name_;
  StreamHeader header_;
  WriterOptions opt_;
  std::vector<Batch> pending_;
  int64_t rows_ = 0, batches_ = 0, bytes_ = 0;
  bool finished_ = false;
};

enum class NonFinite { allow, error, skip };

struct ReaderOptions {
  int threads = 0;  // decompression threads; 0 = all cores
  NonFinite nonfinite = NonFinite::allow;
};

// Reads one or more files ("-" = stdin) in order as one stream. Every defect is an InputError
// naming the file and the batch: bad magic, wrong format or version, corrupt or truncated frame,
// missing footer, footer count mismatch, headers that disagree, non-finite rows (if asked).
class StreamReader {
 public:
  explicit StreamReader(std::vector<std::string> paths, ReaderOptions opt = {});
  // Reads from an already open FILE* (not closed by the reader); `name` is used in messages.
  StreamReader(FILE* f, const std::string& name, ReaderOptions opt = {});
  ~StreamReader();
  // The first header (read at construction).
  const StreamHeader& header() const { return header_; }
  // Next batch; false at the end of the last file.
  bool next(Batch& b);
  int64_t rows_read() const { return rows_; }
  int64_t rows_skipped() const { return skipped_; }
  int64_t batches_read() const { return batches_; }
  int64_t compressed_bytes() const { return compressed_; }

 private:
  void start();
  struct Impl;
  std::unique_ptr<Impl> impl_;
  StreamHeader header_;
  ReaderOptions opt_;
  int64_t rows_ = 0, skipped_ = 0, batches_ = 0, compressed_ = 0;
};

// Reads a whole in-memory stream (for tests and the fuzzer); throws InputError on any defect.
std::vector<Batch> read_stream_bytes(const std::string& bytes, StreamHeader* header = nullptr);

// Header helpers shared by tools: a header for a new stream, provenance filled with the tool and
// version.
StreamHeader make_header(const std::string& kind, int64_t d, DType dtype);

// Checks that a batch is consistent with a header (sizes of payload and columns).
void check_batch(const StreamHeader& h, const Batch& b, const std::string& where);

}  // namespace sae
