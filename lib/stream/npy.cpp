#include "stream/npy.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>

#include "base/dtype.h"
#include "base/errors.h"

namespace sae::npy {

size_t elem_size(Elem e) {
  switch (e) {
    case Elem::f2: return 2;
    case Elem::f4:
    case Elem::i4: return 4;
    case Elem::f8:
    case Elem::i8: return 8;
  }
  return 0;
}

const char* descr(Elem e) {
  switch (e) {
    case Elem::f2: return "<f2";
    case Elem::f4: return "<f4";
    case Elem::f8: return "<f8";
    case Elem::i4: return "<i4";
    case Elem::i8: return "<i8";
  }
  return "?";
}

bool is_float(Elem e) { return e == Elem::f2 || e == Elem::f4 || e == Elem::f8; }

uint64_t Header::count() const {
  uint64_t n = 1;
  for (auto s : shape) n *= s;
  return n;
}

std::string shape_str(const std::vector<uint64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); i++) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  if (shape.size() == 1) s += ",";
  return s + ")";
}

namespace {

// A parser for the small Python-literal subset numpy writes: a dict of quoted-string keys whose
// values are quoted strings, True/False, or tuples of integers (old Python 2 files write 10L).
class DictParser {
 public:
  explicit DictParser(const std::string& s) : s_(s) {}
  Header parse() {
    Header h;
    bool have_descr = false, have_order = false, have_shape = false;
    expect('{');
    for (;;) {
      ws();
      if (peek() == '}') {
        i_++;
        break;
      }
      std::string key = quoted();
      ws();
      expect(':');
      ws();
      if (key == "descr") {
        if (peek() != '\'' && peek() != '"') fail("'descr' is not a simple dtype string (structured arrays are not supported)");
        h.elem = elem(quoted());
        have_descr = true;
      } else if (key == "fortran_order") {
        h.fortran_order = boolean();
        have_order = true;
      } else if (key == "shape") {
        h.shape = tuple();
        have_shape = true;
      } else {
        skip_value();
      }
      ws();
      if (peek() == ',') {
        i_++;
        continue;
      }
      ws();
      expect('}');
      break;
    }
    if (!have_descr) fail("header has no 'descr'");
    if (!have_order) fail("header has no 'fortran_order'");
    if (!have_shape) fail("header has no 'shape'");
    return h;
  }

 private:
  [[noreturn]] void fail(const std::string& m) { throw InputError(m); }
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  void ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) i_++;
  }
  void expect(char c) {
    ws();
    if (peek() != c) fail(std::string("malformed header dict (expected '") + c + "' at offset " + std::to_string(i_) + ")");
    i_++;
  }
  std::string quoted() {
    char q = peek();
    if (q != '\'' && q != '"') fail("malformed header dict (expected a quoted string at offset " + std::to_string(i_) + ")");
    size_t end = s_.find(q, i_ + 1);
    if (end == std::string::npos) fail("malformed header dict (unterminated string)");
    std::string v = s_.substr(i_ + 1, end - i_ - 1);
    i_ = end + 1;
    return v;
  }
  bool boolean() {
    if (s_.compare(i_, 4, "True") == 0) {
      i_ += 4;
      return true;
    }
    if (s_.compare(i_, 5, "False") == 0) {
      i_ += 5;
      return false;
    }
    fail("malformed header dict ('fortran_order' is not True or False)");
  }
  std::vector<uint64_t> tuple() {
    std::vector<uint64_t> v;
    expect('(');
    for (;;) {
      ws();
      if (peek() == ')') {
        i_++;
        return v;
      }
      if (!isdigit(uint8_t(peek()))) fail("malformed header dict ('shape' is not a tuple of integers)");
      uint64_t n = 0;
      while (isdigit(uint8_t(peek()))) {
        uint64_t dgt = uint64_t(peek() - '0');
        if (n > (UINT64_MAX - dgt) / 10) fail("shape dimension too large");
        n = n * 10 + dgt;
        i_++;
      }
      if (peek() == 'L') i_++;
      v.push_back(n);
      ws();
      if (peek() == ',') i_++;
      else if (peek() != ')') fail("malformed header dict ('shape' is not a tuple of integers)");
    }
  }
  void skip_value() {
    int depth = 0;
    while (i_ < s_.size()) {
      char c = s_[i_];
      if (c == '\'' || c == '"') {
        quoted();
        continue;
      }
      if (c == '(' || c == '[' || c == '{') depth++;
      if (c == ')' || c == ']' || c == '}') {
        if (depth == 0) return;
        depth--;
      }
      if (c == ',' && depth == 0) return;
      i_++;
    }
  }
  Elem elem(const std::string& d) {
    if (d == "<f4") return Elem::f4;
    if (d == "<f2") return Elem::f2;
    if (d == "<f8") return Elem::f8;
    if (d == "<i4") return Elem::i4;
    if (d == "<i8") return Elem::i8;
    if (!d.empty() && d[0] == '>')
      fail("big-endian data ('" + d + "') is not supported; convert it with arr.astype('<" + d.substr(1) + "')");
    fail("unsupported dtype '" + d + "' (supported: <f4, <f2, <f8, and <i4, <i8 for integer columns)");
  }
  const std::string& s_;
  size_t i_ = 0;
};

}  // namespace

Header parse_dict(const std::string& dict) {
  Header h = DictParser(dict).parse();
  uint64_t n = 1;
  for (auto s : h.shape) {
    if (s && n > UINT64_MAX / s) throw InputError("shape " + shape_str(h.shape) + " is too large");
    n *= s;
  }
  if (n > (uint64_t(1) << 62) / elem_size(h.elem)) throw InputError("shape " + shape_str(h.shape) + " is too large");
  return h;
}

std::string format_header(Elem e, const std::vector<uint64_t>& shape, size_t min_len) {
  std::string dict = std::string("{'descr': '") + descr(e) + "', 'fortran_order': False, 'shape': " + shape_str(shape) + ", }";
  // Version 1.0 has a 2-byte header length; beyond 65535 bytes numpy uses 2.0 (4 bytes).
  bool v2 = dict.size() + 11 + 64 > 65535 || min_len > 65535;
  size_t prefix = v2 ? 12 : 10;
  size_t total = prefix + dict.size() + 1;
  total = std::max(total, min_len);
  total = (total + 63) / 64 * 64;
  size_t hlen = total - prefix;
  std::string out = "\x93NUMPY";
  out += char(v2 ? 2 : 1);
  out += char(0);
  for (size_t i = 0; i < (v2 ? 4u : 2u); i++) out += char((hlen >> (8 * i)) & 0xff);
  out += dict;
  out.append(total - out.size() - 1, ' ');
  out += '\n';
  return out;
}

Reader::Reader(const std::string& path) : name_(path == "-" ? "<stdin>" : path) {
  if (path == "-") {
    if (isatty(0)) throw InputError("<stdin>: refusing to read binary data from a terminal (give a file or pipe one in)");
    f_ = stdin;
  } else {
    f_ = fopen(path.c_str(), "rb");
    if (!f_) throw InputError(path + ": " + std::strerror(errno));
    own_ = true;
  }
  // A constructor that throws runs no destructor: the file is closed here (fuzz_npy found the
  // descriptor leaking, one per refused file).
  try {
    read_header();
  } catch (...) {
    if (own_) fclose(f_);
    f_ = nullptr;
    throw;
  }
}

Header read_preamble(const std::function<size_t(void*, size_t)>& read) {
  auto fail = [](const std::string& m) -> void { throw InputError(m); };
  uint8_t pre[12];  // magic, version, and a 2-byte (1.0) or 4-byte (2.0, 3.0) header length
  size_t got = read(pre, 8);
  if (got == 0) fail("empty input (not a .npy file)");
  if (got < 8 || memcmp(pre, "\x93NUMPY", 6) != 0) fail("not a .npy file (bad magic)");
  const int major = pre[6], minor = pre[7];
  size_t lenbytes = major == 1 ? 2 : (major == 2 || major == 3) ? 4 : 0;
  if (!lenbytes) fail("unsupported .npy format version " + std::to_string(major) + "." + std::to_string(minor));
  if (read(pre + 8, lenbytes) != lenbytes) fail("truncated .npy header");
  uint32_t hlen = 0;
  for (size_t i = 0; i < lenbytes; i++) hlen |= uint32_t(pre[8 + i]) << (8 * i);
  if (hlen > (1u << 20)) fail("the .npy header claims " + std::to_string(hlen) + " bytes (over 1 MiB: corrupt?)");
  std::string dict(hlen, '\0');
  if (read(dict.data(), hlen) != hlen) fail("truncated .npy header");
  Header h = parse_dict(dict);
  h.major = major;
  h.minor = minor;
  if (h.fortran_order) fail("fortran_order arrays are not supported (save it with np.ascontiguousarray(a))");
  return h;
}

void Reader::read_header() {
  try {
    h_ = read_preamble([this](void* p, size_t n) { return fread(p, 1, n, f_); });
  } catch (const InputError& e) {
    throw InputError(name_ + ": " + e.what());
  }
  left_ = h_.count();
}

void Reader::check_size() const {
  struct stat st;
  const off_t at = ftello(f_);
  if (fstat(fileno(f_), &st) == 0 && S_ISREG(st.st_mode) && at >= 0 && st.st_size >= at &&
      left_ * elem_size(h_.elem) > uint64_t(st.st_size - at))
    truncated(uint64_t(st.st_size - at));
}

void Reader::truncated(uint64_t have) const {
  throw InputError(name_ + ": truncated: shape " + shape_str(h_.shape) + " of " + descr(h_.elem) + " needs " +
                   std::to_string(h_.count() * elem_size(h_.elem)) + " bytes of data, the file holds " +
                   std::to_string(have));
}

Reader::~Reader() {
  if (own_ && f_) fclose(f_);
}

void Reader::read_raw(size_t n) {
  if (n > left_) throw std::logic_error("npy::Reader: reading past the array");
  size_t bytes = n * elem_size(h_.elem);
  buf_.resize(bytes);
  size_t got = fread(buf_.data(), 1, bytes, f_);
  if (got != bytes) {
    if (ferror(f_)) throw InputError(name_ + ": read error: " + std::strerror(errno));
    truncated(done_ * elem_size(h_.elem) + got);
  }
  left_ -= n;
  done_ += n;
}

void Reader::read_f32(float* dst, size_t n) {
  if (!is_float(h_.elem)) throw InputError(name_ + ": holds " + descr(h_.elem) + " integers, expected floating-point values");
  read_raw(n);
  const uint8_t* p = buf_.data();
  switch (h_.elem) {
    case Elem::f4: memcpy(dst, p, n * 4); break;
    case Elem::f2:
      for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        dst[i] = f16_to_f32(h);
      }
      break;
    case Elem::f8:
      for (size_t i = 0; i < n; i++) {
        double v;
        memcpy(&v, p + 8 * i, 8);
        dst[i] = float(v);
      }
      break;
    default: throw InputError(name_ + ": holds " + descr(h_.elem) + " integers, expected floating-point values");
  }
}

void Reader::read_i64(int64_t* dst, size_t n) {
  if (is_float(h_.elem)) throw InputError(name_ + ": holds " + descr(h_.elem) + " values, expected integers (<i4 or <i8)");
  read_raw(n);
  const uint8_t* p = buf_.data();
  switch (h_.elem) {
    case Elem::i8: memcpy(dst, p, n * 8); break;
    case Elem::i4:
      for (size_t i = 0; i < n; i++) {
        int32_t v;
        memcpy(&v, p + 4 * i, 4);
        dst[i] = v;
      }
      break;
    default: throw InputError(name_ + ": holds " + descr(h_.elem) + " values, expected integers (<i4 or <i8)");
  }
}

void Reader::expect_end() {
  if (left_) throw std::logic_error("npy::Reader::expect_end before the end");
  char c;
  if (fread(&c, 1, 1, f_) == 1)
    throw InputError(name_ + ": unexpected bytes after the array data (shape " + shape_str(h_.shape) + ")");
}

}  // namespace sae::npy
