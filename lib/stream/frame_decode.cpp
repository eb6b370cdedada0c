// Decoding one frame: see stream/frame_decode.h.
#include "stream/frame_decode.h"

#include <zstd.h>
#include <zstd_errors.h>

#include <algorithm>
#include <cstring>
#include <new>
#include <vector>

#include "base/errors.h"
#include "stream/msgpack_lite.h"
#include "stream/payload.h"
#include "stream/zstd_frame.h"

namespace sae::stream_detail {

namespace {

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

}  // namespace

Decoded decode_frame(const RawFrame& f, const StreamHeader* h, const ReaderOptions& opt, Batch&& reuse) {
  Decoded d;
  d.batch = std::move(reuse);
  try {
    FrameInfo fi;
    if (parse_frame_header(f.p, f.n, opt.max_frame_bytes, fi) != 1) throw InputError("corrupt frame (bad zstd frame header)");
    check_frame_holds(f.p, f.n, fi);
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

}  // namespace sae::stream_detail
