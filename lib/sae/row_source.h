// Where sae-train's rows come from: activation streams (read as stored and converted to f32 as
// rows are copied out, so each row is touched once), or rows in memory (tests, benchmarks). A
// source can be rewound for another epoch unless it is a pipe.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "stream/stream.h"

namespace sae {

// Where training rows come from.
class RowSource {
 public:
  virtual ~RowSource() = default;
  virtual int64_t d() const = 0;
  // Up to max_rows rows into out (row-major, d floats each); 0 at the end of the input. A signal
  // while the input is idle (cli::Interrupted) returns the rows read so far, or throws if none.
  virtual int64_t read(float* out, int64_t max_rows) = 0;
  // Back to the first row for another epoch; false when the input cannot be read again (stdin).
  virtual bool rewind() = 0;
  // Name for messages ("a.sae", "<stdin>").
  virtual std::string name() const = 0;
  // Rows dropped for NaN/Inf values (with --skip-nonfinite).
  virtual int64_t skipped() const { return 0; }
};

// Activation streams through StreamReader, files read in order as one stream.
class StreamRowSource final : public RowSource {
 public:
  StreamRowSource(std::vector<std::string> paths, bool skip_nonfinite);
  ~StreamRowSource() override;
  int64_t d() const override { return header_.d; }
  // Reads up to the first row now, so that the header's d is backed by a row of that width in the
  // input (the reader checks each payload against rows x d) before anything is sized from it.
  // False when the input holds no rows.
  bool first_row();
  int64_t read(float* out, int64_t max_rows) override;
  // False for stdin, FIFOs and other inputs that cannot be read twice (never blocks reopening one).
  bool rewind() override;
  std::string name() const override;
  int64_t skipped() const override { return skipped_ + (reader_ ? reader_->rows_skipped() : 0); }
  const StreamHeader& header() const { return header_; }

 private:
  void open();
  std::vector<std::string> paths_;
  bool skip_;
  std::unique_ptr<StreamReader> reader_;
  StreamHeader header_;
  Batch batch_;
  int64_t pos_ = 0;  // next row of batch_
  int64_t skipped_ = 0;  // from earlier epochs
};

// Rows held in memory (tests, benchmarks).
class MemoryRowSource final : public RowSource {
 public:
  MemoryRowSource(std::vector<float> rows, int64_t d) : rows_(std::move(rows)), d_(d) {}
  int64_t d() const override { return d_; }
  int64_t read(float* out, int64_t max_rows) override;
  bool rewind() override {
    pos_ = 0;
    return true;
  }
  std::string name() const override { return "<memory>"; }

 private:
  std::vector<float> rows_;
  int64_t d_;
  int64_t pos_ = 0;
};

}  // namespace sae
