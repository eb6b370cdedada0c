// Row sources: see sae/row_source.h.
#include "sae/row_source.h"

#include <algorithm>
#include <cstring>

#include "base/cli.h"
#include "base/errors.h"

namespace sae {

StreamRowSource::StreamRowSource(std::vector<std::string> paths, bool skip_nonfinite)
    : paths_(std::move(paths)), skip_(skip_nonfinite) {
  if (paths_.empty()) paths_.push_back("-");
  open();
}

StreamRowSource::~StreamRowSource() = default;

void StreamRowSource::open() {
  ReaderOptions ro;
  ro.nonfinite = skip_ ? NonFinite::skip : NonFinite::error;
  ro.keep_stored = true;  // read() converts while it copies rows out: one pass over them, not two
  reader_ = std::make_unique<StreamReader>(paths_, ro);
  header_ = reader_->header();
  if (header_.kind != "activations")
    throw InputError(name() + ": a '" + header_.kind + "' stream; sae-train needs an activations stream");
  batch_.clear();
  pos_ = 0;
}

std::string StreamRowSource::name() const {
  std::string s;
  for (const auto& p : paths_) s += (s.empty() ? "" : ", ") + (p == "-" ? std::string("<stdin>") : p);
  return s;
}

bool StreamRowSource::first_row() {
  while (pos_ >= batch_.rows) {
    if (!reader_->next(batch_)) return false;
    pos_ = 0;
  }
  return true;
}

int64_t StreamRowSource::read(float* out, int64_t max_rows) {
  const int64_t d = header_.d;
  int64_t got = 0;
  while (got < max_rows) {
    if (pos_ >= batch_.rows) {
      try {
        if (!reader_->next(batch_)) break;
      } catch (const cli::Interrupted&) {
        if (got > 0) return got;  // the rows already copied are kept; the next read throws again
        throw;
      }
      pos_ = 0;
      continue;
    }
    int64_t m = std::min(max_rows - got, batch_.rows - pos_);
    batch_.rows_f32(d, pos_, m, out + got * d);
    pos_ += m;
    got += m;
  }
  return got;
}

bool StreamRowSource::rewind() {
  for (const auto& p : paths_)
    if (!cli::not_rereadable(p).empty()) return false;
  skipped_ += reader_->rows_skipped();
  open();
  return true;
}

int64_t MemoryRowSource::read(float* out, int64_t max_rows) {
  int64_t total = int64_t(rows_.size()) / d_;
  int64_t m = std::min(max_rows, total - pos_);
  if (m <= 0) return 0;
  std::memcpy(out, rows_.data() + pos_ * d_, size_t(m * d_) * 4);
  pos_ += m;
  return m;
}

}  // namespace sae
