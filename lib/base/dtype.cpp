#include "base/dtype.h"

namespace sae {

size_t dtype_size(DType t) { return t == DType::f32 ? 4 : 2; }

const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::f16: return "f16";
    case DType::bf16: return "bf16";
  }
  return "?";
}

DType parse_dtype(const std::string& s) {
  if (s == "f32" || s == "float32") return DType::f32;
  if (s == "f16" || s == "float16") return DType::f16;
  if (s == "bf16" || s == "bfloat16") return DType::bf16;
  throw UsageError("unknown dtype '" + s + "' (expected f32, f16 or bf16)");
}

void encode_f32(DType t, const float* src, size_t n, void* dst) {
  switch (t) {
    case DType::f32: memcpy(dst, src, n * 4); return;
    case DType::f16: {
      auto* o = static_cast<uint16_t*>(dst);
#pragma omp simd
      for (size_t i = 0; i < n; i++) o[i] = f32_to_f16(src[i]);
      return;
    }
    case DType::bf16: {
      auto* o = static_cast<uint16_t*>(dst);
#pragma omp simd
      for (size_t i = 0; i < n; i++) o[i] = f32_to_bf16(src[i]);
      return;
    }
  }
}

void decode_f32(DType t, const void* src, size_t n, float* dst) {
  switch (t) {
    case DType::f32: memcpy(dst, src, n * 4); return;
    case DType::f16: {
      auto* in = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; i++) dst[i] = f16_to_f32(in[i]);
      return;
    }
    case DType::bf16: {
      auto* in = static_cast<const uint16_t*>(src);
#pragma omp simd
      for (size_t i = 0; i < n; i++) dst[i] = bf16_to_f32(in[i]);
      return;
    }
  }
}

}  // namespace sae
