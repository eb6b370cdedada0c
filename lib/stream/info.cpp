#include "stream/info.h"

#include <zstd.h>
#include <zstd_errors.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <unordered_map>

#include "base/cli.h"
#include "stream/msgpack_lite.h"
#include "stream/zstd_frame.h"

namespace sae {

namespace {

bool row_finite(const float* x, size_t n) {
  uint32_t bad = 0;
  for (size_t j = 0; j < n; j++) bad |= uint32_t((f32_bits(x[j]) & 0x7f800000u) == 0x7f800000u);
  return !bad;
}

// Per-dimension mean and variance over finite rows, merged batch by batch (Chan et al.): each
// batch's mean and sum of squared deviations are computed in double around the batch mean, which
// stays accurate when a dimension's mean is large beside its spread. The d-sized state is made
// with the first finite row, whose payload has proved d: a header alone may claim d = 2^31.
struct DenseStats {
  int64_t d;
  int64_t n = 0;
  std::vector<double> mean, m2, bsum, bm2;
  double norm_sum = 0;
  float vmin = std::numeric_limits<float>::infinity(), vmax = -std::numeric_limits<float>::infinity();
  explicit DenseStats(int64_t d_) : d(d_) {}

  void add(const Batch& b, const std::vector<uint8_t>& ok, int64_t nok) {
    if (!nok) return;
    const size_t w = size_t(d);
    if (mean.empty()) {
      mean.assign(w, 0.0);
      m2.assign(w, 0.0);
      bsum.assign(w, 0.0);
      bm2.assign(w, 0.0);
    }
    std::fill(bsum.begin(), bsum.end(), 0.0);
    std::fill(bm2.begin(), bm2.end(), 0.0);
    for (int64_t r = 0; r < b.rows; r++) {
      if (!ok[size_t(r)]) continue;
      const float* x = b.x.data() + size_t(r) * w;
      double sq = 0;
      for (size_t j = 0; j < w; j++) {
        bsum[j] += x[j];
        sq += double(x[j]) * x[j];
        vmin = std::min(vmin, x[j]);
        vmax = std::max(vmax, x[j]);
      }
      norm_sum += std::sqrt(sq);
    }
    for (size_t j = 0; j < w; j++) bsum[j] /= double(nok);  // now the batch mean
    for (int64_t r = 0; r < b.rows; r++) {
      if (!ok[size_t(r)]) continue;
      const float* x = b.x.data() + size_t(r) * w;
      for (size_t j = 0; j < w; j++) {
        double dv = x[j] - bsum[j];
        bm2[j] += dv * dv;
      }
    }
    const double na = double(n), nb = double(nok), nn = na + nb;
    for (size_t j = 0; j < w; j++) {
      double delta = bsum[j] - mean[j];
      mean[j] += delta * nb / nn;
      m2[j] += bm2[j] + delta * delta * na * nb / nn;
    }
    n += nok;
  }
};

// Latent statistics: per-latent sums over every row (absent entries count as zero), L0 per row.
// Per-latent state is a vector of d entries, made at the first nonzero entry, while d is modest;
// for wider streams it is a hash map of the latents that occur, so memory follows the data and
// not the header's claim (which may be d = 2^31).
struct LatentStats {
  static constexpr int64_t kDenseMax = int64_t(1) << 22;  // 64 MiB of sums
  struct Sums {
    double sum = 0, sumsq = 0;
  };
  int64_t d;
  int64_t n = 0, nnz = 0;
  std::vector<Sums> dense;
  std::unordered_map<uint32_t, Sums> sparse;
  double norm_sum = 0;
  float vmin = std::numeric_limits<float>::infinity(), vmax = -std::numeric_limits<float>::infinity();
  explicit LatentStats(int64_t d_) : d(d_) {}

  Sums& at(uint32_t i) {
    if (d > kDenseMax) return sparse[i];
    if (dense.empty()) dense.resize(size_t(d));
    return dense[i];
  }

  void add(const Batch& b, const std::vector<uint8_t>& ok) {
    size_t o = 0;
    for (int64_t r = 0; r < b.rows; r++) {
      const uint32_t c = b.count[size_t(r)];
      if (ok[size_t(r)]) {
        double sq = 0;
        for (uint32_t k = 0; k < c; k++) {
          const float v = b.value[o + k];
          Sums& s = at(b.index[o + k]);
          s.sum += v;
          s.sumsq += double(v) * v;
          sq += double(v) * v;
          vmin = std::min(vmin, v);
          vmax = std::max(vmax, v);
        }
        norm_sum += std::sqrt(sq);
        nnz += c;
        n++;
      }
      o += c;
    }
  }

  // Range of the per-latent mean and standard deviation over all d latents (n > 0), and how many
  // never held a nonzero value. Latents without state have mean 0 and deviation 0.
  void summarize(double& mean_min, double& mean_max, double& std_min, double& std_max, int64_t& dead) const {
    int64_t seen = 0;
    dead = 0;
    auto visit = [&](const Sums& s) {
      const double m = s.sum / double(n), sd = std::sqrt(std::max(0.0, s.sumsq / double(n) - m * m));
      mean_min = std::min(mean_min, m);
      mean_max = std::max(mean_max, m);
      std_min = std::min(std_min, sd);
      std_max = std::max(std_max, sd);
      dead += s.sumsq == 0;
      seen++;
    };
    for (const Sums& s : dense) visit(s);
    for (const auto& kv : sparse) visit(kv.second);
    const int64_t unseen = d - seen;
    if (unseen > 0) {
      visit(Sums());
      dead += unseen - 1;  // visit() counted one of them
    }
  }
};

struct Range {
  int64_t lo = std::numeric_limits<int64_t>::max(), hi = std::numeric_limits<int64_t>::min();
  template <class T>
  void add(const std::vector<T>& v) {
    for (T x : v) {
      lo = std::min<int64_t>(lo, x);
      hi = std::max<int64_t>(hi, x);
    }
  }
  bool empty() const { return lo > hi; }
};

json num_or_null(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

std::string fmt(double v) {
  char b[64];
  snprintf(b, sizeof b, "%.6g", v);
  return b;
}

std::string fmt_json_num(const json& v) { return v.is_null() ? "-" : v.is_number_float() ? fmt(v.get<double>()) : v.dump(); }

std::string human_bytes(double v) {
  const char* u[] = {"B", "kB", "MB", "GB", "TB"};
  int i = 0;
  while (v >= 1000 && i < 4) {
    v /= 1000;
    i++;
  }
  char b[32];
  snprintf(b, sizeof b, i ? "%.2f %s" : "%.0f %s", v, u[i]);
  return b;
}

std::string kv_line(const json& obj) {
  std::string s;
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    if (!s.empty()) s += " ";
    s += it.key() + "=" + (it.value().is_string() ? it.value().get<std::string>() : it.value().dump());
  }
  return s.empty() ? "-" : s;
}

}  // namespace

json header_json(const StreamHeader& h) {
  return json{{"format", kStreamFormat}, {"version", kStreamVersion}, {"kind", h.kind},          {"d", h.d},
              {"dtype", dtype_name(h.dtype)}, {"provenance", h.provenance}, {"extra", h.extra}};
}

json inspect_stream(StreamReader& r, const std::vector<std::string>& files, const InfoOptions& o) {
  const StreamHeader& h = r.header();
  const bool latents = h.kind == "latents";
  DenseStats ds(latents ? 1 : h.d);
  LatentStats ls(latents ? h.d : 1);
  Range tok, doc, pos;
  int64_t col_rows[3] = {0, 0, 0};
  int first_cols = -1;  // which columns the first batch had (bit mask)
  int64_t nonfinite = 0;
  std::vector<uint8_t> ok;
  cli::Progress progress;
  Batch b;
  while (r.next(b)) {
    const int cols = (b.token.empty() ? 0 : 1) | (b.doc.empty() ? 0 : 2) | (b.pos.empty() ? 0 : 4);
    if (first_cols < 0) first_cols = cols;
    if (o.verify && cols != first_cols) {
      static const char* names[3] = {"token", "doc", "pos"};
      for (int c = 0; c < 3; c++)
        if ((cols ^ first_cols) & (1 << c))
          throw InputError(r.where() + ((cols & (1 << c)) ? ": has a '" + std::string(names[c]) + "' column that the first batch lacks"
                                                          : ": has no '" + std::string(names[c]) + "' column, but the first batch has one"));
    }
    if (!b.token.empty()) col_rows[0] += b.rows;
    if (!b.doc.empty()) col_rows[1] += b.rows;
    if (!b.pos.empty()) col_rows[2] += b.rows;
    if (o.stats) {
      ok.assign(size_t(b.rows), 1);
      int64_t nok = 0;
      size_t off = 0;
      for (int64_t i = 0; i < b.rows; i++) {
        bool f = latents ? row_finite(b.value.data() + off, b.count[size_t(i)])
                         : row_finite(b.x.data() + size_t(i * h.d), size_t(h.d));
        if (latents) off += b.count[size_t(i)];
        ok[size_t(i)] = f;
        nok += f;
      }
      nonfinite += b.rows - nok;
      if (latents) ls.add(b, ok);
      else ds.add(b, ok, nok);
      tok.add(b.token);
      doc.add(b.doc);
      pos.add(b.pos);
    }
    progress.update(cli::human_count(double(r.rows_read())) + " rows");
  }
  progress.done();

  json rep;
  rep["files"] = files;
  rep["header"] = header_json(h);
  rep["rows"] = r.rows_read();
  rep["batches"] = r.batches_read();
  rep["streams"] = r.streams_read();
  rep["compressed_bytes"] = r.compressed_bytes();
  rep["columns"] = json{{"token", col_rows[0]}, {"doc", col_rows[1]}, {"pos", col_rows[2]}};
  if (!o.stats) return rep;
  json st;
  st["nonfinite_rows"] = nonfinite;
  double values = latents ? double(ls.nnz) : double(r.rows_read()) * double(h.d);
  rep["bytes_per_value"] = values > 0 ? json(double(r.compressed_bytes()) / values) : json(nullptr);
  double mn = INFINITY, mx = -INFINITY, sn = INFINITY, sx = -INFINITY;
  int64_t finite_rows = latents ? ls.n : ds.n;
  int64_t dead = 0;
  if (finite_rows > 0 && latents) {
    ls.summarize(mn, mx, sn, sx, dead);
  } else if (finite_rows > 0) {
    for (int64_t j = 0; j < h.d; j++) {
      const double m = ds.mean[size_t(j)], sd = std::sqrt(ds.m2[size_t(j)] / double(ds.n));
      mn = std::min(mn, m);
      mx = std::max(mx, m);
      sn = std::min(sn, sd);
      sx = std::max(sx, sd);
    }
  } else if (latents) {
    dead = h.d;  // no rows: nothing ever fired
  }
  st["mean_l2_norm"] = finite_rows ? num_or_null((latents ? ls.norm_sum : ds.norm_sum) / double(finite_rows)) : json(nullptr);
  st["dim_mean_min"] = num_or_null(mn);
  st["dim_mean_max"] = num_or_null(mx);
  st["dim_std_min"] = num_or_null(sn);
  st["dim_std_max"] = num_or_null(sx);
  st["value_min"] = num_or_null(latents ? ls.vmin : ds.vmin);
  st["value_max"] = num_or_null(latents ? ls.vmax : ds.vmax);
  if (latents) {
    st["l0_mean"] = ls.n ? json(double(ls.nnz) / double(ls.n)) : json(nullptr);
    st["dead_latents"] = dead;
  }
  auto range = [&](const char* k, const Range& rg) {
    if (!rg.empty()) st[k] = json::array({rg.lo, rg.hi});
  };
  range("token_range", tok);
  range("doc_range", doc);
  range("pos_range", pos);
  rep["stats"] = st;
  return rep;
}

std::string info_table(const json& rep) {
  std::vector<std::pair<std::string, std::string>> rows;
  auto add = [&](const std::string& k, const std::string& v) { rows.emplace_back(k, v); };
  std::string files;
  for (const auto& f : rep["files"]) files += (files.empty() ? "" : " ") + f.get<std::string>();
  const json& h = rep["header"];
  add("file", files);
  add("format", h["format"].get<std::string>() + " version " + h["version"].dump());
  add("kind", h["kind"].get<std::string>());
  add("d", h["d"].dump());
  add("dtype", h["dtype"].get<std::string>());
  add("provenance", kv_line(h["provenance"]));
  if (!h["extra"].empty()) add("other keys", kv_line(h["extra"]));
  if (rep.contains("rows")) {
    add("rows", rep["rows"].dump());
    add("batches", rep["batches"].dump());
    add("streams", rep["streams"].dump());
    std::string cols;
    const int64_t nrows = rep["rows"].get<int64_t>();
    for (const char* c : {"token", "doc", "pos"}) {
      int64_t n = rep["columns"][c].get<int64_t>();
      if (!n) continue;
      cols += (cols.empty() ? "" : ", ") + std::string(c);
      if (n != nrows) cols += " (" + std::to_string(n) + " of " + std::to_string(nrows) + " rows)";
    }
    add("columns", cols.empty() ? "-" : cols);
    std::string comp = human_bytes(double(rep["compressed_bytes"].get<int64_t>()));
    if (rep.contains("bytes_per_value") && !rep["bytes_per_value"].is_null())
      comp += " (" + fmt(rep["bytes_per_value"].get<double>()) + " bytes/value)";
    add("compressed", comp);
  }
  if (rep.contains("stats")) {
    const json& s = rep["stats"];
    add("nonfinite rows", s["nonfinite_rows"].dump());
    if (s.contains("l0_mean")) {
      add("mean L0", fmt_json_num(s["l0_mean"]));
      add("dead latents", s["dead_latents"].dump());
    }
    add("mean L2 norm", fmt_json_num(s["mean_l2_norm"]));
    add("dim mean", fmt_json_num(s["dim_mean_min"]) + " .. " + fmt_json_num(s["dim_mean_max"]));
    add("dim std", fmt_json_num(s["dim_std_min"]) + " .. " + fmt_json_num(s["dim_std_max"]));
    add("values", fmt_json_num(s["value_min"]) + " .. " + fmt_json_num(s["value_max"]));
    for (auto [k, label] : {std::pair{"token_range", "token ids"}, {"doc_range", "doc ids"}, {"pos_range", "positions"}})
      if (s.contains(k)) add(label, s[k][0].dump() + " .. " + s[k][1].dump());
  }
  size_t w = 0;
  for (auto& [k, v] : rows) w = std::max(w, k.size());
  std::string out;
  for (auto& [k, v] : rows) out += k + std::string(w + 2 - k.size(), ' ') + v + "\n";
  return out;
}

void print_rows(StreamReader& r, int64_t n, FILE* out) {
  const StreamHeader& h = r.header();
  const bool latents = h.kind == "latents";
  auto emit = [&](const std::string& s) {
    if (fwrite(s.data(), 1, s.size(), out) != s.size()) {
      if (errno == EPIPE) throw cli::BrokenPipe();
      throw InputError(std::string("<stdout>: write failed: ") + std::strerror(errno));
    }
  };
  Batch b;
  int64_t row = 0;
  bool head = false;
  char buf[32];
  while (row < n && r.next(b)) {
    if (!head) {
      std::string l = "#row";
      if (!b.token.empty()) l += "\ttoken";
      if (!b.doc.empty()) l += "\tdoc";
      if (!b.pos.empty()) l += "\tpos";
      l += latents ? "\tindex:value...\n" : "\tx[0.." + std::to_string(h.d - 1) + "]\n";
      emit(l);
      head = true;
    }
    size_t off = 0;
    for (int64_t i = 0; i < b.rows && row < n; i++, row++) {
      std::string l = std::to_string(row);
      if (!b.token.empty()) l += "\t" + std::to_string(b.token[size_t(i)]);
      if (!b.doc.empty()) l += "\t" + std::to_string(b.doc[size_t(i)]);
      if (!b.pos.empty()) l += "\t" + std::to_string(b.pos[size_t(i)]);
      if (latents) {
        for (uint32_t k = 0; k < b.count[size_t(i)]; k++) {
          snprintf(buf, sizeof buf, "\t%u:%.9g", b.index[off + k], double(b.value[off + k]));
          l += buf;
        }
        off += b.count[size_t(i)];
      } else {
        for (int64_t j = 0; j < h.d; j++) {
          snprintf(buf, sizeof buf, "\t%.9g", double(b.x[size_t(i * h.d + j)]));
          l += buf;
        }
      }
      emit(l + "\n");
    }
  }
}

}  // namespace sae

namespace sae {

void list_frames(const std::string& path, const std::function<void(const json&)>& each) {
  const std::string name = path == "-" ? "<stdin>" : path;
  std::string data;
  {
    FILE* f = cli::open_input(path);
    std::vector<char> buf(size_t(1) << 20);
    size_t n;
    while ((n = fread(buf.data(), 1, buf.size(), f)) > 0) data.append(buf.data(), n);
    bool err = ferror(f);
    if (f != stdin) fclose(f);
    if (err) throw InputError(name + ": read error: " + std::strerror(errno));
  }
  ZSTD_DCtx* dctx = ZSTD_createDCtx();
  std::unique_ptr<ZSTD_DCtx, size_t (*)(ZSTD_DCtx*)> guard(dctx, ZSTD_freeDCtx);
  std::string raw;
  size_t off = 0;
  for (int64_t i = 0; off < data.size(); i++) {
    auto bad = [&](const std::string& m) {
      throw InputError(name + ": frame " + std::to_string(i) + " at offset " + std::to_string(off) + ": " + m);
    };
    const char* p = data.data() + off;
    const size_t avail = data.size() - off;
    size_t n = ZSTD_findFrameCompressedSize(p, avail);
    if (ZSTD_isError(n))
      bad(ZSTD_getErrorCode(n) == ZSTD_error_srcSize_wrong ? "truncated" : std::string("not a zstd frame (") + ZSTD_getErrorName(n) + ")");
    unsigned long long content = ZSTD_getFrameContentSize(p, n);
    if (content == ZSTD_CONTENTSIZE_UNKNOWN || content == ZSTD_CONTENTSIZE_ERROR) bad("no content size");
    if (content > kMaxFrameBytes) bad("claims " + std::to_string(content) + " bytes decompressed");
    // The claim is checked against the blocks before the buffer is sized from it. (A frame the
    // format does not allow, say without a checksum, is still listed: the reader says what is wrong.)
    const auto* u = reinterpret_cast<const uint8_t*>(p);
    stream_detail::FrameInfo fi;
    bool parsed = false;
    try {
      parsed = stream_detail::parse_frame_header(u, n, kMaxFrameBytes, fi) == 1;
    } catch (const InputError&) {
    }
    try {
      if (parsed) stream_detail::check_frame_holds(u, n, fi);
    } catch (const InputError& e) {
      bad(e.what());
    }
    raw.resize(size_t(content));
    size_t r = ZSTD_decompressDCtx(dctx, raw.data(), raw.size(), p, n);
    if (ZSTD_isError(r)) bad(std::string("corrupt (") + ZSTD_getErrorName(r) + ")");
    json fr{{"frame", i}, {"offset", off}, {"bytes", n}, {"content", r}, {"type", "?"}};
    try {
      mp::Reader mr(raw.data(), r);
      mp::Value m = mr.read();
      if (m.type == mp::Type::map)
        for (uint64_t k = 0; k < m.n; k++) {
          mp::Value key = mr.read(), v = mr.read();
          mr.skip_contents(v);
          if (key.is_str("type") && v.type == mp::Type::str) fr["type"] = v.str();
          if (key.is_str("rows") && v.type == mp::Type::uint) fr["rows"] = v.u;
        }
    } catch (const InputError&) {
      // listed with what could be read; the reader reports what is wrong with it
    }
    each(fr);
    off += n;
  }
}

}  // namespace sae
