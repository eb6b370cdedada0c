// Splitting input into zstd frames: see stream/frame_source.h.
#include "stream/frame_source.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>
#include <zstd_errors.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "base/cli.h"
#include "base/errors.h"
#include "stream/zstd_frame.h"

namespace sae::stream_detail {

FdSource::FdSource(int fd_, bool own_, std::string name_, const std::atomic<bool>* stop_)
    : fd(fd_), own(own_), name(std::move(name_)), stop(stop_) {
  struct stat st;
  regular = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
  if (regular) posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
}

FdSource::~FdSource() {
  if (own) ::close(fd);
}

size_t FdSource::read(uint8_t* p, size_t n) {
  for (;;) {
    // Wait in short slices so that neither a reader being destroyed nor a tool interrupted in
    // graceful mode (sae-train) is held by an idle pipe or a FIFO with no writer yet.
    if (!regular) {
      pollfd pf{fd, POLLIN, 0};
      int pr = poll(&pf, 1, 100);
      if (stop && stop->load()) throw Stopped{};
      if (pr == 0 || (pr < 0 && errno == EINTR)) {
        cli::throw_if_interrupted();  // only an idle input is cut short; flowing data is read on
        continue;
      }
    }
    ssize_t r = ::read(fd, p, n);
    if (r >= 0) return size_t(r);
    if (errno == EINTR) continue;
    throw SourceError{SourceError::read, name + ": read error: " + std::strerror(errno)};
  }
}

size_t StdioSource::read(uint8_t* p, size_t n) {
  size_t got = fread(p, 1, std::min<size_t>(n, size_t(1) << 20), f);
  if (got == 0 && ferror(f)) throw SourceError{SourceError::read, name + ": read error: " + std::strerror(errno)};
  return got;
}

FrameSource::FrameSource(const void* data, size_t n, size_t max_frame) : max_frame_(max_frame) {
  cur_ = std::make_shared<Chunk>();
  cur_->base = static_cast<const uint8_t*>(data);
  cur_->cap = n;
  len_ = n;
  eof_ = true;
}

bool FrameSource::next(RawFrame& out) {
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

void FrameSource::fill(size_t want) {
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

}  // namespace sae::stream_detail
