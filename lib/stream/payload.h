// Payload coding (docs/stream-format.md, "Payloads"): f32 values in memory to and from a stream's
// stored dtype (f32, f16, bf16), with the optional byte shuffle fused into the same pass. Shuffled
// storage keeps byte b of element i at b*n + i (planes of equal significance). Loads and stores go
// through memcpy: a payload sits at any alignment inside a frame.
#pragma once
#include <cstddef>
#include <cstdint>

#include "base/dtype.h"
#include "stream/stream.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the stream format is little-endian; so is this code");

namespace sae::stream_detail {

// n values from src into dst as `t`, plane by plane when `shuffle`.
void encode_payload(DType t, bool shuffle, const float* src, size_t n, uint8_t* dst);

// Values [i0, i0 + n) of a payload of `total` values stored as `t` (plane by plane when shuffled)
// into dst as f32.
void decode_payload(DType t, bool shuffled, const uint8_t* src, size_t total, size_t i0, size_t n, float* dst);

// A stored payload (from a reader with keep_stored) written as `t`, shuffled or not: the bytes as
// they are when they already match, else through f32.
void store_payload(const StoredPayload& sp, DType t, bool shuffle, uint8_t* dst);

}  // namespace sae::stream_detail
