// NumPy .npz archives (np.savez, np.savez_compressed): a zip file of .npy members. Members are
// read straight from the archive, stored or deflated (zlib), zip64 included, each checked against
// its CRC-32. Gemma Scope publishes its SAEs as one params.npz (sae/sae.cpp reads those).
#pragma once
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "stream/npy.h"

namespace sae::npz {

// Reads one .npz file. Errors are InputError naming the file (and the member).
class Archive {
 public:
  explicit Archive(const std::string& path);  // reads the zip's central directory
  ~Archive();
  Archive(const Archive&) = delete;
  Archive& operator=(const Archive&) = delete;

  // Array names: the members' names without ".npy", as np.load names them.
  std::vector<std::string> names() const;
  bool has(const std::string& name) const { return members_.count(name) != 0; }
  // The .npy header of array `name` (reads only the member's preamble).
  npy::Header header(const std::string& name);
  // The whole array as f32 (from <f2, <f4 or <f8), after checking that its shape is `shape`.
  std::vector<float> read_f32(const std::string& name, const std::vector<uint64_t>& shape);

 private:
  struct Member {
    std::string zip_name;  // "W_enc.npy"
    uint16_t method = 0;   // 0 stored, 8 deflated
    uint32_t crc = 0;
    uint64_t compressed = 0, size = 0, local_offset = 0;
  };
  class MemberStream;
  void read_directory();
  // n bytes at `offset`; InputError naming `what` if the file is shorter.
  void read_at(uint64_t offset, void* dst, size_t n, const std::string& what) const;
  const Member& member(const std::string& name) const;
  std::string path_;
  FILE* f_ = nullptr;
  uint64_t file_size_ = 0;
  std::map<std::string, Member> members_;
};

}  // namespace sae::npz
