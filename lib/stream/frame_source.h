// Splitting input into zstd frames without copying them: a FrameSource reads a file descriptor,
// a FILE* or bytes in memory in large chunks and hands out whole frames that point into the chunk
// (and keep it alive), checking each frame header before it buffers the frame. Problems are thrown
// as SourceError; the reader turns them into messages once it knows where in the stream they
// happened.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

namespace sae::stream_detail {

// A contiguous piece of input holding whole frames. Frames handed out point into it and keep it
// alive; for in-memory input it is a view of the caller's bytes.
struct Chunk {
  std::unique_ptr<uint8_t[]> own;
  const uint8_t* base = nullptr;
  size_t cap = 0;
};

struct RawFrame {
  std::shared_ptr<Chunk> chunk;
  const uint8_t* p = nullptr;
  size_t n = 0;
};

// A problem found while splitting the input into frames; the reader turns it into a message once it
// knows where in the stream it happened (which batch came before).
struct SourceError {
  enum Code { open, read, empty, bad_magic, truncated, frame } code;
  std::string detail;
};
struct Stopped {};  // the reader is being destroyed

struct ByteSource {
  virtual ~ByteSource() = default;
  virtual size_t read(uint8_t* p, size_t n) = 0;  // 0 at end of input
};

// A file descriptor (closed at the end when `own`). On a pipe, FIFO or terminal it waits in short
// slices: it throws Stopped once *stop is set (when given), so a reader being destroyed is not
// stuck on an idle pipe, and cli::Interrupted once a signal has set cli::interrupted().
struct FdSource : ByteSource {
  int fd;
  bool own;
  bool regular = false;
  std::string name;
  const std::atomic<bool>* stop;
  FdSource(int fd_, bool own_, std::string name_, const std::atomic<bool>* stop_);
  ~FdSource() override;
  size_t read(uint8_t* p, size_t n) override;
};

// A FILE* the caller opened (and closes).
struct StdioSource : ByteSource {
  FILE* f;
  std::string name;
  StdioSource(FILE* f_, std::string name_) : f(f_), name(std::move(name_)) {}
  size_t read(uint8_t* p, size_t n) override;
};

class FrameSource {
 public:
  FrameSource(std::unique_ptr<ByteSource> in, size_t max_frame) : in_(std::move(in)), max_frame_(max_frame) {}
  FrameSource(const void* data, size_t n, size_t max_frame);
  // Next whole frame, or false at a clean end of input. Throws SourceError.
  bool next(RawFrame& out);
  int64_t frames() const { return frames_; }

 private:
  // Reads more input so that at least `want` bytes from pos_ fit in the current chunk.
  void fill(size_t want);
  std::unique_ptr<ByteSource> in_;
  size_t max_frame_;
  std::shared_ptr<Chunk> cur_;
  size_t len_ = 0, pos_ = 0;
  bool eof_ = false;
  int64_t frames_ = 0;
};

}  // namespace sae::stream_detail
