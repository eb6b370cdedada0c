#include "stream/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/cli.h"

namespace sae {

using json = nlohmann::json;

static size_t elem_size(const std::string& dt) {
  if (dt == "F64" || dt == "I64" || dt == "U64") return 8;
  if (dt == "F32" || dt == "I32" || dt == "U32") return 4;
  if (dt == "F16" || dt == "BF16" || dt == "I16" || dt == "U16") return 2;
  if (dt == "I8" || dt == "U8" || dt == "BOOL" || dt == "F8_E4M3" || dt == "F8_E5M2") return 1;
  return 0;
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (auto s : shape) n *= s;
  return n;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); i++) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

SafeTensors::SafeTensors(const std::string& path) : path_(path) {
  int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) throw InputError(path + ": " + std::strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    close(fd);
    throw InputError(path + ": " + std::strerror(errno));
  }
  size_ = size_t(st.st_size);
  if (size_ < 8) {
    close(fd);
    throw InputError(path + ": not a safetensors file (shorter than its 8-byte header length)");
  }
  map_ = mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    throw InputError(path + ": cannot map: " + std::strerror(errno));
  }
  const auto* bytes = static_cast<const uint8_t*>(map_);
  uint64_t hlen;
  memcpy(&hlen, bytes, 8);
  if (hlen > size_ - 8 || hlen > (uint64_t(100) << 20))
    throw InputError(path + ": bad safetensors header (header length " + std::to_string(hlen) +
                     " exceeds the file size " + std::to_string(size_) + ")");
  json h;
  try {
    h = json::parse(bytes + 8, bytes + 8 + hlen);
  } catch (const std::exception& e) {
    throw InputError(path + ": bad safetensors header (invalid JSON: " + e.what() + ")");
  }
  if (!h.is_object()) throw InputError(path + ": bad safetensors header (not a JSON object)");
  data_ = bytes + 8 + hlen;
  size_t data_size = size_ - 8 - hlen;
  for (auto it = h.begin(); it != h.end(); ++it) {
    if (it.key() == "__metadata__") {
      metadata_ = it.value();
      continue;
    }
    const json& t = it.value();
    const std::string& name = it.key();
    auto bad = [&](const std::string& why) {
      return InputError(path + ": tensor '" + name + "': " + why);
    };
    if (!t.is_object() || !t.contains("dtype") || !t.contains("shape") || !t.contains("data_offsets"))
      throw bad("malformed entry (needs dtype, shape and data_offsets)");
    TensorInfo info;
    try {
      info.dtype = t["dtype"].get<std::string>();
      for (const auto& s : t["shape"]) {
        int64_t v = s.get<int64_t>();
        if (v < 0) throw bad("negative dimension");
        info.shape.push_back(v);
      }
      const auto& off = t["data_offsets"];
      if (!off.is_array() || off.size() != 2) throw bad("data_offsets must be [begin, end]");
      info.begin = off[0].get<size_t>();
      info.end = off[1].get<size_t>();
    } catch (const json::exception& e) {
      throw bad(std::string("malformed entry: ") + e.what());
    }
    size_t es = elem_size(info.dtype);
    if (!es) throw bad("unsupported dtype " + info.dtype);
    if (info.end < info.begin) throw bad("data_offsets end before begin");
    uint64_t need = uint64_t(info.numel()) * es;
    if (info.end - info.begin != need)
      throw bad("holds " + std::to_string(info.end - info.begin) + " bytes but its shape " + shape_str(info.shape) +
                " of " + info.dtype + " needs " + std::to_string(need));
    if (info.end > data_size)
      throw bad("data runs past the end of the file (truncated file? ends at byte " + std::to_string(info.end) +
                " of a " + std::to_string(data_size) + "-byte data section)");
    tensors_[name] = info;
  }
}

SafeTensors::~SafeTensors() {
  if (map_) munmap(map_, size_);
}

const TensorInfo& SafeTensors::info(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) throw InputError(path_ + ": missing tensor '" + name + "'");
  return it->second;
}

std::vector<std::string> SafeTensors::names() const {
  std::vector<std::string> v;
  for (const auto& kv : tensors_) v.push_back(kv.first);
  return v;
}

const uint8_t* SafeTensors::raw(const std::string& name) const { return data_ + info(name).begin; }

std::vector<float> SafeTensors::read_f32(const std::string& name) const {
  const TensorInfo& t = info(name);
  size_t n = size_t(t.numel());
  std::vector<float> out(n);
  const uint8_t* p = data_ + t.begin;
  if (t.dtype == "F32") {
    memcpy(out.data(), p, n * 4);
  } else if (t.dtype == "F16") {
    decode_f32(DType::f16, p, n, out.data());
  } else if (t.dtype == "BF16") {
    decode_f32(DType::bf16, p, n, out.data());
  } else if (t.dtype == "F64") {
    for (size_t i = 0; i < n; i++) {
      double d;
      memcpy(&d, p + 8 * i, 8);
      out[i] = float(d);
    }
  } else {
    throw InputError(path_ + ": tensor '" + name + "' has dtype " + t.dtype + ", expected a float type");
  }
  return out;
}

std::vector<float> SafeTensors::read_f32(const std::string& name, const std::vector<int64_t>& shape) const {
  const TensorInfo& t = info(name);
  if (t.shape != shape)
    throw InputError(path_ + ": tensor '" + name + "' has shape " + shape_str(t.shape) + ", expected " +
                     shape_str(shape));
  return read_f32(name);
}

std::vector<int32_t> SafeTensors::read_i32(const std::string& name) const {
  const TensorInfo& t = info(name);
  size_t n = size_t(t.numel());
  std::vector<int32_t> out(n);
  const uint8_t* p = data_ + t.begin;
  if (t.dtype == "I32") {
    memcpy(out.data(), p, n * 4);
  } else if (t.dtype == "I64") {
    for (size_t i = 0; i < n; i++) {
      int64_t v;
      memcpy(&v, p + 8 * i, 8);
      out[i] = int32_t(v);
    }
  } else {
    throw InputError(path_ + ": tensor '" + name + "' has dtype " + t.dtype + ", expected I32 or I64");
  }
  return out;
}

void SafeTensorsWriter::add(const std::string& name, const std::vector<int64_t>& shape, const float* data,
                            DType dtype) {
  Entry e{name, dtype == DType::f32 ? "F32" : dtype == DType::f16 ? "F16" : "BF16", shape, {}};
  int64_t n = 1;
  for (auto s : shape) n *= s;
  e.bytes.resize(size_t(n) * dtype_size(dtype));
  encode_f32(dtype, data, size_t(n), e.bytes.data());
  entries_.push_back(std::move(e));
}

void SafeTensorsWriter::add_i32(const std::string& name, const std::vector<int64_t>& shape, const int32_t* data) {
  Entry e{name, "I32", shape, {}};
  int64_t n = 1;
  for (auto s : shape) n *= s;
  e.bytes.assign(reinterpret_cast<const char*>(data), size_t(n) * 4);
  entries_.push_back(std::move(e));
}

std::string SafeTensorsWriter::serialize() const {
  json h = json::object();
  if (!metadata_.empty()) h["__metadata__"] = metadata_;
  size_t off = 0;
  for (const auto& e : entries_) {
    h[e.name] = {{"dtype", e.dtype}, {"shape", e.shape}, {"data_offsets", {off, off + e.bytes.size()}}};
    off += e.bytes.size();
  }
  std::string hs = h.dump();
  while ((8 + hs.size()) % 8) hs += ' ';  // pad so the data section starts 8-byte aligned
  std::string out(8, '\0');
  uint64_t hl = hs.size();
  memcpy(out.data(), &hl, 8);
  out += hs;
  for (const auto& e : entries_) out += e.bytes;
  return out;
}

void SafeTensorsWriter::write(const std::string& path) const { cli::write_file_atomic(path, serialize()); }

}  // namespace sae
