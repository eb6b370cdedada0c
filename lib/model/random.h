// Small models with random weights, written as Hugging Face model directories (config.json and
// model.safetensors, no tokenizer): the fixtures of the model tests, and the models of the
// self-test's forward-pass check (sae-selftest), which has no test data to read.
#pragma once
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/dtype.h"
#include "model/model.h"

namespace sae {

// Tensors by Hugging Face name, with shapes, in the order they were added.
struct ModelTensors {
  std::map<std::string, std::vector<float>> data;
  std::map<std::string, std::vector<int64_t>> shape;
  std::vector<std::string> order;
  void add(const std::string& name, std::vector<int64_t> s, std::vector<float> v);
  const std::vector<float>& get(const std::string& name) const;  // std::runtime_error when absent
  // Writes them (or only the named ones) as one safetensors file, stored as `dt`.
  void write(const std::string& path, DType dt = DType::f32, const std::vector<std::string>* only = nullptr) const;
};

// Random weights for every tensor `c` needs: GPT-2 names after `gpt2_prefix`, Llama and Gemma
// names after "model.", GPT-NeoX's after "gpt_neox.", the untied head as lm_head.weight
// (embed_out.weight for GPT-NeoX). Normal entries: matrices with standard deviation 0.3
// (embeddings 0.5, position embeddings 0.2), norm scales 1 +- 0.1 (Gemma's stored w of 1 + w
// around 0), biases 0.1 (GPT-2, NeoX) or 0.3 (Llama). The same seed gives the same weights.
ModelTensors random_model_tensors(const ModelConfig& c, uint32_t seed, const std::string& gpt2_prefix = "transformer.");

// Writes `dir`/config.json (`cfg`) and `dir`/model.safetensors (random_model_tensors of the parsed
// config, stored as `dt`) into an existing directory; returns the tensors (in f32, as generated).
ModelTensors write_random_model(const std::string& dir, const nlohmann::json& cfg, uint32_t seed,
                                DType dt = DType::f32, const std::string& gpt2_prefix = "transformer.");

}  // namespace sae
