// Generation with the KV cache on the CPU, for a GPT-2-small-shaped model with random weights
// (written by this benchmark to a temporary directory), against bounds measured in the same run:
//
//  - batch 1: a decoding step reads every weight matrix once (the blocks and the tied head), so
//    its bound is this machine's read bandwidth (all threads summing 1 GiB, far larger than the
//    caches) divided by those bytes. Printed as tokens/s and the fraction of that bound.
//  - batch 8: a step multiplies 8 rows by every matrix; its bound is OpenBLAS sgemm on exactly
//    those shapes (8 rows, every layer and the head, in order), timed here.
//  - the KV cache's speed-up over recomputing the whole sequence for each new token, over 256
//    generated tokens (64 with --quick) after a 16-token prompt.
//  - the cost of a steering intervention (an add at blocks.6.hook_resid_post, at every position)
//    on batch-1 decoding.
// Each figure is the best of several interleaved rounds: the machine is shared, and the best round
// is the least disturbed.
//
// Usage: bench_generate [--quick]
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "base/files.h"
#include "base/fork_join_pool.h"
#include "model/generate.h"
#include "model/model.h"
#include "model/random.h"
#include "steer/steer.h"

using namespace sae;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

template <class F>
double best_of(int rounds, F f) {
  double best = 1e30;
  for (int r = 0; r < rounds; r++) {
    const auto t0 = Clock::now();
    f();
    best = std::min(best, seconds_since(t0));
  }
  return best;
}

// Bytes per second read from memory: every thread of the pool sums its share of 1 GiB (far larger
// than the caches), as decoding reads its weights, once, on every thread.
double read_bandwidth(int rounds) {
  const size_t n = size_t(1) << 28;
  std::vector<float> a(n, 1.0f);
  std::vector<double> part(64, 0.0);
  const double t = best_of(rounds, [&] {
    ForkJoinPool::global().run(int64_t(n), [&](int64_t b, int64_t e, int thread) {
      float acc[8] = {};
      for (int64_t i = b; i + 8 <= e; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += a[size_t(i + j)];
      part[size_t(thread) % part.size()] = double(acc[0] + acc[1] + acc[2] + acc[3] + acc[4] + acc[5] + acc[6] + acc[7]);
    });
  });
  double total = 0;
  for (double p : part) total += p;
  if (total <= 0) std::printf("read check failed\n");
  return double(n * sizeof(float)) / t;
}

// Seconds per decoding step (one token per sequence) over `steps` steps after a `prompt`-token
// prefill, for `batch` sequences, with `edits` at every step.
double step_seconds(Model& m, int64_t batch, int64_t prompt, int64_t steps, const std::vector<HookEdit>& edits) {
  std::mt19937 g(3);
  std::vector<int32_t> tok(size_t(batch * prompt));
  for (auto& t : tok) t = int32_t(g() % uint32_t(m.config().vocab));
  KvCache cache = m.make_cache(batch, prompt + steps);
  ForwardOptions o;
  o.want_logits = true;
  o.last_row_only = true;
  o.edits = edits;
  ForwardResult r;
  m.forward(tok.data(), batch, prompt, cache, o, r);
  std::vector<int32_t> next(static_cast<size_t>(batch));
  const auto t0 = Clock::now();
  for (int64_t s = 0; s < steps; s++) {
    for (int64_t b = 0; b < batch; b++) next[size_t(b)] = choose_token(r.logits.data() + b * m.config().vocab, m.config().vocab, {}, 0);
    m.forward(next.data(), batch, 1, cache, o, r);
  }
  return seconds_since(t0) / double(steps);
}

// Seconds for the products of one decoding step of `rows` rows: every block's matrices and the
// head, as the pass lays them out (x W^T for GPT-2's Conv1D weights is x W; the head is x E^T).
double gemm_step_seconds(Backend& be, const ModelConfig& c, int64_t rows, int rounds) {
  const int64_t D = c.d_model, I = c.d_mlp;
  struct Shape {
    int64_t in, out;
    bool trans;
  };
  std::vector<Shape> shapes;
  for (int l = 0; l < c.n_layers; l++)
    for (Shape s : {Shape{D, c.qkv_width(), false}, Shape{D, D, false}, Shape{D, I, false}, Shape{I, D, false}}) shapes.push_back(s);
  shapes.push_back({D, c.vocab, true});
  std::vector<Buffer<float>> w;
  for (const Shape& s : shapes) {
    w.emplace_back(be, size_t(s.in * s.out));
    std::vector<float> h(size_t(s.in * s.out), 0.01f);
    w.back().upload(h);
  }
  Buffer<float> x(be, size_t(rows * I)), y(be, size_t(rows * c.vocab));
  std::vector<float> hx(size_t(rows * I), 0.5f);
  x.upload(hx);
  return best_of(rounds, [&] {
    for (size_t i = 0; i < shapes.size(); i++) {
      const Shape& s = shapes[i];
      be.gemm(false, s.trans, rows, s.out, s.in, 1.0f, x.data(), s.in, w[i].data(), s.trans ? s.in : s.out, 0.0f, y.data(), s.out);
    }
    be.sync();
  });
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  if (argc > 1 && !quick) {
    std::fprintf(stderr, "usage: bench_generate [--quick]\n");
    return 1;
  }
  const int rounds = quick ? 2 : 5;
  auto be = make_cpu_backend();
  TempDir dir("bench-generate");
  auto t0 = Clock::now();
  const nlohmann::json cfg = {{"model_type", "gpt2"},   {"architectures", {"GPT2LMHeadModel"}}, {"n_layer", 12},
                              {"n_embd", 768},          {"n_head", 12},  {"n_positions", 1024},
                              {"vocab_size", 50257},    {"activation_function", "gelu_new"}};
  write_random_model(dir.path(), cfg, 1, DType::f16);
  Model m(dir.path(), *be);
  const ModelConfig& c = m.config();
  std::printf("wrote and loaded a random GPT-2-small-shaped model in %.1f s\n", seconds_since(t0));

  // Batch 1 against the memory bandwidth.
  const double bw = read_bandwidth(rounds);
  const double weight_bytes = 4.0 * double(c.matmul_params(c.n_layers, true));
  const double bound1 = bw / weight_bytes;
  double step1 = 1e30;
  for (int r = 0; r < rounds; r++) step1 = std::min(step1, step_seconds(m, 1, 16, quick ? 8 : 16, {}));
  std::printf("batch 1: %6.2f tokens/s; bandwidth %.1f GB/s / %.0f MB of weights per token = %.2f tokens/s bound: "
              "%.2f of the bound\n",
              1.0 / step1, bw / 1e9, weight_bytes / 1e6, bound1, (1.0 / step1) / bound1);

  // Batch 8 against sgemm on the step's shapes.
  const double gemm8 = gemm_step_seconds(*be, c, 8, rounds);
  double step8 = 1e30;
  for (int r = 0; r < rounds; r++) step8 = std::min(step8, step_seconds(m, 8, 16, quick ? 4 : 8, {}));
  std::printf("batch 8: %6.1f tokens/s; sgemm on the step's products %.1f ms, the step %.1f ms: %.2f of the bound\n",
              8.0 / step8, gemm8 * 1e3, step8 * 1e3, gemm8 / step8);

  // The KV cache against recomputing everything for each token.
  const int64_t gen = quick ? 64 : 256, prompt = 16;
  std::vector<int32_t> seq(size_t(prompt + gen));
  std::mt19937 g(5);
  for (auto& t : seq) t = int32_t(g() % uint32_t(c.vocab));
  const double cached = step_seconds(m, 1, prompt, gen, {}) * double(gen);
  ForwardOptions o;
  o.want_logits = true;
  o.last_row_only = true;
  ForwardResult r;
  t0 = Clock::now();
  for (int64_t s = 0; s < gen; s++) m.forward(seq.data(), 1, prompt + s, o, r);
  const double recompute = seconds_since(t0);
  std::printf("KV cache: %lld tokens after a %lld-token prompt in %.1f s, recomputing each step %.1f s: %.1fx faster\n",
              (long long)gen, (long long)prompt, cached, recompute, recompute / cached);

  // An intervention's cost on batch-1 decoding: an add of a random SAE's decoder row at the
  // middle of the model, at every position.
  std::vector<SteerSae> saes(1);
  Sae& s = saes[0].sae;
  s.d_in = c.d_model;
  s.d_sae = 4096;
  s.W_enc.assign(size_t(s.d_in * s.d_sae), 0.01f);
  s.b_enc.assign(size_t(s.d_sae), 0.0f);
  s.W_dec.assign(size_t(s.d_sae * s.d_in), 0.01f);
  s.b_dec.assign(size_t(s.d_in), 0.0f);
  saes[0].hook = parse_hook("blocks.6.hook_resid_post", c);
  Intervention iv;
  iv.latent = 7;
  iv.value = 4.0;
  iv.has_value = true;
  const auto edits = steering_edits(saes, {iv}, AlphaUnit::absolute, [](int64_t) { return true; });
  double plain = 1e30, steered = 1e30;
  for (int k = 0; k < rounds; k++) {
    plain = std::min(plain, step_seconds(m, 1, 16, quick ? 8 : 16, {}));
    steered = std::min(steered, step_seconds(m, 1, 16, quick ? 8 : 16, edits));
  }
  std::printf("intervention: a decoding step %.1f ms plain, %.1f ms with an add at blocks.6: +%.1f%%\n", plain * 1e3,
              steered * 1e3, 100.0 * (steered / plain - 1.0));
  return 0;
}
