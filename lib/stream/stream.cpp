// The stream's data types (stream/stream.h): StreamHeader, ByteBuffer and Batch, and the checks
// shared by the reader and the writer (a batch against its header, two headers against each
// other). The reader, the writer and the coding they use are in files of their own: reader.cpp,
// writer.cpp, frame_decode.*, frame_source.*, zstd_frame.*, payload.*.
#include "stream/stream.h"

#include <cstring>
#include <stdexcept>

#include "base/build_info.h"
#include "base/cli.h"
#include "stream/payload.h"

namespace sae {

using stream_detail::decode_payload;

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
  h.provenance["tool_version"] = build_info::version();
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

}  // namespace sae
