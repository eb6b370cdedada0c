#include "stream.h"

#include <zstd.h>
#include <zstd_errors.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <msgpack.hpp>
#include <thread>

#include "cli.h"

namespace sae {

namespace {

constexpr size_t kMaxFrameContent = size_t(1) << 31;  // 2 GiB: a larger frame is a corrupt one
constexpr uint32_t kZstdMagic = 0xFD2FB528u;

// ---- msgpack <-> json for header maps ----

using Packer = msgpack::packer<msgpack::sbuffer>;

void pack_json(Packer& pk, const json& j) {
  switch (j.type()) {
    case json::value_t::null: pk.pack_nil(); break;
    case json::value_t::boolean: pk.pack(j.get<bool>()); break;
    case json::value_t::number_integer: pk.pack(j.get<int64_t>()); break;
    case json::value_t::number_unsigned: pk.pack(j.get<uint64_t>()); break;
    case json::value_t::number_float: pk.pack(j.get<double>()); break;
    case json::value_t::string: pk.pack(j.get<std::string>()); break;
    case json::value_t::array:
      pk.pack_array(uint32_t(j.size()));
      for (const auto& e : j) pack_json(pk, e);
      break;
    case json::value_t::object:
      pk.pack_map(uint32_t(j.size()));
      for (auto it = j.begin(); it != j.end(); ++it) {
        pk.pack(it.key());
        pack_json(pk, it.value());
      }
      break;
    default: pk.pack_nil();
  }
}

json to_json(const msgpack::object& o, int depth = 0) {
  if (depth > 64) throw InputError("nesting too deep");
  switch (o.type) {
    case msgpack::type::NIL: return nullptr;
    case msgpack::type::BOOLEAN: return o.via.boolean;
    case msgpack::type::POSITIVE_INTEGER: return o.via.u64;
    case msgpack::type::NEGATIVE_INTEGER: return o.via.i64;
    case msgpack::type::FLOAT32:
    case msgpack::type::FLOAT64: return o.via.f64;
    case msgpack::type::STR: return std::string(o.via.str.ptr, o.via.str.size);
    case msgpack::type::BIN: return std::string("<bin>");
    case msgpack::type::ARRAY: {
      json a = json::array();
      for (uint32_t i = 0; i < o.via.array.size; i++) a.push_back(to_json(o.via.array.ptr[i], depth + 1));
      return a;
    }
    case msgpack::type::MAP: {
      json m = json::object();
      for (uint32_t i = 0; i < o.via.map.size; i++) {
        const auto& kv = o.via.map.ptr[i];
        if (kv.key.type != msgpack::type::STR) throw InputError("map key is not a string");
        m[std::string(kv.key.via.str.ptr, kv.key.via.str.size)] = to_json(kv.val, depth + 1);
      }
      return m;
    }
    default: return nullptr;
  }
}

// ---- byte shuffle: element bytes stored plane by plane ----

void shuffle_bytes(const uint8_t* src, size_t n, size_t size, uint8_t* dst) {
  for (size_t b = 0; b < size; b++)
    for (size_t i = 0; i < n; i++) dst[b * n + i] = src[i * size + b];
}
void unshuffle_bytes(const uint8_t* src, size_t n, size_t size, uint8_t* dst) {
  for (size_t b = 0; b < size; b++)
    for (size_t i = 0; i < n; i++) dst[i * size + b] = src[b * n + i];
}

// ---- frames ----

std::string compress_frame(const msgpack::sbuffer& buf, int level) {
  ZSTD_CCtx* c = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, level);
  ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
  ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, 1);
  std::string out(ZSTD_compressBound(buf.size()), '\0');
  size_t n = ZSTD_compress2(c, out.data(), out.size(), buf.data(), buf.size());
  ZSTD_freeCCtx(c);
  if (ZSTD_isError(n)) throw std::runtime_error(std::string("zstd: ") + ZSTD_getErrorName(n));
  out.resize(n);
  return out;
}

std::string encode_header(const StreamHeader& h) {
  json m = h.extra;
  m["type"] = "header";
  m["format"] = kStreamFormat;
  m["version"] = kStreamVersion;
  m["kind"] = h.kind;
  m["d"] = h.d;
  m["dtype"] = dtype_name(h.dtype);
  m["provenance"] = h.provenance;
  msgpack::sbuffer buf;
  Packer pk(&buf);
  pack_json(pk, m);
  return std::string(buf.data(), buf.size());
}

void pack_blob(Packer& pk, const char* key, const void* p, size_t n) {
  pk.pack(std::string(key));
  pk.pack_bin(uint32_t(n));
  pk.pack_bin_body(static_cast<const char*>(p), uint32_t(n));
}

void pack_values(Packer& pk, const char* key, DType t, const float* v, size_t n, bool shuffle) {
  size_t es = dtype_size(t);
  std::vector<uint8_t> raw(n * es);
  encode_f32(t, v, n, raw.data());
  if (shuffle && es > 1) {
    std::vector<uint8_t> sh(raw.size());
    shuffle_bytes(raw.data(), n, es, sh.data());
    raw.swap(sh);
  }
  pack_blob(pk, key, raw.data(), raw.size());
}

msgpack::sbuffer encode_batch(const StreamHeader& h, const Batch& b, bool shuffle) {
  msgpack::sbuffer buf;
  Packer pk(&buf);
  bool latents = h.kind == "latents";
  // type, rows, byteshuffle, then the payload (x, or count/index/value), then optional columns.
  uint32_t n = 3 + (latents ? 3 : 1) + (b.token.empty() ? 0 : 1) + (b.doc.empty() ? 0 : 1) + (b.pos.empty() ? 0 : 1);
  pk.pack_map(n);
  pk.pack(std::string("type"));
  pk.pack(std::string("batch"));
  pk.pack(std::string("rows"));
  pk.pack(uint64_t(b.rows));
  pk.pack(std::string("byteshuffle"));
  pk.pack(shuffle);
  if (latents) {
    pack_blob(pk, "count", b.count.data(), b.count.size() * 4);
    pack_blob(pk, "index", b.index.data(), b.index.size() * 4);
    pack_values(pk, "value", h.dtype, b.value.data(), b.value.size(), shuffle);
  } else {
    pack_values(pk, "x", h.dtype, b.x.data(), b.x.size(), shuffle);
  }
  if (!b.token.empty()) pack_blob(pk, "token", b.token.data(), b.token.size() * 4);
  if (!b.doc.empty()) pack_blob(pk, "doc", b.doc.data(), b.doc.size() * 8);
  if (!b.pos.empty()) pack_blob(pk, "pos", b.pos.data(), b.pos.size() * 4);
  return buf;
}

// ---- reading ----

struct Frame {
  std::string bytes;  // compressed
  int64_t index = 0;  // frame number within its file, from 0
};

enum class FrameType { header, batch, footer };

struct Decoded {
  FrameType type = FrameType::batch;
  StreamHeader header;
  Batch batch;
  int64_t footer_rows = 0;
  std::string error;  // non-empty: this frame is bad
};

const msgpack::object* find_key(const msgpack::object& m, const char* key) {
  for (uint32_t i = 0; i < m.via.map.size; i++) {
    const auto& kv = m.via.map.ptr[i];
    if (kv.key.type == msgpack::type::STR && kv.key.via.str.size == strlen(key) &&
        memcmp(kv.key.via.str.ptr, key, kv.key.via.str.size) == 0)
      return &kv.val;
  }
  return nullptr;
}

std::string get_str(const msgpack::object& m, const char* key) {
  const auto* v = find_key(m, key);
  if (!v || v->type != msgpack::type::STR) throw InputError(std::string("missing or non-string '") + key + "'");
  return std::string(v->via.str.ptr, v->via.str.size);
}

int64_t get_int(const msgpack::object& m, const char* key) {
  const auto* v = find_key(m, key);
  if (!v || v->type != msgpack::type::POSITIVE_INTEGER)
    throw InputError(std::string("missing or invalid '") + key + "'");
  if (v->via.u64 > uint64_t(1) << 48) throw InputError(std::string("'") + key + "' out of range");
  return int64_t(v->via.u64);
}

// Returns the blob for key, or nullptr when absent; a present non-bin value is an error.
const msgpack::object_bin* get_bin(const msgpack::object& m, const char* key) {
  const auto* v = find_key(m, key);
  if (!v) return nullptr;
  if (v->type != msgpack::type::BIN) throw InputError(std::string("'") + key + "' is not a bin blob");
  return &v->via.bin;
}

template <class T>
void read_column(const msgpack::object& m, const char* key, int64_t n, std::vector<T>& out) {
  const auto* b = get_bin(m, key);
  if (!b) {
    out.clear();
    return;
  }
  if (uint64_t(b->size) != uint64_t(n) * sizeof(T))
    throw InputError(std::string("column '") + key + "' has " + std::to_string(b->size) + " bytes, expected " +
                     std::to_string(uint64_t(n) * sizeof(T)));
  out.resize(size_t(n));
  if (n) memcpy(out.data(), b->ptr, b->size);
}

void read_values(const msgpack::object& m, const char* key, DType t, uint64_t n, bool shuffled,
                 std::vector<float>& out) {
  const auto* b = get_bin(m, key);
  if (!b) throw InputError(std::string("missing payload '") + key + "'");
  size_t es = dtype_size(t);
  if (uint64_t(b->size) != n * es)
    throw InputError(std::string("payload '") + key + "' has " + std::to_string(b->size) + " bytes, expected " +
                     std::to_string(n * es));
  out.resize(n);
  if (shuffled && es > 1) {
    std::vector<uint8_t> raw(b->size);
    unshuffle_bytes(reinterpret_cast<const uint8_t*>(b->ptr), n, es, raw.data());
    decode_f32(t, raw.data(), n, out.data());
  } else {
    decode_f32(t, b->ptr, n, out.data());
  }
}

StreamHeader parse_header(const msgpack::object& m) {
  StreamHeader h;
  std::string fmt = get_str(m, "format");
  if (fmt != kStreamFormat) throw InputError("not a saetools stream (format '" + fmt + "')");
  int64_t ver = get_int(m, "version");
  if (ver != kStreamVersion)
    throw InputError("unsupported format version " + std::to_string(ver) + " (this build reads version " +
                     std::to_string(kStreamVersion) + ")");
  h.kind = get_str(m, "kind");
  if (h.kind != "activations" && h.kind != "latents") throw InputError("unknown stream kind '" + h.kind + "'");
  h.d = get_int(m, "d");
  if (h.d <= 0 || h.d > (int64_t(1) << 28)) throw InputError("row width d=" + std::to_string(h.d) + " out of range");
  try {
    h.dtype = parse_dtype(get_str(m, "dtype"));
  } catch (const UsageError& e) {
    throw InputError(e.what());
  }
  json all = to_json(m);
  if (all.contains("provenance")) {
    if (!all["provenance"].is_object()) throw InputError("'provenance' is not a map");
    h.provenance = all["provenance"];
  }
  for (const char* k : {"type", "format", "version", "kind", "d", "dtype", "provenance"}) all.erase(k);
  h.extra = all;
  return h;
}

Decoded decode_frame(const Frame& f, const StreamHeader* current) {
  Decoded d;
  try {
    const char* src = f.bytes.data();
    unsigned long long content = ZSTD_getFrameContentSize(src, f.bytes.size());
    if (content == ZSTD_CONTENTSIZE_ERROR) throw InputError("corrupt frame (bad zstd frame header)");
    if (content == ZSTD_CONTENTSIZE_UNKNOWN) throw InputError("corrupt frame (no content size)");
    if (content > kMaxFrameContent) throw InputError("corrupt frame (content size too large)");
    // Frame_Header_Descriptor (the byte after the magic), bit 2: Content_Checksum_flag.
    if (f.bytes.size() < 5 || !(uint8_t(src[4]) & 0x04)) throw InputError("corrupt frame (no content checksum)");
    std::string raw(size_t(content), '\0');
    size_t n = ZSTD_decompress(raw.data(), raw.size(), src, f.bytes.size());
    if (ZSTD_isError(n)) throw InputError(std::string("corrupt frame (") + ZSTD_getErrorName(n) + ")");
    if (n != content) throw InputError("corrupt frame (size mismatch)");
    msgpack::object_handle oh;
    try {
      oh = msgpack::unpack(raw.data(), raw.size());
    } catch (const std::exception& e) {
      throw InputError(std::string("corrupt frame (msgpack: ") + e.what() + ")");
    }
    const msgpack::object& m = oh.get();
    if (m.type != msgpack::type::MAP) throw InputError("frame does not hold a map");
    std::string type = get_str(m, "type");
    if (type == "header") {
      d.type = FrameType::header;
      d.header = parse_header(m);
    } else if (type == "footer") {
      d.type = FrameType::footer;
      d.footer_rows = get_int(m, "rows");
    } else if (type == "batch") {
      d.type = FrameType::batch;
      if (!current) throw InputError("batch before the header");
      Batch& b = d.batch;
      b.rows = get_int(m, "rows");
      const auto* sh = find_key(m, "byteshuffle");
      bool shuffled = sh && sh->type == msgpack::type::BOOLEAN && sh->via.boolean;
      if (current->kind == "latents") {
        read_column(m, "count", b.rows, b.count);
        if (int64_t(b.count.size()) != b.rows) throw InputError("latent batch without 'count'");
        uint64_t nnz = 0;
        for (uint32_t c : b.count) {
          if (c > uint64_t(current->d)) throw InputError("latent row with more entries than d");
          nnz += c;
        }
        read_column(m, "index", int64_t(nnz), b.index);
        if (b.index.size() != nnz) throw InputError("latent batch without 'index'");
        for (uint32_t i : b.index)
          if (i >= uint64_t(current->d)) throw InputError("latent index " + std::to_string(i) + " >= d");
        read_values(m, "value", current->dtype, nnz, shuffled, b.value);
      } else {
        if (uint64_t(b.rows) * uint64_t(current->d) > kMaxFrameContent) throw InputError("batch too large");
        read_values(m, "x", current->dtype, uint64_t(b.rows) * uint64_t(current->d), shuffled, b.x);
      }
      read_column(m, "token", b.rows, b.token);
      read_column(m, "doc", b.rows, b.doc);
      read_column(m, "pos", b.rows, b.pos);
    } else {
      throw InputError("unknown frame type '" + type + "'");
    }
  } catch (const InputError& e) {
    d.error = e.what();
  } catch (const std::bad_alloc&) {
    d.error = "corrupt frame (allocation failed)";
  }
  return d;
}

// Reads raw zstd frames one at a time from a FILE*.
class FrameSource {
 public:
  FrameSource(FILE* f, std::string name) : f_(f), name_(std::move(name)) {}
  // Returns false at a clean end of file. Throws on truncation or garbage.
  bool next(Frame& out) {
    for (;;) {
      size_t avail = buf_.size() - pos_;
      if (avail >= 4) {
        uint32_t magic;
        memcpy(&magic, buf_.data() + pos_, 4);
        if (magic != kZstdMagic) {
          if (frames_ == 0) throw InputError(name_ + ": not a saetools stream (bad magic)");
          throw InputError(name_ + ": garbage after frame " + std::to_string(frames_) + " (bad magic)");
        }
        size_t n = ZSTD_findFrameCompressedSize(buf_.data() + pos_, avail);
        if (!ZSTD_isError(n)) {
          out.bytes.assign(buf_.data() + pos_, n);
          out.index = frames_++;
          pos_ += n;
          return true;
        }
        if (ZSTD_getErrorCode(n) != ZSTD_error_srcSize_wrong || eof_) {
          if (eof_ && ZSTD_getErrorCode(n) == ZSTD_error_srcSize_wrong) throw_truncated();
          throw InputError(name_ + ": corrupt frame " + std::to_string(frames_) + " (" + ZSTD_getErrorName(n) + ")");
        }
      } else if (eof_) {
        if (avail == 0) return false;
        if (frames_ == 0) throw InputError(name_ + ": not a saetools stream (too short)");
        throw_truncated();
      }
      fill();
    }
  }
  int64_t frames() const { return frames_; }

 private:
  [[noreturn]] void throw_truncated() {
    throw InputError(name_ + ": truncated stream (ends inside frame " + std::to_string(frames_) + ")");
  }
  void fill() {
    if (pos_ > 0 && pos_ >= buf_.size() / 2) {
      buf_.erase(0, pos_);
      pos_ = 0;
    }
    size_t old = buf_.size();
    size_t want = std::max<size_t>(1 << 20, old);
    buf_.resize(old + want);
    size_t got = fread(buf_.data() + old, 1, want, f_);
    buf_.resize(old + got);
    if (got == 0) {
      if (ferror(f_)) throw InputError(name_ + ": read error: " + std::strerror(errno));
      eof_ = true;
    }
  }
  FILE* f_;
  std::string name_;
  std::string buf_;
  size_t pos_ = 0;
  bool eof_ = false;
  int64_t frames_ = 0;
};

std::string describe_mismatch(const StreamHeader& a, const StreamHeader& b) {
  if (a.kind != b.kind) return "kind " + b.kind + " vs " + a.kind;
  if (a.d != b.d) return "d " + std::to_string(b.d) + " vs " + std::to_string(a.d);
  if (a.dtype != b.dtype) return std::string("dtype ") + dtype_name(b.dtype) + " vs " + dtype_name(a.dtype);
  if (a.hook() != b.hook()) return "hook '" + b.hook() + "' vs '" + a.hook() + "'";
  return "";
}

}  // namespace

std::string StreamHeader::hook() const {
  if (provenance.contains("hook") && provenance["hook"].is_string()) return provenance["hook"].get<std::string>();
  return "";
}

void Batch::clear() {
  rows = 0;
  x.clear();
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
    for (auto c : b.count) nnz += c;
    if (b.index.size() != nnz || b.value.size() != nnz) bad("index/value size");
  } else if (int64_t(b.x.size()) != b.rows * h.d) {
    bad("payload has " + std::to_string(b.x.size()) + " values, expected rows*d = " + std::to_string(b.rows * h.d));
  }
  if (!b.token.empty() && int64_t(b.token.size()) != b.rows) bad("token column size");
  if (!b.doc.empty() && int64_t(b.doc.size()) != b.rows) bad("doc column size");
  if (!b.pos.empty() && int64_t(b.pos.size()) != b.rows) bad("pos column size");
}

// ---- writer ----

StreamWriter::StreamWriter(FILE* out, std::string name, StreamHeader header, WriterOptions opt)
    : out_(out), name_(std::move(name)), header_(std::move(header)), opt_(opt) {
  if (opt_.threads < 1) opt_.threads = 1;
  msgpack::sbuffer buf;
  std::string h = encode_header(header_);
  buf.write(h.data(), h.size());
  put(compress_frame(buf, opt_.level));
}

StreamWriter::~StreamWriter() = default;

void StreamWriter::put(const std::string& frame) {
  if (fwrite(frame.data(), 1, frame.size(), out_) != frame.size()) {
    if (errno == EPIPE) throw cli::BrokenPipe();
    throw InputError(name_ + ": write failed: " + std::strerror(errno));
  }
  bytes_ += int64_t(frame.size());
}

void StreamWriter::write(const Batch& b) { write(Batch(b)); }

void StreamWriter::write(Batch&& b) {
  if (finished_) throw std::logic_error("StreamWriter::write after finish");
  check_batch(header_, b, name_);
  if (b.rows == 0) return;
  pending_.push_back(std::move(b));
  if (int(pending_.size()) >= opt_.threads) flush_pending();
}

void StreamWriter::flush_pending() {
  std::vector<std::string> frames(pending_.size());
  std::vector<std::string> errors(pending_.size());
#pragma omp parallel for schedule(dynamic, 1) num_threads(opt_.threads) if (pending_.size() > 1)
  for (size_t i = 0; i < pending_.size(); i++) {
    try {
      frames[i] = compress_frame(encode_batch(header_, pending_[i], opt_.byte_shuffle), opt_.level);
    } catch (const std::exception& e) {
      errors[i] = e.what();
    }
  }
  for (size_t i = 0; i < frames.size(); i++) {
    if (!errors[i].empty()) throw std::runtime_error(errors[i]);
    put(frames[i]);
    rows_ += pending_[i].rows;
    batches_++;
  }
  pending_.clear();
}

void StreamWriter::finish() {
  if (finished_) return;
  flush_pending();
  msgpack::sbuffer buf;
  Packer pk(&buf);
  pk.pack_map(3);
  pk.pack(std::string("type"));
  pk.pack(std::string("footer"));
  pk.pack(std::string("rows"));
  pk.pack(uint64_t(rows_));
  pk.pack(std::string("batches"));
  pk.pack(uint64_t(batches_));
  put(compress_frame(buf, opt_.level));
  finished_ = true;
}

// ---- reader ----

struct StreamReader::Impl {
  std::vector<std::string> paths;
  size_t file = 0;
  FILE* f = nullptr;
  std::unique_ptr<FrameSource> src;
  std::string name;
  int threads = 1;
  FILE* preopened = nullptr;  // used for the first (only) input instead of opening paths[0]

  // Per-file (per concatenated stream) state.
  bool in_stream = false;    // a header was read and no footer yet
  int64_t stream_rows = 0;   // rows in the current stream so far
  int64_t stream_index = 0;  // how many streams this file held so far
  int64_t batch_no = 0;      // batch number within the current file, from 1
  bool have_first = false;
  StreamHeader first;

  std::vector<Decoded> ready;
  size_t ready_pos = 0;

  ~Impl() { close(); }
  void close() {
    if (f && f != stdin && f != preopened) fclose(f);
    f = nullptr;
    src.reset();
  }
  bool open_next() {
    close();
    if (file >= paths.size()) return false;
    const std::string& p = paths[file++];
    if (preopened) {
      name = p;
      f = preopened;
    } else {
      name = p == "-" ? "<stdin>" : p;
      f = cli::open_input(p);
    }
    src = std::make_unique<FrameSource>(f, name);
    in_stream = false;
    stream_rows = 0;
    stream_index = 0;
    batch_no = 0;
    return true;
  }
  std::string where() const { return name + ": batch " + std::to_string(batch_no); }
};

StreamReader::StreamReader(FILE* f, const std::string& name, ReaderOptions opt) : impl_(new Impl), opt_(opt) {
  impl_->preopened = f;
  impl_->paths = {name};
  start();
}

StreamReader::StreamReader(std::vector<std::string> paths, ReaderOptions opt) : impl_(new Impl), opt_(opt) {
  if (paths.empty()) paths.push_back("-");
  impl_->paths = std::move(paths);
  start();
}

void StreamReader::start() {
  const ReaderOptions& opt = opt_;
  int hw = int(std::thread::hardware_concurrency());
  impl_->threads = opt.threads > 0 ? opt.threads : std::max(1, hw);
  // Read the first header so header() is valid before any batch is asked for.
  if (!impl_->open_next()) throw InputError("no input");
  Frame fr;
  if (!impl_->src->next(fr)) throw InputError(impl_->name + ": empty input (no stream header)");
  Decoded d = decode_frame(fr, nullptr);
  if (!d.error.empty()) throw InputError(impl_->name + ": " + d.error);
  if (d.type != FrameType::header) throw InputError(impl_->name + ": stream does not start with a header");
  header_ = d.header;
  impl_->first = d.header;
  impl_->have_first = true;
  impl_->in_stream = true;
  impl_->stream_index = 1;
}

StreamReader::~StreamReader() = default;

bool StreamReader::next(Batch& out) {
  Impl& s = *impl_;
  for (;;) {
    if (s.ready_pos < s.ready.size()) {
      Decoded& d = s.ready[s.ready_pos++];
      if (d.type == FrameType::batch) s.batch_no++;
      if (!d.error.empty()) {
        if (d.type == FrameType::batch || !s.in_stream)
          throw InputError(s.where() + ": " + d.error);
        throw InputError(s.name + ": after batch " + std::to_string(s.batch_no) + ": " + d.error);
      }
      switch (d.type) {
        case FrameType::header: {
          if (s.in_stream)
            throw InputError(s.name + ": header in the middle of a stream (after batch " + std::to_string(s.batch_no) +
                             ", no footer before it)");
          std::string why = describe_mismatch(s.first, d.header);
          if (!why.empty())
            throw InputError(s.name + ": concatenated stream does not match the first (" + why + ")");
          s.in_stream = true;
          s.stream_rows = 0;
          s.stream_index++;
          continue;
        }
        case FrameType::footer:
          if (!s.in_stream) throw InputError(s.name + ": footer without a header");
          if (d.footer_rows != s.stream_rows)
            throw InputError(s.name + ": footer says " + std::to_string(d.footer_rows) + " rows but the stream held " +
                             std::to_string(s.stream_rows));
          s.in_stream = false;
          continue;
        case FrameType::batch: {
          if (!s.in_stream)
            throw InputError(s.where() + ": batch after the footer without a new header");
          s.stream_rows += d.batch.rows;
          batches_++;
          Batch& b = d.batch;
          if (opt_.nonfinite != NonFinite::allow) {
            const int64_t w = header_.kind == "latents" ? 0 : header_.d;
            std::vector<char> bad(size_t(b.rows), 0);
            int64_t nbad = 0;
            if (w) {
              for (int64_t r = 0; r < b.rows; r++) {
                const float* x = b.x.data() + r * w;
                for (int64_t j = 0; j < w; j++)
                  if (!std::isfinite(x[j])) {
                    bad[size_t(r)] = 1;
                    nbad++;
                    break;
                  }
              }
            } else {
              size_t o = 0;
              for (int64_t r = 0; r < b.rows; r++) {
                for (uint32_t j = 0; j < b.count[size_t(r)]; j++)
                  if (!std::isfinite(b.value[o + j])) bad[size_t(r)] = 1;
                nbad += bad[size_t(r)];
                o += b.count[size_t(r)];
              }
            }
            if (nbad && opt_.nonfinite == NonFinite::error) {
              int64_t r = 0;
              while (!bad[size_t(r)]) r++;
              throw InputError(s.where() + ": row " + std::to_string(r) + " has a NaN or Inf value (" +
                               std::to_string(nbad) + " such rows in this batch)");
            }
            if (nbad) {
              skipped_ += nbad;
              if (w) {
                int64_t o = 0;
                for (int64_t r = 0; r < b.rows; r++) {
                  if (bad[size_t(r)]) continue;
                  if (o != r) {
                    memmove(b.x.data() + o * w, b.x.data() + r * w, size_t(w) * 4);
                    if (!b.token.empty()) b.token[size_t(o)] = b.token[size_t(r)];
                    if (!b.doc.empty()) b.doc[size_t(o)] = b.doc[size_t(r)];
                    if (!b.pos.empty()) b.pos[size_t(o)] = b.pos[size_t(r)];
                  }
                  o++;
                }
                b.rows = o;
                b.x.resize(size_t(o * w));
                if (!b.token.empty()) b.token.resize(size_t(o));
                if (!b.doc.empty()) b.doc.resize(size_t(o));
                if (!b.pos.empty()) b.pos.resize(size_t(o));
              } else {
                Batch kept;
                size_t off = 0;
                for (int64_t r = 0; r < b.rows; r++) {
                  uint32_t c = b.count[size_t(r)];
                  if (!bad[size_t(r)]) {
                    kept.count.push_back(c);
                    kept.index.insert(kept.index.end(), b.index.begin() + off, b.index.begin() + off + c);
                    kept.value.insert(kept.value.end(), b.value.begin() + off, b.value.begin() + off + c);
                    if (!b.token.empty()) kept.token.push_back(b.token[size_t(r)]);
                    if (!b.doc.empty()) kept.doc.push_back(b.doc[size_t(r)]);
                    if (!b.pos.empty()) kept.pos.push_back(b.pos[size_t(r)]);
                    kept.rows++;
                  }
                  off += c;
                }
                b = std::move(kept);
              }
            }
          }
          rows_ += b.rows;
          out = std::move(b);
          return true;
        }
      }
    }
    // Refill: read a group of raw frames and decode them in parallel.
    s.ready.clear();
    s.ready_pos = 0;
    std::vector<Frame> frames;
    const size_t group = size_t(s.threads) * 2;
    while (frames.size() < group) {
      Frame fr;
      if (!s.src) break;
      if (!s.src->next(fr)) {
        if (!frames.empty()) break;  // handle end of file after draining these
        if (s.in_stream) {
          if (s.batch_no == 0)
            throw InputError(s.name + ": truncated stream (no batches and no footer after the header)");
          throw InputError(s.name + ": truncated stream (no footer after batch " + std::to_string(s.batch_no) + ")");
        }
        if (!s.open_next()) return false;
        if (!s.src->next(fr)) throw InputError(s.name + ": empty input (no stream header)");
      }
      compressed_ += int64_t(fr.bytes.size());
      frames.push_back(std::move(fr));
    }
    if (frames.empty()) return false;
    s.ready.resize(frames.size());
    const StreamHeader* h = &header_;
#pragma omp parallel for schedule(dynamic, 1) num_threads(s.threads) if (frames.size() > 1 && s.threads > 1)
    for (size_t i = 0; i < frames.size(); i++) s.ready[i] = decode_frame(frames[i], h);
    // A file's first frame must be a header: a batch there means a stream without one.
    if (frames[0].index == 0 && s.ready[0].error.empty() && s.ready[0].type != FrameType::header)
      throw InputError(s.name + ": stream does not start with a header");
  }
}

std::vector<Batch> read_stream_bytes(const std::string& bytes, StreamHeader* header) {
  FILE* f = fmemopen(const_cast<char*>(bytes.data()), bytes.size() ? bytes.size() : 1, "rb");
  if (!f) throw std::runtime_error("fmemopen failed");
  if (bytes.empty()) fseek(f, 0, SEEK_END);
  struct Closer {
    FILE* f;
    ~Closer() { fclose(f); }
  } closer{f};
  ReaderOptions opt;
  opt.threads = 1;
  StreamReader r(f, "<memory>", opt);
  if (header) *header = r.header();
  std::vector<Batch> out;
  Batch b;
  while (r.next(b)) out.push_back(std::move(b));
  return out;
}

}  // namespace sae
