#include "sae.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <sstream>

#include "cli.h"
#include "common.h"
#include "safetensors.h"

namespace sae {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr const char* kSaeLensVersionWritten = "6.0.0";

json read_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw InputError(path + ": cannot open");
  try {
    return json::parse(in);
  } catch (const std::exception& e) {
    throw InputError(path + ": invalid JSON (" + std::string(e.what()) + ")");
  }
}

bool version_before_6(const std::string& v) {
  // "5.9.1", "6.0.0-rc.0", "6.12.1": the leading integer decides.
  try {
    return std::stoi(v) < 6;
  } catch (...) {
    return true;
  }
}

int64_t get_dim(const json& cfg, const char* key, const std::string& where) {
  if (!cfg.contains(key) || !cfg[key].is_number_integer() || cfg[key].get<int64_t>() <= 0)
    throw InputError(where + ": cfg.json: '" + key + "' missing or not a positive integer");
  return cfg[key].get<int64_t>();
}

std::string str_or(const json& j, const char* key, const std::string& dflt) {
  if (j.contains(key) && j[key].is_string()) return j[key].get<std::string>();
  return dflt;
}

// Pre-activations for rows of x: (x - b_dec*apply) @ W + bias, with W [d_in, d_sae].
void pre_activation(const Sae& s, const float* x, int64_t rows, const std::vector<float>& W,
                    const std::vector<float>& bias, float* out) {
  std::vector<float> xin(size_t(rows * s.d_in));
#pragma omp parallel for if (rows * s.d_in > 65536)
  for (int64_t r = 0; r < rows; r++)
    for (int64_t j = 0; j < s.d_in; j++)
      xin[size_t(r * s.d_in + j)] = x[r * s.d_in + j] - (s.apply_b_dec_to_input ? s.b_dec[size_t(j)] : 0.0f);
  for (int64_t r = 0; r < rows; r++) std::copy(bias.begin(), bias.end(), out + r * s.d_sae);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(rows), int(s.d_sae), int(s.d_in), 1.0f, xin.data(),
              int(s.d_in), W.data(), int(s.d_sae), 1.0f, out, int(s.d_sae));
}

// Per-token input normalisation as SAELens applies it at run time. Returns the per-row factor the
// output must be multiplied by (and offset added) to undo it.
struct RowNorm {
  std::vector<float> scale, shift;  // x_norm = (x - shift) / scale; x_hat = x_hat_norm * scale + shift
};

RowNorm normalize_rows(const Sae& s, const float* x, int64_t rows, std::vector<float>& xn) {
  RowNorm n;
  xn.assign(x, x + rows * s.d_in);
  const std::string& mode = s.normalize_activations;
  if (mode == "none" || mode == "expected_average_only_in") return n;  // folded into the weights
  n.scale.resize(size_t(rows));
  n.shift.assign(size_t(rows), 0.0f);
  for (int64_t r = 0; r < rows; r++) {
    float* v = xn.data() + r * s.d_in;
    if (mode == "constant_norm_rescale") {
      double ss = 0;
      for (int64_t j = 0; j < s.d_in; j++) ss += double(v[j]) * v[j];
      float sc = float(std::sqrt(ss) / std::sqrt(double(s.d_in)));
      if (sc == 0) sc = 1;
      n.scale[size_t(r)] = sc;
      for (int64_t j = 0; j < s.d_in; j++) v[j] /= sc;
    } else {  // layer_norm
      double mu = 0, var = 0;
      for (int64_t j = 0; j < s.d_in; j++) mu += v[j];
      mu /= double(s.d_in);
      for (int64_t j = 0; j < s.d_in; j++) var += (v[j] - mu) * (v[j] - mu);
      var /= double(s.d_in);
      float sd = float(std::sqrt(var + 1e-5));
      n.scale[size_t(r)] = sd;
      n.shift[size_t(r)] = float(mu);
      for (int64_t j = 0; j < s.d_in; j++) v[j] = float((v[j] - mu) / sd);
    }
  }
  return n;
}

void check_finite(const std::vector<float>& v, const std::string& where, const char* name) {
  for (size_t i = 0; i < v.size(); i++)
    if (!std::isfinite(v[i]))
      throw InputError(where + ": tensor '" + std::string(name) + "' has a NaN or Inf value at element " +
                       std::to_string(i));
}

}  // namespace

void Sae::validate(const std::string& where) const {
  if (d_in <= 0 || d_sae <= 0) throw InputError(where + ": d_in and d_sae must be positive");
  auto need = [&](const std::vector<float>& v, size_t n, const char* name) {
    if (v.size() != n)
      throw InputError(where + ": tensor '" + std::string(name) + "' has " + std::to_string(v.size()) +
                       " values, expected " + std::to_string(n));
    check_finite(v, where, name);
  };
  need(W_enc, size_t(d_in * d_sae), "W_enc");
  need(W_dec, size_t(d_sae * d_in), "W_dec");
  need(b_dec, size_t(d_in), "b_dec");
  if (arch == "gated") {
    need(b_gate, size_t(d_sae), "b_gate");
    need(r_mag, size_t(d_sae), "r_mag");
    need(b_mag, size_t(d_sae), "b_mag");
  } else {
    need(b_enc, size_t(d_sae), "b_enc");
  }
  if (arch == "jumprelu") need(threshold, size_t(d_sae), "threshold");
  if (arch == "topk" && (k <= 0 || k > d_sae))
    throw InputError(where + ": topk SAE with k=" + std::to_string(k) + " outside 1..d_sae=" + std::to_string(d_sae));
  if (arch != "standard" && arch != "topk" && arch != "jumprelu" && arch != "gated")
    throw InputError(where + ": unknown architecture '" + arch + "'");
  const std::string& n = normalize_activations;
  if (n != "none" && n != "expected_average_only_in" && n != "constant_norm_rescale" && n != "layer_norm")
    throw InputError(where + ": unsupported normalize_activations '" + n + "'");
}

void Sae::encode(const float* x_in, int64_t rows, float* f) const {
  std::vector<float> xn;
  normalize_rows(*this, x_in, rows, xn);
  const float* x = xn.data();
  if (arch == "gated") {
    std::vector<float> gate(size_t(rows * d_sae));
    pre_activation(*this, x, rows, W_enc, b_gate, gate.data());
    std::vector<float> W_mag(W_enc.size());
    for (int64_t i = 0; i < d_in; i++)
      for (int64_t j = 0; j < d_sae; j++) W_mag[size_t(i * d_sae + j)] = W_enc[size_t(i * d_sae + j)] * std::exp(r_mag[size_t(j)]);
    pre_activation(*this, x, rows, W_mag, b_mag, f);
    for (size_t i = 0; i < gate.size(); i++) f[i] = gate[i] > 0 ? std::max(f[i], 0.0f) : 0.0f;
    return;
  }
  pre_activation(*this, x, rows, W_enc, b_enc, f);
  if (arch == "standard") {
    for (int64_t i = 0; i < rows * d_sae; i++) f[i] = std::max(f[i], 0.0f);
  } else if (arch == "jumprelu") {
    for (int64_t r = 0; r < rows; r++)
      for (int64_t j = 0; j < d_sae; j++) {
        float& v = f[r * d_sae + j];
        v = (v > threshold[size_t(j)] && v > 0) ? v : 0.0f;
      }
  } else if (arch == "topk") {
#pragma omp parallel
    {
      std::vector<int32_t> idx(static_cast<size_t>(d_sae));
#pragma omp for
      for (int64_t r = 0; r < rows; r++) {
        float* v = f + r * d_sae;
        std::iota(idx.begin(), idx.end(), 0);
        // Largest k pre-activations, ties broken by the lower index so results are deterministic.
        std::nth_element(idx.begin(), idx.begin() + (k - 1), idx.end(), [&](int32_t a, int32_t b) {
          return v[a] > v[b] || (v[a] == v[b] && a < b);
        });
        std::vector<char> keep(size_t(d_sae), 0);
        for (int i = 0; i < k; i++) keep[size_t(idx[size_t(i)])] = 1;
        for (int64_t j = 0; j < d_sae; j++) v[j] = keep[size_t(j)] ? std::max(v[j], 0.0f) : 0.0f;
      }
    }
  }
}

void Sae::decode(const float* f, int64_t rows, float* x_hat) const {
  for (int64_t r = 0; r < rows; r++) std::copy(b_dec.begin(), b_dec.end(), x_hat + r * d_in);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(rows), int(d_in), int(d_sae), 1.0f, f, int(d_sae),
              W_dec.data(), int(d_in), 1.0f, x_hat, int(d_in));
}

Sae load_sae(const std::string& dir_in) {
  std::string dir = dir_in;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw InputError(dir + ": not a directory (an SAE is a directory with cfg.json)");
  std::string cfg_path = dir + "/cfg.json";
  if (!fs::exists(cfg_path, ec)) throw InputError(dir + ": no cfg.json (not an SAE directory)");
  json cfg = read_json_file(cfg_path);
  if (!cfg.is_object()) throw InputError(cfg_path + ": not a JSON object");
  Sae s;
  s.cfg = cfg;

  if (fs::exists(dir + "/sae.safetensors", ec) && !fs::exists(dir + "/sae_weights.safetensors", ec)) {
    // EleutherAI sparsify: encoder.weight [M, d], encoder.bias [M], W_dec [M, d], b_dec [d]; TopK.
    s.source_format = "sparsify";
    SafeTensors st(dir + "/sae.safetensors");
    if (cfg.contains("skip_connection") && cfg["skip_connection"].is_boolean() && cfg["skip_connection"].get<bool>())
      throw InputError(dir + ": sparsify SAE with skip_connection (a transcoder) is not supported");
    const TensorInfo& enc = st.info("encoder.weight");
    if (enc.shape.size() != 2) throw InputError(dir + "/sae.safetensors: 'encoder.weight' must be 2-D, got " + shape_str(enc.shape));
    s.d_sae = enc.shape[0];
    s.d_in = enc.shape[1];
    if (cfg.contains("d_in") && cfg["d_in"].is_number_integer() && cfg["d_in"].get<int64_t>() != s.d_in)
      throw InputError(dir + ": cfg.json d_in " + std::to_string(cfg["d_in"].get<int64_t>()) +
                       " disagrees with encoder.weight " + shape_str(enc.shape));
    if (!cfg.contains("k") || !cfg["k"].is_number_integer())
      throw InputError(dir + ": cfg.json: 'k' missing (sparsify SAEs are TopK)");
    s.arch = "topk";
    s.k = cfg["k"].get<int>();
    std::vector<float> w = st.read_f32("encoder.weight", {s.d_sae, s.d_in});
    s.W_enc.resize(w.size());
    for (int64_t m = 0; m < s.d_sae; m++)
      for (int64_t j = 0; j < s.d_in; j++) s.W_enc[size_t(j * s.d_sae + m)] = w[size_t(m * s.d_in + j)];
    s.b_enc = st.read_f32("encoder.bias", {s.d_sae});
    s.W_dec = st.read_f32("W_dec", {s.d_sae, s.d_in});
    s.b_dec = st.read_f32("b_dec", {s.d_in});
    s.apply_b_dec_to_input = true;  // sparsify always subtracts b_dec before encoding
    s.hook = fs::path(dir).filename().string();  // sparsify names the directory after the hookpoint
    s.validate(dir);
    return s;
  }

  std::string wpath = dir + "/sae_weights.safetensors";
  if (!fs::exists(wpath, ec)) throw InputError(dir + ": no sae_weights.safetensors (nor a sparsify sae.safetensors)");

  // SAELens: 6.x keeps run metadata under "metadata"; earlier versions keep it at the top level
  // and may name the activation "activation_fn_str"/"activation_fn" with kwargs {"k": ...}.
  std::string ver = str_or(cfg, "sae_lens_version", "");
  if (ver.empty() && cfg.contains("metadata") && cfg["metadata"].is_object())
    ver = str_or(cfg["metadata"], "sae_lens_version", "");
  bool saetools = cfg.contains("metadata") && cfg["metadata"].is_object() && cfg["metadata"].contains("saetools_version");
  bool legacy = !saetools && (ver.empty() || version_before_6(ver));
  s.source_format = saetools ? "saetools" : legacy ? "saelens-legacy" : "saelens";
  const json& meta = (!legacy && cfg.contains("metadata") && cfg["metadata"].is_object()) ? cfg["metadata"] : cfg;

  s.d_in = get_dim(cfg, "d_in", dir);
  s.d_sae = get_dim(cfg, "d_sae", dir);
  s.arch = str_or(cfg, "architecture", "standard");
  std::string act = str_or(cfg, "activation_fn", str_or(cfg, "activation_fn_str", "relu"));
  if (legacy && s.arch == "standard" && act == "topk") s.arch = "topk";
  if (s.arch != "standard" && s.arch != "topk" && s.arch != "jumprelu" && s.arch != "gated")
    throw InputError(dir + ": unknown architecture '" + s.arch + "' (expected standard, topk, jumprelu or gated)");
  if (s.arch == "topk") {
    if (cfg.contains("k") && cfg["k"].is_number()) {
      s.k = int(cfg["k"].get<double>());
    } else if (cfg.contains("activation_fn_kwargs") && cfg["activation_fn_kwargs"].is_object() &&
               cfg["activation_fn_kwargs"].contains("k")) {
      s.k = cfg["activation_fn_kwargs"]["k"].get<int>();
    } else {
      throw InputError(dir + ": cfg.json: topk SAE without 'k'");
    }
  }
  if (cfg.contains("apply_b_dec_to_input") && cfg["apply_b_dec_to_input"].is_boolean())
    s.apply_b_dec_to_input = cfg["apply_b_dec_to_input"].get<bool>();
  if (cfg.contains("normalize_activations")) {
    const json& n = cfg["normalize_activations"];
    if (n.is_boolean()) s.normalize_activations = n.get<bool>() ? "expected_average_only_in" : "none";
    else if (n.is_string()) s.normalize_activations = n.get<std::string>();
  }
  s.hook = str_or(meta, "hook_name", str_or(meta, "hook_point", str_or(cfg, "hook_name", "")));
  s.model = str_or(meta, "model_name", str_or(cfg, "model_name", ""));

  SafeTensors st(wpath);
  s.W_enc = st.read_f32("W_enc", {s.d_in, s.d_sae});
  s.W_dec = st.read_f32("W_dec", {s.d_sae, s.d_in});
  s.b_dec = st.read_f32("b_dec", {s.d_in});
  if (s.arch == "gated") {
    s.b_gate = st.read_f32("b_gate", {s.d_sae});
    s.r_mag = st.read_f32("r_mag", {s.d_sae});
    s.b_mag = st.read_f32("b_mag", {s.d_sae});
  } else {
    s.b_enc = st.read_f32("b_enc", {s.d_sae});
  }
  if (s.arch == "jumprelu") s.threshold = st.read_f32("threshold", {s.d_sae});
  if (st.has("scaling_factor") || st.has("finetuning_scaling_factor"))
    throw InputError(wpath + ": finetuning scaling factors are not supported");
  s.validate(dir);
  return s;
}

void save_sae(const Sae& s, const std::string& dir, const SaveOptions& opt) {
  s.validate(dir);
  cli::OutputDir out(dir);
  SafeTensorsWriter w;
  w.add("W_enc", {s.d_in, s.d_sae}, s.W_enc.data(), opt.dtype);
  w.add("W_dec", {s.d_sae, s.d_in}, s.W_dec.data(), opt.dtype);
  w.add("b_dec", {s.d_in}, s.b_dec.data(), opt.dtype);
  if (s.arch == "gated") {
    w.add("b_gate", {s.d_sae}, s.b_gate.data(), opt.dtype);
    w.add("r_mag", {s.d_sae}, s.r_mag.data(), opt.dtype);
    w.add("b_mag", {s.d_sae}, s.b_mag.data(), opt.dtype);
  } else {
    w.add("b_enc", {s.d_sae}, s.b_enc.data(), opt.dtype);
  }
  if (s.arch == "jumprelu") w.add("threshold", {s.d_sae}, s.threshold.data(), opt.dtype);
  w.write(out.tmp_path() + "/sae_weights.safetensors");

  // SAELens >= 6 layout: architecture fields at the top, run metadata under "metadata".
  json cfg = json::object();
  json meta = json::object();
  if (s.cfg.is_object()) {
    for (auto it = s.cfg.begin(); it != s.cfg.end(); ++it) {
      if (it.key() == "metadata" && it.value().is_object()) meta = it.value();
      else cfg[it.key()] = it.value();
    }
  }
  cfg["architecture"] = s.arch;
  cfg["d_in"] = s.d_in;
  cfg["d_sae"] = s.d_sae;
  cfg["dtype"] = opt.dtype == DType::f32 ? "float32" : opt.dtype == DType::f16 ? "float16" : "bfloat16";
  cfg["device"] = "cpu";
  cfg["apply_b_dec_to_input"] = s.apply_b_dec_to_input;
  cfg["normalize_activations"] = s.normalize_activations;
  cfg["reshape_activations"] = "none";
  if (s.arch == "topk") cfg["k"] = s.k;
  else cfg.erase("k");
  meta["sae_lens_version"] = kSaeLensVersionWritten;
  meta["saetools_version"] = SAE_VERSION;
  if (!s.hook.empty()) meta["hook_name"] = s.hook;
  if (!s.model.empty()) meta["model_name"] = s.model;
  cfg["metadata"] = meta;
  cli::write_file_atomic(out.tmp_path() + "/cfg.json", cfg.dump(2) + "\n");

  if (!opt.log10_density.empty()) {
    if (int64_t(opt.log10_density.size()) != s.d_sae) throw std::logic_error("save_sae: density size != d_sae");
    SafeTensorsWriter sp;
    sp.add("sparsity", {s.d_sae}, opt.log10_density.data());
    sp.write(out.tmp_path() + "/sparsity.safetensors");
  }
  out.commit();
}

}  // namespace sae
