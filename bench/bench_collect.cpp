// sae-collect's CPU throughput as a fraction of the FLOP bound, for a GPT-2-small-shaped model
// and a Gemma-2-2B-shaped slice with random weights (written by this benchmark to temporary
// directories) and for ../shared/models/stories260K.
//
// The bound: a forward pass to the last block multiplies every token by each block's matrices,
// 2 x (matrix parameters) x tokens FLOPs. We time OpenBLAS sgemm on exactly those shapes
// (batch*context rows, every layer in order) in the same run, so the bound is this machine's
// sgemm rate for the model's products, and fraction = bound time / measured time. Each figure is
// the best of several interleaved rounds: the machine is shared, and the best round is the one
// least disturbed.
//
// Usage: bench_collect [--quick] [--keep DIR]
//   --quick     one round instead of five (a smoke run)
//   --keep DIR  write the random model to DIR and keep it (reused when DIR/config.json exists)
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "base/files.h"
#include "data/collect_model.h"
#include "model/model.h"
#include "model/random.h"
#include "stream/safetensors.h"

using namespace sae;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// A GPT-2-small-shaped model (12 layers, d_model 768, 12 heads, vocabulary 50257, 1024
// positions) with random weights, stored as f16 to halve the file (loading converts to f32).
void write_gpt2_small(const std::string& dir) {
  nlohmann::json cfg = {{"model_type", "gpt2"}, {"architectures", {"GPT2LMHeadModel"}}, {"n_layer", 12},
                        {"n_embd", 768},        {"n_head", 12},  {"n_positions", 1024},
                        {"vocab_size", 50257},  {"activation_function", "gelu_new"}, {"layer_norm_epsilon", 1e-5},
                        {"_name_or_path", "bench/gpt2-small-random"}};
  std::ofstream(dir + "/config.json") << cfg.dump(2);
  std::mt19937 g(1);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  SafeTensorsWriter w;
  auto add = [&](const std::string& n, std::vector<int64_t> shape, float fill = NAN) {
    int64_t k = 1;
    for (auto s : shape) k *= s;
    std::vector<float> v(static_cast<size_t>(k));
    for (auto& x : v) x = std::isnan(fill) ? nd(g) : fill;
    w.add(n, shape, v.data(), DType::f16);
  };
  const int64_t D = 768, V = 50257;
  add("transformer.wte.weight", {V, D});
  add("transformer.wpe.weight", {1024, D});
  for (int l = 0; l < 12; l++) {
    std::string p = "transformer.h." + std::to_string(l) + ".";
    add(p + "ln_1.weight", {D}, 1.0f);
    add(p + "ln_1.bias", {D}, 0.0f);
    add(p + "attn.c_attn.weight", {D, 3 * D});
    add(p + "attn.c_attn.bias", {3 * D});
    add(p + "attn.c_proj.weight", {D, D});
    add(p + "attn.c_proj.bias", {D});
    add(p + "ln_2.weight", {D}, 1.0f);
    add(p + "ln_2.bias", {D}, 0.0f);
    add(p + "mlp.c_fc.weight", {D, 4 * D});
    add(p + "mlp.c_fc.bias", {4 * D});
    add(p + "mlp.c_proj.weight", {4 * D, D});
    add(p + "mlp.c_proj.bias", {D});
  }
  add("transformer.ln_f.weight", {D}, 1.0f);
  add("transformer.ln_f.bias", {D}, 0.0f);
  w.write(dir + "/model.safetensors");
}

// Four layers of Gemma 2 2B (d_model 2304, 8 heads of 256, 4 KV heads, GeGLU of 9216, sliding
// windows of 4096 on alternate layers, both soft-caps), stored as bf16. The vocabulary is cut to
// 4096: the benchmark captures the last block's resid_post, so the head never runs, and Gemma's
// 256000 x 2304 table would only cost 2.4 GB of memory.
nlohmann::json gemma2_2b_slice() {
  return {{"model_type", "gemma2"},          {"architectures", {"Gemma2ForCausalLM"}}, {"num_hidden_layers", 4},
          {"hidden_size", 2304},             {"num_attention_heads", 8}, {"num_key_value_heads", 4},
          {"head_dim", 256},                 {"intermediate_size", 9216}, {"vocab_size", 4096},
          {"max_position_embeddings", 8192}, {"sliding_window", 4096},   {"query_pre_attn_scalar", 256},
          {"attn_logit_softcapping", 50.0},  {"final_logit_softcapping", 30.0}, {"dtype", "bfloat16"},
          {"_name_or_path", "bench/gemma2-2b-slice-random"}};
}

// The model's block products on `rows` rows, in the layout the forward pass uses (GPT-2: x W;
// the others: x W^T), with buffers of their real sizes. run() does one pass through every layer's
// products in order, which is the forward pass with everything but the GEMMs taken out.
class GemmPass {
 public:
  GemmPass(Backend& be, const ModelConfig& c, int64_t rows) : be_(be), c_(c), rows_(rows) {
    const int64_t D = c.d_model, A = int64_t(c.n_heads) * c.head_dim;
    shapes_ = {{D, c.qkv_width()}, {A, D}};
    if (c.gated_mlp())
      shapes_.insert(shapes_.end(), {{D, 2 * int64_t(c.d_mlp)}, {c.d_mlp, D}});
    else
      shapes_.insert(shapes_.end(), {{D, c.d_mlp}, {c.d_mlp, D}});
    int64_t most_in = 0, most_out = 0, most_w = 0;
    for (const auto& s : shapes_) {
      most_in = std::max(most_in, s.in);
      most_out = std::max(most_out, s.out);
      most_w = std::max(most_w, s.in * s.out);
    }
    x_ = Buffer<float>(be, size_t(rows * most_in));
    y_ = Buffer<float>(be, size_t(rows * most_out));
    std::vector<float> h(size_t(std::max(rows * most_in, most_w)), 0.01f);
    x_.upload(h.data(), x_.size());
    for (int l = 0; l < c.n_layers; l++)
      for (const auto& s : shapes_) {
        w_.emplace_back(be, size_t(s.in * s.out));
        w_.back().upload(h.data(), w_.back().size());
      }
  }
  void run() {
    const bool trans = c_.arch != ModelArch::gpt2;
    size_t i = 0;
    for (int l = 0; l < c_.n_layers; l++)
      for (const auto& s : shapes_)
        be_.gemm(false, trans, rows_, s.out, s.in, 1.0f, x_.data(), s.in, w_[i++].data(), trans ? s.in : s.out, 0.0f,
                 y_.data(), s.out);
    be_.sync();
  }

 private:
  struct Shape {
    int64_t in, out;
  };
  Backend& be_;
  const ModelConfig& c_;
  int64_t rows_;
  std::vector<Shape> shapes_;
  Buffer<float> x_, y_;
  std::vector<Buffer<float>> w_;
};

// Best time of repeated calls of f over at least `min_s` seconds.
template <class F>
double time_best(F f, double min_s) {
  double best = 1e30;
  auto t0 = Clock::now();
  do {
    auto t1 = Clock::now();
    f();
    best = std::min(best, seconds_since(t1));
  } while (seconds_since(t0) < min_s);
  return best;
}

struct Figures {
  double tokens_per_s = 0, fraction = 0, gflops = 0, bound_gflops = 0;
  double bound_seconds_per_token = 0;  // the GEMM pass's best time per row
};

Figures measure(Model& m, int64_t batch, int64_t ctx, int rounds) {
  const ModelConfig& c = m.config();
  std::mt19937 g(2);
  std::vector<int32_t> tok(size_t(batch * ctx));
  for (auto& t : tok) t = int32_t(g() % uint32_t(c.vocab));
  ForwardOptions o;
  o.capture = {HookPoint{c.n_layers - 1, HookKind::resid_post}};
  const double flops = 2.0 * double(c.matmul_params(c.n_layers, false)) * double(batch * ctx);
  GemmPass gemms(m.backend(), c, batch * ctx);
  ForwardResult r;  // reused between calls, as sae-collect does
  auto fwd = [&] { m.forward(tok.data(), batch, ctx, o, r); };
  fwd();  // warm-up (buffers, OpenMP and OpenBLAS threads)
  gemms.run();
  // Interleaved rounds, each timing both the same way, so that a busy spell on the machine
  // does not favour one side.
  double best_fwd = 1e30, best_bound = 1e30;
  for (int r = 0; r < rounds; r++) {
    best_bound = std::min(best_bound, time_best([&] { gemms.run(); }, 0.3));
    best_fwd = std::min(best_fwd, time_best(fwd, 0.3));
  }
  Figures f;
  f.tokens_per_s = double(batch * ctx) / best_fwd;
  f.fraction = best_bound / best_fwd;
  f.gflops = flops / best_fwd / 1e9;
  f.bound_gflops = flops / best_bound / 1e9;
  f.bound_seconds_per_token = best_bound / double(batch * ctx);
  return f;
}

// sae-collect end to end (read text, tokenize, forward, write the stream of the last block's
// resid_post) over `text`, model loading aside; the bound is the GEMM pass's best time per token
// (from measure(), same shapes) times the tokens run (text tokens and one BOS per window; the
// padding of short windows counts against us).
void collect_end_to_end(const char* name, const Figures& fwd, Model& m, const std::string& dir, const std::string& text,
                        int64_t batch, int64_t ctx) {
  const ModelConfig& c = m.config();
  CollectModelOptions o;
  o.model_dir = dir;
  o.hooks = {HookPoint{c.n_layers - 1, HookKind::resid_post}.name()};
  o.inputs = {text};
  o.context = ctx;
  o.batch = batch;
  o.device = "cpu";
  TempDir out_dir("bench-collect-out");
  o.output = out_dir / "acts.sae";
  CollectModelStats st = collect_model(o);
  const double bound = fwd.bound_seconds_per_token * double(st.tokens + st.sequences);
  const double work = st.total_seconds - st.load_seconds;
  std::printf("%-28s sae-collect end to end: %lld documents, %lld tokens in %lld windows: %9.0f tokens/s, %.2f of the "
              "bound; time: tokenize %.3f s, forward %.2f s, write %.3f s (loading %.2f s aside)\n",
              name, (long long)st.documents, (long long)st.tokens, (long long)st.sequences, double(st.rows) / work,
              bound / work, st.tokenize_seconds, st.forward_seconds, st.write_seconds, st.load_seconds);
}

void report(const char* name, const Figures& f, int64_t batch, int64_t ctx) {
  std::printf("%-28s context %4lld batch %2lld: %9.0f tokens/s, %6.1f GFLOP/s of a %6.1f GFLOP/s sgemm bound = %.2f of the bound\n",
              name, (long long)ctx, (long long)batch, f.tokens_per_s, f.gflops, f.bound_gflops, f.fraction);
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  std::string keep;
  for (int i = 1; i < argc; i++) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else if (std::strcmp(argv[i], "--keep") == 0 && i + 1 < argc) {
      keep = argv[++i];
    } else {
      std::fprintf(stderr, "usage: bench_collect [--quick] [--keep DIR]\n");
      return 1;
    }
  }
  const int rounds = quick ? 1 : 5;
  auto be = make_cpu_backend();

  std::unique_ptr<TempDir> scratch;  // the model directory, unless --keep names one
  if (keep.empty()) scratch = std::make_unique<TempDir>("bench-collect");
  const std::string dir = keep.empty() ? scratch->path() : keep;
  auto t0 = Clock::now();
  if (!fs::exists(dir + "/config.json")) {
    fs::create_directories(dir);
    write_gpt2_small(dir);
    std::printf("wrote a random GPT-2-small-shaped model to %s in %.1f s\n", dir.c_str(), seconds_since(t0));
  }
  const char* env = std::getenv("SAE_SHARED");
  const std::string shared = env ? env : "../shared";
  const std::string sample = shared + "/data/tinystories-sample.txt";
  const bool have_shared = fs::exists(sample);
  {
    t0 = Clock::now();
    Model m(dir, *be);
    std::printf("loaded it in %.1f s (%lld matrix parameters in the blocks)\n", seconds_since(t0),
                (long long)m.config().matmul_params(m.config().n_layers, false));
    const Figures f = measure(m, 8, 128, rounds);
    report("gpt2-small (random)", f, 8, 128);
    // End to end with the real GPT-2 tokenizer (from ../shared/models/gpt2-random) over the first
    // stories of the sample (a few thousand tokens: the random model is slow on two cores).
    const std::string tok_src = shared + "/models/gpt2-random";
    if (have_shared && fs::exists(tok_src + "/tokenizer.json")) {
      for (const char* f : {"tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"})
        fs::copy_file(tok_src + "/" + f, dir + "/" + f, fs::copy_options::overwrite_existing);
      std::ifstream in(sample);
      std::string text((std::istreambuf_iterator<char>(in)), {});
      const std::string part = dir + "/sample-part.txt";
      std::ofstream(part) << text.substr(0, text.find("\n\n", quick ? 4000 : 12000));
      collect_end_to_end("gpt2-small (random)", f, m, dir, part, 8, 128);
    }
  }

  {
    TempDir gemma_dir("bench-collect-gemma2");
    t0 = Clock::now();
    write_random_model(gemma_dir.path(), gemma2_2b_slice(), 1, DType::bf16);
    Model m(gemma_dir.path(), *be);
    std::printf("wrote and loaded a random Gemma-2-2B-shaped slice (4 layers) in %.1f s\n", seconds_since(t0));
    const Figures f = measure(m, 8, 128, rounds);
    report("gemma2-2b slice (random)", f, 8, 128);
  }

  const std::string stories = shared + "/models/stories260K";
  if (have_shared && fs::exists(stories + "/config.json")) {
    Model m(stories, *be);
    const Figures f = measure(m, 8, 256, rounds);
    report("stories260K", f, 8, 256);
    collect_end_to_end("stories260K", f, m, stories, sample, 8, 256);
  } else {
    std::printf("stories260K: skipped (%s is absent; set SAE_SHARED)\n", stories.c_str());
  }
  return 0;
}
