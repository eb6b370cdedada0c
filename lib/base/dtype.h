// Storage dtypes: f32, f16 (IEEE half) and bf16, with exact round-to-nearest-even conversions
// usable on host and device.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

#include "base/errors.h"
#include "base/host_device.h"

namespace sae {

enum class DType { f32, f16, bf16 };

size_t dtype_size(DType t);
const char* dtype_name(DType t);
DType parse_dtype(const std::string& s);  // throws UsageError naming the value

SAE_HD uint32_t f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
SAE_HD float bits_f32(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

// bf16: upper 16 bits of f32, rounded to nearest even; NaN stays NaN.
SAE_HD uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
SAE_HD float bf16_to_f32(uint16_t h) { return bits_f32(uint32_t(h) << 16); }

// IEEE binary16, round to nearest even, with subnormals, overflow to Inf, NaN preserved.
SAE_HD uint16_t f32_to_f16(float f) {
  uint32_t x = f32_bits(f);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return uint16_t(sign | 0x7e00u);  // NaN
  if (ax >= 0x477ff000u) return uint16_t(sign | 0x7c00u); // rounds to >= 65520: Inf
  if (ax < 0x38800000u) {                                  // below the smallest normal half
    if (ax < 0x33000000u) return uint16_t(sign);           // below half the smallest subnormal
    uint32_t e = ax >> 23;
    uint32_t m = (ax & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - e;                              // 14 + (113 - e) - 1
    uint32_t half_m = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1);
    uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (half_m & 1u))) half_m++;
    return uint16_t(sign | half_m);
  }
  uint32_t h = ((ax - 0x38000000u) >> 13);                 // rebias exponent 127 -> 15
  uint32_t rem = ax & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
  return uint16_t(sign | h);
}
SAE_HD float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t e = (h >> 10) & 0x1fu;
  uint32_t m = h & 0x3ffu;
  if (e == 0) {
    if (m == 0) return bits_f32(sign);
    // subnormal: value = m * 2^-24
    float v = float(m) * (1.0f / 16777216.0f);
    return sign ? -v : v;
  }
  if (e == 31) return bits_f32(sign | 0x7f800000u | (m << 13));
  return bits_f32(sign | ((e + 112) << 23) | (m << 13));
}

// Bulk conversions between f32 and a stored dtype (little-endian bytes).
void encode_f32(DType t, const float* src, size_t n, void* dst);
void decode_f32(DType t, const void* src, size_t n, float* dst);

}  // namespace sae
