#include "stream/msgpack_lite.h"

namespace sae::mp {

using json = nlohmann::json;

const char* type_name(Type t) {
  switch (t) {
    case Type::nil: return "nil";
    case Type::boolean: return "boolean";
    case Type::uint: return "integer";
    case Type::sint: return "negative integer";
    case Type::float32:
    case Type::float64: return "float";
    case Type::str: return "string";
    case Type::bin: return "bin";
    case Type::array: return "array";
    case Type::map: return "map";
    case Type::ext: return "ext";
  }
  return "?";
}

const uint8_t* Reader::take(size_t n) {
  if (remaining() < n) throw InputError("msgpack: truncated value");
  const uint8_t* q = p_;
  p_ += n;
  return q;
}

uint64_t Reader::be(size_t n) {
  const uint8_t* q = take(n);
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++) v = (v << 8) | q[i];
  return v;
}

Value Reader::read() {
  Value v;
  uint8_t c = *take(1);
  auto sized = [&](Type t, uint64_t n) {
    v.type = t;
    v.n = n;
    if (t == Type::array) {
      if (n > remaining()) throw InputError("msgpack: array longer than its input");
    } else if (t == Type::map) {
      if (n > remaining() / 2) throw InputError("msgpack: map longer than its input");
    } else {
      if (n > remaining()) throw InputError("msgpack: truncated value");
      v.ptr = take(size_t(n));
    }
  };
  auto sint = [&](int64_t x) {
    if (x >= 0) {
      v.type = Type::uint;
      v.u = uint64_t(x);
    } else {
      v.type = Type::sint;
      v.i = x;
    }
  };
  if (c <= 0x7f) {
    v.type = Type::uint;
    v.u = c;
  } else if (c >= 0xe0) {
    sint(int8_t(c));
  } else if ((c & 0xf0) == 0x80) {
    sized(Type::map, c & 0x0f);
  } else if ((c & 0xf0) == 0x90) {
    sized(Type::array, c & 0x0f);
  } else if ((c & 0xe0) == 0xa0) {
    sized(Type::str, c & 0x1f);
  } else {
    switch (c) {
      case 0xc0: v.type = Type::nil; break;
      case 0xc2: v.type = Type::boolean; v.b = false; break;
      case 0xc3: v.type = Type::boolean; v.b = true; break;
      case 0xc4: sized(Type::bin, be(1)); break;
      case 0xc5: sized(Type::bin, be(2)); break;
      case 0xc6: sized(Type::bin, be(4)); break;
      case 0xc7: case 0xc8: case 0xc9: {
        uint64_t n = be(c == 0xc7 ? 1 : c == 0xc8 ? 2 : 4);
        v.ext_type = int8_t(*take(1));
        sized(Type::ext, n);
        break;
      }
      case 0xca: {
        uint32_t b = uint32_t(be(4));
        float f;
        memcpy(&f, &b, 4);
        v.type = Type::float32;
        v.f = f;
        break;
      }
      case 0xcb: {
        uint64_t b = be(8);
        memcpy(&v.f, &b, 8);
        v.type = Type::float64;
        break;
      }
      case 0xcc: v.type = Type::uint; v.u = be(1); break;
      case 0xcd: v.type = Type::uint; v.u = be(2); break;
      case 0xce: v.type = Type::uint; v.u = be(4); break;
      case 0xcf: v.type = Type::uint; v.u = be(8); break;
      case 0xd0: sint(int8_t(be(1))); break;
      case 0xd1: sint(int16_t(be(2))); break;
      case 0xd2: sint(int32_t(be(4))); break;
      case 0xd3: sint(int64_t(be(8))); break;
      case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
        v.ext_type = int8_t(*take(1));
        sized(Type::ext, uint64_t(1) << (c - 0xd4));
        break;
      case 0xd9: sized(Type::str, be(1)); break;
      case 0xda: sized(Type::str, be(2)); break;
      case 0xdb: sized(Type::str, be(4)); break;
      case 0xdc: sized(Type::array, be(2)); break;
      case 0xdd: sized(Type::array, be(4)); break;
      case 0xde: sized(Type::map, be(2)); break;
      case 0xdf: sized(Type::map, be(4)); break;
      default: throw InputError("msgpack: invalid type byte 0xc1");
    }
  }
  return v;
}

void Reader::skip_contents(const Value& v, int depth) {
  if (v.type != Type::array && v.type != Type::map) return;
  if (depth >= kMaxDepth) throw InputError("msgpack: nesting too deep");
  uint64_t n = v.type == Type::map ? v.n * 2 : v.n;
  for (uint64_t i = 0; i < n; i++) skip_contents(read(), depth + 1);
}

json read_json(Reader& r, int depth) {
  if (depth >= kMaxDepth) throw InputError("msgpack: nesting too deep");
  Value v = r.read();
  switch (v.type) {
    case Type::nil: return nullptr;
    case Type::boolean: return v.b;
    case Type::uint: return v.u;
    case Type::sint: return v.i;
    case Type::float32:
    case Type::float64: return v.f;
    case Type::str: return v.str();
    case Type::bin: return json::binary(std::vector<uint8_t>(v.ptr, v.ptr + v.n));
    case Type::ext: return json::binary(std::vector<uint8_t>(v.ptr, v.ptr + v.n), uint8_t(v.ext_type));
    case Type::array: {
      json a = json::array();
      for (uint64_t i = 0; i < v.n; i++) a.push_back(read_json(r, depth + 1));
      return a;
    }
    case Type::map: {
      json m = json::object();
      for (uint64_t i = 0; i < v.n; i++) {
        Value k = r.read();
        if (k.type != Type::str) throw InputError(std::string("msgpack: map key is a ") + type_name(k.type) + ", not a string");
        std::string key = k.str();
        if (m.contains(key)) throw InputError("msgpack: duplicate map key '" + key + "'");
        m[key] = read_json(r, depth + 1);
      }
      return m;
    }
  }
  return nullptr;
}

static void put_be(std::string& o, uint8_t tag, uint64_t v, int bytes) {
  o.push_back(char(tag));
  for (int i = bytes - 1; i >= 0; i--) o.push_back(char((v >> (8 * i)) & 0xff));
}

void put_nil(std::string& o) { o.push_back(char(0xc0)); }
void put_bool(std::string& o, bool v) { o.push_back(char(v ? 0xc3 : 0xc2)); }

void put_uint(std::string& o, uint64_t v) {
  if (v <= 0x7f) o.push_back(char(v));
  else if (v <= 0xff) put_be(o, 0xcc, v, 1);
  else if (v <= 0xffff) put_be(o, 0xcd, v, 2);
  else if (v <= 0xffffffffu) put_be(o, 0xce, v, 4);
  else put_be(o, 0xcf, v, 8);
}

void put_int(std::string& o, int64_t v) {
  if (v >= 0) return put_uint(o, uint64_t(v));
  if (v >= -32) o.push_back(char(int8_t(v)));
  else if (v >= INT8_MIN) put_be(o, 0xd0, uint64_t(v) & 0xff, 1);
  else if (v >= INT16_MIN) put_be(o, 0xd1, uint64_t(v) & 0xffff, 2);
  else if (v >= INT32_MIN) put_be(o, 0xd2, uint64_t(v) & 0xffffffffu, 4);
  else put_be(o, 0xd3, uint64_t(v), 8);
}

void put_f64(std::string& o, double v) {
  uint64_t b;
  memcpy(&b, &v, 8);
  put_be(o, 0xcb, b, 8);
}

static void put_sized(std::string& o, uint64_t n, uint8_t fix, uint8_t fixmax, uint8_t t8, uint8_t t16,
                      uint8_t t32) {
  if (fix && n <= fixmax) o.push_back(char(fix | n));
  else if (t8 && n <= 0xff) put_be(o, t8, n, 1);
  else if (n <= 0xffff) put_be(o, t16, n, 2);
  else if (n <= 0xffffffffu) put_be(o, t32, n, 4);
  else throw std::length_error("msgpack: value longer than 4 GiB");
}

void put_str(std::string& o, const std::string& s) {
  put_sized(o, s.size(), 0xa0, 31, 0xd9, 0xda, 0xdb);
  o.append(s);
}
void put_bin_header(std::string& o, uint64_t n) { put_sized(o, n, 0, 0, 0xc4, 0xc5, 0xc6); }
void put_array(std::string& o, uint64_t n) { put_sized(o, n, 0x90, 15, 0, 0xdc, 0xdd); }
void put_map(std::string& o, uint64_t n) { put_sized(o, n, 0x80, 15, 0, 0xde, 0xdf); }

void put_json(std::string& o, const json& j) {
  switch (j.type()) {
    case json::value_t::null: put_nil(o); break;
    case json::value_t::boolean: put_bool(o, j.get<bool>()); break;
    case json::value_t::number_integer: put_int(o, j.get<int64_t>()); break;
    case json::value_t::number_unsigned: put_uint(o, j.get<uint64_t>()); break;
    case json::value_t::number_float: put_f64(o, j.get<double>()); break;
    case json::value_t::string: put_str(o, j.get_ref<const std::string&>()); break;
    case json::value_t::binary: {
      const auto& b = j.get_binary();
      if (b.has_subtype()) {
        // ext 8/16/32 (never the fixext forms: simpler, and any reader takes both)
        uint64_t n = b.size();
        if (n <= 0xff) put_be(o, 0xc7, n, 1);
        else if (n <= 0xffff) put_be(o, 0xc8, n, 2);
        else put_be(o, 0xc9, n, 4);
        o.push_back(char(int8_t(b.subtype())));
      } else {
        put_bin_header(o, b.size());
      }
      o.append(reinterpret_cast<const char*>(b.data()), b.size());
      break;
    }
    case json::value_t::array:
      put_array(o, j.size());
      for (const auto& e : j) put_json(o, e);
      break;
    case json::value_t::object:
      put_map(o, j.size());
      for (auto it = j.begin(); it != j.end(); ++it) {
        put_str(o, it.key());
        put_json(o, it.value());
      }
      break;
    case json::value_t::discarded: put_nil(o); break;
  }
}

}  // namespace sae::mp
