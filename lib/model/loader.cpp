// Locating and reading the weights of a model directory (single file or sharded index).
#include <filesystem>
#include <set>

#include "base/errors.h"
#include "model/weights.h"

namespace sae {

namespace fs = std::filesystem;
using json = nlohmann::json;

WeightSource::WeightSource(const std::string& dir) : dir_(dir) {
  const fs::path single = fs::path(dir) / "model.safetensors";
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  if (fs::exists(index)) {
    const json j = read_json_file(index.string());
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
      throw InputError(index.string() + ": no \"weight_map\" object (not a safetensors shard index)");
    std::map<std::string, const SafeTensors*> opened;
    const json& map = j.at("weight_map");
    for (auto it = map.begin(); it != map.end(); ++it) {
      if (!it.value().is_string()) throw InputError(index.string() + ": weight_map entry '" + it.key() + "' is not a file name");
      const std::string shard = it.value().get<std::string>();
      if (shard.empty() || shard.find('/') != std::string::npos || shard == "." || shard == "..")
        throw InputError(index.string() + ": shard name '" + shard + "' is not a plain file name");
      auto o = opened.find(shard);
      if (o == opened.end()) {
        const fs::path p = fs::path(dir) / shard;
        if (!fs::exists(p))
          throw InputError(index.string() + ": shard '" + shard + "' is missing (it holds tensor '" + it.key() + "')");
        files_.push_back(std::make_unique<SafeTensors>(p.string()));
        o = opened.emplace(shard, files_.back().get()).first;
      }
      if (!o->second->has(it.key()))
        throw InputError(o->second->path() + ": missing tensor '" + it.key() + "' (the shard index places it here)");
      where_[it.key()] = o->second;
    }
    if (files_.empty()) throw InputError(index.string() + ": the weight_map lists no tensors");
  } else if (fs::exists(single)) {
    files_.push_back(std::make_unique<SafeTensors>(single.string()));
    for (const auto& n : files_.back()->names()) where_[n] = files_.back().get();
  } else {
    throw InputError(dir + ": no model.safetensors or model.safetensors.index.json (only safetensors weights are read)");
  }
}

std::string WeightSource::find(const std::string& prefix, const std::string& name) const {
  if (!prefix.empty() && where_.count(prefix + name)) return prefix + name;
  if (where_.count(name)) return name;
  return "";
}

std::vector<float> WeightSource::read(const std::string& prefix, const std::string& name,
                                      const std::vector<int64_t>& shape) const {
  std::string full = find(prefix, name);
  if (full.empty()) throw InputError(dir_ + ": missing tensor '" + prefix + name + "' (looked in " + files() + ")");
  return where_.at(full)->read_f32(full, shape);
}

std::string WeightSource::files() const {
  std::string s;
  for (const auto& f : files_) s += (s.empty() ? "" : ", ") + fs::path(f->path()).filename().string();
  return s;
}

}  // namespace sae
