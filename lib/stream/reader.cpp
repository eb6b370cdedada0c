// Stream reader and writer. The format is specified in docs/stream-format.md; this file is one
// implementation of it. Layout of the code:
//   payload kernels (dtype conversion fused with the byte shuffle), zstd frame checks,
//   encoding (writer side), decoding of one frame (runs on worker threads), FrameSource (splits
//   a byte stream into zstd frames without copying them), the writer, the reader.
#include "stream/stream.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>
#include <zstd_errors.h>

#include <atomic>
#include <cerrno>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <thread>

#include "base/cli.h"
#include "stream/msgpack_lite.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the stream format is little-endian; so is this code");

namespace sae {

namespace {

constexpr uint32_t kZstdMagic = 0xFD2FB528u;

// A fixed set of worker threads taking tasks in submission order. Tasks still queued when the pool
// is destroyed are dropped (their futures report a broken promise to nobody).
class ThreadPool {
 public:
  explicit ThreadPool(int n) {
    for (int i = 0; i < n; i++) threads_.emplace_back([this] { loop(); });
  }
  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lk(m_);
      stop_ = true;
      q_.clear();
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  template <class F>
  auto submit(F f) -> std::future<decltype(f())> {
    auto task = std::make_shared<std::packaged_task<decltype(f())()>>(std::move(f));
    auto fut = task->get_future();
    {
      std::lock_guard<std::mutex> lk(m_);
      q_.emplace_back([task] { (*task)(); });
    }
    cv_.notify_one();
    return fut;
  }

 private:
  void loop() {
    for (;;) {
      std::function<void()> f;
      {
        std::unique_lock<std::mutex> lk(m_);
        cv_.wait(lk, [&] { return stop_ || !q_.empty(); });
        if (stop_) return;
        f = std::move(q_.front());
        q_.pop_front();
      }
      f();
    }
  }
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> q_;
  std::vector<std::thread> threads_;
  bool stop_ = false;
};

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
ZContexts& zctx() {
  thread_local ZContexts z;
  if (!z.c) z.c = ZSTD_createCCtx();
  if (!z.d) z.d = ZSTD_createDCtx();
  if (!z.c || !z.d) throw std::bad_alloc();
  return z;
}

// ---- payload kernels: f32 in memory <-> stored dtype, with the optional byte shuffle fused in.
// Shuffled storage keeps byte b of element i at b*n + i (planes of equal significance). Loads and
// stores go through memcpy: the payload sits at any alignment inside a frame.


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

// Values [i0, i0 + n) of a payload of `total` values stored as `t` (plane by plane when shuffled)
// into dst as f32.
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

// A stored payload (from a reader with keep_stored) written as `t`, shuffled or not: the bytes as
// they are when they already match, else through f32.
void store_payload(const StoredPayload& sp, DType t, bool shuffle, uint8_t* dst) {
  if (sp.dtype == t && sp.shuffled == shuffle) {
    memcpy(dst, sp.data(), sp.values * dtype_size(t));
    return;
  }
  std::vector<float> tmp(sp.values);
  decode_payload(sp.dtype, sp.shuffled, sp.data(), sp.values, 0, sp.values, tmp.data());
  encode_payload(t, shuffle, tmp.data(), sp.values, dst);
}

// ---- zstd frame header (RFC 8878 §3.1.1.1), checked before a frame is buffered or decoded ----

struct FrameInfo {
  size_t header_size = 0;
  uint64_t content = 0;
};

// 1: header parsed into `fi`; 0: need more bytes; -1: not a zstd frame (bad magic). Frames the
// format does not allow throw InputError("corrupt frame (...)").
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

// ---- encoding ----

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

std::string encode_header(const StreamHeader& h) {
  static const char* fixed[] = {"type", "format", "version", "kind", "d", "dtype", "provenance"};
  std::vector<std::string> extra_keys;
  for (auto it = h.extra.begin(); it != h.extra.end(); ++it) {
    bool clash = false;
    for (const char* f : fixed) clash |= it.key() == f;
    if (!clash) extra_keys.push_back(it.key());
  }
  std::string o;
  mp::put_map(o, 7 + extra_keys.size());
  mp::put_str(o, "type");
  mp::put_str(o, "header");
  mp::put_str(o, "format");
  mp::put_str(o, kStreamFormat);
  mp::put_str(o, "version");
  mp::put_uint(o, kStreamVersion);
  mp::put_str(o, "kind");
  mp::put_str(o, h.kind);
  mp::put_str(o, "d");
  mp::put_uint(o, uint64_t(h.d));
  mp::put_str(o, "dtype");
  mp::put_str(o, dtype_name(h.dtype));
  mp::put_str(o, "provenance");
  mp::put_json(o, h.provenance.is_object() ? h.provenance : json::object());
  for (const auto& k : extra_keys) {
    mp::put_str(o, k);
    mp::put_json(o, h.extra[k]);
  }
  return o;
}

std::string encode_footer(int64_t rows, int64_t batches) {
  std::string o;
  mp::put_map(o, 3);
  mp::put_str(o, "type");
  mp::put_str(o, "footer");
  mp::put_str(o, "rows");
  mp::put_uint(o, uint64_t(rows));
  mp::put_str(o, "batches");
  mp::put_uint(o, uint64_t(batches));
  return o;
}

// The msgpack map of one batch, built in one buffer with the payload encoded in place.
void encode_batch(const StreamHeader& h, const Batch& b, bool shuffle, ByteBuffer& out) {
  const bool latents = h.kind == "latents";
  const size_t es = dtype_size(h.dtype);
  struct Part {
    std::string head;  // key and bin header
    const void* raw = nullptr;
    size_t bytes = 0;
    const float* values = nullptr;  // encoded with the dtype (and shuffle) instead of copied
    size_t n = 0;
    const StoredPayload* stored = nullptr;  // copied, or converted when stored differently
  };
  std::vector<Part> parts;
  auto blob = [&](const char* key, const void* p, size_t bytes) {
    Part pt;
    mp::put_str(pt.head, key);
    mp::put_bin_header(pt.head, bytes);
    pt.raw = p;
    pt.bytes = bytes;
    parts.push_back(std::move(pt));
  };
  auto values = [&](const char* key, const float* v, size_t n) {
    Part pt;
    mp::put_str(pt.head, key);
    mp::put_bin_header(pt.head, n * es);
    pt.values = v;
    pt.n = n;
    pt.bytes = n * es;
    parts.push_back(std::move(pt));
  };
  if (latents) {
    blob("count", b.count.data(), b.count.size() * 4);
    blob("index", b.index.data(), b.index.size() * 4);
    values("value", b.value.data(), b.value.size());
  } else if (b.is_stored()) {
    values("x", nullptr, b.stored.values);
    parts.back().stored = &b.stored;
  } else {
    values("x", b.x.data(), b.x.size());
  }
  if (!b.token.empty()) blob("token", b.token.data(), b.token.size() * 4);
  if (!b.doc.empty()) blob("doc", b.doc.data(), b.doc.size() * 8);
  if (!b.pos.empty()) blob("pos", b.pos.data(), b.pos.size() * 4);

  std::string head;
  mp::put_map(head, 3 + parts.size());
  mp::put_str(head, "type");
  mp::put_str(head, "batch");
  mp::put_str(head, "rows");
  mp::put_uint(head, uint64_t(b.rows));
  mp::put_str(head, "byteshuffle");
  mp::put_bool(head, shuffle);
  size_t total = head.size();
  for (const auto& pt : parts) total += pt.head.size() + pt.bytes;
  if (total > kMaxFrameBytes)
    throw std::runtime_error("a batch of " + std::to_string(total) + " bytes is over the frame limit of " +
                             std::to_string(kMaxFrameBytes) + " bytes: write smaller batches");
  out.resize_discard(total);
  uint8_t* o = out.data();
  memcpy(o, head.data(), head.size());
  o += head.size();
  for (const auto& pt : parts) {
    memcpy(o, pt.head.data(), pt.head.size());
    o += pt.head.size();
    if (pt.stored)
      store_payload(*pt.stored, h.dtype, shuffle, o);
    else if (pt.values)
      encode_payload(h.dtype, shuffle, pt.values, pt.n, o);
    else if (pt.bytes)
      memcpy(o, pt.raw, pt.bytes);
    o += pt.bytes;
  }
}

// ---- decoding one frame ----

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

struct Field {
  const char* name;
  mp::Value v;
  bool seen = false;
};

const mp::Value* field(std::vector<Field>& fs, const char* name) {
  for (auto& f : fs)
    if (!strcmp(f.name, name)) return f.seen ? &f.v : nullptr;
  return nullptr;
}

uint64_t need_uint(std::vector<Field>& fs, const char* key) {
  const mp::Value* v = field(fs, key);
  if (!v) throw InputError(std::string("missing '") + key + "'");
  if (v->type != mp::Type::uint)
    throw InputError(std::string("'") + key + "' is a " + mp::type_name(v->type) + ", not a non-negative integer");
  return v->u;
}

// A bin value of exactly `bytes` bytes; nullptr when absent and optional.
const uint8_t* need_bin(std::vector<Field>& fs, const char* key, uint64_t bytes, bool required, const char* what) {
  const mp::Value* v = field(fs, key);
  if (!v) {
    if (required) throw InputError(std::string("missing ") + what + " '" + key + "'");
    return nullptr;
  }
  if (v->type != mp::Type::bin)
    throw InputError(std::string(what) + " '" + key + "' is a " + mp::type_name(v->type) + ", not bin");
  if (v->n != bytes)
    throw InputError(std::string(what) + " '" + key + "' has " + std::to_string(v->n) + " bytes, expected " +
                     std::to_string(bytes));
  return v->ptr;
}

template <class T>
void read_column(std::vector<Field>& fs, const char* key, int64_t rows, std::vector<T>& out) {
  const uint8_t* p = need_bin(fs, key, uint64_t(rows) * sizeof(T), false, "column");
  if (!p) {
    out.clear();
    return;
  }
  out.resize(size_t(rows));
  if (rows) memcpy(out.data(), p, size_t(rows) * sizeof(T));
}

StreamHeader parse_header(const uint8_t* p, size_t n) {
  mp::Reader r(p, n);
  json all = mp::read_json(r);
  auto str = [&](const char* k) -> std::string {
    if (!all.contains(k)) throw InputError(std::string("header has no '") + k + "'");
    if (!all[k].is_string()) throw InputError(std::string("header '") + k + "' is not a string");
    return all[k].get<std::string>();
  };
  auto uint = [&](const char* k) -> uint64_t {
    if (!all.contains(k)) throw InputError(std::string("header has no '") + k + "'");
    if (!all[k].is_number_unsigned()) throw InputError(std::string("header '") + k + "' is not a non-negative integer");
    return all[k].get<uint64_t>();
  };
  StreamHeader h;
  std::string fmt = str("format");
  if (fmt != kStreamFormat) throw InputError("not a saetools stream (format '" + fmt + "')");
  uint64_t ver = uint("version");
  if (ver != uint64_t(kStreamVersion))
    throw InputError("unsupported format version " + std::to_string(ver) + " (this build reads version " +
                     std::to_string(kStreamVersion) + ")");
  h.kind = str("kind");
  if (h.kind != "activations" && h.kind != "latents")
    throw InputError("unknown stream kind '" + h.kind + "' (expected activations or latents)");
  uint64_t d = uint("d");
  if (d == 0 || d > (uint64_t(1) << 31)) throw InputError("row width d=" + std::to_string(d) + " out of range");
  h.d = int64_t(d);
  std::string dt = str("dtype");
  if (dt == "f32") h.dtype = DType::f32;
  else if (dt == "f16") h.dtype = DType::f16;
  else if (dt == "bf16") h.dtype = DType::bf16;
  else throw InputError("unknown dtype '" + dt + "' (expected f32, f16 or bf16)");
  if (all.contains("provenance")) {
    if (!all["provenance"].is_object()) throw InputError("header 'provenance' is not a map");
    h.provenance = all["provenance"];
  }
  for (const char* k : {"type", "format", "version", "kind", "d", "dtype", "provenance"}) all.erase(k);
  h.extra = std::move(all);
  return h;
}

// Rows with a NaN or Inf value: counted, and with `skip` removed from the batch.
void check_nonfinite(const StreamHeader& h, NonFinite policy, Decoded& d) {
  Batch& b = d.batch;
  std::vector<uint8_t> bad(size_t(b.rows), 0);
  const bool latents = h.kind == "latents";
  if (!latents) {
    const size_t w = size_t(h.d);
    std::vector<float> row(b.is_stored() ? w : 0);
    for (int64_t r = 0; r < b.rows; r++) {
      const float* x = row.data();
      if (b.is_stored())
        b.rows_f32(h.d, r, 1, row.data());
      else
        x = b.x.data() + size_t(r) * w;
      uint32_t any = 0;
      for (size_t j = 0; j < w; j++) any |= uint32_t((f32_bits(x[j]) & 0x7f800000u) == 0x7f800000u);
      bad[size_t(r)] = uint8_t(any);
    }
  } else {
    size_t o = 0;
    for (int64_t r = 0; r < b.rows; r++) {
      uint32_t any = 0;
      for (uint32_t j = 0; j < b.count[size_t(r)]; j++)
        any |= uint32_t((f32_bits(b.value[o + j]) & 0x7f800000u) == 0x7f800000u);
      bad[size_t(r)] = uint8_t(any);
      o += b.count[size_t(r)];
    }
  }
  for (int64_t r = 0; r < b.rows; r++)
    if (bad[size_t(r)]) {
      if (d.first_bad < 0) d.first_bad = r;
      d.nonfinite++;
    }
  if (!d.nonfinite || policy != NonFinite::skip) return;
  b.decode_stored();  // (rare) compaction works on x
  // Compact in place: kept rows move down, columns follow.
  int64_t o = 0;
  size_t vin = 0, vout = 0;
  for (int64_t r = 0; r < b.rows; r++) {
    size_t c = latents ? b.count[size_t(r)] : 0;
    if (!bad[size_t(r)]) {
      if (latents) {
        if (c) {
          memmove(b.index.data() + vout, b.index.data() + vin, c * 4);
          memmove(b.value.data() + vout, b.value.data() + vin, c * 4);
        }
        b.count[size_t(o)] = uint32_t(c);
        vout += c;
      } else if (o != r) {
        memmove(b.x.data() + size_t(o * h.d), b.x.data() + size_t(r * h.d), size_t(h.d) * 4);
      }
      if (!b.token.empty()) b.token[size_t(o)] = b.token[size_t(r)];
      if (!b.doc.empty()) b.doc[size_t(o)] = b.doc[size_t(r)];
      if (!b.pos.empty()) b.pos[size_t(o)] = b.pos[size_t(r)];
      o++;
    }
    vin += c;
  }
  b.rows = o;
  if (latents) {
    b.count.resize(size_t(o));
    b.index.resize(vout);
    b.value.resize(vout);
  } else {
    b.x.resize(size_t(o * h.d));
  }
  if (!b.token.empty()) b.token.resize(size_t(o));
  if (!b.doc.empty()) b.doc.resize(size_t(o));
  if (!b.pos.empty()) b.pos.resize(size_t(o));
}

// With keep_stored, an activations payload is left where it is (p must be d.batch.stored.frame's
// bytes) instead of decoded into x.
void parse_frame(const uint8_t* p, size_t n, const StreamHeader* h, NonFinite policy, bool keep_stored, Decoded& d) {
  mp::Reader r(p, n);
  mp::Value m = r.read();
  if (m.type != mp::Type::map) throw InputError(std::string("frame holds a msgpack ") + mp::type_name(m.type) + ", not a map");
  std::vector<Field> fs = {{"type", {}}, {"rows", {}},  {"byteshuffle", {}}, {"x", {}},     {"count", {}},
                           {"index", {}}, {"value", {}}, {"token", {}},      {"doc", {}},   {"pos", {}},
                           {"batches", {}}};
  for (uint64_t i = 0; i < m.n; i++) {
    mp::Value k = r.read();
    if (k.type != mp::Type::str) throw InputError(std::string("map key is a ") + mp::type_name(k.type) + ", not a string");
    mp::Value v = r.read();
    r.skip_contents(v);
    for (auto& f : fs)
      if (k.is_str(f.name)) {
        if (f.seen) throw InputError(std::string("duplicate key '") + f.name + "'");
        f.v = v;
        f.seen = true;
      }
  }
  if (r.remaining()) throw InputError("corrupt frame (" + std::to_string(r.remaining()) + " bytes after the msgpack map)");
  const mp::Value* t = field(fs, "type");
  if (!t) throw InputError("frame has no 'type'");
  if (t->is_str("header")) {
    d.type = FrameType::header;
    d.header = parse_header(p, n);
    return;
  }
  if (t->is_str("footer")) {
    d.type = FrameType::footer;
    d.rows = int64_t(std::min<uint64_t>(need_uint(fs, "rows"), uint64_t(INT64_MAX)));
    d.batches = int64_t(std::min<uint64_t>(need_uint(fs, "batches"), uint64_t(INT64_MAX)));
    return;
  }
  if (!t->is_str("batch")) {
    if (t->type != mp::Type::str) throw InputError("frame 'type' is not a string");
    throw InputError("unknown frame type '" + t->str() + "'");
  }
  d.type = FrameType::batch;
  if (!h) throw InputError("stream does not start with a header");
  Batch& b = d.batch;
  uint64_t rows = need_uint(fs, "rows");
  // Every row takes at least one byte of the frame: this bounds the products below.
  if (rows > n) throw InputError("'rows' is " + std::to_string(rows) + ", more than the frame could hold");
  b.rows = d.rows = int64_t(rows);
  bool shuffled = false;
  if (const mp::Value* s = field(fs, "byteshuffle")) {
    if (s->type != mp::Type::boolean) throw InputError("'byteshuffle' is not a boolean");
    shuffled = s->b;
  }
  const size_t es = dtype_size(h->dtype);
  if (h->kind == "latents") {
    const uint8_t* cp = need_bin(fs, "count", rows * 4, true, "column");
    b.count.resize(size_t(rows));
    if (rows) memcpy(b.count.data(), cp, size_t(rows) * 4);
    uint64_t nnz = 0;
    for (uint32_t c : b.count) {
      if (c > uint64_t(h->d)) throw InputError("a row has " + std::to_string(c) + " latents, more than d");
      nnz += c;
    }
    if (nnz > n) throw InputError("counts add up to more entries than the frame could hold");
    const uint8_t* ip = need_bin(fs, "index", nnz * 4, true, "column");
    b.index.resize(size_t(nnz));
    if (nnz) memcpy(b.index.data(), ip, size_t(nnz) * 4);
    for (uint32_t ix : b.index)
      if (ix >= uint64_t(h->d))
        throw InputError("latent index " + std::to_string(ix) + " is not below d=" + std::to_string(h->d));
    const uint8_t* vp = need_bin(fs, "value", nnz * es, true, "payload");
    b.value.resize(size_t(nnz));
    decode_payload(h->dtype, shuffled, vp, size_t(nnz), 0, size_t(nnz), b.value.data());
    b.x.clear();
    b.stored.values = 0;
  } else {
    uint64_t nv = rows * uint64_t(h->d);
    const uint8_t* xp = need_bin(fs, "x", nv * es, true, "payload");
    if (keep_stored) {
      // p is b.stored.frame's data (decode_frame decompressed the frame there).
      b.x.clear();
      b.stored.values = size_t(nv);
      b.stored.dtype = h->dtype;
      b.stored.shuffled = shuffled;
      b.stored.offset = size_t(xp - p);
    } else {
      b.stored.values = 0;
      b.x.resize(size_t(nv));
      decode_payload(h->dtype, shuffled, xp, size_t(nv), 0, size_t(nv), b.x.data());
    }
    b.count.clear();
    b.index.clear();
    b.value.clear();
  }
  read_column(fs, "token", b.rows, b.token);
  read_column(fs, "doc", b.rows, b.doc);
  read_column(fs, "pos", b.rows, b.pos);
  if (policy != NonFinite::allow) check_nonfinite(*h, policy, d);
}

// A contiguous piece of input holding whole frames. Frames handed out point into it and keep it
// alive; for in-memory input it is a view of the caller's bytes.
struct Chunk {
  std::unique_ptr<uint8_t[]> own;
  const uint8_t* base = nullptr;
  size_t cap = 0;
};

struct RawFrame {
  std::shared_ptr<Chunk> chunk;
  const uint8_t* p = nullptr;
  size_t n = 0;
};

Decoded decode_frame(const RawFrame& f, const StreamHeader* h, const ReaderOptions& opt, Batch&& reuse) {
  Decoded d;
  d.batch = std::move(reuse);
  try {
    FrameInfo fi;
    if (parse_frame_header(f.p, f.n, opt.max_frame_bytes, fi) != 1) throw InputError("corrupt frame (bad zstd frame header)");
    ZContexts& z = zctx();
    // Kept payloads stay in the batch's own buffer: decompress straight into it.
    ByteBuffer& to = opt.keep_stored ? d.batch.stored.frame : z.scratch;
    to.resize_discard(size_t(fi.content));
    size_t r = ZSTD_decompressDCtx(z.d, to.data(), size_t(fi.content), f.p, f.n);
    if (ZSTD_isError(r)) {
      if (ZSTD_getErrorCode(r) == ZSTD_error_checksum_wrong) throw InputError("corrupt frame (checksum mismatch)");
      throw InputError(std::string("corrupt frame (") + ZSTD_getErrorName(r) + ")");
    }
    if (r != fi.content) throw InputError("corrupt frame (decompressed size differs from the frame header)");
    parse_frame(to.data(), r, h, opt.nonfinite, opt.keep_stored, d);
  } catch (const InputError& e) {
    d.error = e.what();
  } catch (const std::bad_alloc&) {
    d.error = "corrupt frame (out of memory decoding it)";
  }
  return d;
}

// ---- splitting input into frames ----

// A problem found while splitting the input into frames; the reader turns it into a message once it
// knows where in the stream it happened (which batch came before).
struct SourceError {
  enum Code { open, read, empty, bad_magic, truncated, frame } code;
  std::string detail;
};
struct Stopped {};  // the reader is being destroyed

struct ByteSource {
  virtual ~ByteSource() = default;
  virtual size_t read(uint8_t* p, size_t n) = 0;  // 0 at end of input
};

struct FdSource : ByteSource {
  int fd;
  bool own;
  bool regular = false;
  std::string name;
  const std::atomic<bool>* stop;
  FdSource(int fd_, bool own_, std::string name_, const std::atomic<bool>* stop_)
      : fd(fd_), own(own_), name(std::move(name_)), stop(stop_) {
    struct stat st;
    regular = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
    if (regular) posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  }
  ~FdSource() override {
    if (own) ::close(fd);
  }
  size_t read(uint8_t* p, size_t n) override {
    for (;;) {
      // Wait in short slices so a reader being destroyed is not stuck on an idle pipe.
      if (!regular && stop) {
        pollfd pf{fd, POLLIN, 0};
        int pr = poll(&pf, 1, 100);
        if (stop->load()) throw Stopped{};
        if (pr == 0 || (pr < 0 && errno == EINTR)) continue;
      }
      ssize_t r = ::read(fd, p, n);
      if (r >= 0) return size_t(r);
      if (errno == EINTR) continue;
      throw SourceError{SourceError::read, name + ": read error: " + std::strerror(errno)};
    }
  }
};

struct StdioSource : ByteSource {
  FILE* f;
  std::string name;
  StdioSource(FILE* f_, std::string name_) : f(f_), name(std::move(name_)) {}
  size_t read(uint8_t* p, size_t n) override {
    size_t got = fread(p, 1, std::min<size_t>(n, size_t(1) << 20), f);
    if (got == 0 && ferror(f)) throw SourceError{SourceError::read, name + ": read error: " + std::strerror(errno)};
    return got;
  }
};

class FrameSource {
 public:
  FrameSource(std::unique_ptr<ByteSource> in, size_t max_frame) : in_(std::move(in)), max_frame_(max_frame) {}
  FrameSource(const void* data, size_t n, size_t max_frame) : max_frame_(max_frame) {
    cur_ = std::make_shared<Chunk>();
    cur_->base = static_cast<const uint8_t*>(data);
    cur_->cap = n;
    len_ = n;
    eof_ = true;
  }
  // Next whole frame, or false at a clean end of input. Throws SourceError.
  bool next(RawFrame& out) {
    for (;;) {
      const size_t avail = len_ - pos_;
      const uint8_t* p = cur_ ? cur_->base + pos_ : nullptr;
      size_t want = 18;  // enough for any zstd frame header
      if (avail > 0) {
        FrameInfo fi;
        int h;
        try {
          h = parse_frame_header(p, avail, max_frame_, fi);
        } catch (const InputError& e) {
          throw SourceError{SourceError::frame, e.what()};
        }
        if (h < 0) throw SourceError{SourceError::bad_magic, ""};
        if (h == 1) {
          size_t bound = fi.header_size + ZSTD_compressBound(size_t(fi.content)) + 4;
          size_t n = ZSTD_findFrameCompressedSize(p, avail);
          if (!ZSTD_isError(n)) {
            out.chunk = cur_;
            out.p = p;
            out.n = n;
            pos_ += n;
            frames_++;
            return true;
          }
          if (ZSTD_getErrorCode(n) != ZSTD_error_srcSize_wrong)
            throw SourceError{SourceError::frame, std::string("corrupt frame (") + ZSTD_getErrorName(n) + ")"};
          if (avail >= bound)
            throw SourceError{SourceError::frame, "corrupt frame (longer than its content size allows)"};
          want = std::max(bound, avail + (size_t(64) << 10));
        }
      }
      if (eof_) {
        if (avail == 0) return false;
        throw SourceError{SourceError::truncated, ""};
      }
      fill(want);
    }
  }
  int64_t frames() const { return frames_; }

 private:
  // Reads more input so that at least `want` bytes from pos_ fit in the current chunk.
  void fill(size_t want) {
    constexpr size_t kChunk = size_t(4) << 20;
    if (!cur_ || cur_->cap - pos_ < want || cur_->cap - len_ < (size_t(16) << 10)) {
      auto c = std::make_shared<Chunk>();
      c->cap = std::max(kChunk, want + (size_t(1) << 20));
      c->own.reset(new uint8_t[c->cap]);
      c->base = c->own.get();
      size_t keep = cur_ ? len_ - pos_ : 0;
      if (keep) memcpy(c->own.get(), cur_->base + pos_, keep);
      cur_ = std::move(c);
      len_ = keep;
      pos_ = 0;
    }
    size_t got = in_->read(cur_->own.get() + len_, cur_->cap - len_);
    if (got == 0) eof_ = true;
    len_ += got;
  }
  std::unique_ptr<ByteSource> in_;
  size_t max_frame_;
  std::shared_ptr<Chunk> cur_;
  size_t len_ = 0, pos_ = 0;
  bool eof_ = false;
  int64_t frames_ = 0;
};

}  // namespace

// ---- public helpers ----

std::string StreamHeader::hook() const {
  if (provenance.is_object() && provenance.contains("hook") && provenance["hook"].is_string())
    return provenance["hook"].get<std::string>();
  return "";
}

ByteBuffer& ByteBuffer::operator=(const ByteBuffer& o) {
  if (this != &o) {
    resize_discard(o.size_);
    if (o.size_) memcpy(p_.get(), o.p_.get(), o.size_);
  }
  return *this;
}

ByteBuffer& ByteBuffer::operator=(ByteBuffer&& o) noexcept {
  if (this != &o) {
    p_ = std::move(o.p_);
    size_ = o.size_;
    cap_ = o.cap_;
    o.size_ = o.cap_ = 0;
  }
  return *this;
}

void ByteBuffer::resize_discard(size_t n) {
  if (n > cap_) {
    p_.reset(new uint8_t[n]);
    cap_ = n;
  }
  size_ = n;
}

void ByteBuffer::truncate(size_t n) {
  if (n > size_) throw std::logic_error("ByteBuffer::truncate beyond the size");
  size_ = n;
}

void Batch::rows_f32(int64_t d, int64_t r0, int64_t n, float* dst) const {
  if (n <= 0) return;
  if (r0 < 0 || r0 + n > rows || size_t((r0 + n) * d) > (is_stored() ? stored.values : x.size()))
    throw std::logic_error("Batch::rows_f32: rows out of range (or the wrong d)");
  if (!is_stored()) {
    memcpy(dst, x.data() + size_t(r0 * d), size_t(n * d) * 4);
    return;
  }
  decode_payload(stored.dtype, stored.shuffled, stored.data(), stored.values, size_t(r0 * d), size_t(n * d), dst);
}

void Batch::row_stored_bytes(int64_t d, int64_t r, uint8_t* dst) const {
  if (!is_stored() || r < 0 || r >= rows || size_t((r + 1) * d) > stored.values)
    throw std::logic_error("Batch::row_stored_bytes: no such stored row (or the wrong d)");
  const size_t es = dtype_size(stored.dtype), i0 = size_t(r * d);
  const uint8_t* src = stored.data();
  if (!stored.shuffled) {
    memcpy(dst, src + i0 * es, size_t(d) * es);
    return;
  }
  for (size_t b = 0; b < es; b++) {
    const uint8_t* plane = src + b * stored.values + i0;
    for (size_t i = 0; i < size_t(d); i++) dst[i * es + b] = plane[i];
  }
}

void Batch::decode_stored() {
  if (!is_stored()) return;
  x.resize(stored.values);
  const int64_t d = int64_t(stored.values) / rows;
  rows_f32(d, 0, rows, x.data());
  stored.values = 0;
}

void Batch::clear() {
  rows = 0;
  x.clear();
  stored.values = 0;
  token.clear();
  doc.clear();
  pos.clear();
  count.clear();
  index.clear();
  value.clear();
}

StreamHeader make_header(const std::string& kind, int64_t d, DType dtype) {
  StreamHeader h;
  h.kind = kind;
  h.d = d;
  h.dtype = dtype;
  h.provenance["tool"] = cli::tool();
  h.provenance["tool_version"] = SAE_VERSION;
  return h;
}

void check_batch(const StreamHeader& h, const Batch& b, const std::string& where) {
  auto bad = [&](const std::string& m) { throw std::logic_error(where + ": " + m); };
  if (b.rows < 0) bad("negative row count");
  if (h.kind == "latents") {
    if (int64_t(b.count.size()) != b.rows) bad("count column size");
    uint64_t nnz = 0;
    for (auto c : b.count) {
      if (c > uint64_t(h.d)) bad("a row has more latents than d");
      nnz += c;
    }
    if (b.index.size() != nnz || b.value.size() != nnz) bad("index/value size");
    for (auto i : b.index)
      if (i >= uint64_t(h.d)) bad("latent index " + std::to_string(i) + " is not below d");
  } else {
    const size_t nv = b.is_stored() ? b.stored.values : b.x.size();
    if (int64_t(nv) != b.rows * h.d)
      bad("payload has " + std::to_string(nv) + " values, expected rows*d = " + std::to_string(b.rows * h.d));
  }
  if (!b.token.empty() && int64_t(b.token.size()) != b.rows) bad("token column size");
  if (!b.doc.empty() && int64_t(b.doc.size()) != b.rows) bad("doc column size");
  if (!b.pos.empty() && int64_t(b.pos.size()) != b.rows) bad("pos column size");
}

std::string header_mismatch(const StreamHeader& a, const StreamHeader& b) {
  if (a.kind != b.kind) return "kind " + b.kind + " here, " + a.kind + " there";
  if (a.d != b.d) return "d=" + std::to_string(b.d) + " here, d=" + std::to_string(a.d) + " there";
  if (a.dtype != b.dtype) return std::string("dtype ") + dtype_name(b.dtype) + " here, " + dtype_name(a.dtype) + " there";
  if (a.hook() != b.hook()) return "hook '" + b.hook() + "' here, '" + a.hook() + "' there";
  return "";
}

// ---- writer ----

struct StreamWriter::Impl {
  FILE* out;
  std::string name;
  WriterOptions opt;
  const StreamHeader* header;
  int64_t batches = 0, bytes = 0;
  bool finished = false, failed = false;
  std::mutex free_m;
  std::vector<ByteBuffer> free_bufs;  // frame buffers come back here after they are written
  std::deque<std::future<ByteBuffer>> inflight;
  std::unique_ptr<ThreadPool> pool;  // last: destroyed first, so no task outlives what it uses

  ByteBuffer take_buf() {
    std::lock_guard<std::mutex> lk(free_m);
    if (free_bufs.empty()) return ByteBuffer();
    ByteBuffer b = std::move(free_bufs.back());
    free_bufs.pop_back();
    return b;
  }
  void give_buf(ByteBuffer&& b) {
    std::lock_guard<std::mutex> lk(free_m);
    if (free_bufs.size() < 4 + 2 * size_t(opt.threads)) free_bufs.push_back(std::move(b));
  }
  ByteBuffer make_frame(const Batch& b) {
    ByteBuffer& msg = zctx().scratch;
    encode_batch(*header, b, opt.byte_shuffle, msg);
    ByteBuffer f = take_buf();
    compress_into(msg.data(), msg.size(), opt.level, f);
    return f;
  }
  void put(const ByteBuffer& f) {
    if (fwrite(f.data(), 1, f.size(), out) != f.size()) {
      failed = true;
      if (errno == EPIPE) throw cli::BrokenPipe();
      throw InputError(name + ": write failed: " + std::strerror(errno));
    }
    bytes += int64_t(f.size());
  }
  void write_front() {
    ByteBuffer f = inflight.front().get();
    inflight.pop_front();
    put(f);
    batches++;
    give_buf(std::move(f));
  }
  // Writes the frames that are ready (all of them with `all`), keeping at most 2*threads in flight.
  void drain(bool all) {
    while (!inflight.empty() &&
           (all || inflight.size() > 2 * size_t(opt.threads) ||
            inflight.front().wait_for(std::chrono::seconds(0)) == std::future_status::ready))
      write_front();
  }
  void check_usable() {
    if (finished) throw std::logic_error("StreamWriter: write after finish");
    if (failed) throw std::logic_error("StreamWriter: write after a failed write");
  }
};

StreamWriter::StreamWriter(FILE* out, std::string name, StreamHeader header, WriterOptions opt)
    : impl_(new Impl), header_(std::move(header)) {
  Impl& s = *impl_;
  s.out = out;
  s.name = std::move(name);
  s.opt = opt;
  s.header = &header_;
  if (opt.level < ZSTD_minCLevel() || opt.level > ZSTD_maxCLevel())
    throw UsageError("zstd level " + std::to_string(opt.level) + " is out of range (" +
                     std::to_string(ZSTD_minCLevel()) + " to " + std::to_string(ZSTD_maxCLevel()) + ")");
  if (s.opt.threads < 0) s.opt.threads = 0;
  if (header_.d <= 0) throw std::logic_error("StreamWriter: row width d must be positive");
  if (header_.kind != "activations" && header_.kind != "latents")
    throw std::logic_error("StreamWriter: unknown kind '" + header_.kind + "'");
  ByteBuffer f;
  compress_string(encode_header(header_), s.opt.level, f);
  s.put(f);
  if (s.opt.threads > 0) s.pool = std::make_unique<ThreadPool>(s.opt.threads);
}

// The pool stops (and its tasks, which read header_, finish) before header_ is destroyed.
StreamWriter::~StreamWriter() { impl_.reset(); }

int64_t StreamWriter::bytes_written() const { return impl_->bytes; }

void StreamWriter::write(const Batch& b) {
  Impl& s = *impl_;
  s.check_usable();
  check_batch(header_, b, s.name);
  if (b.rows == 0) return;
  if (!s.pool) {
    ByteBuffer f = s.make_frame(b);
    s.put(f);
    s.give_buf(std::move(f));
    s.batches++;
    rows_ += b.rows;
    return;
  }
  write(Batch(b));
}

void StreamWriter::write(Batch&& b) {
  Impl& s = *impl_;
  s.check_usable();
  check_batch(header_, b, s.name);
  if (b.rows == 0) return;
  rows_ += b.rows;
  if (!s.pool) {
    ByteBuffer f = s.make_frame(b);
    s.put(f);
    s.give_buf(std::move(f));
    s.batches++;
    return;
  }
  auto shared = std::make_shared<Batch>(std::move(b));
  s.inflight.push_back(s.pool->submit([&s, shared] { return s.make_frame(*shared); }));
  s.drain(false);
}

void StreamWriter::finish() {
  Impl& s = *impl_;
  if (s.finished) return;
  if (s.failed) throw std::logic_error("StreamWriter: finish after a failed write");
  s.drain(true);
  ByteBuffer f;
  compress_string(encode_footer(rows_, s.batches), s.opt.level, f);
  s.put(f);
  s.finished = true;
}

// ---- reader ----

namespace {
struct Item {
  enum Kind { frame, file_end, eof, error } kind = eof;
  int file = 0;
  int64_t index = 0;  // frame number within its file, from 0
  size_t compressed = 0;
  Decoded d;
  SourceError err{SourceError::read, ""};
};
}  // namespace

struct StreamReader::Impl {
  ReaderOptions opt;
  std::vector<std::string> paths;
  std::vector<std::string> names;
  FILE* preopened = nullptr;
  const void* mem = nullptr;
  size_t mem_size = 0;
  const StreamHeader* first = nullptr;  // what batches are decoded against

  // Producer side: the I/O thread (or next() itself without prefetch).
  size_t next_file = 0;
  int src_file = -1;
  std::unique_ptr<FrameSource> src;
  bool src_failed = false;
  std::atomic<bool> stop{false};

  // Consumer side: where next() is in the stream.
  int file = 0;
  bool in_stream = false;
  int64_t stream_no = 0;  // streams started in this file
  int64_t batch_no = 0;   // batches read from this file
  int64_t stream_rows = 0, stream_batches = 0;
  bool done = false;

  // Read-ahead.
  std::mutex qm;
  std::condition_variable qcv;
  std::deque<std::future<Item>> q;
  std::deque<size_t> qbytes;  // decompressed size of each queued frame
  size_t queued_bytes = 0;
  size_t qcap = 4;
  // Read-ahead stops at qcap frames or this many decompressed bytes, whichever comes first (but
  // always holds at least one frame), so huge batches on many cores do not take all memory.
  static constexpr size_t kReadAheadBytes = size_t(512) << 20;
  std::mutex rm;
  std::vector<Batch> recycled;
  std::unique_ptr<ThreadPool> pool;
  std::thread io;

  ~Impl() {
    {
      std::lock_guard<std::mutex> lk(qm);
      stop = true;
    }
    qcv.notify_all();
    if (io.joinable()) io.join();
    pool.reset();
  }

  Batch take_recycled() {
    std::lock_guard<std::mutex> lk(rm);
    if (recycled.empty()) return Batch();
    Batch b = std::move(recycled.back());
    recycled.pop_back();
    return b;
  }
  void recycle(Batch&& b) {
    std::lock_guard<std::mutex> lk(rm);
    if (recycled.size() < qcap + 2) recycled.push_back(std::move(b));
  }

  // The next frame (or end of a file, end of input, error) from the inputs, not yet decoded.
  Item pull(RawFrame& fr) {
    Item it;
    if (src_failed) return it;  // eof: nothing more after an error
    for (;;) {
      if (!src) {
        if (next_file >= paths.size()) {
          it.kind = Item::eof;
          return it;
        }
        src_file = int(next_file++);
        try {
          src = open(src_file);
        } catch (const SourceError& e) {
          src_failed = true;
          it.kind = Item::error;
          it.file = src_file;
          it.err = e;
          return it;
        }
      }
      it.file = src_file;
      try {
        if (src->next(fr)) {
          it.kind = Item::frame;
          it.index = src->frames() - 1;
          it.compressed = fr.n;
          return it;
        }
      } catch (const SourceError& e) {
        src_failed = true;
        it.kind = Item::error;
        it.index = src->frames();
        it.err = e;
        return it;
      }
      bool empty = src->frames() == 0;
      src.reset();
      if (empty) {
        src_failed = true;
        it.kind = Item::error;
        it.err = SourceError{SourceError::empty, ""};
        return it;
      }
      it.kind = Item::file_end;
      return it;
    }
  }

  std::unique_ptr<FrameSource> open(int i) {
    const std::string& p = paths[size_t(i)];
    if (mem) return std::make_unique<FrameSource>(mem, mem_size, opt.max_frame_bytes);
    if (preopened)
      return std::make_unique<FrameSource>(std::make_unique<StdioSource>(preopened, names[size_t(i)]), opt.max_frame_bytes);
    const std::atomic<bool>* stopflag = opt.prefetch ? &stop : nullptr;
    if (p == "-" || p.empty()) {
      if (isatty(0))
        throw SourceError{SourceError::open, "<stdin>: refusing to read a binary stream from a terminal (give a file or pipe one in)"};
      return std::make_unique<FrameSource>(std::make_unique<FdSource>(0, false, names[size_t(i)], stopflag), opt.max_frame_bytes);
    }
    int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw SourceError{SourceError::open, p + ": " + std::strerror(errno)};
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
      ::close(fd);
      throw SourceError{SourceError::open, p + ": is a directory"};
    }
    return std::make_unique<FrameSource>(std::make_unique<FdSource>(fd, true, p, stopflag), opt.max_frame_bytes);
  }

  Item decode(Item it, const RawFrame& fr) {
    it.d = decode_frame(fr, first, opt, take_recycled());
    return it;
  }

  // Without read-ahead: pull and decode right here.
  Item next_sync() {
    RawFrame fr;
    Item it = pull(fr);
    if (it.kind == Item::frame) return decode(std::move(it), fr);
    return it;
  }

  void io_loop() {
    try {
      for (;;) {
        {
          std::unique_lock<std::mutex> lk(qm);
          qcv.wait(lk, [&] { return stop.load() || (q.size() < qcap && (q.empty() || queued_bytes < kReadAheadBytes)); });
          if (stop) return;
        }
        RawFrame fr;
        Item it = pull(fr);
        Item::Kind k = it.kind;
        std::future<Item> fut;
        size_t bytes = 0;
        if (k == Item::frame) {
          unsigned long long c = ZSTD_getFrameContentSize(fr.p, fr.n);
          bytes = c == ZSTD_CONTENTSIZE_ERROR || c == ZSTD_CONTENTSIZE_UNKNOWN ? 0 : size_t(c);
          fut = pool->submit([this, it = std::move(it), fr]() mutable { return decode(std::move(it), fr); });
        } else {
          std::promise<Item> p;
          p.set_value(std::move(it));
          fut = p.get_future();
        }
        {
          std::lock_guard<std::mutex> lk(qm);
          q.push_back(std::move(fut));
          qbytes.push_back(bytes);
          queued_bytes += bytes;
        }
        qcv.notify_all();
        if (k == Item::eof || k == Item::error) return;
      }
    } catch (const Stopped&) {
    } catch (...) {
      std::promise<Item> p;
      p.set_exception(std::current_exception());
      std::lock_guard<std::mutex> lk(qm);
      q.push_back(p.get_future());
      qbytes.push_back(0);
      qcv.notify_all();
    }
  }

  Item next_item() {
    if (!opt.prefetch) return next_sync();
    std::future<Item> f;
    {
      std::unique_lock<std::mutex> lk(qm);
      qcv.wait(lk, [&] { return !q.empty(); });
      f = std::move(q.front());
      q.pop_front();
      queued_bytes -= qbytes.front();
      qbytes.pop_front();
    }
    qcv.notify_all();
    return f.get();
  }

  const std::string& name() const { return names[size_t(file)]; }
  std::string after_batch() const { return batch_no ? "after batch " + std::to_string(batch_no) : "after the header"; }

  std::string source_message(const Item& it) const {
    const std::string& n = name();
    switch (it.err.code) {
      case SourceError::open:
      case SourceError::read: return it.err.detail;
      case SourceError::empty: return n + ": empty input (no stream header)";
      case SourceError::bad_magic:
        if (it.index == 0) return n + ": not a saetools stream (bad magic)";
        if (in_stream) return n + ": batch " + std::to_string(batch_no + 1) + ": not a zstd frame (corrupt stream)";
        return n + ": unexpected bytes after the footer (not a zstd frame)";
      case SourceError::truncated:
        if (it.index == 0) return n + ": not a saetools stream (too short or truncated inside the header)";
        if (in_stream) return n + ": truncated stream (ends inside the frame " + after_batch() + ")";
        return n + ": truncated stream (ends inside a frame after the footer)";
      case SourceError::frame: return frame_message(it.index, FrameType::unknown, it.err.detail);
    }
    return n + ": " + it.err.detail;
  }

  std::string frame_message(int64_t index, FrameType type, const std::string& what) const {
    const std::string& n = name();
    if (index == 0) return n + ": " + what;
    switch (type) {
      case FrameType::header: return n + ": header of stream " + std::to_string(stream_no + 1) + ": " + what;
      case FrameType::footer: return n + ": footer " + after_batch() + ": " + what;
      default:
        if (in_stream || type == FrameType::batch) return n + ": batch " + std::to_string(batch_no + 1) + ": " + what;
        return n + ": frame " + std::to_string(index) + " (after the footer): " + what;
    }
  }
};

StreamReader::StreamReader(std::vector<std::string> paths, ReaderOptions opt) : impl_(new Impl), opt_(opt) {
  if (paths.empty()) paths.push_back("-");
  impl_->paths = std::move(paths);
  start();
}

StreamReader::StreamReader(FILE* f, const std::string& name, ReaderOptions opt) : impl_(new Impl), opt_(opt) {
  impl_->preopened = f;
  impl_->paths = {name};
  start();
}

StreamReader::StreamReader(const void* data, size_t size, const std::string& name, ReaderOptions opt)
    : impl_(new Impl), opt_(opt) {
  impl_->mem = data;
  impl_->mem_size = size;
  impl_->paths = {name};
  start();
}

// Read-ahead stops (its decode tasks read header_) before header_ is destroyed.
StreamReader::~StreamReader() { impl_.reset(); }

void StreamReader::start() {
  Impl& s = *impl_;
  if (opt_.threads <= 0) opt_.threads = std::max(1, int(std::thread::hardware_concurrency()));
  if (opt_.max_frame_bytes == 0) opt_.max_frame_bytes = kMaxFrameBytes;
  s.opt = opt_;
  for (const auto& p : s.paths) s.names.push_back(p == "-" || p.empty() ? "<stdin>" : p);
  // The first header is read here, so header() is valid before any batch is asked for.
  Item it = s.next_sync();
  s.file = it.file;
  if (it.kind == Item::error) throw InputError(s.source_message(it));
  if (it.kind != Item::frame) throw InputError(s.name() + ": empty input (no stream header)");
  compressed_ += int64_t(it.compressed);
  if (!it.d.error.empty()) throw InputError(s.frame_message(0, it.d.type, it.d.error));
  if (it.d.type != FrameType::header) throw InputError(s.name() + ": stream does not start with a header");
  header_ = std::move(it.d.header);
  s.first = &header_;
  s.in_stream = true;
  s.stream_no = 1;
  if (s.opt.prefetch) {
    s.qcap = 2 * size_t(s.opt.threads) + 2;
    s.pool = std::make_unique<ThreadPool>(s.opt.threads);
    s.io = std::thread([&s] { s.io_loop(); });
  }
}

std::string StreamReader::where() const {
  const Impl& s = *impl_;
  return s.name() + (s.batch_no ? ": batch " + std::to_string(s.batch_no) : "");
}

bool StreamReader::next(Batch& out) {
  Impl& s = *impl_;
  if (s.done) return false;
  for (;;) {
    Item it = s.next_item();
    if (it.kind == Item::eof) {
      s.done = true;
      return false;
    }
    if (it.file != s.file) {
      // The previous file ended cleanly (its file_end item was checked): a fresh one begins.
      s.file = it.file;
      s.in_stream = false;
      s.stream_no = 0;
      s.batch_no = 0;
    }
    if (it.kind == Item::error) {
      s.done = true;
      throw InputError(s.source_message(it));
    }
    if (it.kind == Item::file_end) {
      if (s.in_stream) {
        s.done = true;
        if (s.batch_no == 0 || s.stream_batches == 0)
          throw InputError(s.name() + ": truncated stream (no batches and no footer after the header)");
        throw InputError(s.name() + ": truncated stream (no footer after batch " + std::to_string(s.batch_no) + ")");
      }
      continue;
    }
    compressed_ += int64_t(it.compressed);
    Decoded& d = it.d;
    if (!d.error.empty()) {
      s.done = true;
      throw InputError(s.frame_message(it.index, d.type, d.error));
    }
    if (it.index == 0 && d.type != FrameType::header) {
      s.done = true;
      throw InputError(s.name() + ": stream does not start with a header");
    }
    switch (d.type) {
      case FrameType::header: {
        if (s.in_stream) {
          s.done = true;
          throw InputError(s.name() + ": header in the middle of a stream (no footer " + s.after_batch() + ")");
        }
        std::string why = header_mismatch(header_, d.header);
        s.stream_no++;
        if (!why.empty()) {
          s.done = true;
          std::string which = s.stream_no > 1 ? ": stream " + std::to_string(s.stream_no) : "";
          throw InputError(s.name() + which + ": does not match the first stream (" + s.names[0] + "): " + why);
        }
        s.in_stream = true;
        s.stream_rows = s.stream_batches = 0;
        continue;
      }
      case FrameType::footer:
        if (!s.in_stream) {
          s.done = true;
          throw InputError(s.name() + ": footer without a header (" + s.after_batch() + ")");
        }
        if (d.rows != s.stream_rows || d.batches != s.stream_batches) {
          s.done = true;
          throw InputError(s.name() + ": footer says " + std::to_string(d.rows) + " rows in " +
                           std::to_string(d.batches) + " batches, but the stream held " +
                           std::to_string(s.stream_rows) + " rows in " + std::to_string(s.stream_batches));
        }
        s.in_stream = false;
        streams_++;
        continue;
      case FrameType::batch: {
        if (!s.in_stream) {
          s.done = true;
          throw InputError(s.name() + ": batch " + std::to_string(s.batch_no + 1) +
                           " after the footer, without a header");
        }
        s.batch_no++;
        s.stream_batches++;
        s.stream_rows += d.rows;
        batches_++;
        if (d.nonfinite) {
          if (opt_.nonfinite == NonFinite::error) {
            s.done = true;
            throw InputError(s.name() + ": batch " + std::to_string(s.batch_no) + ": row " +
                             std::to_string(d.first_bad) + " has a NaN or Inf value (" + std::to_string(d.nonfinite) +
                             (d.nonfinite == 1 ? " such row" : " such rows") + " in this batch)");
          }
          skipped_ += d.nonfinite;
        }
        rows_ += d.batch.rows;
        std::swap(out, d.batch);
        s.recycle(std::move(d.batch));
        return true;
      }
      case FrameType::unknown: break;
    }
    s.done = true;
    throw InputError(s.name() + ": frame of unknown type");
  }
}

std::vector<Batch> read_stream_bytes(const std::string& bytes, StreamHeader* header, const ReaderOptions& opt) {
  StreamReader r(bytes.data(), bytes.size(), "<memory>", opt);
  if (header) *header = r.header();
  std::vector<Batch> out;
  Batch b;
  while (r.next(b)) {
    out.push_back(std::move(b));
    b = Batch();
  }
  return out;
}

std::vector<Batch> read_stream_bytes(const std::string& bytes, StreamHeader* header) {
  ReaderOptions opt;
  opt.threads = 1;
  opt.prefetch = false;
  return read_stream_bytes(bytes, header, opt);
}

}  // namespace sae
