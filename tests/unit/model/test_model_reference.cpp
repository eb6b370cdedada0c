// The forward pass against the reference outputs in ../shared/models/*/reference.safetensors
// (computed in float64 by an independent implementation, stored as float32): every hook of every
// layer, the logits and the per-token NLL, for every case, using the reference tokens as input.
//
// Tolerance: kTol = 1e-4 of the tensor's largest magnitude (scaled_err). Our pass computes in
// f32, so each value carries rounding of a few ulp per operation (~1e-7 relative) accumulated
// through a few layers of sums over d_model terms; 1e-4 is the agreement the data's README
// promises for an f32 implementation and leaves a wide margin over what we measure (~1e-6), while
// any real mistake (a wrong convention, a missing bias) shows up at 1e-2 or more. NLL values are
// compared absolutely with the same 1e-4 (they are O(1) log-probabilities).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "model/model.h"
#include "stream/safetensors.h"
#include "support/model_util.h"

using namespace sae;
using namespace model_test;

namespace {

constexpr double kTol = 1e-4;

std::vector<std::string> all_hooks(const ModelConfig& c) {
  std::vector<std::string> v;
  for (int l = 0; l < c.n_layers; l++)
    for (const char* k : {"resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post"})
      v.push_back("blocks." + std::to_string(l) + ".hook_" + k);
  return v;
}

int count_cases(const SafeTensors& ref) {
  int n = 0;
  while (ref.has("case" + std::to_string(n) + ".tokens")) n++;
  return n;
}

void check_model_against_reference(const std::string& name) {
  const std::string dir = shared_model(name);
  auto be = make_cpu_backend();
  Model m(dir, *be);
  SafeTensors ref(dir + "/reference.safetensors");
  const int cases = count_cases(ref);
  ASSERT_GT(cases, 0);
  auto hooks = all_hooks(m.config());
  // The newer references also hold attn.hook_z, the heads' outputs before o_proj.
  for (int l = 0; l < m.config().n_layers; l++)
    if (ref.has("case0.blocks." + std::to_string(l) + ".attn.hook_z")) hooks.push_back("blocks." + std::to_string(l) + ".attn.hook_z");
  ForwardOptions opt;
  for (const auto& h : hooks) opt.capture.push_back(parse_hook(h, m.config()));
  opt.want_logits = true;
  opt.want_nll = true;
  double worst_hook = 0, worst_logits = 0, worst_nll = 0;
  for (int i = 0; i < cases; i++) {
    const std::string c = "case" + std::to_string(i) + ".";
    std::vector<int32_t> tok = ref.read_i32(c + "tokens");
    ForwardResult r = m.forward(tok.data(), 1, int64_t(tok.size()), opt);
    for (size_t h = 0; h < hooks.size(); h++) {
      double e = scaled_err(r.captured[h], ref.read_f32(c + hooks[h]));
      EXPECT_LE(e, kTol) << name << " " << c << hooks[h];
      worst_hook = std::max(worst_hook, e);
    }
    if (ref.has(c + "logits")) {
      double e = scaled_err(r.logits, ref.read_f32(c + "logits"));
      EXPECT_LE(e, kTol) << name << " " << c << "logits";
      worst_logits = std::max(worst_logits, e);
    }
    std::vector<float> nll = ref.read_f32(c + "nll");
    ASSERT_EQ(r.nll.size(), nll.size());
    for (size_t t = 0; t < nll.size(); t++) {
      EXPECT_NEAR(r.nll[t], nll[t], kTol) << name << " " << c << "nll[" << t << "]";
      worst_nll = std::max(worst_nll, std::fabs(double(r.nll[t]) - nll[t]));
    }
  }
  std::printf("[ %s ] %d cases: worst scaled error hooks %.2e, logits %.2e; worst NLL error %.2e\n", name.c_str(),
              cases, worst_hook, worst_logits, worst_nll);
}

}  // namespace

TEST(ModelReference, Stories260KEveryHookLogitsAndNll) {
  NEED_SHARED();
  check_model_against_reference("stories260K");
}

TEST(ModelReference, Gpt2RandomEveryHookLogitsAndNll) {
  NEED_SHARED();
  check_model_against_reference("gpt2-random");
}

// Qwen3 (transformers 5's own save_pretrained, bf16 weights): per-head q/k RMSNorm, GQA, no
// q/k/v bias, untied head, rope_parameters.
TEST(ModelReference, Qwen3RandomEveryHookLogitsAndNll) {
  NEED_SHARED();
  check_model_against_reference("qwen3-random");
}

// The same weights under a transformers 4.x config (rope_theta at the top level, torch_dtype, no
// layer_types or rope_parameters), as most published Qwen3 checkpoints spell it: the same bits.
TEST(ModelReference, Qwen3TransformersFourConfigGivesTheSameOutputs) {
  NEED_SHARED();
  const std::string dir = shared_model("qwen3-random");
  nlohmann::json cfg = nlohmann::json::parse(std::ifstream(dir + "/config.json"));
  const double theta = cfg["rope_parameters"]["rope_theta"].get<double>();
  cfg.erase("rope_parameters");
  cfg.erase("layer_types");
  cfg.erase("dtype");
  cfg["rope_theta"] = theta;
  cfg["rope_scaling"] = nullptr;
  cfg["torch_dtype"] = "bfloat16";
  cfg["transformers_version"] = "4.51.0";
  TempDir t;
  std::ofstream(t / "config.json") << cfg.dump(2);
  std::filesystem::create_symlink(dir + "/model.safetensors", t / "model.safetensors");
  auto be = make_cpu_backend();
  Model a(dir, *be), b(t.path(), *be);
  SafeTensors ref(dir + "/reference.safetensors");
  std::vector<int32_t> tok = ref.read_i32("case0.tokens");
  ForwardOptions opt;
  for (const auto& h : all_hooks(a.config())) opt.capture.push_back(parse_hook(h, a.config()));
  opt.want_logits = true;
  const ForwardResult ra = a.forward(tok.data(), 1, int64_t(tok.size()), opt);
  const ForwardResult rb = b.forward(tok.data(), 1, int64_t(tok.size()), opt);
  EXPECT_EQ(ra.captured, rb.captured);
  EXPECT_EQ(ra.logits, rb.logits);
  EXPECT_EQ(b.config().rope_theta, 1e6);
}

TEST(ModelReference, TinyGpt2SavePretrainedArtifact) {
  NEED_SHARED();
  check_model_against_reference("tiny-gpt2");
}

// All cases in one right-padded batch give the rows each case gives alone: padding after a
// sequence never reaches it through causal attention.
TEST(ModelReference, BatchedRightPaddedCasesMatchReference) {
  NEED_SHARED();
  const std::string dir = shared_model("stories260K");
  auto be = make_cpu_backend();
  Model m(dir, *be);
  SafeTensors ref(dir + "/reference.safetensors");
  const int cases = count_cases(ref);
  std::vector<std::vector<int32_t>> toks;
  int64_t T = 0;
  for (int i = 0; i < cases; i++) {
    toks.push_back(ref.read_i32("case" + std::to_string(i) + ".tokens"));
    T = std::max<int64_t>(T, int64_t(toks.back().size()));
  }
  std::vector<int32_t> batch(size_t(cases * T), 0);
  for (int i = 0; i < cases; i++) std::copy(toks[size_t(i)].begin(), toks[size_t(i)].end(), batch.begin() + i * T);
  ForwardOptions opt;
  opt.capture = {parse_hook("blocks.4.hook_resid_post", m.config()), parse_hook("blocks.2.hook_attn_out", m.config())};
  opt.want_logits = true;
  ForwardResult r = m.forward(batch.data(), cases, T, opt);
  const int64_t D = m.config().d_model, V = m.config().vocab;
  for (int i = 0; i < cases; i++) {
    const std::string c = "case" + std::to_string(i) + ".";
    const size_t n = toks[size_t(i)].size();
    for (size_t h = 0; h < opt.capture.size(); h++) {
      std::vector<float> rows(r.captured[h].begin() + i * T * D, r.captured[h].begin() + i * T * D + int64_t(n) * D);
      EXPECT_LE(scaled_err(rows, ref.read_f32(c + opt.capture[h].name())), kTol) << c << opt.capture[h].name();
    }
    std::vector<float> lg(r.logits.begin() + i * T * V, r.logits.begin() + i * T * V + int64_t(n) * V);
    EXPECT_LE(scaled_err(lg, ref.read_f32(c + "logits")), kTol) << c << "logits";
  }
}

// The naive double-precision pass of the tests agrees with the reference too, so it can serve as
// the reference for fixtures the shared models do not cover (biases, untied heads, rope scaling).
TEST(ModelReference, NaiveTestPassAgreesWithReference) {
  NEED_SHARED();
  for (std::string name : {"stories260K", "gpt2-random"}) {
    const std::string dir = shared_model(name);
    ModelConfig c = load_model_config(dir);
    SafeTensors w(dir + "/model.safetensors"), ref(dir + "/reference.safetensors");
    auto get = [&](const std::string& n) { return w.has(n) ? w.read_f32(n) : w.read_f32("transformer." + n); };
    std::vector<int32_t> tok = ref.read_i32("case0.tokens");
    NaiveOut o = naive_forward(c, get, tok);
    for (const auto& h : all_hooks(c)) EXPECT_LE(scaled_err(o.hooks[h], ref.read_f32("case0." + h)), 1e-5) << name << " " << h;
    EXPECT_LE(scaled_err(o.logits, ref.read_f32("case0.logits")), 1e-5) << name;
  }
}
