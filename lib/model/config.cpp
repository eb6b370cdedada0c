// config.json -> ModelConfig for GPT-2, the Llama family, Gemma 2/3 and GPT-NeoX, refusing (with
// the field's name) every setting the forward pass would not reproduce exactly; hook names;
// rotary frequencies.
#include <cmath>
#include <filesystem>

#include "base/dtype.h"
#include "base/errors.h"
#include "model/model.h"
#include "model/weights.h"

namespace sae {

using json = nlohmann::json;

namespace {

// Typed, named access to config.json fields: every problem is an InputError "<file>: <field>: why".
// `prefix` names the object the fields sit in ("text_config." for a multimodal config's text tower).
struct Fields {
  const json& j;
  const std::string& where;
  std::string prefix;

  InputError err(const std::string& field, const std::string& why) const {
    return InputError(where + ": " + prefix + field + ": " + why);
  }
  bool has(const char* k) const { return j.contains(k) && !j.at(k).is_null(); }
  int64_t integer(const char* k) const {
    if (!has(k)) throw err(k, "missing (required for model_type '" + j.value("model_type", std::string()) + "')");
    const json& v = j.at(k);
    if (!v.is_number_integer()) throw err(k, "expected an integer, found " + v.dump());
    return v.get<int64_t>();
  }
  int64_t positive(const char* k) const {
    int64_t v = integer(k);
    if (v <= 0) throw err(k, "must be positive, found " + std::to_string(v));
    return v;
  }
  int64_t positive(const char* k, int64_t dflt) const { return has(k) ? positive(k) : dflt; }
  double number(const json& v, const std::string& name) const {
    if (!v.is_number()) throw err(name, "expected a number, found " + v.dump());
    return v.get<double>();
  }
  double number(const char* k, double dflt) const { return has(k) ? number(j.at(k), k) : dflt; }
  bool boolean(const char* k, bool dflt) const {
    if (!has(k)) return dflt;
    if (!j.at(k).is_boolean()) throw err(k, "expected true or false, found " + j.at(k).dump());
    return j.at(k).get<bool>();
  }
  std::string string(const char* k, const std::string& dflt) const {
    if (!has(k)) return dflt;
    if (!j.at(k).is_string()) throw err(k, "expected a string, found " + j.at(k).dump());
    return j.at(k).get<std::string>();
  }
  // A field that only its "off" value (absent, null, false or 0) lets us run exactly.
  void must_be_off(const char* k) const {
    if (!has(k)) return;
    const json& v = j.at(k);
    if (v == false || v == 0) return;
    throw err(k, "value " + v.dump() + " is not supported (the forward pass would not match the model)");
  }
};

int to_int(const Fields& f, const char* k, int64_t v) {
  if (v > (int64_t(1) << 30)) throw f.err(k, "value " + std::to_string(v) + " is too large");
  return int(v);
}

void check_architectures(const Fields& f, const std::vector<std::string>& ok) {
  if (!f.has("architectures")) return;
  const json& a = f.j.at("architectures");
  if (!a.is_array()) throw f.err("architectures", "expected a list of class names");
  for (const auto& v : a) {
    std::string s = v.is_string() ? v.get<std::string>() : v.dump();
    bool found = false;
    for (const auto& o : ok) found = found || s == o;
    if (!found) {
      std::string list;
      for (const auto& o : ok) list += (list.empty() ? "" : ", ") + o;
      throw f.err("architectures", "'" + s + "' is not supported (expected " + list + ")");
    }
  }
}

// transformers' ACT2FN names for the activations we run; `field` absent means `dflt`.
tk::Activation parse_activation(const Fields& f, const char* field, const char* dflt) {
  const std::string act = f.string(field, dflt);
  if (act == "gelu_new" || act == "gelu_pytorch_tanh" || act == "gelu_fast") return tk::Activation::gelu_tanh;
  if (act == "gelu") return tk::Activation::gelu_erf;
  if (act == "relu") return tk::Activation::relu;
  if (act == "silu" || act == "swish") return tk::Activation::silu;
  throw f.err(field, "'" + act + "' is not supported (gelu_new, gelu_pytorch_tanh, gelu_fast, gelu, relu, silu)");
}

// bos_token_id and eos_token_id when they are single integers; -1 otherwise (absent, or a list of
// several end tokens, as Llama 3 and Gemma 3 give).
void read_special_tokens(const Fields& f, ModelConfig& c) {
  auto id = [&](const char* k) { return f.has(k) && f.j.at(k).is_number_integer() ? f.integer(k) : int64_t(-1); };
  c.bos_token_id = id("bos_token_id");
  c.eos_token_id = id("eos_token_id");
}

void parse_gpt2(const Fields& f, ModelConfig& c) {
  check_architectures(f, {"GPT2LMHeadModel", "GPT2Model"});
  c.arch = ModelArch::gpt2;
  c.n_layers = to_int(f, "n_layer", f.positive("n_layer"));
  c.d_model = to_int(f, "n_embd", f.positive("n_embd"));
  c.n_heads = to_int(f, "n_head", f.positive("n_head"));
  if (c.d_model % c.n_heads) throw f.err("n_head", std::to_string(c.n_heads) + " does not divide n_embd " + std::to_string(c.d_model));
  c.n_kv_heads = c.n_heads;
  c.head_dim = c.d_model / c.n_heads;
  c.d_mlp = to_int(f, "n_inner", f.positive("n_inner", 4 * int64_t(c.d_model)));
  c.vocab = to_int(f, "vocab_size", f.positive("vocab_size"));
  c.max_positions = f.positive("n_positions");
  c.max_positions_field = "n_positions";
  c.norm_eps = float(f.number("layer_norm_epsilon", 1e-5));
  c.act = parse_activation(f, "activation_function", "gelu_new");
  c.tied_head = f.boolean("tie_word_embeddings", true);
  c.qkv_bias = c.o_bias = c.mlp_bias = true;
  c.scale_attn_weights = f.boolean("scale_attn_weights", true);
  c.scale_attn_by_inverse_layer_idx = f.boolean("scale_attn_by_inverse_layer_idx", false);
  // reorder_and_upcast_attn only changes how fp16 training computes the scores; in f32 it is the
  // same arithmetic, so it needs no check.
  f.must_be_off("add_cross_attention");
  c.bos_token_id = f.has("bos_token_id") ? f.integer("bos_token_id") : 50256;
  c.eos_token_id = f.has("eos_token_id") ? f.integer("eos_token_id") : 50256;
}

RopeScaling parse_rope_scaling(const Fields& f, const json& rs, const std::string& field) {
  RopeScaling r;
  if (rs.is_null()) return r;
  if (!rs.is_object()) throw f.err(field, "expected an object or null, found " + rs.dump());
  std::string key = rs.contains("rope_type") ? "rope_type" : "type";
  std::string type = rs.contains(key) && rs.at(key).is_string() ? rs.at(key).get<std::string>() : "";
  auto num = [&](const char* k) {
    if (!rs.contains(k) || rs.at(k).is_null()) throw f.err(field + "." + k, "missing (required for rope type '" + type + "')");
    return f.number(rs.at(k), field + "." + k);
  };
  if (!rs.contains(key)) {
    // The nested rope_parameters of newer configs may leave the type out for plain RoPE.
    if (field.rfind("rope_parameters", 0) == 0) return r;
    throw f.err(field + ".type", "missing (cannot tell the scaling method)");
  }
  if (type == "default") {
    return r;
  } else if (type == "linear") {
    r.type = RopeScalingType::linear;
    r.factor = num("factor");
  } else if (type == "llama3") {
    r.type = RopeScalingType::llama3;
    r.factor = num("factor");
    r.low_freq_factor = num("low_freq_factor");
    r.high_freq_factor = num("high_freq_factor");
    r.original_max_positions = num("original_max_position_embeddings");
    if (!(r.high_freq_factor > r.low_freq_factor))
      throw f.err(field + ".high_freq_factor", "must exceed low_freq_factor");
  } else {
    throw f.err(field + "." + key, "'" + type + "' is not supported (supported: default, linear, llama3)");
  }
  if (!(r.factor > 0)) throw f.err(field + ".factor", "must be positive");
  return r;
}

void parse_llama(const Fields& f, ModelConfig& c) {
  const std::string& mt = c.model_type;
  if (mt == "llama") check_architectures(f, {"LlamaForCausalLM", "LlamaModel"});
  if (mt == "mistral") check_architectures(f, {"MistralForCausalLM", "MistralModel"});
  if (mt == "qwen2") check_architectures(f, {"Qwen2ForCausalLM", "Qwen2Model"});
  if (mt == "qwen3") check_architectures(f, {"Qwen3ForCausalLM", "Qwen3Model"});
  c.qk_norm = mt == "qwen3";
  c.arch = ModelArch::llama;
  c.n_layers = to_int(f, "num_hidden_layers", f.positive("num_hidden_layers"));
  c.d_model = to_int(f, "hidden_size", f.positive("hidden_size"));
  c.n_heads = to_int(f, "num_attention_heads", f.positive("num_attention_heads"));
  c.n_kv_heads = to_int(f, "num_key_value_heads", f.positive("num_key_value_heads", c.n_heads));
  if (c.n_heads % c.n_kv_heads)
    throw f.err("num_key_value_heads", std::to_string(c.n_kv_heads) + " does not divide num_attention_heads " + std::to_string(c.n_heads));
  if (f.has("head_dim")) {
    c.head_dim = to_int(f, "head_dim", f.positive("head_dim"));
  } else {
    if (c.d_model % c.n_heads)
      throw f.err("head_dim", "missing, and cannot be derived: num_attention_heads " + std::to_string(c.n_heads) +
                                  " does not divide hidden_size " + std::to_string(c.d_model));
    c.head_dim = c.d_model / c.n_heads;
  }
  if (c.head_dim % 2) throw f.err("head_dim", "must be even for rotary embeddings, found " + std::to_string(c.head_dim));
  c.rotary_dims = c.head_dim;
  c.d_mlp = to_int(f, "intermediate_size", f.positive("intermediate_size"));
  c.vocab = to_int(f, "vocab_size", f.positive("vocab_size"));
  c.max_positions = f.positive("max_position_embeddings");
  c.max_positions_field = "max_position_embeddings";
  c.norm_eps = float(f.number("rms_norm_eps", 1e-6));
  std::string act = f.string("hidden_act", "silu");
  if (act != "silu" && act != "swish") throw f.err("hidden_act", "'" + act + "' is not supported (the Llama family uses silu)");
  c.act = tk::Activation::silu;
  c.tied_head = f.boolean("tie_word_embeddings", false);
  if (mt == "qwen2") {
    c.qkv_bias = true;  // Qwen2 always has q/k/v biases and none on o_proj
  } else if (f.boolean("attention_bias", false)) {
    c.qkv_bias = c.o_bias = true;
  }
  c.mlp_bias = f.boolean("mlp_bias", false);

  // Rotary embedding: rope_theta and rope_scaling, or the newer nested "rope_parameters".
  c.rope_theta = f.number("rope_theta", 10000.0);
  if (f.has("rope_parameters")) {
    const json& rp = f.j.at("rope_parameters");
    if (!rp.is_object()) throw f.err("rope_parameters", "expected an object, found " + rp.dump());
    if (rp.contains("rope_theta")) c.rope_theta = f.number(rp.at("rope_theta"), "rope_parameters.rope_theta");
    c.rope_scaling = parse_rope_scaling(f, rp, "rope_parameters");
  }
  if (f.has("rope_scaling")) c.rope_scaling = parse_rope_scaling(f, f.j.at("rope_scaling"), "rope_scaling");
  if (!(c.rope_theta > 0)) throw f.err("rope_theta", "must be positive");
  c.sliding_rope_theta = c.rope_theta;
  c.sliding_rope_scaling = c.rope_scaling;
  if (f.has("partial_rotary_factor") && f.number("partial_rotary_factor", 1.0) != 1.0)
    throw f.err("partial_rotary_factor", "value " + f.j.at("partial_rotary_factor").dump() + " is not supported (only 1.0)");
  f.must_be_off("attn_logit_softcapping");
  f.must_be_off("final_logit_softcapping");

  // Sliding-window attention equals full attention while the sequence fits in the window, so a
  // window only lowers the longest context we accept (an error names the field), never changes
  // the arithmetic.
  bool windowed = false;
  if (mt == "mistral") windowed = f.has("sliding_window");
  if (mt == "qwen2" || mt == "qwen3") windowed = f.boolean("use_sliding_window", false);
  if (f.has("layer_types")) {
    for (const auto& t : f.j.at("layer_types"))
      if (t != "full_attention") windowed = true;
  }
  if (windowed) {
    int64_t w = f.positive("sliding_window");
    if (w < c.max_positions) {
      c.max_positions = w;
      c.max_positions_field = "sliding_window";
    }
  }
  read_special_tokens(f, c);
}

// The defaults of transformers' Gemma2Config and Gemma3TextConfig: transformers fills a field a
// config.json leaves out with these, and published configs rely on it (google/gemma-3-4b-it's
// text_config names six fields), so they are the model's values. An explicit null stays null
// (soft-capping off).
json gemma_defaults(bool gemma3) {
  json d = {{"vocab_size", gemma3 ? 262208 : 256000},
            {"hidden_size", 2304},
            {"intermediate_size", 9216},
            {"num_hidden_layers", 26},
            {"num_attention_heads", 8},
            {"num_key_value_heads", 4},
            {"head_dim", 256},
            {"hidden_activation", "gelu_pytorch_tanh"},
            {"max_position_embeddings", gemma3 ? 131072 : 8192},
            {"rms_norm_eps", 1e-6},
            {"bos_token_id", 2},
            {"eos_token_id", 1},
            {"tie_word_embeddings", true},
            {"rope_theta", gemma3 ? 1000000.0 : 10000.0},
            {"attention_bias", false},
            {"query_pre_attn_scalar", 256},
            {"sliding_window", 4096}};
  if (gemma3) {
    d["rope_local_base_freq"] = 10000.0;
    d["sliding_window_pattern"] = 6;
  } else {
    d["final_logit_softcapping"] = 30.0;
    d["attn_logit_softcapping"] = 50.0;
  }
  return d;
}

// sqrt(d_model) as transformers multiplies the embedding by it: a tensor of the model's dtype
// (config "dtype", or "torch_dtype" in 4.x), so bf16 models use the bf16 rounding (sqrt(3584)
// = 59.87 becomes 59.75).
float gemma_embed_scale(int d_model, const std::string& dtype) {
  const float s = float(std::sqrt(double(d_model)));
  if (dtype == "bfloat16") return bf16_to_f32(f32_to_bf16(s));
  if (dtype == "float16") return f16_to_f32(f32_to_f16(s));
  return s;
}

struct RopeParams {
  double theta;
  RopeScaling scaling;
};

// A flat rope_parameters object {rope_theta, rope_type, factor...} (transformers 5.x).
RopeParams parse_rope_parameters(const Fields& f, const json& rp, const std::string& field, double theta) {
  if (!rp.is_object()) throw f.err(field, "expected an object, found " + rp.dump());
  RopeParams r{theta, parse_rope_scaling(f, rp, field)};
  if (rp.contains("rope_theta")) r.theta = f.number(rp.at("rope_theta"), field + ".rope_theta");
  if (!(r.theta > 0)) throw f.err(field + ".rope_theta", "must be positive");
  return r;
}

// Gemma 2 ("gemma2"), Gemma 3's text model ("gemma3_text"), and the text tower of a multimodal
// Gemma 3 ("gemma3", Gemma3ForConditionalGeneration, under "text_config").
void parse_gemma(const Fields& outer, ModelConfig& c) {
  const std::string& mt = c.model_type;
  const bool multimodal = mt == "gemma3";
  const bool gemma3 = mt != "gemma2";
  if (mt == "gemma2") check_architectures(outer, {"Gemma2ForCausalLM", "Gemma2Model"});
  if (mt == "gemma3_text") check_architectures(outer, {"Gemma3ForCausalLM", "Gemma3TextModel"});
  const json* text = &outer.j;
  if (multimodal) {
    check_architectures(outer, {"Gemma3ForConditionalGeneration"});
    if (!outer.has("text_config"))
      throw outer.err("text_config", "missing (a multimodal Gemma 3 config holds its text model there; without it there "
                                     "is no text tower to run)");
    text = &outer.j.at("text_config");
    if (!text->is_object()) throw outer.err("text_config", "expected an object, found " + text->dump());
  }
  json merged = gemma_defaults(gemma3);
  for (auto it = text->begin(); it != text->end(); ++it) merged[it.key()] = it.value();
  const Fields f{merged, outer.where, multimodal ? "text_config." : ""};
  if (multimodal && f.string("model_type", "gemma3_text") != "gemma3_text")
    throw f.err("model_type", "'" + f.string("model_type", "") + "' is not supported (expected gemma3_text)");

  c.arch = ModelArch::gemma;
  c.qk_norm = gemma3;
  c.n_layers = to_int(f, "num_hidden_layers", f.positive("num_hidden_layers"));
  c.d_model = to_int(f, "hidden_size", f.positive("hidden_size"));
  c.n_heads = to_int(f, "num_attention_heads", f.positive("num_attention_heads"));
  c.n_kv_heads = to_int(f, "num_key_value_heads", f.positive("num_key_value_heads"));
  if (c.n_heads % c.n_kv_heads)
    throw f.err("num_key_value_heads", std::to_string(c.n_kv_heads) + " does not divide num_attention_heads " + std::to_string(c.n_heads));
  c.head_dim = to_int(f, "head_dim", f.positive("head_dim"));
  if (c.head_dim % 2) throw f.err("head_dim", "must be even for rotary embeddings, found " + std::to_string(c.head_dim));
  c.rotary_dims = c.head_dim;
  c.d_mlp = to_int(f, "intermediate_size", f.positive("intermediate_size"));
  c.vocab = to_int(f, "vocab_size", f.positive("vocab_size"));
  c.max_positions = f.positive("max_position_embeddings");
  c.max_positions_field = f.prefix + "max_position_embeddings";
  c.norm_eps = float(f.number("rms_norm_eps", 1e-6));
  c.act = parse_activation(f, "hidden_activation", "gelu_pytorch_tanh");
  c.tied_head = f.boolean("tie_word_embeddings", true);
  c.qkv_bias = c.o_bias = f.boolean("attention_bias", false);
  f.must_be_off("use_bidirectional_attention");  // Gemma 3's encoder use: not causal

  const double scalar = f.number("query_pre_attn_scalar", 256);
  if (!(scalar > 0)) throw f.err("query_pre_attn_scalar", "must be positive");
  c.query_pre_attn_scalar = scalar;
  auto cap = [&](const char* k) {
    const double v = f.number(k, 0.0);
    if (v < 0) throw f.err(k, "must be positive or null");
    return float(v);
  };
  c.attn_softcap = cap("attn_logit_softcapping");
  c.final_softcap = cap("final_logit_softcapping");
  std::string dtype = f.string("dtype", f.string("torch_dtype", ""));
  if (dtype.empty() && multimodal) {
    const Fields top{outer.j, outer.where, ""};
    dtype = top.string("dtype", top.string("torch_dtype", ""));
  }
  c.embed_scale = gemma_embed_scale(c.d_model, dtype);

  // Which layers slide: layer_types (transformers >= 4.53 and 5.x), else Gemma 2's alternation
  // (even layers) or Gemma 3's sliding_window_pattern (every P-th layer is global).
  c.layer_sliding.assign(size_t(c.n_layers), 0);
  if (f.has("layer_types")) {
    const json& lt = f.j.at("layer_types");
    if (!lt.is_array() || lt.size() != size_t(c.n_layers))
      throw f.err("layer_types", "expected a list of " + std::to_string(c.n_layers) + " layer types, found " + lt.dump());
    for (size_t i = 0; i < lt.size(); i++) {
      if (lt[i] == "sliding_attention") c.layer_sliding[i] = 1;
      else if (lt[i] != "full_attention")
        throw f.err("layer_types[" + std::to_string(i) + "]",
                    lt[i].dump() + " is not supported (expected sliding_attention or full_attention)");
    }
  } else if (!gemma3) {
    for (int l = 0; l < c.n_layers; l += 2) c.layer_sliding[size_t(l)] = 1;
  } else {
    const char* key = f.has("_sliding_window_pattern") && !text->contains("sliding_window_pattern") ? "_sliding_window_pattern"
                                                                                                   : "sliding_window_pattern";
    const int64_t p = f.positive(key);
    for (int l = 0; l < c.n_layers; l++) c.layer_sliding[size_t(l)] = (l + 1) % p != 0;
  }
  bool any_sliding = false;
  for (uint8_t s : c.layer_sliding) any_sliding = any_sliding || s;
  if (any_sliding) c.sliding_window = f.positive("sliding_window");
  else c.layer_sliding.clear();

  // Rotary embeddings. 5.x: rope_parameters, flat (Gemma 2) or one per layer type (Gemma 3).
  // 4.x: rope_theta and rope_scaling, and for Gemma 3 rope_local_base_freq on the sliding layers
  // with rope_scaling on the global ones only.
  RopeParams full{f.number("rope_theta", 10000.0), {}};
  if (f.has("rope_scaling")) full.scaling = parse_rope_scaling(f, f.j.at("rope_scaling"), "rope_scaling");
  RopeParams local = gemma3 ? RopeParams{f.number("rope_local_base_freq", 10000.0), {}} : full;
  if (f.has("rope_parameters")) {
    const json& rp = f.j.at("rope_parameters");
    if (rp.is_object() && (rp.contains("full_attention") || rp.contains("sliding_attention"))) {
      for (auto it = rp.begin(); it != rp.end(); ++it)
        if (it.key() != "full_attention" && it.key() != "sliding_attention")
          throw f.err("rope_parameters." + it.key(), "is not a layer type (expected full_attention or sliding_attention)");
      if (rp.contains("full_attention"))
        full = parse_rope_parameters(f, rp.at("full_attention"), "rope_parameters.full_attention", full.theta);
      if (rp.contains("sliding_attention"))
        local = parse_rope_parameters(f, rp.at("sliding_attention"), "rope_parameters.sliding_attention", local.theta);
    } else {
      full = local = parse_rope_parameters(f, rp, "rope_parameters", full.theta);
    }
  }
  if (!(full.theta > 0)) throw f.err("rope_theta", "must be positive");
  if (!(local.theta > 0)) throw f.err("rope_local_base_freq", "must be positive");
  c.rope_theta = full.theta;
  c.rope_scaling = full.scaling;
  c.sliding_rope_theta = local.theta;
  c.sliding_rope_scaling = local.scaling;
  read_special_tokens(f, c);
}

// GPT-NeoX (Pythia): 5.x spells the rotary settings rope_parameters {rope_theta,
// partial_rotary_factor}; 4.x rotary_emb_base and rotary_pct (defaults 10000 and 0.25).
void parse_neox(const Fields& f, ModelConfig& c) {
  check_architectures(f, {"GPTNeoXForCausalLM", "GPTNeoXModel"});
  c.arch = ModelArch::neox;
  c.n_layers = to_int(f, "num_hidden_layers", f.positive("num_hidden_layers"));
  c.d_model = to_int(f, "hidden_size", f.positive("hidden_size"));
  c.n_heads = to_int(f, "num_attention_heads", f.positive("num_attention_heads"));
  if (c.d_model % c.n_heads)
    throw f.err("num_attention_heads", std::to_string(c.n_heads) + " does not divide hidden_size " + std::to_string(c.d_model));
  c.n_kv_heads = c.n_heads;
  c.head_dim = c.d_model / c.n_heads;
  c.d_mlp = to_int(f, "intermediate_size", f.positive("intermediate_size"));
  c.vocab = to_int(f, "vocab_size", f.positive("vocab_size"));
  c.max_positions = f.positive("max_position_embeddings");
  c.max_positions_field = "max_position_embeddings";
  c.norm_eps = float(f.number("layer_norm_eps", 1e-5));
  c.act = parse_activation(f, "hidden_act", "gelu");
  c.tied_head = f.boolean("tie_word_embeddings", false);
  c.qkv_bias = c.o_bias = f.boolean("attention_bias", true);
  c.mlp_bias = true;
  c.parallel_residual = f.boolean("use_parallel_residual", true);

  std::string pct_field = "rotary_pct";
  double pct = f.number("rotary_pct", 0.25);
  c.rope_theta = f.number("rotary_emb_base", f.number("rope_theta", 10000.0));
  if (f.has("partial_rotary_factor")) {
    pct_field = "partial_rotary_factor";
    pct = f.number("partial_rotary_factor", pct);
  }
  if (f.has("rope_scaling")) c.rope_scaling = parse_rope_scaling(f, f.j.at("rope_scaling"), "rope_scaling");
  if (f.has("rope_parameters")) {
    const json& rp = f.j.at("rope_parameters");
    RopeParams r = parse_rope_parameters(f, rp, "rope_parameters", c.rope_theta);
    c.rope_theta = r.theta;
    c.rope_scaling = r.scaling;
    if (rp.contains("partial_rotary_factor")) {
      pct_field = "rope_parameters.partial_rotary_factor";
      pct = f.number(rp.at("partial_rotary_factor"), pct_field);
    }
  }
  if (!(c.rope_theta > 0)) throw f.err("rope_theta", "must be positive");
  if (!(pct >= 0 && pct <= 1)) throw f.err(pct_field, "must lie in [0, 1], found " + json(pct).dump());
  // transformers: rotary_ndims = int(head_size * rotary_pct), truncated.
  c.rotary_dims = int(double(c.head_dim) * pct);
  if (c.rotary_dims % 2)
    throw f.err(pct_field, json(pct).dump() + " of head_dim " + std::to_string(c.head_dim) + " leaves " +
                               std::to_string(c.rotary_dims) + " rotary dimensions, an odd number (rotary pairs them)");
  c.sliding_rope_theta = c.rope_theta;
  c.sliding_rope_scaling = c.rope_scaling;
  read_special_tokens(f, c);
}

}  // namespace

ModelConfig parse_model_config(const json& j, const std::string& where) {
  if (!j.is_object()) throw InputError(where + ": not a JSON object");
  Fields f{j, where, ""};
  ModelConfig c;
  if (!f.has("model_type")) throw f.err("model_type", "missing (cannot tell the architecture)");
  c.model_type = f.string("model_type", "");
  c.name = f.has("_name_or_path") && j.at("_name_or_path").is_string() ? j.at("_name_or_path").get<std::string>() : "";
  if (c.model_type == "gpt2")
    parse_gpt2(f, c);
  else if (c.model_type == "llama" || c.model_type == "mistral" || c.model_type == "qwen2" || c.model_type == "qwen3")
    parse_llama(f, c);
  else if (c.model_type == "gemma2" || c.model_type == "gemma3_text" || c.model_type == "gemma3")
    parse_gemma(f, c);
  else if (c.model_type == "gpt_neox")
    parse_neox(f, c);
  else
    throw f.err("model_type", "'" + c.model_type +
                                  "' is not supported (supported: gpt2, llama, mistral, qwen2, qwen3, gemma2, gemma3_text, "
                                  "gemma3, gpt_neox)");
  return c;
}

ModelConfig load_model_config(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / "config.json").string();
  if (!std::filesystem::is_directory(dir)) throw InputError(dir + ": not a model directory (no such directory)");
  if (!std::filesystem::exists(path)) throw InputError(path + ": missing (a model directory needs config.json)");
  return parse_model_config(read_json_file(path), path);
}

float ModelConfig::attn_scale(int layer) const {
  if (arch == ModelArch::gemma) return float(1.0 / std::sqrt(query_pre_attn_scalar));
  double s = 1.0;
  if (arch != ModelArch::gpt2 || scale_attn_weights) s = 1.0 / std::sqrt(double(head_dim));
  if (arch == ModelArch::gpt2 && scale_attn_by_inverse_layer_idx) s /= double(layer + 1);
  return float(s);
}

bool ModelConfig::separate_sliding_rope() const {
  const RopeScaling &a = rope_scaling, &b = sliding_rope_scaling;
  return sliding_rope_theta != rope_theta || a.type != b.type || a.factor != b.factor ||
         a.low_freq_factor != b.low_freq_factor || a.high_freq_factor != b.high_freq_factor ||
         a.original_max_positions != b.original_max_positions;
}

std::vector<double> ModelConfig::rope_inv_freq(bool sliding) const {
  const int half = rotary_dims / 2;
  const double theta = sliding ? sliding_rope_theta : rope_theta;
  std::vector<double> inv(static_cast<size_t>(half));
  for (int i = 0; i < half; i++) inv[size_t(i)] = 1.0 / std::pow(theta, double(2 * i) / double(rotary_dims));
  const RopeScaling& r = sliding ? sliding_rope_scaling : rope_scaling;
  if (r.type == RopeScalingType::linear) {
    for (auto& v : inv) v /= r.factor;
  } else if (r.type == RopeScalingType::llama3) {
    // Llama 3.1: wavelengths longer than original/low_freq_factor are slowed by `factor`, shorter
    // than original/high_freq_factor kept, and those between interpolated smoothly.
    const double pi = 3.14159265358979323846;
    double low_wavelen = r.original_max_positions / r.low_freq_factor;
    double high_wavelen = r.original_max_positions / r.high_freq_factor;
    for (auto& v : inv) {
      double wavelen = 2 * pi / v;
      if (wavelen > low_wavelen) {
        v = v / r.factor;
      } else if (wavelen >= high_wavelen) {
        double smooth = (r.original_max_positions / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
        v = (1 - smooth) * v / r.factor + smooth * v;
      }
    }
  }
  return inv;
}

int64_t ModelConfig::matmul_params(int layers, bool with_head) const {
  int64_t D = d_model, attn = int64_t(n_heads) * head_dim;
  int64_t per_layer = D * qkv_width() + attn * D + (gated_mlp() ? 3 : 2) * D * d_mlp;
  return per_layer * layers + (with_head ? int64_t(vocab) * D : 0);
}

static const char* const kHookKinds[] = {"resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post"};

std::string HookPoint::name() const {
  if (kind == HookKind::attn_z) return "blocks." + std::to_string(layer) + ".attn.hook_z";
  return "blocks." + std::to_string(layer) + ".hook_" + kHookKinds[int(kind)];
}

std::vector<HookPoint> model_hooks(const ModelConfig& cfg) {
  std::vector<HookPoint> v;
  for (int l = 0; l < cfg.n_layers; l++)
    for (HookKind k : {HookKind::resid_pre, HookKind::attn_z, HookKind::attn_out, HookKind::resid_mid, HookKind::mlp_out,
                       HookKind::resid_post})
      if (k != HookKind::resid_mid || !cfg.parallel_residual) v.push_back({l, k});
  return v;
}

int64_t hook_width(const HookPoint& h, const ModelConfig& cfg) {
  return h.kind == HookKind::attn_z ? int64_t(cfg.n_heads) * cfg.head_dim : cfg.d_model;
}

HookPoint parse_hook(const std::string& name, const ModelConfig& cfg) {
  const std::string bad = "hook '" + name + "': ";
  const std::string expect = "expected blocks.L.hook_{resid_pre,attn_out,resid_mid,mlp_out,resid_post} or blocks.L.attn.hook_z";
  if (name.rfind("blocks.", 0) != 0) throw UsageError(bad + "unknown hook name (" + expect + ")");
  size_t i = 7, j = i;
  while (j < name.size() && isdigit(static_cast<unsigned char>(name[j]))) j++;
  if (j == i || j - i > 9 || j >= name.size() || name[j] != '.') throw UsageError(bad + "unknown hook name (" + expect + ")");
  HookPoint h;
  h.layer = std::stoi(name.substr(i, j - i));
  std::string kind = name.substr(j + 1);
  bool found = false;
  for (int k = 0; k < 5; k++) {
    if (kind == std::string("hook_") + kHookKinds[k]) {
      h.kind = HookKind(k);
      found = true;
    }
  }
  if (kind == "attn.hook_z") {
    h.kind = HookKind::attn_z;
    found = true;
  }
  if (!found) throw UsageError(bad + "unknown hook name (" + expect + ")");
  if (h.layer >= cfg.n_layers)
    throw UsageError(bad + "layer " + std::to_string(h.layer) + " is out of range (the model has " +
                     std::to_string(cfg.n_layers) + " layers, 0-" + std::to_string(cfg.n_layers - 1) + ")");
  if (h.kind == HookKind::resid_mid && cfg.parallel_residual)
    throw UsageError(bad + "this " + cfg.model_type +
                     " model has a parallel residual (attention and the MLP both read resid_pre), so there is no "
                     "resid_mid; resid_post = resid_pre + attn_out + mlp_out");
  return h;
}

}  // namespace sae
