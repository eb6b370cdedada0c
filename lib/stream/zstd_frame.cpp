// zstd frames: see stream/zstd_frame.h.
#include "stream/zstd_frame.h"

#include <cstring>
#include <new>
#include <stdexcept>

#include "base/errors.h"

namespace sae::stream_detail {

ZContexts& zctx() {
  thread_local ZContexts z;
  if (!z.c) z.c = ZSTD_createCCtx();
  if (!z.d) z.d = ZSTD_createDCtx();
  if (!z.c || !z.d) throw std::bad_alloc();
  return z;
}

int parse_frame_header(const uint8_t* p, size_t avail, size_t max_content, FrameInfo& fi) {
  if (avail < 4) return 0;
  uint32_t magic;
  memcpy(&magic, p, 4);
  if (magic != kZstdMagic) return -1;
  if (avail < 5) return 0;
  const uint8_t fhd = p[4];
  const int fcs_flag = fhd >> 6;
  const bool single = fhd & 0x20;
  const bool checksum = fhd & 0x04;
  const int did_flag = fhd & 0x03;
  static const size_t did_size[4] = {0, 1, 2, 4};
  static const size_t fcs_size[4] = {0, 2, 4, 8};
  size_t fcs = fcs_flag == 0 ? (single ? 1 : 0) : fcs_size[fcs_flag];
  if (fhd & 0x08) throw InputError("corrupt frame (reserved bit set in the zstd frame header)");
  if (fcs == 0) throw InputError("corrupt frame (no content size in the zstd frame header)");
  if (did_flag) throw InputError("corrupt frame (the zstd frame needs a dictionary)");
  if (!checksum) throw InputError("corrupt frame (no content checksum)");
  fi.header_size = 5 + (single ? 0 : 1) + did_size[did_flag] + fcs;
  if (avail < fi.header_size) return 0;
  const uint8_t* f = p + fi.header_size - fcs;
  uint64_t c = 0;
  for (size_t i = 0; i < fcs; i++) c |= uint64_t(f[i]) << (8 * i);
  if (fcs == 2) c += 256;
  fi.content = c;
  if (c > max_content)
    throw InputError("corrupt frame (claims " + std::to_string(c) + " bytes decompressed, over the limit of " +
                     std::to_string(max_content) + ")");
  return 1;
}

void check_frame_holds(const uint8_t* p, size_t n, const FrameInfo& fi) {
  constexpr uint64_t kMaxBlock = uint64_t(128) << 10;  // RFC 8878 3.1.1.2.3: Block_Maximum_Size
  uint64_t bound = 0;
  size_t pos = fi.header_size;
  for (bool last = false; !last;) {
    if (pos + 3 > n) throw InputError("corrupt frame (ends inside a block header)");
    const uint32_t bh = uint32_t(p[pos]) | uint32_t(p[pos + 1]) << 8 | uint32_t(p[pos + 2]) << 16;
    pos += 3;
    last = bh & 1;
    const uint32_t type = (bh >> 1) & 3, size = bh >> 3;
    if (type == 3) throw InputError("corrupt frame (reserved zstd block type)");
    bound += type == 2 ? kMaxBlock : size;  // 0 raw, 1 RLE: exactly `size`; 2 compressed: at most a block
    pos += type == 1 ? 1 : size;
    if (pos > n) throw InputError("corrupt frame (a block runs past the frame)");
  }
  if (fi.content > bound)
    throw InputError("corrupt frame (claims " + std::to_string(fi.content) + " bytes decompressed, more than its " +
                     std::to_string(n) + " bytes can hold)");
}

void compress_into(const uint8_t* src, size_t n, int level, ByteBuffer& out) {
  ZSTD_CCtx* c = zctx().c;
  ZSTD_CCtx_reset(c, ZSTD_reset_session_and_parameters);
  ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, level);
  ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
  ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, 1);
  out.resize_discard(ZSTD_compressBound(n));
  size_t r = ZSTD_compress2(c, out.data(), out.size(), src, n);
  if (ZSTD_isError(r)) throw std::runtime_error(std::string("zstd: ") + ZSTD_getErrorName(r));
  out.truncate(r);
}

void compress_string(const std::string& s, int level, ByteBuffer& out) {
  compress_into(reinterpret_cast<const uint8_t*>(s.data()), s.size(), level, out);
}

}  // namespace sae::stream_detail
