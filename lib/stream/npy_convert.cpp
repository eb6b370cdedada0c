#include "stream/npy_convert.h"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <memory>

#include "base/cli.h"
#include "stream/npy.h"

namespace sae::npy {

namespace {

void put(FILE* f, const std::string& name, const void* p, size_t n) {
  if (n && fwrite(p, 1, n, f) != n) throw InputError(name + ": write failed: " + std::strerror(errno));
}

}  // namespace

int64_t export_npy(StreamReader& r, FILE* out, const std::string& out_name, const ExportOptions& o) {
  const StreamHeader& h = r.header();
  if (h.kind != "activations")
    throw InputError(r.where() + ": a " + h.kind + " stream is sparse; only activations streams convert to .npy");
  const bool x = o.column == "x";
  if (!x && o.column != "token" && o.column != "doc" && o.column != "pos")
    throw UsageError("--column: unknown column '" + o.column + "' (expected x, token, doc or pos)");
  Elem e;
  if (x) {
    if (o.dtype == "auto") e = h.dtype == DType::f16 ? Elem::f2 : Elem::f4;
    else if (o.dtype == "f32") e = Elem::f4;
    else if (o.dtype == "f16") e = Elem::f2;
    else throw UsageError("--dtype: '" + o.dtype + "' is not an array dtype for export (expected auto, f32 or f16)");
  } else {
    e = o.column == "doc" ? Elem::i8 : Elem::i4;
  }
  auto shape = [&](uint64_t rows) {
    return x ? std::vector<uint64_t>{rows, uint64_t(h.d)} : std::vector<uint64_t>{rows};
  };
  // The header is written with room for any row count and rewritten in place at the end.
  const size_t hlen = format_header(e, shape(UINT64_MAX)).size();
  put(out, out_name, format_header(e, shape(0), hlen).data(), hlen);
  cli::Progress progress;
  Batch b;
  int64_t rows = 0;
  std::vector<uint16_t> half;
  while (r.next(b)) {
    if (x) {
      if (e == Elem::f4) {
        put(out, out_name, b.x.data(), b.x.size() * 4);
      } else {
        half.resize(b.x.size());
        for (size_t i = 0; i < b.x.size(); i++) half[i] = f32_to_f16(b.x[i]);
        put(out, out_name, half.data(), half.size() * 2);
      }
    } else {
      const size_t have = o.column == "token" ? b.token.size() : o.column == "doc" ? b.doc.size() : b.pos.size();
      if (have == 0 && b.rows > 0) throw InputError(r.where() + ": has no '" + o.column + "' column");
      if (o.column == "token") put(out, out_name, b.token.data(), b.token.size() * 4);
      if (o.column == "doc") put(out, out_name, b.doc.data(), b.doc.size() * 8);
      if (o.column == "pos") put(out, out_name, b.pos.data(), b.pos.size() * 4);
    }
    rows += b.rows;
    progress.update(cli::human_count(double(rows)) + " rows");
  }
  progress.done();
  std::string final_header = format_header(e, shape(uint64_t(rows)), hlen);
  if (fflush(out) != 0 || fseek(out, 0, SEEK_SET) != 0)
    throw InputError(out_name + ": cannot rewrite the .npy header: " + std::strerror(errno));
  put(out, out_name, final_header.data(), final_header.size());
  if (fseek(out, 0, SEEK_END) != 0) throw InputError(out_name + ": seek failed: " + std::strerror(errno));
  return rows;
}

int64_t import_npy(const std::string& path, FILE* out, const std::string& out_name, const ImportOptions& o) {
  Reader in(path);
  const Header& xh = in.header();
  if (!is_float(xh.elem))
    throw InputError(in.name() + ": holds " + descr(xh.elem) + " integers; activations must be <f4, <f2 or <f8");
  if (xh.shape.size() < 2)
    throw InputError(in.name() + ": shape " + shape_str(xh.shape) +
                     " has no row dimension; expected (rows, d) or more dimensions (all but the last count rows)");
  const uint64_t d = xh.shape.back();
  if (d == 0) throw InputError(in.name() + ": shape " + shape_str(xh.shape) + " has rows of width 0");
  const uint64_t rows = xh.count() / d;
  if (o.batch_rows < 1) throw UsageError("--batch-rows must be at least 1");
  if (d > (uint64_t(1) << 31))
    throw InputError(in.name() + ": rows of " + std::to_string(d) + " values are wider than a stream allows (2^31)");

  DType t;
  if (o.dtype == "auto") t = xh.elem == Elem::f2 ? DType::f16 : DType::f32;
  else t = parse_dtype(o.dtype);
  // Every batch must fit in one frame a reader accepts (values plus the three optional columns
  // and the map's keys).
  const uint64_t row_bytes = d * dtype_size(t) + 16, frame_room = kMaxFrameBytes - 4096;
  if (row_bytes > frame_room)
    throw InputError(in.name() + ": one row of " + std::to_string(d) + " values (" + std::to_string(row_bytes) +
                     " bytes) does not fit in a stream batch (at most " + std::to_string(kMaxFrameBytes) + " bytes)");
  const uint64_t batch_rows = std::min<uint64_t>(uint64_t(o.batch_rows), frame_room / row_bytes);
  in.check_size();

  struct Col {
    const char* name;
    std::unique_ptr<Reader> r;
  };
  Col cols[3] = {{"token", nullptr}, {"doc", nullptr}, {"pos", nullptr}};
  const std::string* files[3] = {&o.token, &o.doc, &o.pos};
  for (int c = 0; c < 3; c++) {
    if (files[c]->empty()) continue;
    if (*files[c] == "-" && path == "-") throw UsageError(std::string("--") + cols[c].name + ": stdin is already the array");
    cols[c].r = std::make_unique<Reader>(*files[c]);
    const Header& ch = cols[c].r->header();
    if (is_float(ch.elem))
      throw InputError(cols[c].r->name() + ": holds " + descr(ch.elem) + " values; the " + cols[c].name +
                       " column must be integers (<i4 or <i8)");
    if (ch.count() != rows)
      throw InputError(cols[c].r->name() + ": has " + std::to_string(ch.count()) + " values (shape " +
                       shape_str(ch.shape) + "), expected one per row: " + std::to_string(rows) + " rows in " +
                       in.name());
    cols[c].r->check_size();
  }

  StreamHeader h = make_header("activations", int64_t(d), t);
  h.provenance["source"] = in.name();
  for (auto it = o.provenance.begin(); it != o.provenance.end(); ++it) h.provenance[it.key()] = it.value();
  StreamWriter w(out, out_name, h, o.writer);
  cli::Progress progress;
  std::vector<int64_t> tmp;
  uint64_t done = 0;
  while (done < rows) {
    const uint64_t n = std::min<uint64_t>(batch_rows, rows - done);
    Batch b;
    b.rows = int64_t(n);
    // Grown as the data arrives, 4 Mi values at a time: from a pipe, a header that claims more
    // than follows costs what was read, not what was claimed.
    const size_t want = size_t(n * d), step = size_t(4) << 20;
    while (b.x.size() < want) {
      const size_t at = b.x.size(), k = std::min(step, want - at);
      b.x.resize(at + k);
      in.read_f32(b.x.data() + at, k);
    }
    for (int c = 0; c < 3; c++) {
      if (!cols[c].r) continue;
      tmp.resize(size_t(n));
      cols[c].r->read_i64(tmp.data(), size_t(n));
      if (c == 1) {
        b.doc = tmp;
        continue;
      }
      std::vector<int32_t>& dst = c == 0 ? b.token : b.pos;
      dst.resize(size_t(n));
      for (size_t i = 0; i < size_t(n); i++) {
        if (tmp[i] < INT32_MIN || tmp[i] > INT32_MAX)
          throw InputError(cols[c].r->name() + ": value " + std::to_string(tmp[i]) + " at index " +
                           std::to_string(done + i) + " does not fit the int32 " + cols[c].name + " column");
        dst[i] = int32_t(tmp[i]);
      }
    }
    w.write(std::move(b));
    done += n;
    progress.update(cli::human_count(double(done)) + " of " + cli::human_count(double(rows)) + " rows");
  }
  progress.done();
  in.expect_end();
  for (auto& c : cols)
    if (c.r) c.r->expect_end();
  w.finish();
  return int64_t(rows);
}

}  // namespace sae::npy
