// libFuzzer target for the stream reader. Every input goes to read_stream_bytes (lib/stream.h),
// which must return batches consistent with the header or throw InputError: never crash, leak,
// hang, read out of bounds or allocate without bound.
//
// Oracles besides the sanitizers:
//  - every batch returned passes check_batch against the header (sizes, latent indices < d), and
//    under the skip policy holds no NaN or Inf;
//  - for a quarter of the inputs, reading with read-ahead on 2 threads and payloads kept as stored
//    (ReaderOptions::keep_stored), then decoded, gives the same result (the same batches, or the
//    same error message) as decoding in place.
//
// Mutations: a stream is zstd frames with checksums, so flipping compressed bytes mostly finds the
// checksum check. The custom mutator also works one level down: it decompresses one frame,
// mutates the msgpack inside (or drops, duplicates or swaps whole frames) and recompresses it with
// a valid checksum, so the msgpack and batch validation get fuzzed too. One mutation in three stays
// on the raw bytes, for frame-level damage.
//
// SAE_FUZZ_SEEDS=DIR: at start-up, write seed streams the CLI tools cannot make (latents of every
// dtype, with columns, byte-shuffled; concatenations; an empty stream) into DIR.
#include <zstd.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "stream/stream.h"

using namespace sae;

namespace {

ReaderOptions options(bool prefetch, size_t size) {
  ReaderOptions o;
  // The input size picks the non-finite policy, so skipping (which compacts rows) is fuzzed too.
  o.nonfinite = size % 3 == 0 ? NonFinite::allow : size % 3 == 1 ? NonFinite::skip : NonFinite::error;
  o.threads = prefetch ? 2 : 1;
  o.prefetch = prefetch;
  o.keep_stored = prefetch;
  o.max_frame_bytes = size_t(4) << 20;  // inputs are at most 64 kB; RLE blocks could still claim GBs
  return o;
}

// A read's outcome, comparable between the two reading modes.
struct Outcome {
  std::string error;
  std::vector<Batch> batches;
  bool operator==(const Outcome& o) const {
    if (error != o.error || batches.size() != o.batches.size()) return false;
    for (size_t i = 0; i < batches.size(); i++) {
      const Batch &a = batches[i], &b = o.batches[i];
      auto same = [](const auto& x, const auto& y) {
        return x.size() == y.size() && (x.empty() || !memcmp(x.data(), y.data(), x.size() * sizeof(x[0])));
      };
      if (a.rows != b.rows || !same(a.x, b.x) || !same(a.token, b.token) || !same(a.doc, b.doc) ||
          !same(a.pos, b.pos) || !same(a.count, b.count) || !same(a.index, b.index) || !same(a.value, b.value))
        return false;
    }
    return true;
  }
};

Outcome read(const std::string& bytes, bool prefetch) {
  Outcome out;
  try {
    StreamHeader h;
    out.batches = read_stream_bytes(bytes, &h, options(prefetch, bytes.size()));
    for (auto& b : out.batches) {
      check_batch(h, b, "fuzz");  // logic_error escapes: a crash
      b.decode_stored();
      if (options(prefetch, bytes.size()).nonfinite == NonFinite::skip)
        for (float v : h.kind == "latents" ? b.value : b.x)
          if (!std::isfinite(v)) abort();
    }
  } catch (const InputError& e) {
    out.error = e.what();
    out.batches.clear();
  }
  return out;
}

std::string compress(const uint8_t* p, size_t n) {
  ZSTD_CCtx* c = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, 1);
  ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
  std::string out(ZSTD_compressBound(n), '\0');
  size_t r = ZSTD_compress2(c, out.data(), out.size(), p, n);
  ZSTD_freeCCtx(c);
  if (ZSTD_isError(r)) return "";
  out.resize(r);
  return out;
}

// ---- seeds ----

Batch latent_batch(int64_t rows, int64_t d, uint32_t seed, bool cols) {
  std::mt19937 g(seed);
  Batch b;
  b.rows = rows;
  for (int64_t r = 0; r < rows; r++) {
    uint32_t c = g() % 4;
    b.count.push_back(c);
    for (uint32_t k = 0; k < c; k++) {
      b.index.push_back(uint32_t((r + 3 * k) % d));
      b.value.push_back(float(int(g() % 200) - 100) / 16.f);
    }
    if (cols) {
      b.token.push_back(int32_t(g() % 512));
      b.doc.push_back(r / 4);
      b.pos.push_back(int32_t(r % 4));
    }
  }
  return b;
}

std::string write_stream(const StreamHeader& h, const std::vector<Batch>& bs, bool shuffle) {
  char* buf = nullptr;
  size_t len = 0;
  FILE* f = open_memstream(&buf, &len);
  {
    WriterOptions o;
    o.threads = 0;
    o.byte_shuffle = shuffle;
    StreamWriter w(f, "seed", h, o);
    for (const auto& b : bs) w.write(b);
    w.finish();
  }
  fclose(f);
  std::string s(buf, len);
  free(buf);
  return s;
}

void write_seeds(const std::string& dir) {
  int n = 0;
  auto put = [&](const std::string& s) { std::ofstream(dir + "/builtin-" + std::to_string(n++) + ".sae", std::ios::binary) << s; };
  for (DType t : {DType::f32, DType::f16, DType::bf16})
    for (int v = 0; v < 4; v++) {
      StreamHeader h;
      h.kind = "latents";
      h.d = 16;
      h.dtype = t;
      h.provenance["hook"] = "blocks.0.hook_resid_post";
      h.extra["note"] = json::array({1, "x", nullptr});
      std::string s = write_stream(h, {latent_batch(5, 16, uint32_t(v), v & 1), latent_batch(3, 16, 9, v & 1)}, v & 2);
      put(s);
      if (v == 3) put(s + s);
    }
  StreamHeader a;
  a.d = 3;
  Batch b;
  b.rows = 2;
  b.x = {1, 2, 3, -1, -2, -3};
  b.pos = {0, 1};
  std::string s = write_stream(a, {b}, false);
  put(s + s);
  put(write_stream(a, {}, false));
}

}  // namespace

extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* dir = getenv("SAE_FUZZ_SEEDS")) write_seeds(dir);
  return 0;
}

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size, unsigned int seed) {
  std::minstd_rand rng(seed);
  if (rng() % 3 == 0) return LLVMFuzzerMutate(data, size, max_size);
  // Split into frames; anything that does not split cleanly is mutated as raw bytes.
  std::vector<std::string> frames;
  for (size_t off = 0; off < size;) {
    size_t n = ZSTD_findFrameCompressedSize(data + off, size - off);
    if (ZSTD_isError(n) || frames.size() > 64) return LLVMFuzzerMutate(data, size, max_size);
    frames.emplace_back(reinterpret_cast<const char*>(data + off), n);
    off += n;
  }
  if (frames.empty()) return LLVMFuzzerMutate(data, size, max_size);
  size_t k = rng() % frames.size();
  switch (rng() % 8) {
    case 0:  // drop a frame
      frames.erase(frames.begin() + long(k));
      break;
    case 1:  // duplicate a frame
      frames.insert(frames.begin() + long(k), frames[k]);
      break;
    case 2:  // swap two frames
      std::swap(frames[k], frames[rng() % frames.size()]);
      break;
    default: {  // mutate the msgpack inside a frame
      unsigned long long c = ZSTD_getFrameContentSize(frames[k].data(), frames[k].size());
      if (c == ZSTD_CONTENTSIZE_ERROR || c == ZSTD_CONTENTSIZE_UNKNOWN || c > max_size)
        return LLVMFuzzerMutate(data, size, max_size);
      std::vector<uint8_t> content(size_t(c) + 64);
      size_t got = ZSTD_decompress(content.data(), size_t(c), frames[k].data(), frames[k].size());
      if (ZSTD_isError(got)) return LLVMFuzzerMutate(data, size, max_size);
      size_t m = LLVMFuzzerMutate(content.data(), got, content.size());
      std::string z = compress(content.data(), m);
      if (z.empty()) return LLVMFuzzerMutate(data, size, max_size);
      frames[k] = z;
    }
  }
  std::string out;
  for (const auto& f : frames) out += f;
  if (out.size() > max_size || out.empty()) return LLVMFuzzerMutate(data, size, max_size);
  memcpy(data, out.data(), out.size());
  return out.size();
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string bytes(reinterpret_cast<const char*>(data), size);
  Outcome a = read(bytes, false);
  if (size % 4 == 0) {
    Outcome b = read(bytes, true);
    if (!(a == b)) {
      fprintf(stderr, "read-ahead disagrees: '%s' vs '%s', %zu vs %zu batches\n", a.error.c_str(), b.error.c_str(),
              a.batches.size(), b.batches.size());
      abort();
    }
  }
  return 0;
}
