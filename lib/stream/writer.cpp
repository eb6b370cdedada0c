// The stream writer (stream/stream.h): encodes each batch's msgpack map with its payload coded in
// place, compresses it into one zstd frame (on a TaskPool when threads > 0, frames written in
// order), and ends the stream with a footer that counts rows and batches.
#include <zstd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <future>
#include <mutex>
#include <stdexcept>

#include "base/cli.h"
#include "base/errors.h"
#include "base/task_pool.h"
#include "stream/msgpack_lite.h"
#include "stream/payload.h"
#include "stream/stream.h"
#include "stream/zstd_frame.h"

namespace sae {

using namespace stream_detail;

namespace {

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

}  // namespace

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
  std::unique_ptr<TaskPool> pool;  // last: destroyed first, so no task outlives what it uses

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
  if (s.opt.threads > 0) s.pool = std::make_unique<TaskPool>(s.opt.threads);
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

}  // namespace sae
