// bf16 compute (lib/model/model.h, Compute::bf16) on the CPU backend, where it is the emulation of what
// the CUDA backend runs: the same weight and activation roundings (lib/base/dtype.h's f32_to_bf16),
// the same f32 arithmetic elsewhere, products of bf16 values summed in f32. sae-selftest compares
// the GPU's bf16 pass with this emulation; these tests fix what the emulation itself computes.
//
// Tolerances. bf16 keeps 8 significant bits, so rounding to nearest moves a value by at most
// u = 2^-9 (~2e-3) of itself. A product of two rounded values is off by at most ~2u = 2^-8, and a
// sum of such products by at most 2^-8 times the sum of the magnitudes of its terms (plus f32
// rounding); for terms of random sign the actual error is a random walk, about u * sqrt(2) of the
// result's scale. Through a model, the projections of each layer add such errors to the residual
// stream, and attention and the norms pass them on. The tolerances below are the measured worst
// errors with a margin of 2-3x, each with its reasoning; that the emulation rounds at all is
// checked by its error landing far above the f32 pass's (~1e-6, test_model_reference.cpp).
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "backend/backend.h"
#include "base/dtype.h"
#include "model/model.h"
#include "model/ops.h"
#include "model/random.h"
#include "stream/safetensors.h"
#include "support/model_util.h"

using namespace sae;
using namespace model_test;

namespace {

// Emulated bf16 pass against float64 references (the shared models' and the naive pass's):
//  - hooks and logits, as a fraction of each tensor's largest magnitude: kBf16Tol = 3e-2. One
//    projection's output is off by about u * sqrt(2) ~ 3e-3 of its scale (random walk of the
//    product errors), its worst element a few times that; five layers of projections feed the
//    residual stream. Measured worst: 1.5e-2 (stories260K hooks), 1.2e-2 (tiny-gpt2 logits),
//    1.3e-2 (qwen3-random, gemma2-random hooks).
//    Final soft-capping (Gemma 2: cap * tanh(z / cap)) passes an error in the raw logit z on
//    times tanh' <= 1, but shrinks the scale it is measured against from max |z| to the capped
//    maximum; so the capped logits get kBf16Tol times max |z| / max |capped| (z recovered from the
//    reference as cap * atanh(y / cap); 5.8 for gemma2-random, whose cap of 3 is small on
//    purpose). Measured: 2.65e-2 there.
//  - per-token NLL, absolute: kBf16NllTol = 0.2 nats. An NLL is lse(logits) - logit[target], so
//    its error is at most twice the logits' largest absolute error, i.e. 2 * 1e-2 of a logit
//    scale that reaches 22 for stories260K (a bound of ~0.4). Measured worst: 0.092 (qwen2 fixture),
//    0.075 (stories260K).
//  - mean NLL of a sequence (the CE loss a user reads), absolute: kBf16MeanNllTol = 3e-2 nats; the
//    per-token errors have both signs and partly cancel. Measured worst: 1.2e-2 (qwen2 fixture),
//    9.2e-3 (stories260K).
constexpr double kBf16Tol = 3e-2;
constexpr double kBf16NllTol = 0.2;
constexpr double kBf16MeanNllTol = 3e-2;
// The emulation must differ from f32 by far more than f32 rounding does (~1e-6; the f32 tests
// allow 1e-4): each bf16 rounding alone moves a value by up to 2e-3 of itself.
constexpr double kRoundsAtLeast = 1e-3;

std::vector<float> bf16_round(const std::vector<float>& v) {
  std::vector<float> r(v.size());
  for (size_t i = 0; i < v.size(); i++) r[i] = bf16_to_f32(f32_to_bf16(v[i]));
  return r;
}

std::vector<float> randn_vec(std::mt19937& g, size_t n) {
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

struct Errors {
  double hooks = 0, logits = 0, nll = 0, mean_nll = 0;
  double logit_scale_ratio = 1;  // max |raw logit| / max |capped logit| (1 without soft-capping)
};

int count_cases(const SafeTensors& ref) {
  int n = 0;
  while (ref.has("case" + std::to_string(n) + ".tokens")) n++;
  return n;
}

// Every hook, the logits and the NLL of every reference case of a shared model, computed with
// `compute` on the CPU backend, against the float64 reference.
Errors against_reference(const std::string& name, Compute compute) {
  const std::string dir = shared_model(name);
  auto be = make_cpu_backend();
  Model m(dir, *be, compute);
  EXPECT_EQ(m.compute(), compute);
  SafeTensors ref(dir + "/reference.safetensors");
  ForwardOptions opt;
  opt.capture = model_hooks(m.config());
  opt.want_logits = true;
  opt.want_nll = true;
  Errors e;
  for (int i = 0, n = count_cases(ref); i < n; i++) {
    const std::string c = "case" + std::to_string(i) + ".";
    std::vector<int32_t> tok = ref.read_i32(c + "tokens");
    ForwardResult r = m.forward(tok.data(), 1, int64_t(tok.size()), opt);
    for (size_t h = 0; h < opt.capture.size(); h++)
      if (ref.has(c + opt.capture[h].name()))  // the older references have no attn.hook_z
        e.hooks = std::max(e.hooks, scaled_err(r.captured[h], ref.read_f32(c + opt.capture[h].name())));
    if (ref.has(c + "logits")) {
      const std::vector<float> want = ref.read_f32(c + "logits");
      e.logits = std::max(e.logits, scaled_err(r.logits, want));
      const double cap = m.config().final_softcap;
      if (cap > 0) {
        double raw = 0, capped = 0;
        for (float y : want) {
          raw = std::max(raw, std::fabs(cap * std::atanh(double(y) / cap)));
          capped = std::max(capped, std::fabs(double(y)));
        }
        e.logit_scale_ratio = std::max(e.logit_scale_ratio, raw / capped);
      }
    }
    std::vector<float> nll = ref.read_f32(c + "nll");
    EXPECT_EQ(r.nll.size(), nll.size());
    double sum = 0;
    for (size_t t = 0; t < nll.size() && t < r.nll.size(); t++) {
      e.nll = std::max(e.nll, std::fabs(double(r.nll[t]) - nll[t]));
      sum += double(r.nll[t]) - nll[t];
    }
    e.mean_nll = std::max(e.mean_nll, std::fabs(sum / double(nll.size())));
  }
  std::printf("[ %s %s ] worst scaled error hooks %.2e, logits %.2e (soft-cap scale ratio %.2f); worst NLL error %.2e, "
              "of a mean NLL %.2e\n",
              name.c_str(), compute_name(compute), e.hooks, e.logits, e.logit_scale_ratio, e.nll, e.mean_nll);
  return e;
}

void check_emulation(const std::string& name) {
  const Errors b = against_reference(name, Compute::bf16);
  EXPECT_LE(b.hooks, kBf16Tol) << name;
  EXPECT_LE(b.logits, kBf16Tol * b.logit_scale_ratio) << name;
  EXPECT_LE(b.nll, kBf16NllTol) << name;
  EXPECT_LE(b.mean_nll, kBf16MeanNllTol) << name;
  EXPECT_GE(std::max(b.hooks, b.logits), kRoundsAtLeast) << name << ": the bf16 pass computes like the f32 one";
}

}  // namespace

// gemm_bf16 on the host backend: the result is the f32-accumulated sum of the exact products of
// the bf16-rounded inputs (checked against a float64 sum over the rounded values, to f32
// accumulation error), and it differs from the product of the unrounded inputs within the bound
// that bf16 rounding allows: |error| <= 2^-8 * sum |a_i b_i| per element (each input moves by at
// most 2^-9 of itself), plus f32 accumulation.
TEST(Bf16Emulation, GemmBf16SumsExactProductsOfRoundedInputsInF32) {
  auto be = make_cpu_backend();
  std::mt19937 g(11);
  const int64_t m = 37, n = 53, k = 300;
  double worst_rounded = 0, worst_unrounded = 0, worst_bound_ratio = 0;
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++) {
      std::vector<float> a = randn_vec(g, size_t(m * k)), b = randn_vec(g, size_t(k * n)), c0 = randn_vec(g, size_t(m * n));
      std::vector<uint16_t> ah(a.size()), bh(b.size());
      encode_f32(DType::bf16, a.data(), a.size(), ah.data());
      encode_f32(DType::bf16, b.data(), b.size(), bh.data());
      const std::vector<float> ar = bf16_round(a), br = bf16_round(b);
      const int64_t lda = ta ? m : k, ldb = tb ? k : n;
      auto A = [&](const std::vector<float>& v, int64_t i, int64_t p) { return double(ta ? v[size_t(p * lda + i)] : v[size_t(i * lda + p)]); };
      auto B = [&](const std::vector<float>& v, int64_t p, int64_t j) { return double(tb ? v[size_t(j * ldb + p)] : v[size_t(p * ldb + j)]); };
      std::vector<float> c = c0;
      be->gemm_bf16(ta, tb, m, n, k, 0.5f, ah.data(), lda, bh.data(), ldb, 0.25f, c.data(), n);
      std::vector<double> want_rounded(size_t(m * n)), want_exact(size_t(m * n));
      for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
          double sr = 0, se = 0, mag = 0;
          for (int64_t p = 0; p < k; p++) {
            sr += A(ar, i, p) * B(br, p, j);
            se += A(a, i, p) * B(b, p, j);
            mag += std::fabs(A(a, i, p) * B(b, p, j));
          }
          const size_t o = size_t(i * n + j);
          want_rounded[o] = 0.5 * sr + 0.25 * c0[o];
          want_exact[o] = 0.5 * se + 0.25 * c0[o];
          // 2^-8 of the terms' magnitudes (scaled by alpha), plus 1e-5 of them for f32 sums.
          const double bound = 0.5 * mag * (std::ldexp(1.0, -8) + 1e-5);
          worst_bound_ratio = std::max(worst_bound_ratio, std::fabs(c[o] - want_exact[o]) / bound);
        }
      // f32 accumulation of 300 terms: ~1e-7 of the scale; 1e-5 leaves a wide margin.
      const double er = scaled_err(c, want_rounded), eu = scaled_err(c, want_exact);
      EXPECT_LE(er, 1e-5) << "ta " << ta << " tb " << tb;
      worst_rounded = std::max(worst_rounded, er);
      worst_unrounded = std::max(worst_unrounded, eu);
    }
  EXPECT_LE(worst_bound_ratio, 1.0);
  // The inputs really are rounded: the error against the unrounded product is bf16-sized.
  EXPECT_GE(worst_unrounded, kRoundsAtLeast);
  std::printf("[ gemm_bf16 ] vs rounded inputs %.2e, vs unrounded inputs %.2e (%.2f of the bf16 bound)\n",
              worst_rounded, worst_unrounded, worst_bound_ratio);
}

// The op that rounds GEMM inputs is lib/base/dtype.h's f32_to_bf16, element for element (ties to even,
// NaN kept), whatever the split among the pool's threads.
TEST(Bf16Emulation, ToBf16OpIsDtypeRounding) {
  auto ops = make_cpu_transformer_ops();
  std::mt19937 g(3);
  std::vector<float> x = randn_vec(g, 10007);
  x[0] = 1.0f + 1.0f / 256;  // a tie: rounds to even (1.0)
  x[1] = 1.0f + 3.0f / 256;  // a tie: rounds to even (1 + 2^-6)
  x[2] = -0.0f;
  x[3] = INFINITY;
  x[4] = 3.4e38f;  // above the midpoint between the largest bf16 (~3.39e38) and Inf: Inf
  std::vector<uint16_t> y(x.size());
  ops->to_bf16(x.data(), y.data(), int64_t(x.size()));
  for (size_t i = 0; i < x.size(); i++) ASSERT_EQ(y[i], f32_to_bf16(x[i])) << i;
  EXPECT_EQ(y[0], 0x3f80);
  EXPECT_EQ(y[1], 0x3f82);
  EXPECT_EQ(y[4], 0x7f80);
}

TEST(Bf16Emulation, Stories260KAgainstFloat64Reference) {
  NEED_SHARED();
  check_emulation("stories260K");
}

TEST(Bf16Emulation, Gpt2RandomAgainstFloat64Reference) {
  NEED_SHARED();
  check_emulation("gpt2-random");
}

TEST(Bf16Emulation, Qwen3RandomAgainstFloat64Reference) {
  NEED_SHARED();
  check_emulation("qwen3-random");
}

TEST(Bf16Emulation, Gemma2RandomAgainstFloat64Reference) {
  NEED_SHARED();
  check_emulation("gemma2-random");
}

TEST(Bf16Emulation, Gemma3RandomAgainstFloat64Reference) {
  NEED_SHARED();
  check_emulation("gemma3-random");
}

TEST(Bf16Emulation, PythiaRandomAgainstFloat64Reference) {
  NEED_SHARED();
  check_emulation("pythia-random");
}

TEST(Bf16Emulation, TinyGpt2AgainstFloat64Reference) {
  NEED_SHARED();
  check_emulation("tiny-gpt2");
}

// The embedding is read from the bf16 table: blocks.0.hook_resid_pre is the reference embedding
// rounded to bf16, exactly (stories260K has no position embeddings).
TEST(Bf16Emulation, EmbeddingIsTheBf16Table) {
  NEED_SHARED();
  const std::string dir = shared_model("stories260K");
  auto be = make_cpu_backend();
  Model m(dir, *be, Compute::bf16);
  SafeTensors ref(dir + "/reference.safetensors");
  std::vector<int32_t> tok = ref.read_i32("case0.tokens");
  ForwardOptions opt;
  opt.capture = {parse_hook("blocks.0.hook_resid_pre", m.config())};
  ForwardResult r = m.forward(tok.data(), 1, int64_t(tok.size()), opt);
  const std::vector<float> want = bf16_round(ref.read_f32("case0.blocks.0.hook_resid_pre"));
  ASSERT_EQ(r.captured[0].size(), want.size());
  for (size_t i = 0; i < want.size(); i++) ASSERT_EQ(r.captured[0][i], want[i]) << i;
}

// Half the memory: every matrix (and the token table) in bf16, the rest in f32. For a tied head
// the token table is the head and is held once.
TEST(Bf16Emulation, MatricesAreHeldInBf16) {
  for (bool tied : {true, false}) {
    TempDir d;
    json cfg = {{"model_type", "llama"},        {"architectures", {"LlamaForCausalLM"}}, {"hidden_size", 32},
                {"intermediate_size", 40},      {"num_hidden_layers", 2},  {"num_attention_heads", 4},
                {"num_key_value_heads", 2},     {"vocab_size", 50},        {"max_position_embeddings", 64},
                {"rms_norm_eps", 1e-5},         {"hidden_act", "silu"},    {"tie_word_embeddings", tied}};
    write_random_model(d.path(), cfg, 5);
    auto be = make_cpu_backend();
    Model f(d.path(), *be, Compute::f32), b(d.path(), *be, Compute::bf16);
    const ModelConfig& c = f.config();
    // The matrices: every projection, the token table, and the head when it is a separate one.
    const int64_t matrices = c.matmul_params(c.n_layers, !tied) + int64_t(c.vocab) * c.d_model;
    const int64_t small = 2 * c.n_layers * c.d_model + c.d_model;  // the norm weights
    EXPECT_EQ(f.weight_bytes(), size_t(4 * (matrices + small)));
    EXPECT_EQ(b.weight_bytes(), size_t(2 * matrices + 4 * small));
  }
}

// Fixtures for what the shared models lack: an untied bf16 head, biases added after bf16
// products (GPT-2's on every projection, Qwen2's q/k/v), against the naive float64 pass.
TEST(Bf16Emulation, UntiedHeadsAndBiasesAgainstNaivePass) {
  json gpt2 = {{"model_type", "gpt2"},  {"architectures", {"GPT2LMHeadModel"}}, {"n_layer", 2}, {"n_embd", 32},
               {"n_head", 4},           {"n_positions", 32},  {"vocab_size", 60},  {"activation_function", "gelu_new"},
               {"layer_norm_epsilon", 1e-5}, {"tie_word_embeddings", false}};
  json qwen = {{"model_type", "qwen2"},        {"architectures", {"Qwen2ForCausalLM"}}, {"hidden_size", 32},
               {"intermediate_size", 48},      {"num_hidden_layers", 2},  {"num_attention_heads", 4},
               {"num_key_value_heads", 2},     {"vocab_size", 60},        {"max_position_embeddings", 64},
               {"rms_norm_eps", 1e-6},         {"hidden_act", "silu"},    {"tie_word_embeddings", false}};
  for (const json& cfg : {gpt2, qwen}) {
    TempDir d;
    Tensors t = write_random_model(d.path(), cfg, 21);
    auto be = make_cpu_backend();
    Model m(d.path(), *be, Compute::bf16);
    std::mt19937 g(8);
    std::vector<int32_t> tok(13);
    for (auto& x : tok) x = int32_t(g() % uint32_t(m.config().vocab));
    ForwardOptions o;
    for (int l = 0; l < m.config().n_layers; l++)
      for (int k = 0; k < 5; k++) o.capture.push_back({l, HookKind(k)});
    o.want_logits = true;
    o.want_nll = true;
    ForwardResult r = m.forward(tok.data(), 1, int64_t(tok.size()), o);
    NaiveOut ref = naive_forward(m.config(), getter(t), tok);
    double worst = 0;
    for (size_t i = 0; i < o.capture.size(); i++) {
      const double e = scaled_err(r.captured[i], ref.hooks[o.capture[i].name()]);
      EXPECT_LE(e, kBf16Tol) << cfg["model_type"] << " " << o.capture[i].name();
      worst = std::max(worst, e);
    }
    const double el = scaled_err(r.logits, ref.logits);
    EXPECT_LE(el, kBf16Tol) << cfg["model_type"] << " logits";
    double en = 0, sum = 0;
    for (size_t i = 0; i < ref.nll.size(); i++) {
      en = std::max(en, std::fabs(r.nll[i] - ref.nll[i]));
      sum += r.nll[i] - ref.nll[i];
    }
    EXPECT_LE(en, kBf16NllTol) << cfg["model_type"] << " nll";
    EXPECT_LE(std::fabs(sum / double(ref.nll.size())), kBf16MeanNllTol) << cfg["model_type"] << " mean nll";
    EXPECT_GE(std::max(worst, el), kRoundsAtLeast) << cfg["model_type"];
    std::printf("[ %s bf16 fixture ] worst scaled error hooks %.2e, logits %.2e; worst NLL error %.2e, of the mean %.2e\n",
                cfg["model_type"].get<std::string>().c_str(), worst, el, en, std::fabs(sum / double(ref.nll.size())));
  }
}

// The tools' rule and names: bf16 runs on CUDA only; the CPU refuses it in one line.
TEST(Bf16Emulation, ComputeNamesAndTheCpuRule) {
  EXPECT_EQ(parse_compute("f32"), Compute::f32);
  EXPECT_EQ(parse_compute("bf16"), Compute::bf16);
  EXPECT_STREQ(compute_name(Compute::bf16), "bf16");
  EXPECT_STREQ(compute_name(Compute::f32), "f32");
  try {
    parse_compute("f16");
    ADD_FAILURE() << "no exception";
  } catch (const UsageError& e) {
    EXPECT_STREQ(e.what(), "unknown compute type 'f16' (expected f32 or bf16)");
  }
  EXPECT_NO_THROW(check_compute_device(Compute::f32, Device::cpu));
  EXPECT_NO_THROW(check_compute_device(Compute::bf16, Device::cuda));
  try {
    check_compute_device(Compute::bf16, Device::cpu);
    ADD_FAILURE() << "no exception";
  } catch (const UsageError& e) {
    EXPECT_STREQ(e.what(), "--compute bf16 runs on the GPU only (--device cuda): the CPU computes in f32");
  }
}
