// libFuzzer target for the stream reader. Every input goes to read_stream_bytes (lib/stream/stream.h),
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
#include "support/stream_util.h"  // the unit tests' stream helpers (gtest-free)

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

// ---- seeds ----

void write_seeds(const std::string& dir) {
  WriterOptions plain;
  plain.threads = 0;
  int n = 0;
  auto put = [&](const std::string& s) { std::ofstream(dir + "/builtin-" + std::to_string(n++) + ".sae", std::ios::binary) << s; };
  for (DType t : {DType::f32, DType::f16, DType::bf16})
    for (int v = 0; v < 4; v++) {
      StreamHeader h = test::header("latents", 16, t);
      h.extra["note"] = json::array({1, "x", nullptr});
      test::Cols cols;
      cols.token = cols.doc = cols.pos = v & 1;
      WriterOptions o = plain;
      o.byte_shuffle = v & 2;
      std::string s = test::write_stream(h, {test::latent_batch(5, 16, 3, uint32_t(v), cols), test::latent_batch(3, 16, 3, 9, cols)}, o);
      put(s);
      if (v == 3) put(s + s);
    }
  StreamHeader a;
  a.d = 3;
  Batch b;
  b.rows = 2;
  b.x = {1, 2, 3, -1, -2, -3};
  b.pos = {0, 1};
  std::string s = test::write_stream(a, {b}, plain);
  put(s + s);
  put(test::write_stream(a, {}, plain));
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
      frames[k] = test::zframe(std::string(reinterpret_cast<const char*>(content.data()), m), true, true, 1);
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
