// Payload coding: see stream/payload.h.
#include "stream/payload.h"

#include <cstring>
#include <vector>

namespace sae::stream_detail {

void encode_payload(DType t, bool shuffle, const float* src, size_t n, uint8_t* dst) {
  if (n == 0) return;  // (src may be null then; memcpy must not see it)
  if (t == DType::f32) {
    if (!shuffle) {
      memcpy(dst, src, n * 4);
      return;
    }
    uint8_t *p0 = dst, *p1 = dst + n, *p2 = dst + 2 * n, *p3 = dst + 3 * n;
    for (size_t i = 0; i < n; i++) {
      uint32_t u = f32_bits(src[i]);
      p0[i] = uint8_t(u);
      p1[i] = uint8_t(u >> 8);
      p2[i] = uint8_t(u >> 16);
      p3[i] = uint8_t(u >> 24);
    }
    return;
  }
  if (shuffle) {
    uint8_t *lo = dst, *hi = dst + n;
    if (t == DType::bf16) {
      for (size_t i = 0; i < n; i++) {
        uint16_t h = f32_to_bf16(src[i]);
        lo[i] = uint8_t(h);
        hi[i] = uint8_t(h >> 8);
      }
    } else {
      for (size_t i = 0; i < n; i++) {
        uint16_t h = f32_to_f16(src[i]);
        lo[i] = uint8_t(h);
        hi[i] = uint8_t(h >> 8);
      }
    }
    return;
  }
  if (t == DType::bf16) {
    for (size_t i = 0; i < n; i++) {
      uint16_t h = f32_to_bf16(src[i]);
      memcpy(dst + 2 * i, &h, 2);
    }
  } else {
    for (size_t i = 0; i < n; i++) {
      uint16_t h = f32_to_f16(src[i]);
      memcpy(dst + 2 * i, &h, 2);
    }
  }
}

void decode_payload(DType t, bool shuffled, const uint8_t* src, size_t total, size_t i0, size_t n, float* dst) {
  if (n == 0) return;
  const size_t es = dtype_size(t);
  if (!shuffled) {
    src += i0 * es;
  } else {
    src += i0;  // plane b of the range starts at b * total
  }
  if (t == DType::f32) {
    if (!shuffled) {
      memcpy(dst, src, n * 4);
      return;
    }
    const uint8_t *p0 = src, *p1 = src + total, *p2 = src + 2 * total, *p3 = src + 3 * total;
    for (size_t i = 0; i < n; i++)
      dst[i] = bits_f32(uint32_t(p0[i]) | uint32_t(p1[i]) << 8 | uint32_t(p2[i]) << 16 | uint32_t(p3[i]) << 24);
    return;
  }
  if (t == DType::bf16) {
    if (shuffled) {
      const uint8_t *lo = src, *hi = src + total;
      for (size_t i = 0; i < n; i++) dst[i] = bits_f32(uint32_t(lo[i]) << 16 | uint32_t(hi[i]) << 24);
    } else {
      for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, src + 2 * i, 2);
        dst[i] = bf16_to_f32(h);
      }
    }
    return;
  }
  if (shuffled) {
    const uint8_t *lo = src, *hi = src + total;
    for (size_t i = 0; i < n; i++) dst[i] = f16_to_f32(uint16_t(lo[i] | hi[i] << 8));
  } else {
    for (size_t i = 0; i < n; i++) {
      uint16_t h;
      memcpy(&h, src + 2 * i, 2);
      dst[i] = f16_to_f32(h);
    }
  }
}

void store_payload(const StoredPayload& sp, DType t, bool shuffle, uint8_t* dst) {
  if (sp.dtype == t && sp.shuffled == shuffle) {
    memcpy(dst, sp.data(), sp.values * dtype_size(t));
    return;
  }
  std::vector<float> tmp(sp.values);
  decode_payload(sp.dtype, sp.shuffled, sp.data(), sp.values, 0, sp.values, tmp.data());
  encode_payload(t, shuffle, tmp.data(), sp.values, dst);
}

}  // namespace sae::stream_detail
