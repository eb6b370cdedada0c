// bench_train: SAE training speed against this machine's encoder-GEMM bound, the sparse TopK path
// against a plain dense implementation of the same step, peak memory, and ground-truth recovery
// of every architecture on a larger toy configuration than the unit tests use.
//
// Ratios are measured in one run, so the machine's load affects both sides alike. The bound: a
// training step can not be cheaper than its forward encoder product, 2 * d_in * d_sae flops per
// token, so bound tokens/s = (measured sgemm flop/s at that shape) / (2 d_in d_sae).
//
// Usage: bench_train [--quick] [--no-recovery] [--steps N]
#include <omp.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "base/rng.h"
#include "data/toy.h"
#include "sae/arch.h"
#include "sae/ops.h"
#include "sae/trainer.h"

using namespace sae;

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
// CPU time of the whole process (all threads): on a shared, loaded machine wall time depends on
// what the neighbours do, CPU time much less, so ratios are also given in CPU time.
double cpu_now() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}
struct Rate {
  double wall = 0, cpu = 0;  // tokens (or flops) per second of wall time, per second of CPU time
};

int64_t vm_hwm_kb() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6));
  return -1;
}

std::vector<float> random_rows(int64_t rows, int64_t d, uint64_t seed) {
  // Sparse non-negative mixtures of random directions, like real activations in the one respect
  // that matters here (the pre-activations are not all alike); values are irrelevant to speed.
  toy::ToyConfig c;
  c.d = d;
  c.features = 4 * d;
  c.active = 16;
  c.rows = rows;
  c.seed = int64_t(seed);
  toy::ToyModel m(c);
  Batch b;
  m.generate(0, rows, b);
  return b.x;
}

// Best of `reps` timings of the encoder product pre[B,n] = xc[B,d] E[n,d]^T, in flop/s.
Rate sgemm_rate(SaeOps& ops, int64_t B, int64_t d, int64_t n, int reps) {
  Backend& be = ops.backend();
  Buffer<float> x(be, size_t(B * d)), E(be, size_t(n * d)), pre(be, size_t(B * n));
  std::vector<float> h(static_cast<size_t>(std::max(B, n) * d));
  Rng rng(5);
  for (auto& v : h) v = float(rng.normal());
  x.upload(h.data(), size_t(B * d));
  E.upload(h.data(), size_t(n * d));
  be.gemm(false, true, B, n, d, 1.0f, x.data(), d, E.data(), d, 0.0f, pre.data(), n);  // warm-up
  double best = 1e30, best_cpu = 1e30;
  for (int i = 0; i < reps; i++) {
    double t0 = now(), c0 = cpu_now();
    be.gemm(false, true, B, n, d, 1.0f, x.data(), d, E.data(), d, 0.0f, pre.data(), n);
    be.sync();
    best = std::min(best, now() - t0);
    best_cpu = std::min(best_cpu, cpu_now() - c0);
  }
  const double flops = 2.0 * double(B) * double(d) * double(n);
  return {flops / best, flops / best_cpu};
}

// The CPU op set with a backend that times the encoder products (gemm N,T of shape [B, d_sae] x
// d_in) inside the training steps themselves, so that the in-step fraction "encoder product time
// over step time" is measured under the very load the steps ran under.
class TimedOps final : public SaeOps {
 public:
  struct TimedBackend final : Backend {
    Backend* in = nullptr;
    double enc_seconds = 0, first_call_seconds = 0;
    int64_t enc_calls = 0;
    Device device() const override { return in->device(); }
    void* alloc_bytes(size_t b) override { return in->alloc_bytes(b); }
    void free_bytes(void* p) override { in->free_bytes(p); }
    void to_device(void* d, const void* s, size_t b) override { in->to_device(d, s, b); }
    void to_host(void* d, const void* s, size_t b) override { in->to_host(d, s, b); }
    void copy(void* d, const void* s, size_t b) override { in->copy(d, s, b); }
    void zero(void* d, size_t b) override { in->zero(d, b); }
    void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* A, int64_t lda, const float* B,
              int64_t ldb, float beta, float* C, int64_t ldc) override {
      const bool encoder = !ta && tb && beta == 0.0f && n > k;  // pre = xc E^T
      double t0 = encoder ? now() : 0;
      in->gemm(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
      if (encoder) {
        in->sync();
        const double dt = now() - t0;
        if (enc_calls == 0) first_call_seconds = dt;
        enc_seconds += dt;
        enc_calls++;
      }
    }
    void sync() override { in->sync(); }
  };
  explicit TimedOps(std::unique_ptr<SaeOps> inner) : in_(std::move(inner)) { tb_.in = &in_->backend(); }
  Backend& backend() override { return tb_; }
  const char* name() const override { return in_->name(); }
  TimedBackend& timer() { return tb_; }
  void center(const float* x, const float* b, float* xc, int64_t B, int64_t d) override { in_->center(x, b, xc, B, d); }
  void set_rows(float* out, const float* v, int64_t B, int64_t n) override { in_->set_rows(out, v, B, n); }
  void sub(const float* a, const float* b, float* out, int64_t count) override { in_->sub(a, b, out, count); }
  void recon_error(const float* xhat, const float* target, float* g, float* err, int64_t B, int64_t d, float scale) override { in_->recon_error(xhat, target, g, err, B, d, scale); }
  void col_sum(const float* a, int64_t lda, float* out, int64_t B, int64_t n, float alpha, bool accumulate) override { in_->col_sum(a, lda, out, B, n, alpha, accumulate); }
  void row_norms(const float* A, float* out, int64_t n, int64_t d) override { in_->row_norms(A, out, n, d); }
  void topk(const float* pre, const float* bias, const uint8_t* mask, int64_t B, int64_t n, int k, int32_t* row_ptr, int32_t* idx, float* val) override { in_->topk(pre, bias, mask, B, n, k, row_ptr, idx, val); }
  float batch_kth(const float* pre, const float* bias, int64_t B, int64_t n, int64_t kk) override { return in_->batch_kth(pre, bias, B, n, kk); }
  int64_t select_above(const float* pre, const float* bias, float thr, bool inclusive, int64_t B, int64_t n, int32_t* row_ptr, int32_t* idx, float* val, int64_t cap) override { return in_->select_above(pre, bias, thr, inclusive, B, n, row_ptr, idx, val, cap); }
  void sparse_decode(const int32_t* row_ptr, const int32_t* idx, const float* val, const float* D, const float* bias, const float* target, Groups groups, float gscale, float* xhat, float* G, float* err, int64_t B, int64_t d) override { in_->sparse_decode(row_ptr, idx, val, D, bias, target, groups, gscale, xhat, G, err, B, d); }
  void sparse_dpre(const int32_t* row_ptr, const int32_t* idx, const float* val, const float* D, const float* G, Groups groups, float* dpre, int64_t B, int64_t d) override { in_->sparse_dpre(row_ptr, idx, val, D, G, groups, dpre, B, d); }
  void sparse_dx(const int32_t* row_ptr, const int32_t* idx, const float* dpre, const float* E, float* dx, int64_t B, int64_t d, bool accumulate) override { in_->sparse_dx(row_ptr, idx, dpre, E, dx, B, d, accumulate); }
  void sparse_transpose(const int32_t* row_ptr, const int32_t* idx, const float* val, int64_t B, int64_t n, int64_t nnz, int32_t* lat_ptr, int32_t* ent, int32_t* ent_row, int32_t* fires) override { in_->sparse_transpose(row_ptr, idx, val, B, n, nnz, lat_ptr, ent, ent_row, fires); }
  void sparse_param_grads(const int32_t* lat_ptr, const int32_t* ent, const int32_t* ent_row, const float* val, const float* dpre, const float* G, Groups groups, const float* xc, float* gD, float* gE, float* gb, int64_t n, int64_t d, bool accumulate) override { in_->sparse_param_grads(lat_ptr, ent, ent_row, val, dpre, G, groups, xc, gD, gE, gb, n, d, accumulate); }
  float min_positive(const float* val, int64_t count) override { return in_->min_positive(val, count); }
  void relu_fwd(float* pre, const float* bias, float* f, int32_t* fires, float* colsum_f, int64_t B, int64_t n) override { in_->relu_fwd(pre, bias, f, fires, colsum_f, B, n); }
  void relu_bwd(const float* df, const float* f, const float* norms, float coef, float* dpre, int64_t B, int64_t n) override { in_->relu_bwd(df, f, norms, coef, dpre, B, n); }
  void l1_norm_grad(const float* colsum_f, const float* norms, const float* D, float coef, float* gD, int64_t n, int64_t d) override { in_->l1_norm_grad(colsum_f, norms, D, coef, gD, n, d); }
  void jumprelu_fwd(float* pre, const float* bias, const float* log_thr, float* f, int32_t* fires, int64_t B, int64_t n) override { in_->jumprelu_fwd(pre, bias, log_thr, f, fires, B, n); }
  void jumprelu_bwd(const float* df, const float* pre, const float* log_thr, const int32_t* fires, float inv_eps, float lambda, float freq_scale, float* dpre, float* g_log_thr, int64_t B, int64_t n) override { in_->jumprelu_bwd(df, pre, log_thr, fires, inv_eps, lambda, freq_scale, dpre, g_log_thr, B, n); }
  void gated_fwd(const float* base, const float* b_gate, const float* r_mag, const float* b_mag, float* f, float* gate_relu, int32_t* fires, float* gate_sum, int64_t B, int64_t n) override { in_->gated_fwd(base, b_gate, r_mag, b_mag, f, gate_relu, fires, gate_sum, B, n); }
  void gated_bwd(const float* base, const float* df, const float* dgr, const float* b_gate, const float* r_mag, const float* b_mag, float l1, float* dbase, float* g_b_gate, float* g_r_mag, float* g_b_mag, int64_t B, int64_t n) override { in_->gated_bwd(base, df, dgr, b_gate, r_mag, b_mag, l1, dbase, g_b_gate, g_r_mag, g_b_mag, B, n); }
  double sumsq(const float* a, int64_t count) override { return in_->sumsq(a, count); }
  double sum(const float* a, int64_t count) override { return in_->sum(a, count); }
  double dot(const float* a, const float* b, int64_t count) override { return in_->dot(a, b, count); }
  void adam(float* p, const float* g, float* m, float* v, int64_t count, const AdamStep& s) override { in_->adam(p, g, m, v, count, s); }
  void remove_parallel(const float* D, float* gD, int64_t n, int64_t d) override { in_->remove_parallel(D, gD, n, d); }
  void normalize_rows(float* D, int64_t n, int64_t d) override { in_->normalize_rows(D, n, d); }
 private:
  std::unique_ptr<SaeOps> in_;
  TimedBackend tb_;
};

struct Shape {
  int64_t d, n, B;
  int k;
};

// Sparse path: the real trainer (reading rows from memory, scaling, Adam, clipping, decoder
// constraint, counters) for `steps` steps after one warm-up step.
Rate sparse_tokens_per_s(SaeOps& base, const Shape& s, const std::vector<float>& rows, int steps, double* in_step) {
  (void)base;
  TimedOps ops(make_cpu_ops());
  TrainOptions o;
  o.batch = s.B;
  o.tokens = s.B * (steps + 1);
  o.epochs = steps + 1;  // the rows in memory are fewer than the steps: cycle over them
  o.init_rows = std::min<int64_t>(s.B, 1024);
  o.progress = false;
  RunSpec r;
  r.arch.arch = "topk";
  r.arch.d_in = s.d;
  r.arch.d_sae = s.n;
  r.arch.k = s.k;
  Trainer t(o, {r}, ops);
  MemoryRowSource src(rows, s.d);
  double c0 = cpu_now();
  t.train(src);
  double cpu = cpu_now() - c0;
  // Steady state: the first step allocates the batch buffers and faults their pages in (hundreds
  // of MB at the largest shape), which a real run pays once; it is left out of the rates (CPU time
  // leaves out the first-sample set-up and the first step in proportion to their wall time).
  if (t.tokens_seen() != s.B * (steps + 1)) throw std::logic_error("bench: the sparse run trained the wrong number of tokens");
  if (ops.timer().enc_calls != steps + 1) throw std::logic_error("bench: encoder products not found");
  const double steady = t.train_seconds() - t.first_step_seconds();
  *in_step = (ops.timer().enc_seconds - ops.timer().first_call_seconds) / steady;
  const double tokens = double(s.B * steps);
  return {tokens / steady, tokens / (cpu * steady / t.train_seconds())};
}

// The same TopK step written plainly: dense f [B, n], dense decoder product, dense backward
// (four more products of the encoder's size), then the same optimiser.
struct DenseTopK {
  SaeOps& ops;
  Backend& be;
  Shape s;
  Buffer<float> E, D, be_, bd, gE, gD, gbe, gbd, mE, vE, mD, vD, mbe, vbe, mbd, vbd;
  Buffer<float> x, xc, pre, f, xhat, g, err, dxc;
  Buffer<int32_t> rp, idx;
  Buffer<float> val;
  DenseTopK(SaeOps& o, Shape sh) : ops(o), be(o.backend()), s(sh) {
    const int64_t n = s.n, d = s.d, B = s.B;
    for (Buffer<float>* p : {&E, &D, &gE, &gD, &mE, &vE, &mD, &vD}) *p = Buffer<float>(be, size_t(n * d));
    for (Buffer<float>* p : {&be_, &gbe, &mbe, &vbe}) *p = Buffer<float>(be, size_t(n));
    for (Buffer<float>* p : {&bd, &gbd, &mbd, &vbd}) *p = Buffer<float>(be, size_t(d));
    for (Buffer<float>* p : {&x, &xc, &xhat, &g, &dxc}) *p = Buffer<float>(be, size_t(B * d));
    pre = Buffer<float>(be, size_t(B * n));
    f = Buffer<float>(be, size_t(B * n));
    err = Buffer<float>(be, size_t(B));
    rp = Buffer<int32_t>(be, size_t(B + 1));
    idx = Buffer<int32_t>(be, size_t(B * s.k));
    val = Buffer<float>(be, size_t(B * s.k));
    std::vector<float> h(static_cast<size_t>(n * d));
    Rng rng(9);
    for (auto& v : h) v = float(rng.normal() / std::sqrt(double(d)));
    E.upload(h);
    D.upload(h);
    for (Buffer<float>* p : {&be_, &bd, &mE, &vE, &mD, &vD, &mbe, &vbe, &mbd, &vbd}) p->zero();
  }
  void step(const float* xs, int t) {
    const int64_t n = s.n, d = s.d, B = s.B;
    x.upload(xs, size_t(B * d));
    ops.center(x.data(), bd.data(), xc.data(), B, d);
    be.gemm(false, true, B, n, d, 1.0f, xc.data(), d, E.data(), d, 0.0f, pre.data(), n);
    ops.topk(pre.data(), be_.data(), nullptr, B, n, s.k, rp.data(), idx.data(), val.data());
    // scatter to dense f
    f.zero();
    std::vector<int32_t> hi = idx.to_vector();
    std::vector<float> hv = val.to_vector(), hf(size_t(B * n), 0.0f);
    for (int64_t r = 0; r < B; r++)
      for (int j = 0; j < s.k; j++) hf[size_t(r * n + hi[size_t(r * s.k + j)])] = hv[size_t(r * s.k + j)];
    f.upload(hf);
    ops.set_rows(xhat.data(), bd.data(), B, d);
    be.gemm(false, false, B, d, n, 1.0f, f.data(), n, D.data(), d, 1.0f, xhat.data(), d);
    ops.recon_error(xhat.data(), x.data(), g.data(), err.data(), B, d, 2.0f / float(B));
    be.gemm(true, false, n, d, B, 1.0f, f.data(), n, g.data(), d, 0.0f, gD.data(), d);
    float* df = pre.data();
    be.gemm(false, true, B, n, d, 1.0f, g.data(), d, D.data(), d, 0.0f, df, n);
    // dpre = df where f > 0
    std::vector<float> hdf = pre.to_vector();
    for (size_t i = 0; i < hdf.size(); i++)
      if (!(hf[i] > 0)) hdf[i] = 0;
    pre.upload(hdf);
    be.gemm(true, false, n, d, B, 1.0f, df, n, xc.data(), d, 0.0f, gE.data(), d);
    ops.col_sum(df, n, gbe.data(), B, n, 1.0f, false);
    be.gemm(false, false, B, d, n, 1.0f, df, n, E.data(), d, 0.0f, dxc.data(), d);
    ops.col_sum(g.data(), d, gbd.data(), B, d, 1.0f, false);
    ops.col_sum(dxc.data(), d, gbd.data(), B, d, -1.0f, true);
    ops.remove_parallel(D.data(), gD.data(), n, d);
    AdamStep a{3e-4f, 0.9f, 0.999f, 1e-8f, float(1 - std::pow(0.9, t)), float(1 - std::pow(0.999, t)), 1.0f};
    ops.adam(E.data(), gE.data(), mE.data(), vE.data(), n * d, a);
    ops.adam(D.data(), gD.data(), mD.data(), vD.data(), n * d, a);
    ops.adam(be_.data(), gbe.data(), mbe.data(), vbe.data(), n, a);
    ops.adam(bd.data(), gbd.data(), mbd.data(), vbd.data(), d, a);
    ops.normalize_rows(D.data(), n, d);
  }
};

Rate dense_tokens_per_s(SaeOps& ops, const Shape& s, const std::vector<float>& rows, int steps) {
  DenseTopK dt(ops, s);
  const int64_t per = s.B * s.d;
  const int64_t nb = int64_t(rows.size()) / per;
  std::vector<float> xs(static_cast<size_t>(per));
  auto batch = [&](int i) {
    const float* src = rows.data() + (i % nb) * per;
    for (int64_t j = 0; j < per; j++) xs[size_t(j)] = src[j];
    return xs.data();
  };
  dt.step(batch(0), 1);
  double t0 = now(), c0 = cpu_now();
  for (int i = 0; i < steps; i++) dt.step(batch(i + 1), i + 2);
  ops.backend().sync();
  return {double(s.B * steps) / (now() - t0), double(s.B * steps) / (cpu_now() - c0)};
}

void recovery(int64_t tokens) {
  toy::ToyConfig c;
  c.d = 64;
  c.features = 256;
  c.active = 4;
  c.seed = 11;
  toy::ToyModel m(c);
  Batch b;
  m.generate(0, tokens, b);
  auto ops = make_cpu_ops();
  printf("\n== recovery on toy data: d=64, 256 features, ~4 active, 512 latents, k=4, %lld tokens, batch 1024\n",
         (long long)tokens);
  printf("%-11s %14s %15s %9s %8s %7s %8s\n", "arch", "mean max cos", "frac cos>0.9", "gamma", "FVU", "L0", "seconds");
  for (const char* arch : {"relu", "topk", "batchtopk", "jumprelu", "gated", "matryoshka"}) {
    RunSpec r;
    r.arch.arch = arch;
    r.arch.d_in = c.d;
    r.arch.d_sae = 512;
    r.arch.k = 4;
    r.arch.seed = 1;
    r.lr = std::string(arch) == "batchtopk" || std::string(arch) == "matryoshka" ? 1e-2f : 3e-3f;
    if (std::string(arch) == "relu") r.arch.lambda = 3;
    if (std::string(arch) == "gated") r.arch.lambda = 4;
    if (std::string(arch) == "jumprelu") {
      r.arch.lambda = 2;
      r.arch.bandwidth = 0.2f;
      r.arch.init_threshold = 1.0f;
    }
    if (std::string(arch) == "matryoshka") r.arch.prefixes = {128, 512};
    TrainOptions o;
    o.batch = 1024;
    o.tokens = tokens;
    o.lr_decay = 0.2;
    o.l1_warmup = 0.05;
    o.dead_tokens = 100000;
    o.progress = false;
    Trainer t(o, {r}, *ops);
    MemoryRowSource src(b.x, c.d);
    double t0 = now();
    t.train(src);
    double secs = now() - t0;
    Sae s = t.exported(0);
    // best cosine per true feature
    const std::vector<float>& F = m.features();
    double mean = 0, matched = 0;
    for (int64_t i = 0; i < c.features; i++) {
      double best = 0;
      for (int64_t j = 0; j < s.d_sae; j++) {
        double dot = 0, nn = 0;
        for (int64_t q = 0; q < c.d; q++) {
          dot += double(F[size_t(i * c.d + q)]) * s.W_dec[size_t(j * c.d + q)];
          nn += double(s.W_dec[size_t(j * c.d + q)]) * s.W_dec[size_t(j * c.d + q)];
        }
        if (nn > 0) best = std::max(best, dot / std::sqrt(nn));
      }
      mean += best;
      matched += best > 0.9;
    }
    Batch h;
    const int64_t rows = 8192;
    m.generate(50000000, rows, h);
    std::vector<float> f(static_cast<size_t>(rows * s.d_sae)), xh(size_t(rows * c.d));
    s.encode(h.x.data(), rows, f.data());
    s.decode(f.data(), rows, xh.data());
    double hh = 0, hx = 0, err = 0, var = 0, l0 = 0;
    std::vector<double> mu(static_cast<size_t>(c.d), 0);
    for (int64_t r = 0; r < rows; r++)
      for (int64_t q = 0; q < c.d; q++) mu[size_t(q)] += h.x[size_t(r * c.d + q)] / double(rows);
    for (int64_t i = 0; i < rows * c.d; i++) {
      hh += double(xh[size_t(i)]) * xh[size_t(i)];
      hx += double(xh[size_t(i)]) * h.x[size_t(i)];
      err += (double(xh[size_t(i)]) - h.x[size_t(i)]) * (double(xh[size_t(i)]) - h.x[size_t(i)]);
      double e = h.x[size_t(i)] - mu[size_t(i % c.d)];
      var += e * e;
    }
    for (float v : f) l0 += v != 0;
    printf("%-11s %14.3f %15.3f %9.3f %8.4f %7.2f %8.1f\n", arch, mean / double(c.features),
           matched / double(c.features), hh / hx, err / var, l0 / double(rows), secs);
    fflush(stdout);
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, rec = true, do_dense = true;
  int steps = 4;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--quick") quick = true;
    else if (a == "--no-recovery") rec = false;
    else if (a == "--no-dense") do_dense = false;
    else if (a == "--steps" && i + 1 < argc) steps = std::atoi(argv[++i]);
    else {
      fprintf(stderr, "usage: bench_train [--quick] [--no-recovery] [--no-dense] [--steps N]\n");
      return 1;
    }
  }
  auto ops = make_cpu_ops();
  printf("== sae-train CPU benchmark (%d OpenMP threads)\n", omp_get_max_threads());
  std::vector<Shape> shapes = {{768, 16384, 4096, 32}, {512, 4096, 4096, 32}, {256, 2048, 2048, 16}};
  if (quick) shapes = {{256, 2048, 2048, 16}};
  if (const char* sh = getenv("BENCH_SHAPE")) {  // "d,n,B,k": one shape only (development)
    Shape s{};
    if (sscanf(sh, "%ld,%ld,%ld,%d", &s.d, &s.n, &s.B, &s.k) == 4) shapes = {s};
  }
  printf("tokens/s per second of wall time [and per second of CPU time, all threads]\n");
  printf("(in-step: the encoder products' share of the training steps' wall time, timed inside the steps)\n");
  printf("%-18s %11s %18s %18s %15s %9s %17s %15s\n", "shape d/n/B/k", "sgemm GF/s", "bound tok/s", "sparse tok/s",
         "fraction", "in-step", "dense tok/s", "sparse/dense");
  bool first = true;
  int64_t hwm_sparse = 0;
  Rate first_fraction, first_speedup;
  double first_in_step = 0;
  for (const Shape& s : shapes) {
    std::vector<float> rows = random_rows(s.B * 2, s.d, 1);
    // The sparse run first, so that the peak resident memory measured after it is its own.
    double in_step = 0;
    Rate sparse = sparse_tokens_per_s(*ops, s, rows, steps, &in_step);
    if (first) hwm_sparse = vm_hwm_kb();
    Rate rate = sgemm_rate(*ops, s.B, s.d, s.n, 3);
    const double per_token = 2.0 * double(s.d) * double(s.n);
    Rate bound{rate.wall / per_token, rate.cpu / per_token};
    Rate dense = do_dense ? dense_tokens_per_s(*ops, s, rows, std::max(2, steps / 2)) : Rate{};
    Rate fraction{sparse.wall / bound.wall, sparse.cpu / bound.cpu};
    Rate speedup{dense.wall > 0 ? sparse.wall / dense.wall : 0, dense.cpu > 0 ? sparse.cpu / dense.cpu : 0};
    char name[64];
    snprintf(name, sizeof name, "%lld/%lld/%lld/%d", (long long)s.d, (long long)s.n, (long long)s.B, s.k);
    printf("%-18s %11.1f %8.0f [%7.0f] %8.0f [%7.0f] %6.3f [%6.3f] %9.3f %7.0f [%7.0f] %5.2fx [%5.2fx]\n", name,
           rate.wall / 1e9, bound.wall, bound.cpu, sparse.wall, sparse.cpu, fraction.wall, fraction.cpu, in_step,
           dense.wall, dense.cpu, speedup.wall, speedup.cpu);
    if (first) first_in_step = in_step;
    fflush(stdout);
    if (first) {
      first_fraction = fraction;
      first_speedup = speedup;
      const double mib = 1.0 / 1048576.0;
      const double params = double(2 * s.n * s.d + s.n + s.d) * 4;
      const double pre = double(s.B * s.n) * 4;
      printf("   peak RSS after the sparse run: %.0f MiB; parameters %.0f MiB, + gradients %.0f, + Adam moments %.0f,"
             " + one batch of pre-activations %.0f = %.0f MiB\n",
             double(hwm_sparse) / 1024.0, params * mib, params * mib, 2 * params * mib, pre * mib,
             (4 * params + pre) * mib);
    }
    first = false;
  }
  printf("targets at the first shape: fraction of the encoder-GEMM bound >= 0.5 (got %.3f wall, %.3f CPU time, %.3f "
         "in-step), sparse/dense >= 2.5x (got %.2fx wall, %.2fx CPU time)\n",
         first_fraction.wall, first_fraction.cpu, first_in_step, first_speedup.wall, first_speedup.cpu);
  if (rec) recovery(quick ? 100000 : 500000);
  return 0;
}
