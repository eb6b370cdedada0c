#include "sae/sae.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <regex>
#include <tuple>
#include <sstream>

#include "backend/backend.h"  // host_sgemm
#include "base/build_info.h"
#include "base/cli.h"
#include "base/errors.h"
#include "base/files.h"
#include "stream/npz.h"
#include "stream/safetensors.h"

namespace sae {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr const char* kSaeLensVersionWritten = "6.0.0";

// SAELens's layer_norm input normalisation divides by (std + eps) with this eps.
constexpr double kLayerNormEps = 1e-5;

bool version_before_6(const std::string& v) {
  // "5.9.1", "6.0.0-rc.0", "6.12.1": the leading integer decides (SAELens compares against
  // 6.0.0-rc.0, so every 6.0 pre-release already uses the new layout).
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
  if (j.is_object() && j.contains(key) && j[key].is_string()) return j[key].get<std::string>();
  return dflt;
}

bool bool_or(const json& j, const char* key, bool dflt) {
  if (j.is_object() && j.contains(key) && j[key].is_boolean()) return j[key].get<bool>();
  return dflt;
}

// A positive integer k from a JSON number (SAELens writes ints; 6.11 allows a float k for
// batchtopk training configs, which must still be integral to mean a TopK inference k).
int parse_k(const json& v, const std::string& where) {
  if (!v.is_number()) throw InputError(where + ": cfg.json: 'k' is not a number");
  double d = v.get<double>();
  if (!(d >= 1) || d != std::floor(d) || d > 1e9)
    throw InputError(where + ": cfg.json: 'k' must be a positive integer, got " + v.dump());
  return int(d);
}

// Pre-activations for rows of (already normalised) x: (x - b_dec*apply) @ W + bias, W [d_in, d_sae].
void pre_activation(const Sae& s, const float* x, int64_t rows, const std::vector<float>& W,
                    const std::vector<float>& bias, float* out) {
  const float* xin = x;
  std::vector<float> centred;
  if (s.apply_b_dec_to_input) {
    centred.resize(size_t(rows * s.d_in));
#pragma omp parallel for if (rows * s.d_in > 65536)
    for (int64_t r = 0; r < rows; r++)
      for (int64_t j = 0; j < s.d_in; j++)
        centred[size_t(r * s.d_in + j)] = x[r * s.d_in + j] - s.b_dec[size_t(j)];
    xin = centred.data();
  }
  for (int64_t r = 0; r < rows; r++) std::copy(bias.begin(), bias.end(), out + r * s.d_sae);
  host_sgemm(false, false, rows, s.d_sae, s.d_in, 1.0f, xin, s.d_in, W.data(), s.d_sae, 1.0f, out, s.d_sae);
}

// Per-row input normalisation as SAELens applies it at run time (SAE._setup_activation_normalization).
// x_norm = (x - shift) / scale per row; the reconstruction is mapped back as x_hat * scale + shift.
struct RowNorm {
  std::vector<float> scale, shift;  // empty: identity
};

RowNorm normalize_rows(const Sae& s, const float* x, int64_t rows, std::vector<float>& xn) {
  RowNorm n;
  const std::string& mode = s.normalize_activations;
  if (mode == "none" || mode == "expected_average_only_in") return n;  // identity at inference
  xn.assign(x, x + rows * s.d_in);
  n.scale.resize(size_t(rows));
  n.shift.assign(size_t(rows), 0.0f);
#pragma omp parallel for if (rows * s.d_in > 65536)
  for (int64_t r = 0; r < rows; r++) {
    float* v = xn.data() + r * s.d_in;
    if (mode == "constant_norm_rescale") {
      // SAELens: x * sqrt(d_in) / ||x||, undone by dividing by the same coefficient. A zero row
      // (where SAELens would divide by zero) is left as it is.
      double ss = 0;
      for (int64_t j = 0; j < s.d_in; j++) ss += double(v[j]) * v[j];
      double sc = std::sqrt(ss) / std::sqrt(double(s.d_in));
      if (sc == 0) sc = 1;
      n.scale[size_t(r)] = float(sc);
      for (int64_t j = 0; j < s.d_in; j++) v[j] = float(v[j] / sc);
    } else {
      // layer_norm, exactly as SAELens: mu = mean(x); std = unbiased (n-1) standard deviation of
      // x - mu; x_norm = (x - mu) / (std + 1e-5); the output is x_hat * std + mu (no eps).
      double mu = 0, var = 0;
      for (int64_t j = 0; j < s.d_in; j++) mu += v[j];
      mu /= double(s.d_in);
      for (int64_t j = 0; j < s.d_in; j++) var += (v[j] - mu) * (v[j] - mu);
      var /= double(s.d_in - 1);
      double sd = std::sqrt(var);
      n.scale[size_t(r)] = float(sd);
      n.shift[size_t(r)] = float(mu);
      for (int64_t j = 0; j < s.d_in; j++) v[j] = float((v[j] - mu) / (sd + kLayerNormEps));
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

// Encodes rows and returns the normalisation used, so reconstruct() can undo it.
RowNorm encode_rows(const Sae& s, const float* x_in, int64_t rows, float* f) {
  std::vector<float> xn;
  RowNorm norm = normalize_rows(s, x_in, rows, xn);
  const float* x = xn.empty() ? x_in : xn.data();
  const int64_t d_sae = s.d_sae;
  if (s.arch == "gated") {
    // SAELens: gate = x@W_enc + b_gate; magnitude = x@(W_enc * exp(r_mag)) + b_mag. Scaling the
    // columns of W_enc by exp(r_mag) equals scaling the columns of x@W_enc, so one product serves
    // both paths (exact in real arithmetic; float rounding differs by an ulp or so).
    std::vector<float> zero(size_t(d_sae), 0.0f);
    pre_activation(s, x, rows, s.W_enc, zero, f);
    std::vector<float> mag_scale(static_cast<size_t>(d_sae));
    for (int64_t j = 0; j < d_sae; j++) mag_scale[size_t(j)] = std::exp(s.r_mag[size_t(j)]);
#pragma omp parallel for if (rows * d_sae > 65536)
    for (int64_t r = 0; r < rows; r++) {
      float* v = f + r * d_sae;
      for (int64_t j = 0; j < d_sae; j++) {
        float g = v[j] + s.b_gate[size_t(j)];
        float m = v[j] * mag_scale[size_t(j)] + s.b_mag[size_t(j)];
        v[j] = g > 0 ? std::max(m, 0.0f) : 0.0f;
      }
    }
    return norm;
  }
  pre_activation(s, x, rows, s.W_enc, s.b_enc, f);
  if (s.arch == "standard") {
#pragma omp parallel for if (rows * d_sae > 65536)
    for (int64_t i = 0; i < rows * d_sae; i++) f[i] = std::max(f[i], 0.0f);
  } else if (s.arch == "jumprelu") {
    // SAELens: relu(h) * (h > threshold).
#pragma omp parallel for if (rows * d_sae > 65536)
    for (int64_t r = 0; r < rows; r++)
      for (int64_t j = 0; j < d_sae; j++) {
        float& v = f[r * d_sae + j];
        v = (v > s.threshold[size_t(j)] && v > 0) ? v : 0.0f;
      }
  } else if (s.arch == "topk") {
    // SAELens: the k largest pre-activations, then ReLU on those; everything else 0. sparsify's
    // topk(relu(h)) gives the same values (ties at zero contribute zero either way).
    const int k = s.k;
#pragma omp parallel if (rows > 1)
    {
      std::vector<int32_t> idx(static_cast<size_t>(d_sae));
      std::vector<float> top(static_cast<size_t>(k));
#pragma omp for
      for (int64_t r = 0; r < rows; r++) {
        float* v = f + r * d_sae;
        std::iota(idx.begin(), idx.end(), 0);
        // Ties broken by the lower index, so results are deterministic.
        std::nth_element(idx.begin(), idx.begin() + (k - 1), idx.end(), [&](int32_t a, int32_t b) {
          return v[a] > v[b] || (v[a] == v[b] && a < b);
        });
        for (int i = 0; i < k; i++) top[size_t(i)] = std::max(v[idx[size_t(i)]], 0.0f);
        std::fill(v, v + d_sae, 0.0f);
        for (int i = 0; i < k; i++) v[idx[size_t(i)]] = top[size_t(i)];
      }
    }
  }
  return norm;
}

// The directory names of a sparsify checkpoint root (one SAE per hookpoint subdirectory).
std::vector<std::string> sparsify_hookpoints(const std::string& dir) {
  std::vector<std::string> v;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_directory(ec) && fs::exists(e.path() / "sae.safetensors", ec)) v.push_back(e.path().filename().string());
  std::sort(v.begin(), v.end());
  return v;
}

Sae load_sparsify(const std::string& dir, const json& cfg) {
  // EleutherAI sparsify (SparseCoder.save_to_disk): cfg.json is the SparseCoderConfig plus d_in;
  // sae.safetensors holds encoder.weight [M, d], encoder.bias [M], W_dec [M, d], b_dec [d]
  // (and W_skip [d, d] with a skip connection). Encoding is topk(relu((x - b_dec) @ W^T + b)).
  Sae s;
  s.cfg = cfg;
  s.source_format = "sparsify";
  const std::string wpath = dir + "/sae.safetensors";
  if (bool_or(cfg, "transcode", false))
    throw InputError(dir + ": sparsify transcoder (transcode: true) is not an autoencoder; not supported");
  if (bool_or(cfg, "skip_connection", false))
    throw InputError(dir + ": sparsify SAE with skip_connection (W_skip) is not supported");
  std::string act = str_or(cfg, "activation", "topk");
  if (act != "topk")
    throw InputError(dir + ": sparsify activation '" + act + "' is not supported (only topk)");
  if (!cfg.contains("k")) throw InputError(dir + ": cfg.json: 'k' missing (sparsify SAEs are TopK)");
  s.arch = "topk";
  s.k = parse_k(cfg["k"], dir);
  SafeTensors st(wpath);
  if (st.has("W_skip")) throw InputError(wpath + ": has a W_skip tensor (skip connection); not supported");
  const TensorInfo& enc = st.info("encoder.weight");
  if (enc.shape.size() != 2)
    throw InputError(wpath + ": tensor 'encoder.weight' must be 2-D [num_latents, d_in], got " + shape_str(enc.shape));
  s.d_sae = enc.shape[0];
  s.d_in = enc.shape[1];
  if (cfg.contains("d_in") && cfg["d_in"].is_number_integer() && cfg["d_in"].get<int64_t>() != s.d_in)
    throw InputError(dir + ": cfg.json d_in " + std::to_string(cfg["d_in"].get<int64_t>()) +
                     " disagrees with tensor 'encoder.weight' " + shape_str(enc.shape));
  std::vector<float> w = st.read_f32("encoder.weight", {s.d_sae, s.d_in});
  s.W_enc.resize(w.size());
  for (int64_t m = 0; m < s.d_sae; m++)
    for (int64_t j = 0; j < s.d_in; j++) s.W_enc[size_t(j * s.d_sae + m)] = w[size_t(m * s.d_in + j)];
  s.b_enc = st.read_f32("encoder.bias", {s.d_sae});
  s.W_dec = st.read_f32("W_dec", {s.d_sae, s.d_in});
  s.b_dec = st.read_f32("b_dec", {s.d_in});
  s.apply_b_dec_to_input = true;  // sparsify always subtracts b_dec before encoding
  s.hook = fs::path(dir).filename().string();  // sparsify names the directory after the hookpoint
  if (s.k > s.d_sae)
    throw InputError(dir + ": k=" + std::to_string(s.k) + " exceeds the number of latents " + std::to_string(s.d_sae));
  s.validate(dir);
  return s;
}

// The hook a Gemma Scope SAE belongs to, from the release's layout
// (.../gemma-scope-2b-pt-res/layer_20/width_16k/average_l0_71, also inside a Hugging Face cache
// as models--google--gemma-scope-2b-pt-res/snapshots/HASH/layer_20/...); "" when the path does not
// say. As SAELens names them: residual -> hook_resid_post, mlp -> hook_mlp_out, attention ->
// attn.hook_z (its rows are the heads' outputs, concatenated).
std::pair<std::string, std::string> gemma_scope_hook(const std::string& dir) {
  static const std::regex release(R"(gemma-scope-.*-(res|mlp|att)(-canonical)?$)");
  static const std::regex layer(R"(^layer_([0-9]+)$)");
  std::string site, layer_index;
  for (const auto& part : fs::absolute(fs::path(dir)).lexically_normal()) {
    std::smatch m;
    const std::string c = part.string();
    if (std::regex_search(c, m, release)) site = m[1];
    else if (std::regex_match(c, m, layer)) layer_index = m[1];
  }
  if (site.empty() || layer_index.empty()) return {"", "none"};
  const std::string block = "blocks." + layer_index;
  if (site == "res") return {block + ".hook_resid_post", "none"};
  if (site == "mlp") return {block + ".hook_mlp_out", "none"};
  return {block + ".attn.hook_z", "hook_z"};
}

// Gemma Scope's own release files: a directory holding params.npz (np.savez) with W_enc [d_in,
// d_sae], W_dec [d_sae, d_in], b_enc [d_sae], b_dec [d_in] and threshold [d_sae], and no cfg.json.
// These are JumpReLU SAEs that encode x itself (b_dec is not subtracted first), as Gemma Scope's
// reference code and SAELens's loader do: f = (x W_enc + b_enc) * [x W_enc + b_enc > threshold].
Sae load_gemma_scope(const std::string& dir) {
  const std::string path = dir + "/params.npz";
  npz::Archive a(path);
  for (const char* name : {"W_enc", "W_dec", "b_enc", "b_dec", "threshold"})
    if (!a.has(name))
      throw InputError(path + ": no array '" + name +
                       "' (a Gemma Scope params.npz holds W_enc, W_dec, b_enc, b_dec and threshold)");
  const npy::Header enc = a.header("W_enc");
  if (enc.shape.size() != 2)
    throw InputError(path + ": member W_enc.npy: shape " + npy::shape_str(enc.shape) + ", expected 2-D (d_in, d_sae)");
  Sae s;
  s.source_format = "gemma-scope";
  s.arch = "jumprelu";
  s.apply_b_dec_to_input = false;
  s.d_in = int64_t(enc.shape[0]);
  s.d_sae = int64_t(enc.shape[1]);
  const uint64_t d_in = enc.shape[0], d_sae = enc.shape[1];
  s.W_enc = a.read_f32("W_enc", {d_in, d_sae});
  s.W_dec = a.read_f32("W_dec", {d_sae, d_in});
  s.b_enc = a.read_f32("b_enc", {d_sae});
  s.b_dec = a.read_f32("b_dec", {d_in});
  s.threshold = a.read_f32("threshold", {d_sae});
  std::tie(s.hook, s.reshape_activations) = gemma_scope_hook(dir);
  s.validate(path);
  return s;
}

// Keys of SAELens's SAEMetadata that legacy (pre-6) configs keep at the top level, and the legacy
// spellings SAELens renames (handle_pre_6_0_config).
const char* const kMetadataKeys[] = {"model_name",      "hook_name",         "hook_layer",     "hook_head_index",
                                     "model_class_name", "model_from_pretrained_kwargs", "prepend_bos",
                                     "exclude_special_tokens", "neuronpedia_id", "context_size",
                                     "seqpos_slice",     "dataset_path",      "sae_lens_training_version"};
const std::pair<const char*, const char*> kLegacyRenames[] = {
    {"hook_point", "hook_name"}, {"hook_point_layer", "hook_layer"}, {"hook_point_head_index", "hook_head_index"}};

}  // namespace

void Sae::validate(const std::string& where) const {
  if (d_in <= 0 || d_sae <= 0) throw InputError(where + ": d_in and d_sae must be positive");
  if (arch != "standard" && arch != "topk" && arch != "jumprelu" && arch != "gated")
    throw InputError(where + ": unknown architecture '" + arch + "' (expected standard, topk, jumprelu or gated)");
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
  const std::string& n = normalize_activations;
  if (n != "none" && n != "expected_average_only_in" && n != "constant_norm_rescale" && n != "layer_norm")
    throw InputError(where + ": unsupported normalize_activations '" + n + "'");
  if (n == "layer_norm" && d_in < 2) throw InputError(where + ": layer_norm normalisation needs d_in >= 2");
  if (reshape_activations != "none" && reshape_activations != "hook_z")
    throw InputError(where + ": unsupported reshape_activations '" + reshape_activations + "'");
}

void Sae::encode(const float* x, int64_t rows, float* f) const { encode_rows(*this, x, rows, f); }

void Sae::encoder_input(const float* x_in, int64_t rows, float* out) const {
  // The steps of encode_rows and pre_activation above, with the same expressions.
  std::vector<float> xn;
  normalize_rows(*this, x_in, rows, xn);
  const float* x = xn.empty() ? x_in : xn.data();
  if (!apply_b_dec_to_input) {
    std::copy(x, x + rows * d_in, out);
    return;
  }
  for (int64_t r = 0; r < rows; r++)
    for (int64_t j = 0; j < d_in; j++) out[r * d_in + j] = x[r * d_in + j] - b_dec[size_t(j)];
}

void Sae::decode(const float* f, int64_t rows, float* x_hat) const {
  for (int64_t r = 0; r < rows; r++) std::copy(b_dec.begin(), b_dec.end(), x_hat + r * d_in);
  host_sgemm(false, false, rows, d_in, d_sae, 1.0f, f, d_sae, W_dec.data(), d_in, 1.0f, x_hat, d_in);
}

void Sae::reconstruct(const float* x, int64_t rows, float* f, float* x_hat) const {
  RowNorm norm = encode_rows(*this, x, rows, f);
  int64_t nnz = 0;
#pragma omp parallel for reduction(+ : nnz) if (rows * d_sae > 65536)
  for (int64_t i = 0; i < rows * d_sae; i++) nnz += f[i] != 0.0f;
  // Summing active decoder rows costs about nnz*d_in flops at axpy speed; an sgemm costs
  // rows*d_sae*d_in at several times the speed. Sparse wins below roughly one active latent in 8.
  if (nnz * 8 < rows * d_sae) {
#pragma omp parallel for if (rows > 1)
    for (int64_t r = 0; r < rows; r++) {
      float* out = x_hat + r * d_in;
      std::copy(b_dec.begin(), b_dec.end(), out);
      const float* v = f + r * d_sae;
      for (int64_t j = 0; j < d_sae; j++) {
        if (v[j] == 0.0f) continue;
        const float a = v[j];
        const float* w = W_dec.data() + j * d_in;
        for (int64_t i = 0; i < d_in; i++) out[i] += a * w[i];
      }
    }
  } else {
    decode(f, rows, x_hat);
  }
  if (!norm.scale.empty()) {
    for (int64_t r = 0; r < rows; r++) {
      const float sc = norm.scale[size_t(r)], sh = norm.shift[size_t(r)];
      for (int64_t i = 0; i < d_in; i++) x_hat[r * d_in + i] = x_hat[r * d_in + i] * sc + sh;
    }
  }
}

Sae load_sae(const std::string& dir_in) {
  std::string dir = dir_in;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw InputError(dir + ": not a directory (an SAE is a directory with cfg.json)");
  std::string cfg_path = dir + "/cfg.json";
  if (!fs::exists(cfg_path, ec)) {
    if (fs::exists(dir + "/params.npz", ec)) return load_gemma_scope(dir);
    std::vector<std::string> hooks = sparsify_hookpoints(dir);
    if (!hooks.empty()) {
      std::string list;
      for (size_t i = 0; i < hooks.size() && i < 8; i++) list += (i ? ", " : "") + hooks[i];
      if (hooks.size() > 8) list += ", ...";
      throw InputError(dir + ": a sparsify checkpoint with one SAE per hookpoint; give one of its directories (" +
                       list + ")");
    }
    throw InputError(dir + ": no cfg.json (not an SAE directory)");
  }
  json cfg = read_json_file(cfg_path);
  if (!cfg.is_object()) throw InputError(cfg_path + ": not a JSON object");

  if (fs::exists(dir + "/sae.safetensors", ec) && !fs::exists(dir + "/sae_weights.safetensors", ec))
    return load_sparsify(dir, cfg);

  std::string wpath = dir + "/sae_weights.safetensors";
  if (!fs::exists(wpath, ec)) throw InputError(dir + ": no sae_weights.safetensors (nor a sparsify sae.safetensors)");

  Sae s;
  s.cfg = cfg;
  // SAELens >= 6 keeps run metadata under "metadata" ("meta" in the 6.0 release candidates);
  // earlier versions keep it at the top level and name the activation "activation_fn_str" or
  // "activation_fn", with TopK's k in "activation_fn_kwargs". SAELens decides by
  // sae_lens_version, looked up at the top level first.
  const char* meta_key = cfg.contains("metadata") && cfg["metadata"].is_object() ? "metadata"
                         : cfg.contains("meta") && cfg["meta"].is_object()       ? "meta"
                                                                                 : nullptr;
  static const json kEmpty = json::object();
  const json& meta = meta_key ? cfg[meta_key] : kEmpty;
  std::string ver = str_or(cfg, "sae_lens_version", str_or(meta, "sae_lens_version", ""));
  bool saetools = meta.contains("saetools_version");
  bool legacy = !saetools && (ver.empty() || version_before_6(ver));
  s.source_format = saetools ? "saetools" : legacy ? "saelens-legacy" : "saelens";

  s.d_in = get_dim(cfg, "d_in", dir);
  s.d_sae = get_dim(cfg, "d_sae", dir);
  if (cfg.contains("architecture") && !cfg["architecture"].is_string())
    throw InputError(dir + ": cfg.json: 'architecture' is not a string");
  s.arch = str_or(cfg, "architecture", "standard");
  if (s.arch != "standard" && s.arch != "topk" && s.arch != "jumprelu" && s.arch != "gated")
    throw InputError(dir + ": unknown architecture '" + s.arch + "' (expected standard, topk, jumprelu or gated)");
  if (legacy) {
    std::string act = str_or(cfg, "activation_fn", str_or(cfg, "activation_fn_str", "relu"));
    // Pre-6 SAELens ran a "standard" SAE with activation_fn "topk" as a TopK SAE.
    if (s.arch == "standard" && act == "topk") s.arch = "topk";
    if (act != "relu" && !(act == "topk" && s.arch == "topk"))
      throw InputError(dir + ": unsupported activation_fn '" + act + "' for architecture '" + s.arch + "'");
  }
  if (s.arch == "topk") {
    const json* kv = nullptr;
    if (cfg.contains("k")) kv = &cfg["k"];
    else if (cfg.contains("activation_fn_kwargs") && cfg["activation_fn_kwargs"].is_object() &&
             cfg["activation_fn_kwargs"].contains("k"))
      kv = &cfg["activation_fn_kwargs"]["k"];
    if (!kv) throw InputError(dir + ": cfg.json: topk SAE without 'k'");
    s.k = parse_k(*kv, dir);
  }
  s.apply_b_dec_to_input = bool_or(cfg, "apply_b_dec_to_input", true);
  if (cfg.contains("normalize_activations")) {
    const json& n = cfg["normalize_activations"];
    if (n.is_boolean()) s.normalize_activations = n.get<bool>() ? "expected_average_only_in" : "none";
    else if (n.is_string()) s.normalize_activations = n.get<std::string>();
    else if (n.is_null()) s.normalize_activations = "none";
    else throw InputError(dir + ": cfg.json: 'normalize_activations' must be a string");
  }
  s.reshape_activations = str_or(cfg, "reshape_activations", "none");
  const json& hm = legacy ? cfg : meta;
  s.hook = str_or(hm, "hook_name", str_or(hm, "hook_point", str_or(cfg, "hook_name", "")));
  s.model = str_or(hm, "model_name", str_or(cfg, "model_name", ""));

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
  if (s.arch == "jumprelu") {
    if (!st.has("threshold") && st.has("log_threshold")) {
      // A SAELens JumpReLU training checkpoint stores log_threshold; inference files store exp of it.
      s.threshold = st.read_f32("log_threshold", {s.d_sae});
      for (float& t : s.threshold) t = std::exp(t);
    } else {
      s.threshold = st.read_f32("threshold", {s.d_sae});
    }
  }
  s.validate(dir);

  // Legacy finetuning scale (SAELens read_sae_components_from_disk): a scaling_factor of all
  // ones is dropped; any other is applied to the latents before decoding, which equals scaling
  // the decoder rows.
  for (const char* name : {"scaling_factor", "finetuning_scaling_factor"}) {
    if (!st.has(name)) continue;
    std::vector<float> sf = st.read_f32(name, {s.d_sae});
    check_finite(sf, wpath, name);
    bool ones = std::all_of(sf.begin(), sf.end(), [](float v) { return std::fabs(v - 1.0f) <= 1e-5f; });
    if (ones) continue;
    if (!bool_or(cfg, "finetuning_scaling_factor", false) && std::string(name) == "scaling_factor")
      throw InputError(wpath + ": scaling_factor is present (and not all ones) but cfg.json "
                       "finetuning_scaling_factor is false");
    for (int64_t j = 0; j < s.d_sae; j++)
      for (int64_t i = 0; i < s.d_in; i++) s.W_dec[size_t(j * s.d_in + i)] *= sf[size_t(j)];
  }

  // SAELens TopK with rescale_acts_by_decoder_norm: hidden_pre * ||W_dec_j|| before the top-k, and
  // latents / ||W_dec_j|| before decoding. Folding the norms into W_enc/b_enc and out of W_dec
  // gives the same latents and reconstruction with plain TopK.
  if (bool_or(cfg, "rescale_acts_by_decoder_norm", false)) {
    if (s.arch != "topk")
      throw InputError(dir + ": rescale_acts_by_decoder_norm is only supported for topk SAEs");
    for (int64_t j = 0; j < s.d_sae; j++) {
      double nn = 0;
      for (int64_t i = 0; i < s.d_in; i++) nn += double(s.W_dec[size_t(j * s.d_in + i)]) * s.W_dec[size_t(j * s.d_in + i)];
      float n = float(std::sqrt(nn));
      if (n == 0) continue;  // a zero decoder row contributes nothing either way
      for (int64_t i = 0; i < s.d_in; i++) {
        s.W_enc[size_t(i * s.d_sae + j)] *= n;
        s.W_dec[size_t(j * s.d_in + i)] /= n;
      }
      s.b_enc[size_t(j)] *= n;
    }
  }
  return s;
}

std::vector<float> load_sparsity(const std::string& dir, int64_t d_sae) {
  std::string path = dir + "/sparsity.safetensors";
  std::error_code ec;
  if (!fs::exists(path, ec)) return {};
  SafeTensors st(path);
  return st.read_f32("sparsity", {d_sae});
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

  // SAELens >= 6 layout: architecture fields at the top, run metadata under "metadata". Keys
  // carried over from the source cfg that SAELens would read differently (legacy activation and
  // version keys, folded scale factors) are dropped; legacy top-level metadata moves under
  // "metadata". Other extra keys stay at the top level, where SAELens ignores them.
  json cfg = json::object();
  json meta = json::object();
  if (s.cfg.is_object()) {
    for (const char* mk : {"meta", "metadata"})
      if (s.cfg.contains(mk) && s.cfg[mk].is_object())
        for (auto it = s.cfg[mk].begin(); it != s.cfg[mk].end(); ++it) meta[it.key()] = it.value();
    for (auto it = s.cfg.begin(); it != s.cfg.end(); ++it) {
      const std::string& key = it.key();
      if (key == "metadata" || key == "meta") continue;
      bool moved = false;
      for (const char* mk : kMetadataKeys)
        if (key == mk) {
          if (!meta.contains(key)) meta[key] = it.value();
          moved = true;
        }
      for (const auto& rn : kLegacyRenames)
        if (key == rn.first) {
          if (!meta.contains(rn.second)) meta[rn.second] = it.value();
          moved = true;
        }
      if (moved) continue;
      if (key == "activation_fn" || key == "activation_fn_str" || key == "activation_fn_kwargs" ||
          key == "finetuning_scaling_factor" || key == "rescale_acts_by_decoder_norm" || key == "sae_lens_version")
        continue;
      cfg[key] = it.value();
    }
  }
  cfg["architecture"] = s.arch;
  cfg["d_in"] = s.d_in;
  cfg["d_sae"] = s.d_sae;
  cfg["dtype"] = opt.dtype == DType::f32 ? "float32" : opt.dtype == DType::f16 ? "float16" : "bfloat16";
  cfg["device"] = "cpu";
  cfg["apply_b_dec_to_input"] = s.apply_b_dec_to_input;
  cfg["normalize_activations"] = s.normalize_activations;
  cfg["reshape_activations"] = s.reshape_activations;
  if (s.arch == "topk") cfg["k"] = s.k;
  else cfg.erase("k");
  meta["sae_lens_version"] = kSaeLensVersionWritten;
  meta["saetools_version"] = build_info::version();
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
