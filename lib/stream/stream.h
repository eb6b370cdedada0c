// The saetools stream (docs/stream-format.md): a sequence of zstd frames, each holding one msgpack
// map: a header, then batches, then a footer. Concatenated streams read as one when their headers
// agree. StreamWriter compresses batches on background threads; StreamReader reads ahead and
// decompresses frames on several threads while the caller works on the previous batch.
#pragma once
#include <cstdint>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "base/dtype.h"

namespace sae {

using json = nlohmann::json;

constexpr const char* kStreamFormat = "saetools-stream";
constexpr int kStreamVersion = 1;
// Default bound on one frame's decompressed size; also the largest batch a writer will write.
constexpr size_t kMaxFrameBytes = size_t(1) << 30;

struct StreamHeader {
  std::string kind = "activations";  // "activations" (dense rows) or "latents" (sparse rows)
  int64_t d = 0;                     // row width (latents: number of latents)
  DType dtype = DType::f32;          // storage dtype of the payload
  json provenance = json::object();  // model, hook, layer, context, tokenizer, tool, tool_version, seed...
  json extra = json::object();       // unknown top-level keys: kept, passed through, ignored

  std::string hook() const;  // provenance["hook"] or ""
};

// A growable byte buffer that is never zero-filled (its bytes are always overwritten before they
// are read). Copies are deep.
class ByteBuffer {
 public:
  ByteBuffer() = default;
  ByteBuffer(const ByteBuffer& o) { *this = o; }
  ByteBuffer& operator=(const ByteBuffer& o);
  // A moved-from buffer is empty (and reusable).
  ByteBuffer(ByteBuffer&& o) noexcept { *this = std::move(o); }
  ByteBuffer& operator=(ByteBuffer&& o) noexcept;
  // Size n; the contents are unspecified (old bytes are not kept when it grows).
  void resize_discard(size_t n);
  // Keeps the first n bytes (n <= size()).
  void truncate(size_t n);
  uint8_t* data() { return p_.get(); }
  const uint8_t* data() const { return p_.get(); }
  size_t size() const { return size_; }

 private:
  std::unique_ptr<uint8_t[]> p_;
  size_t size_ = 0, cap_ = 0;
};

// An activation payload exactly as the stream stores it: the dtype's little-endian bytes, plane
// by plane when byte-shuffled (byte b of value i at b * values + i), inside the decompressed frame.
struct StoredPayload {
  size_t values = 0;  // rows * d; 0: the batch holds its payload in Batch::x instead
  DType dtype = DType::f32;
  bool shuffled = false;
  ByteBuffer frame;   // the decompressed frame (its msgpack map)
  size_t offset = 0;  // where the payload starts in `frame`
  const uint8_t* data() const { return frame.data() + offset; }
};

// One batch of rows. Activations are in `x` as f32, unless the reader was asked to keep payloads
// as stored (ReaderOptions::keep_stored): then `x` is empty and `stored` holds them, and
// rows_f32() converts while it copies (one pass over the values less than decoding into `x`
// first). Optional per-row columns are either empty or hold exactly `rows` entries.
struct Batch {
  int64_t rows = 0;
  std::vector<float> x;  // activations: rows * d, row-major (empty when the payload is stored)
  StoredPayload stored;

  std::vector<int32_t> token;  // token id per row
  std::vector<int64_t> doc;    // document id per row
  std::vector<int32_t> pos;    // position in the context per row

  // latents: row r holds count[r] (index, value) pairs, rows laid out one after another.
  std::vector<uint32_t> count;
  std::vector<uint32_t> index;
  std::vector<float> value;

  void clear();
  bool is_stored() const { return stored.values != 0; }
  // Rows [r0, r0 + n) of a `d`-wide activations batch as f32 into dst (n * d floats), from `x` or
  // converted from the stored payload.
  void rows_f32(int64_t d, int64_t r0, int64_t n, float* dst) const;
  // Row r's values in the stored dtype's natural (unshuffled) byte layout into dst
  // (d * dtype_size bytes). Only for stored batches.
  void row_stored_bytes(int64_t d, int64_t r, uint8_t* dst) const;
  // Converts a stored payload into `x` (nothing to do when there is none).
  void decode_stored();
};

struct WriterOptions {
  int level = 3;              // zstd level (negative levels are the fastest)
  // Compression threads. Batches are compressed on this many background threads while the caller
  // goes on producing; 0 compresses in the caller's thread. The bytes written do not depend on it.
  int threads = 1;
  bool byte_shuffle = false;  // store payload bytes plane by plane (helps 16-bit dtypes compress)
};

// Writes one stream to a FILE* (an Output's file). The header frame is written at construction;
// batches are compressed in order-preserving parallel and written as they complete; finish()
// writes what is left and the footer. Destroying an unfinished writer drops what is pending (the
// caller's Output then removes the half-written file).
class StreamWriter {
 public:
  StreamWriter(FILE* out, std::string name, StreamHeader header, WriterOptions opt = {});
  ~StreamWriter();
  StreamWriter(const StreamWriter&) = delete;
  StreamWriter& operator=(const StreamWriter&) = delete;
  const StreamHeader& header() const { return header_; }
  void write(const Batch& b);
  void write(Batch&& b);
  void finish();
  // Rows and batches handed to write() so far; bytes written to the file so far.
  int64_t rows_written() const { return rows_; }
  int64_t bytes_written() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  StreamHeader header_;
  int64_t rows_ = 0;
};

enum class NonFinite { allow, error, skip };

struct ReaderOptions {
  int threads = 0;  // decompression threads; 0 = all cores
  NonFinite nonfinite = NonFinite::allow;
  // Read and decompress ahead on background threads. Off: everything happens inside next().
  bool prefetch = true;
  // Hand out activation payloads as stored (Batch::stored) instead of converted to f32 in
  // Batch::x. For readers that copy rows somewhere anyway: they convert in that copy
  // (Batch::rows_f32). Latent batches are always decoded. A batch whose non-finite rows are
  // skipped comes decoded (in x).
  bool keep_stored = false;
  // A frame that claims a larger decompressed size is refused as corrupt (bounds memory on
  // hostile input).
  size_t max_frame_bytes = kMaxFrameBytes;
};

// Reads one or more files ("-" = stdin) in order as one stream. Every defect is an InputError
// whose one-line message names the file and the batch: bad magic, wrong format or version, corrupt
// or truncated frame, missing footer, footer count mismatch, headers that disagree, non-finite rows
// (if asked). The exact messages are listed in docs/stream-format.md.
class StreamReader {
 public:
  explicit StreamReader(std::vector<std::string> paths, ReaderOptions opt = {});
  // Reads from an already open FILE* (not closed by the reader); `name` is used in messages.
  StreamReader(FILE* f, const std::string& name, ReaderOptions opt = {});
  // Reads an in-memory stream (not copied: `data` must outlive the reader).
  StreamReader(const void* data, size_t size, const std::string& name, ReaderOptions opt = {});
  ~StreamReader();
  StreamReader(const StreamReader&) = delete;
  StreamReader& operator=(const StreamReader&) = delete;
  // The first header (read at construction).
  const StreamHeader& header() const { return header_; }
  // Next batch; false at the end of the last file. `b`'s old buffers are reused for later batches.
  bool next(Batch& b);
  int64_t rows_read() const { return rows_; }
  int64_t rows_skipped() const { return skipped_; }
  int64_t batches_read() const { return batches_; }
  int64_t compressed_bytes() const { return compressed_; }
  // Complete streams seen so far (a file made with `cat a b` holds two).
  int64_t streams_read() const { return streams_; }
  // Where the last batch came from, for messages: "file: batch N" ("file" before the first batch).
  std::string where() const;

 private:
  void start();
  struct Impl;
  std::unique_ptr<Impl> impl_;
  StreamHeader header_;
  ReaderOptions opt_;
  int64_t rows_ = 0, skipped_ = 0, batches_ = 0, compressed_ = 0, streams_ = 0;
};

// Reads a whole in-memory stream (for tests and the fuzzer); throws InputError on any defect.
// Single-threaded and without read-ahead unless `opt` says otherwise.
std::vector<Batch> read_stream_bytes(const std::string& bytes, StreamHeader* header = nullptr);
std::vector<Batch> read_stream_bytes(const std::string& bytes, StreamHeader* header, const ReaderOptions& opt);

// Header helpers shared by tools: a header for a new stream, provenance filled with the tool and
// version.
StreamHeader make_header(const std::string& kind, int64_t d, DType dtype);

// Checks that a batch is consistent with a header (sizes of payload and columns, latent indices
// below d); throws std::logic_error (a bug in the caller) naming `where`.
void check_batch(const StreamHeader& h, const Batch& b, const std::string& where);

// Why `later` cannot be read after `first` as one stream ("d=32 here, d=16 there"), or "" when it can.
std::string header_mismatch(const StreamHeader& first, const StreamHeader& later);

}  // namespace sae
