// Reading a Hugging Face model directory's files: its JSON files (read_json_file, lib/base/files.h),
// and its tensors from model.safetensors or the shards listed by model.safetensors.index.json,
// found by name with or without the architecture's prefix ("transformer." for GPT-2, "model." for
// the Llama family), converted to f32.
#pragma once
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/files.h"
#include "stream/safetensors.h"

namespace sae {

class WeightSource {
 public:
  // Opens every file the directory's weights live in; a missing file or shard, a bad header or a
  // tensor whose bytes do not fit its shape is an InputError naming the file.
  explicit WeightSource(const std::string& dir);
  const std::string& dir() const { return dir_; }
  // The full name under which `name` is stored: prefix + name, else name; "" when absent.
  std::string find(const std::string& prefix, const std::string& name) const;
  bool has(const std::string& prefix, const std::string& name) const { return !find(prefix, name).empty(); }
  // The tensor as f32 (from F32, F16, BF16 or F64), checked against `shape`.
  std::vector<float> read(const std::string& prefix, const std::string& name, const std::vector<int64_t>& shape) const;
  // Names of the files opened, for messages.
  std::string files() const;

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafeTensors>> files_;
  std::map<std::string, const SafeTensors*> where_;  // tensor name -> file holding it
};

}  // namespace sae
