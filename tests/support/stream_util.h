// Helpers for the stream tests: deterministic batches, streams written to memory, and hand-made
// frames for malformed input.
#pragma once
#include <stdio.h>
#include <zstd.h>

#include <algorithm>
#include <filesystem>
#include <cmath>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "base/files.h"  // TempDir
#include "stream/msgpack_lite.h"
#include "stream/stream.h"

namespace sae::test {

// What a value looks like after being stored as `t` (conversions are exact and deterministic, so
// tests compare with this bit for bit).
inline float stored(DType t, float v) {
  if (t == DType::bf16) return bf16_to_f32(f32_to_bf16(v));
  if (t == DType::f16) return f16_to_f32(f32_to_f16(v));
  return v;
}

struct Cols {
  bool token = false, doc = false, pos = false;
};

// `rows` dense rows of width d, values ~ N(0, 1) times a per-dimension scale.
inline Batch dense_batch(int64_t rows, int64_t d, uint32_t seed, Cols c = {}) {
  std::mt19937 g(seed);
  std::normal_distribution<float> n(0.f, 1.f);
  Batch b;
  b.rows = rows;
  b.x.resize(size_t(rows * d));
  for (int64_t r = 0; r < rows; r++)
    for (int64_t j = 0; j < d; j++) b.x[size_t(r * d + j)] = n(g) * float(1 + j % 5);
  for (int64_t r = 0; r < rows; r++) {
    if (c.token) b.token.push_back(int32_t(g() % 50000));
    if (c.doc) b.doc.push_back(int64_t(seed) * 1000000007LL + r / 7);
    if (c.pos) b.pos.push_back(int32_t(r % 128));
  }
  return b;
}

// Sparse rows: up to k distinct sorted latents below d per row (some rows empty).
inline Batch latent_batch(int64_t rows, int64_t d, int k, uint32_t seed, Cols c = {}) {
  std::mt19937 g(seed);
  std::normal_distribution<float> n(0.f, 1.f);
  Batch b;
  b.rows = rows;
  for (int64_t r = 0; r < rows; r++) {
    uint32_t cnt = uint32_t(g() % uint32_t(k + 1));
    std::vector<uint32_t> idx;
    while (idx.size() < cnt) {
      uint32_t i = uint32_t(g() % uint64_t(d));
      bool dup = false;
      for (auto e : idx) dup |= e == i;
      if (!dup) idx.push_back(i);
    }
    std::sort(idx.begin(), idx.end());
    b.count.push_back(cnt);
    for (auto i : idx) {
      b.index.push_back(i);
      b.value.push_back(std::fabs(n(g)) + 0.1f);
    }
    if (c.token) b.token.push_back(int32_t(g() % 50000));
    if (c.doc) b.doc.push_back(int64_t(r / 3));
    if (c.pos) b.pos.push_back(int32_t(r % 64));
  }
  return b;
}

inline StreamHeader header(const std::string& kind, int64_t d, DType t, const std::string& hook = "blocks.0.hook_resid_post") {
  StreamHeader h;
  h.kind = kind;
  h.d = d;
  h.dtype = t;
  h.provenance["model"] = "test-model";
  h.provenance["hook"] = hook;
  h.provenance["seed"] = 7;
  return h;
}

inline std::string write_stream(const StreamHeader& h, const std::vector<Batch>& bs, WriterOptions o = {}) {
  char* buf = nullptr;
  size_t len = 0;
  FILE* f = open_memstream(&buf, &len);
  {
    StreamWriter w(f, "<mem>", h, o);
    for (const auto& b : bs) w.write(b);
    w.finish();
  }
  fclose(f);
  std::string s(buf, len);
  free(buf);
  return s;
}

// One zstd frame around `content`, with or without the checksum / content size the format needs.
inline std::string zframe(const std::string& content, bool checksum = true, bool content_size = true, int level = 3) {
  ZSTD_CCtx* c = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, level);
  ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, checksum ? 1 : 0);
  ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, content_size ? 1 : 0);
  std::string out(ZSTD_compressBound(content.size()), '\0');
  size_t n;
  if (content_size) {
    n = ZSTD_compress2(c, out.data(), out.size(), content.data(), content.size());
  } else {
    // The one-shot API always records the size; streaming without a pledged size does not.
    ZSTD_inBuffer in{content.data(), content.size(), 0};
    ZSTD_outBuffer o{out.data(), out.size(), 0};
    n = ZSTD_compressStream2(c, &o, &in, ZSTD_e_end);
    n = ZSTD_isError(n) ? n : o.pos;
  }
  ZSTD_freeCCtx(c);
  out.resize(n);
  return out;
}

// The decompressed contents of every frame of a stream, in order.
inline std::vector<std::string> frames_of(const std::string& s) {
  std::vector<std::string> out;
  size_t p = 0;
  while (p < s.size()) {
    size_t n = ZSTD_findFrameCompressedSize(s.data() + p, s.size() - p);
    unsigned long long c = ZSTD_getFrameContentSize(s.data() + p, n);
    std::string raw(size_t(c), '\0');
    ZSTD_decompress(raw.data(), raw.size(), s.data() + p, n);
    out.push_back(raw);
    p += n;
  }
  return out;
}

// Byte offsets where each frame of a stream starts (plus the end).
inline std::vector<size_t> frame_offsets(const std::string& s) {
  std::vector<size_t> out;
  size_t p = 0;
  while (p < s.size()) {
    out.push_back(p);
    p += ZSTD_findFrameCompressedSize(s.data() + p, s.size() - p);
  }
  out.push_back(p);
  return out;
}

inline std::string header_map(const std::string& format = "saetools-stream", uint64_t version = 1,
                              const std::string& kind = "activations", uint64_t d = 4,
                              const std::string& dtype = "f32") {
  std::string o;
  mp::put_map(o, 6);
  mp::put_str(o, "type");
  mp::put_str(o, "header");
  mp::put_str(o, "format");
  mp::put_str(o, format);
  mp::put_str(o, "version");
  mp::put_uint(o, version);
  mp::put_str(o, "kind");
  mp::put_str(o, kind);
  mp::put_str(o, "d");
  mp::put_uint(o, d);
  mp::put_str(o, "dtype");
  mp::put_str(o, dtype);
  return o;
}

inline std::string footer_map(uint64_t rows, uint64_t batches) {
  std::string o;
  mp::put_map(o, 3);
  mp::put_str(o, "type");
  mp::put_str(o, "footer");
  mp::put_str(o, "rows");
  mp::put_uint(o, rows);
  mp::put_str(o, "batches");
  mp::put_uint(o, batches);
  return o;
}

// An f32 activation batch map with `rows` rows of width d, every value `v`.
inline std::string batch_map(uint64_t rows, uint64_t d, float v = 1.0f) {
  std::string o;
  mp::put_map(o, 3);
  mp::put_str(o, "type");
  mp::put_str(o, "batch");
  mp::put_str(o, "rows");
  mp::put_uint(o, rows);
  mp::put_str(o, "x");
  mp::put_bin_header(o, rows * d * 4);
  for (uint64_t i = 0; i < rows * d; i++) o.append(reinterpret_cast<const char*>(&v), 4);
  return o;
}

// The message of the InputError that reading `bytes` throws ("" if none).
inline std::string read_error(const std::string& bytes, ReaderOptions opt = [] {
  ReaderOptions o;
  o.threads = 1;
  o.prefetch = false;
  return o;
}()) {
  try {
    read_stream_bytes(bytes, nullptr, opt);
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

}  // namespace sae::test
