// Decoding one frame (docs/stream-format.md, "Header", "Batches", "Footer"): decompress it, parse
// its msgpack map, check every field against the header and the frame's size, and decode the
// payload (or, with keep_stored, leave it as stored). Runs on the reader's worker threads, so it
// reports problems in the result instead of throwing: the reader names the batch they belong to.
#pragma once
#include <cstdint>
#include <string>

#include "stream/frame_source.h"
#include "stream/stream.h"

namespace sae::stream_detail {

enum class FrameType { unknown, header, batch, footer };

struct Decoded {
  FrameType type = FrameType::unknown;
  StreamHeader header;
  Batch batch;
  int64_t rows = 0;      // batch: rows stored in the frame (before any are skipped); footer: total
  int64_t batches = 0;   // footer: batch count
  int64_t nonfinite = 0; // batch: rows holding NaN or Inf
  int64_t first_bad = -1;
  std::string error;     // non-empty: this frame is bad (and `type` says what it was, if known)
};

// Decodes frame `f`: batches against header `h` (null while no header has been read), with the
// options' non-finite policy, frame size limit and keep_stored. `reuse` is a batch whose buffers
// the result takes over (the reader recycles them).
Decoded decode_frame(const RawFrame& f, const StreamHeader* h, const ReaderOptions& opt, Batch&& reuse);

}  // namespace sae::stream_detail
