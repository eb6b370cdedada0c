// A small, strict msgpack reader and writer for the stream format (docs/stream-format.md).
// Why not msgpack-c: the reader must take hostile bytes (the fuzzer, corrupt files) without
// allocating what a length field claims, hand out str/bin values as views into the decompressed
// frame (no copy of the payload), and say exactly what is wrong in one line.
#pragma once
#include <cstdint>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>

#include "base/errors.h"

namespace sae::mp {

enum class Type : uint8_t { nil, boolean, uint, sint, float32, float64, str, bin, array, map, ext };

const char* type_name(Type t);

// One decoded msgpack value. Integers with a value >= 0 are always `uint` (whatever width and
// signedness the encoder chose); negative ones are `sint`. For array/map only the element count is
// read: the elements follow in the input.
struct Value {
  Type type = Type::nil;
  bool b = false;
  uint64_t u = 0;
  int64_t i = 0;
  double f = 0;
  const uint8_t* ptr = nullptr;  // str, bin, ext: the bytes (a view into the input)
  uint64_t n = 0;                // str, bin, ext: byte length; array: elements; map: pairs
  int8_t ext_type = 0;

  bool is_str(const char* s) const {
    size_t l = strlen(s);
    return type == Type::str && n == l && memcmp(ptr, s, l) == 0;
  }
  std::string str() const { return std::string(reinterpret_cast<const char*>(ptr), size_t(n)); }
};

// Reads values from a byte range. Every length is checked against the bytes that remain, so a
// forged length can neither read out of range nor make a caller allocate more than the input
// could hold. Errors are InputError("msgpack: ...").
class Reader {
 public:
  Reader(const void* p, size_t n) : p_(static_cast<const uint8_t*>(p)), end_(p_ + n) {}
  Value read();
  // Skips the elements of an array or map just read (and of anything nested in it).
  void skip_contents(const Value& v, int depth = 0);
  size_t remaining() const { return size_t(end_ - p_); }
  const uint8_t* pos() const { return p_; }

 private:
  const uint8_t* take(size_t n);
  uint64_t be(size_t n);
  const uint8_t* p_;
  const uint8_t* end_;
};

// Reads a whole value (recursively) as JSON: bin and ext become JSON binary values so they pass
// through a header unchanged. Map keys must be strings and unique.
nlohmann::json read_json(Reader& r, int depth = 0);
constexpr int kMaxDepth = 32;

// ---- writing: append to a std::string ----
void put_nil(std::string& o);
void put_bool(std::string& o, bool v);
void put_uint(std::string& o, uint64_t v);
void put_int(std::string& o, int64_t v);
void put_f64(std::string& o, double v);
void put_str(std::string& o, const std::string& s);
void put_bin_header(std::string& o, uint64_t n);  // the bytes follow
void put_array(std::string& o, uint64_t n);
void put_map(std::string& o, uint64_t n);
void put_json(std::string& o, const nlohmann::json& j);

}  // namespace sae::mp
