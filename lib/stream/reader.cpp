// The stream reader (stream/stream.h): reads one or more inputs in order as one stream, checking
// the frame sequence (header, batches, footer; concatenated streams whose headers agree) and
// turning every problem into one message naming the file and the batch. With prefetch an I/O
// thread splits the input into frames and a TaskPool decodes them ahead of the caller, holding at
// most a bounded number of frames and bytes.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <future>
#include <mutex>
#include <thread>

#include "base/cli.h"
#include "base/errors.h"
#include "base/fork_join_pool.h"
#include "base/task_pool.h"
#include "stream/frame_decode.h"
#include "stream/frame_source.h"
#include "stream/stream.h"

namespace sae {

using namespace stream_detail;

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
  std::unique_ptr<TaskPool> pool;
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
    if (p == "-" || p.empty()) {
      if (isatty(0))
        throw SourceError{SourceError::open, "<stdin>: refusing to read a binary stream from a terminal (give a file or pipe one in)"};
      return std::make_unique<FrameSource>(std::make_unique<FdSource>(0, false, names[size_t(i)], &stop), opt.max_frame_bytes);
    }
    // A FIFO is opened without blocking (a blocking open waits for a writer and no signal can end
    // that wait); FdSource then polls it, and a poll sees no data and no hang-up until a writer has
    // come, which is the wait a blocking open would have done.
    struct stat pst;
    const bool fifo = stat(p.c_str(), &pst) == 0 && S_ISFIFO(pst.st_mode);
    int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC | (fifo ? O_NONBLOCK : 0));
    if (fd < 0) throw SourceError{SourceError::open, p + ": " + std::strerror(errno)};
    if (fifo) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
      ::close(fd);
      throw SourceError{SourceError::open, p + ": is a directory"};
    }
    return std::make_unique<FrameSource>(std::make_unique<FdSource>(fd, true, p, &stop), opt.max_frame_bytes);
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
      // In slices: a signal in graceful mode ends the wait even while the input is idle.
      std::unique_lock<std::mutex> lk(qm);
      while (!qcv.wait_for(lk, std::chrono::milliseconds(100), [&] { return !q.empty(); })) cli::throw_if_interrupted();
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
  opt_.threads = ForkJoinPool::threads_for(opt_.threads);
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
    s.pool = std::make_unique<TaskPool>(s.opt.threads);
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
