// NumPy .npy files (format versions 1.0, 2.0 and 3.0): the header, a reader that streams the
// data in chunks (so stdin and arrays larger than memory work), and the header writer.
// Supported element types: little-endian <f2, <f4, <f8 (values) and <i4, <i8 (integer columns),
// C order only.
#pragma once
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace sae::npy {

enum class Elem { f2, f4, f8, i4, i8 };
size_t elem_size(Elem e);
const char* descr(Elem e);  // "<f4"
bool is_float(Elem e);

struct Header {
  int major = 1, minor = 0;
  Elem elem = Elem::f4;
  bool fortran_order = false;
  std::vector<uint64_t> shape;
  uint64_t count() const;  // product of the shape (1 for a 0-d array)
};

// The header dict text, e.g. "{'descr': '<f4', 'fortran_order': False, 'shape': (10, 4), }".
// Throws InputError("<what is wrong>") without a file name.
Header parse_dict(const std::string& dict);

// The whole preamble (magic, version, length, dict padded with spaces, '\n'), its total length a
// multiple of 64 as numpy writes it, and at least `min_len` bytes (to rewrite it in place later).
std::string format_header(Elem e, const std::vector<uint64_t>& shape, size_t min_len = 0);

// Reads the preamble of a .npy array (magic, version, header length, the header dict) through
// `read(dst, n)`, which returns the bytes it got (fewer only where the input ends), and refuses
// Fortran order. Throws InputError("<what is wrong>") without a file name. Reader uses it for
// files and pipes, npz::Archive for the members of an archive.
Header read_preamble(const std::function<size_t(void* dst, size_t n)>& read);

// "(10, 4)" / "(10,)" as numpy prints shapes.
std::string shape_str(const std::vector<uint64_t>& shape);

// Reads one .npy file ("-" = stdin). Errors are InputError naming the file.
class Reader {
 public:
  explicit Reader(const std::string& path);
  ~Reader();
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;
  const Header& header() const { return h_; }
  // A file's size bounds what it can hold: refuses ("truncated: ...") a regular file too short for
  // the shape its header claims, before anything is sized from that shape. Call it after checking
  // the header itself, so a file and a pipe report the same first problem. (From a pipe the size
  // is unknown: reads find the end, and callers allocate in bounded steps as data arrives.)
  void check_size() const;
  const std::string& name() const { return name_; }
  // Reads the next n elements (n <= what is left), converted. Throws if the file ends early.
  void read_f32(float* dst, size_t n);
  void read_i64(int64_t* dst, size_t n);
  uint64_t left() const { return left_; }
  // Throws if anything follows the array data.
  void expect_end();

 private:
  void read_header();  // the preamble and the dict, into h_
  void read_raw(size_t n);
  [[noreturn]] void truncated(uint64_t have) const;  // the data ends after `have` bytes
  std::string name_;
  FILE* f_ = nullptr;
  bool own_ = false;
  Header h_;
  uint64_t left_ = 0, done_ = 0;
  std::vector<uint8_t> buf_;
};

}  // namespace sae::npy
