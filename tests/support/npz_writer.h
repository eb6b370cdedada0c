// Builds .npz archives in memory for the tests, written here from the zip format's definition
// (PKWARE APPNOTE: local headers, central directory, end records, zip64), not from
// lib/stream/npz.cpp: members stored or raw-deflated, optionally all in zip64 form as numpy
// writes large arrays, with an archive comment.
#pragma once
#include <zlib.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "base/dtype.h"
#include "stream/npy.h"

namespace fixtures {

// A whole .npy file: numpy's header, then the values in the given dtype (<f2, <f4 or <f8).
inline std::string npy_bytes(sae::npy::Elem e, const std::vector<uint64_t>& shape, const std::vector<double>& values) {
  std::string b = sae::npy::format_header(e, shape);
  for (double v : values) {
    if (e == sae::npy::Elem::f4) {
      float f = float(v);
      b.append(reinterpret_cast<const char*>(&f), 4);
    } else if (e == sae::npy::Elem::f8) {
      b.append(reinterpret_cast<const char*>(&v), 8);
    } else {
      uint16_t h = sae::f32_to_f16(float(v));
      b.append(reinterpret_cast<const char*>(&h), 2);
    }
  }
  return b;
}

struct NpzOptions {
  bool deflate = false;
  bool zip64 = false;
  std::string comment;
};

inline void put16(std::string& s, uint32_t v) {
  s += char(v & 0xFF);
  s += char((v >> 8) & 0xFF);
}
inline void put32(std::string& s, uint32_t v) {
  put16(s, v & 0xFFFF);
  put16(s, v >> 16);
}
inline void put64(std::string& s, uint64_t v) {
  put32(s, uint32_t(v));
  put32(s, uint32_t(v >> 32));
}

inline std::string raw_deflate(const std::string& in) {
  z_stream z{};
  if (deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK) throw std::runtime_error("deflateInit2");
  std::string out(deflateBound(&z, uLong(in.size())), '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = uInt(in.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = uInt(out.size());
  if (deflate(&z, Z_FINISH) != Z_STREAM_END) throw std::runtime_error("deflate");
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

// members: {name in the archive ("W_enc.npy"), its bytes}.
inline std::string npz_bytes(const std::vector<std::pair<std::string, std::string>>& members, const NpzOptions& o = {}) {
  std::string zip, dir;
  for (const auto& member : members) {
    const std::string& name = member.first;  // not a structured binding: the lambda below uses it
    const std::string& bytes = member.second;
    const std::string data = o.deflate ? raw_deflate(bytes) : bytes;
    const uint32_t crc = uint32_t(crc32(0, reinterpret_cast<const Bytef*>(bytes.data()), uInt(bytes.size())));
    const uint64_t offset = zip.size();
    std::string extra;
    if (o.zip64) {  // the sizes and offset of this member, in the order APPNOTE 4.5.3 gives
      put16(extra, 0x0001);
      put16(extra, 24);
      put64(extra, bytes.size());
      put64(extra, data.size());
      put64(extra, offset);
    }
    const uint32_t big = 0xFFFFFFFF;
    // The fields local and central headers share, from "general purpose flags" to "extra length".
    auto shared_fields = [&](std::string& s) {
      put16(s, 0);
      put16(s, o.deflate ? 8 : 0);
      put16(s, 0);
      put16(s, 0x21);
      put32(s, crc);
      put32(s, o.zip64 ? big : uint32_t(data.size()));
      put32(s, o.zip64 ? big : uint32_t(bytes.size()));
      put16(s, uint32_t(name.size()));
      put16(s, uint32_t(extra.size()));
    };
    // Local header.
    put32(zip, 0x04034b50);
    put16(zip, o.zip64 ? 45 : 20);
    shared_fields(zip);
    zip += name + extra + data;
    // Central directory header.
    put32(dir, 0x02014b50);
    put16(dir, 45);
    put16(dir, o.zip64 ? 45 : 20);
    shared_fields(dir);
    put16(dir, 0);
    put16(dir, 0);
    put16(dir, 0);
    put32(dir, 0);
    put32(dir, o.zip64 ? big : uint32_t(offset));
    dir += name + extra;
  }
  const uint64_t dir_offset = zip.size();
  zip += dir;
  if (o.zip64) {
    const uint64_t end64 = zip.size();
    put32(zip, 0x06064b50);
    put64(zip, 44);
    put16(zip, 45);
    put16(zip, 45);
    put32(zip, 0);
    put32(zip, 0);
    put64(zip, members.size());
    put64(zip, members.size());
    put64(zip, dir.size());
    put64(zip, dir_offset);
    put32(zip, 0x07064b50);
    put32(zip, 0);
    put64(zip, end64);
    put32(zip, 1);
  }
  put32(zip, 0x06054b50);
  put16(zip, 0);
  put16(zip, 0);
  put16(zip, o.zip64 ? 0xFFFF : uint32_t(members.size()));
  put16(zip, o.zip64 ? 0xFFFF : uint32_t(members.size()));
  put32(zip, o.zip64 ? 0xFFFFFFFF : uint32_t(dir.size()));
  put32(zip, o.zip64 ? 0xFFFFFFFF : uint32_t(dir_offset));
  put16(zip, uint32_t(o.comment.size()));
  zip += o.comment;
  return zip;
}

}  // namespace fixtures
