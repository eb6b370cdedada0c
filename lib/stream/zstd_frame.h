// zstd frames as the stream uses them (docs/stream-format.md, "Frames"; RFC 8878 §3.1.1.1): every
// frame records its decompressed size and carries a content checksum, and needs no dictionary.
// Frame headers are checked here before a frame is buffered or decoded, so a hostile size is
// refused before any buffer is sized from it. Compression contexts are per thread and reused.
#pragma once
#include <zstd.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "stream/stream.h"

namespace sae::stream_detail {

constexpr uint32_t kZstdMagic = 0xFD2FB528u;

// One compression and one decompression context per thread, reused for every frame.
struct ZContexts {
  ZSTD_CCtx* c = nullptr;
  ZSTD_DCtx* d = nullptr;
  ByteBuffer scratch;  // msgpack bytes of the frame being written, or of the frame just decompressed
  ~ZContexts() {
    ZSTD_freeCCtx(c);
    ZSTD_freeDCtx(d);
  }
};
// This thread's contexts (made on first use; std::bad_alloc when zstd cannot make them).
ZContexts& zctx();

struct FrameInfo {
  size_t header_size = 0;
  uint64_t content = 0;  // decompressed size
};

// 1: header parsed into `fi`; 0: need more bytes; -1: not a zstd frame (bad magic). Frames the
// format does not allow, or that claim more than max_content bytes, throw
// InputError("corrupt frame (...)").
int parse_frame_header(const uint8_t* p, size_t avail, size_t max_content, FrameInfo& fi);

// Throws InputError("corrupt frame (claims C bytes decompressed, more than its N bytes can hold)")
// unless the whole frame at p (n bytes, header parsed into `fi`) can decompress to fi.content
// bytes. Its block headers bound that without decompressing: a raw or RLE block regenerates the
// size it states, a compressed block at most 128 KiB. (ZSTD_decompressBound is no help here: it
// trusts the content size field.) Checked before a buffer is sized from the header's claim.
void check_frame_holds(const uint8_t* p, size_t n, const FrameInfo& fi);

// One frame of the n bytes at src (checksum and content size on) into out.
void compress_into(const uint8_t* src, size_t n, int level, ByteBuffer& out);
void compress_string(const std::string& s, int level, ByteBuffer& out);

}  // namespace sae::stream_detail
