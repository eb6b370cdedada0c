// safetensors read/write: 8-byte little-endian header length, a JSON header
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {...}},
// then the raw little-endian tensor bytes. Files are memory-mapped for reading.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/dtype.h"

namespace sae {

struct TensorInfo {
  std::string dtype;  // "F32", "F16", "BF16", "F64", "I32", "I64", ...
  std::vector<int64_t> shape;
  size_t begin = 0, end = 0;  // byte offsets into the data section
  int64_t numel() const;
};

class SafeTensors {
 public:
  // Maps and validates the file; every defect is an InputError naming the file (and tensor).
  explicit SafeTensors(const std::string& path);
  ~SafeTensors();
  SafeTensors(const SafeTensors&) = delete;
  SafeTensors& operator=(const SafeTensors&) = delete;

  const std::string& path() const { return path_; }
  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;  // InputError if absent
  std::vector<std::string> names() const;
  const nlohmann::json& metadata() const { return metadata_; }

  // The tensor converted to f32 (from F32, F16, BF16 or F64).
  std::vector<float> read_f32(const std::string& name) const;
  // As read_f32, also checking the shape; the message names the tensor and both shapes.
  std::vector<float> read_f32(const std::string& name, const std::vector<int64_t>& shape) const;
  std::vector<int32_t> read_i32(const std::string& name) const;  // from I32 or I64
  const uint8_t* raw(const std::string& name) const;

 private:
  std::string path_;
  void* map_ = nullptr;
  size_t size_ = 0;
  const uint8_t* data_ = nullptr;  // start of the data section
  std::map<std::string, TensorInfo> tensors_;
  nlohmann::json metadata_;
};

class SafeTensorsWriter {
 public:
  // Stores f32 data as dtype (F32, F16 or BF16).
  void add(const std::string& name, const std::vector<int64_t>& shape, const float* data, DType dtype = DType::f32);
  void add_i32(const std::string& name, const std::vector<int64_t>& shape, const int32_t* data);
  void set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }
  // Serialised file contents (tensors in insertion order, 8-byte aligned).
  std::string serialize() const;
  // Writes atomically (temporary name beside, then rename).
  void write(const std::string& path) const;

 private:
  struct Entry {
    std::string name, dtype;
    std::vector<int64_t> shape;
    std::string bytes;
  };
  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

std::string shape_str(const std::vector<int64_t>& shape);

}  // namespace sae
