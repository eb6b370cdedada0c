// sae-selftest: runs every SAE training op, a training step of every architecture and a few
// optimiser steps through the trainer on two op sets (with --device cuda also the sparse inference
// encoder of every architecture), then the pieces of the transformer's bf16
// compute and the forward pass of six small random models (GPT-2, Qwen2, Qwen3, Gemma 2, Gemma 3,
// GPT-NeoX) in f32 and bf16 compute (on the CPU, bf16 is the emulation of lib/model/model.h) on
// two backends, and compares the results:
//   --device cuda   the CUDA op set against the CPU op set (the GPU self-test, `make gpu-selftest`)
//   --device cpu    the CPU op set against the plain single-threaded reference (for the forward
//                   pass: OpenBLAS products against the reference's float64 sums, the same
//                   transformer ops on both sides)
// on random inputs, with stated tolerances. Prints one line per check and exits 0 when all pass,
// 2 when any fails (the build computes something wrong), 1 when the device is not available.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "base/cli.h"
#include "base/dtype.h"
#include "base/files.h"
#include "base/rng.h"
#include "model/model.h"
#include "model/ops.h"
#include "model/random.h"
#include "sae/arch.h"
#include "sae/ops.h"
#include "sae/sae.h"
#include "sae/sparse_encode.h"
#include "sae/trainer.h"

namespace {

using namespace sae;
namespace po = cli::po;
namespace fs = std::filesystem;

// Tolerances, relative to the largest magnitude of the reference output (so a check means "agrees
// to this many significant digits of the tensor's scale"):
//  - kTolDot: outputs that are sums of up to a few hundred float products, accumulated in a
//    different order (BLAS blocking, GPU reductions) or in double (reference): float rounding is
//    ~6e-8 per operation, so 1e-5 is ~100x headroom over the observed 1e-7..1e-6.
//  - kTolElem: per-element functions (exp in gated/jumprelu may differ by an ulp between libm
//    and CUDA's expf): 1e-6.
//  - Selections (top-k indices, batch thresholds, CSR structure, firing counts) must be identical:
//    both sides get the same float inputs.
constexpr double kTolDot = 1e-5;
constexpr double kTolElem = 1e-6;
// The forward pass, relative to each tensor's largest magnitude (the NLL: absolute, see forward()):
//  - f32, kTolForward = 1e-4: the agreement the model tests ask of an f32 pass against a float64
//    reference; two f32 passes that sum in different orders agree to ~1e-6.
//  - bf16, kTolForwardBf16 = 1e-2: both sides round the same weights and, up to f32 rounding, the
//    same activations, and bf16 products are exact, so the sums' order is the only difference;
//    but an activation that lies within f32 rounding of a bf16 rounding boundary rounds to
//    different bf16 values on the two sides (one bf16 step, 2^-8 of it), and from there the
//    passes differ by bf16-sized amounts in later layers. Measured on the CPU (OpenBLAS against
//    the reference's float64 sums, the same kind of difference as GPU against CPU) over 60
//    passes (seeds 1-30, both models): median 6e-5 (hooks) and 2e-4 (logits), worst 4.8e-3.
//    The tight checks of the bf16 arithmetic are therefore the per-op ones (gemm_bf16, to_bf16,
//    embed_bf16, project_bf16 on identical inputs: kTolDot, or bit for bit); this end-to-end check
//    catches wiring mistakes.
constexpr double kTolForward = 1e-4;
constexpr double kTolForwardBf16 = 1e-2;

struct Report {
  int passed = 0, failed = 0;
  bool verbose = false;
  void line(const std::string& what, double err, double tol, bool ok) {
    (ok ? passed : failed)++;
    if (verbose || !ok) printf("%-52s %-4s max err %.2e (tolerance %.1e)\n", what.c_str(), ok ? "ok" : "FAIL", err, tol);
  }
};

// Relative max difference of b against the reference a.
template <class T>
double rel_err(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return INFINITY;
  double scale = 0, worst = 0;
  for (size_t i = 0; i < a.size(); i++) scale = std::max(scale, std::abs(double(a[i])));
  for (size_t i = 0; i < a.size(); i++) {
    double e = std::abs(double(a[i]) - double(b[i]));
    if (!(e <= 1e300)) return INFINITY;  // NaN
    worst = std::max(worst, e);
  }
  return scale > 0 ? worst / scale : worst;
}

// The same host data on both sides.
template <class T>
struct Twin {
  Buffer<T> a, b;
  Twin(SaeOps& A, SaeOps& B, const std::vector<T>& h) : a(A.backend(), h.size()), b(B.backend(), h.size()) {
    a.upload(h);
    b.upload(h);
  }
  Twin(SaeOps& A, SaeOps& B, size_t n) : a(A.backend(), n), b(B.backend(), n) {
    a.zero();
    b.zero();
  }
  T* pa() { return a.data(); }
  T* pb() { return b.data(); }
};

struct Harness {
  SaeOps& ref;  // reference side (CPU for cuda, plain reference for cpu)
  SaeOps& dut;  // device under test
  Report& rep;
  Rng rng;
  Harness(SaeOps& r, SaeOps& d, Report& p, uint64_t seed) : ref(r), dut(d), rep(p), rng(seed) {}

  std::vector<float> randn(size_t n, double s = 1.0) {
    std::vector<float> v(n);
    for (auto& x : v) x = float(rng.normal() * s);
    return v;
  }
  template <class T>
  void cmp(const std::string& what, Twin<T>& t, size_t n, double tol) {
    std::vector<T> a(n), b(n);
    t.a.download(a.data(), n);
    t.b.download(b.data(), n);
    double e = rel_err(a, b);
    rep.line(what, e, tol, e <= tol);
  }
  void cmp_scalar(const std::string& what, double a, double b, double tol) {
    double e = std::abs(a - b) / std::max(std::abs(a), 1e-30);
    if (a == b) e = 0;
    rep.line(what, e, tol, e <= tol);
  }

  void ops() {
    const int64_t B = 64, d = 48, n = 256;
    const int k = 8;
    // gemm, all transpositions
    for (int ta = 0; ta < 2; ta++)
      for (int tb = 0; tb < 2; tb++) {
        const int64_t m = 37, nn = 53, kk = 71;
        Twin<float> A(ref, dut, randn(size_t(m * kk))), Bm(ref, dut, randn(size_t(kk * nn))), C(ref, dut, randn(size_t(m * nn)));
        const int64_t lda = ta ? m : kk, ldb = tb ? kk : nn;
        ref.backend().gemm(ta, tb, m, nn, kk, 0.7f, A.pa(), lda, Bm.pa(), ldb, 0.3f, C.pa(), nn);
        dut.backend().gemm(ta, tb, m, nn, kk, 0.7f, A.pb(), lda, Bm.pb(), ldb, 0.3f, C.pb(), nn);
        cmp(std::string("gemm ") + (ta ? "T" : "N") + (tb ? "T" : "N"), C, size_t(m * nn), kTolDot);
      }
    // gemv (batch-1 decoding), both ways, beta 0 and not
    for (int trans = 0; trans < 2; trans++) {
      const int64_t m = 53, nn = 71, lda = 75;
      Twin<float> A(ref, dut, randn(size_t(m * lda))), xv(ref, dut, randn(size_t(trans ? m : nn))),
          y(ref, dut, randn(size_t(trans ? nn : m)));
      ref.backend().gemv(trans, m, nn, 0.7f, A.pa(), lda, xv.pa(), 0.3f, y.pa());
      dut.backend().gemv(trans, m, nn, 0.7f, A.pb(), lda, xv.pb(), 0.3f, y.pb());
      cmp(std::string("gemv ") + (trans ? "T" : "N"), y, size_t(trans ? nn : m), kTolDot);
    }
    std::vector<float> hx = randn(size_t(B * d)), hb = randn(size_t(d)), hbn = randn(size_t(n), 0.3);
    Twin<float> x(ref, dut, hx), bd(ref, dut, hb), be(ref, dut, hbn), xc(ref, dut, size_t(B * d));
    ref.center(x.pa(), bd.pa(), xc.pa(), B, d);
    dut.center(x.pb(), bd.pb(), xc.pb(), B, d);
    cmp("center", xc, size_t(B * d), kTolElem);
    Twin<float> rows(ref, dut, size_t(B * n));
    ref.set_rows(rows.pa(), be.pa(), B, n);
    dut.set_rows(rows.pb(), be.pb(), B, n);
    cmp("set_rows", rows, size_t(B * n), 0.0);
    Twin<float> df(ref, dut, size_t(B * d));
    ref.sub(x.pa(), xc.pa(), df.pa(), B * d);
    dut.sub(x.pb(), xc.pb(), df.pb(), B * d);
    cmp("sub", df, size_t(B * d), kTolElem);
    Twin<float> g(ref, dut, size_t(B * d)), err(ref, dut, size_t(B));
    ref.recon_error(xc.pa(), x.pa(), g.pa(), err.pa(), B, d, 0.25f);
    dut.recon_error(xc.pb(), x.pb(), g.pb(), err.pb(), B, d, 0.25f);
    cmp("recon_error gradient", g, size_t(B * d), kTolElem);
    cmp("recon_error row sums", err, size_t(B), kTolDot);
    Twin<float> cs(ref, dut, randn(size_t(n)));
    Twin<float> big(ref, dut, randn(size_t(B * n)));
    ref.col_sum(big.pa(), n, cs.pa(), B, n - 6, -0.5f, true);
    dut.col_sum(big.pb(), n, cs.pb(), B, n - 6, -0.5f, true);
    cmp("col_sum (strided, accumulating)", cs, size_t(n), kTolDot);
    Twin<float> E(ref, dut, randn(size_t(n * d), 0.15)), D(ref, dut, randn(size_t(n * d), 0.15)), nr(ref, dut, size_t(n));
    ref.row_norms(D.pa(), nr.pa(), n, d);
    dut.row_norms(D.pb(), nr.pb(), n, d);
    cmp("row_norms", nr, size_t(n), kTolDot);

    // pre-activations shared by the selection ops: the same floats on both sides
    std::vector<float> hpre = randn(size_t(B * n));
    Twin<float> pre(ref, dut, hpre);
    std::vector<uint8_t> hmask(static_cast<size_t>(n));
    for (auto& m : hmask) m = rng.uniform() < 0.3;
    hmask[0] = 1;
    int64_t ndead = 0;
    for (auto m : hmask) ndead += m;
    Twin<uint8_t> mask(ref, dut, hmask);
    for (int masked = 0; masked < 2; masked++) {
      const int kk = masked ? int(std::min<int64_t>(ndead, 12)) : k;
      Twin<int32_t> rp(ref, dut, size_t(B + 1)), idx(ref, dut, size_t(B * kk));
      Twin<float> val(ref, dut, size_t(B * kk));
      ref.topk(pre.pa(), be.pa(), masked ? mask.pa() : nullptr, B, n, kk, rp.pa(), idx.pa(), val.pa());
      dut.topk(pre.pb(), be.pb(), masked ? mask.pb() : nullptr, B, n, kk, rp.pb(), idx.pb(), val.pb());
      std::string nm = masked ? "topk (dead mask, AuxK)" : "topk";
      cmp(nm + " indices", idx, size_t(B * kk), 0.0);
      cmp(nm + " values", val, size_t(B * kk), kTolElem);
      cmp(nm + " row_ptr", rp, size_t(B + 1), 0.0);
    }
    const int64_t kk = B * k;
    float ta = ref.batch_kth(pre.pa(), be.pa(), B, n, kk), tb = dut.batch_kth(pre.pb(), be.pb(), B, n, kk);
    cmp_scalar("batch_kth", ta, tb, 0.0);
    for (int incl = 0; incl < 2; incl++) {
      Twin<int32_t> rp(ref, dut, size_t(B + 1)), idx(ref, dut, size_t(2 * kk));
      Twin<float> val(ref, dut, size_t(2 * kk));
      int64_t na = ref.select_above(pre.pa(), be.pa(), ta, incl, B, n, rp.pa(), idx.pa(), val.pa(), 2 * kk);
      int64_t nb = dut.select_above(pre.pb(), be.pb(), ta, incl, B, n, rp.pb(), idx.pb(), val.pb(), 2 * kk);
      std::string nm = incl ? "select_above (inclusive)" : "select_above";
      cmp_scalar(nm + " nnz", double(na), double(nb), 0.0);
      if (na == nb && na <= 2 * kk) {
        cmp(nm + " row_ptr", rp, size_t(B + 1), 0.0);
        cmp(nm + " indices", idx, size_t(na), 0.0);
        cmp(nm + " values", val, size_t(na), kTolElem);
      }
      if (incl) cmp_scalar("select_above (inclusive) keeps B*k", double(na), double(kk), 0.0);
    }
    // sparse decode/backward on a CSR with variable row lengths (BatchTopK-like) and groups
    Twin<int32_t> rp(ref, dut, size_t(B + 1)), idx(ref, dut, size_t(kk * 2));
    Twin<float> val(ref, dut, size_t(kk * 2));
    const int64_t nnz = ref.select_above(pre.pa(), be.pa(), ta, true, B, n, rp.pa(), idx.pa(), val.pa(), kk * 2);
    dut.select_above(pre.pb(), be.pb(), ta, true, B, n, rp.pb(), idx.pb(), val.pb(), kk * 2);
    Groups gr;
    gr.n = 3;
    gr.end[0] = 16;
    gr.end[1] = 64;
    gr.end[2] = int32_t(n);
    Twin<float> xh(ref, dut, size_t(B * d)), G(ref, dut, size_t(B * 3 * d)), e3(ref, dut, size_t(B * 3));
    ref.sparse_decode(rp.pa(), idx.pa(), val.pa(), D.pa(), bd.pa(), x.pa(), gr, 0.03f, xh.pa(), G.pa(), e3.pa(), B, d);
    dut.sparse_decode(rp.pb(), idx.pb(), val.pb(), D.pb(), bd.pb(), x.pb(), gr, 0.03f, xh.pb(), G.pb(), e3.pb(), B, d);
    cmp("sparse_decode reconstruction", xh, size_t(B * d), kTolDot);
    cmp("sparse_decode prefix gradients", G, size_t(B * 3 * d), kTolDot);
    cmp("sparse_decode prefix errors", e3, size_t(B * 3), kTolDot);
    Twin<float> dpre(ref, dut, size_t(nnz));
    ref.sparse_dpre(rp.pa(), idx.pa(), val.pa(), D.pa(), G.pa(), gr, dpre.pa(), B, d);
    dut.sparse_dpre(rp.pb(), idx.pb(), val.pb(), D.pb(), G.pb(), gr, dpre.pb(), B, d);
    cmp("sparse_dpre", dpre, size_t(nnz), kTolDot);
    Twin<float> dx(ref, dut, randn(size_t(B * d)));
    ref.sparse_dx(rp.pa(), idx.pa(), dpre.pa(), E.pa(), dx.pa(), B, d, true);
    dut.sparse_dx(rp.pb(), idx.pb(), dpre.pb(), E.pb(), dx.pb(), B, d, true);
    cmp("sparse_dx (accumulating)", dx, size_t(B * d), kTolDot);
    Twin<int32_t> lp(ref, dut, size_t(n + 1)), ent(ref, dut, size_t(nnz)), er(ref, dut, size_t(nnz)), fires(ref, dut, size_t(n));
    ref.sparse_transpose(rp.pa(), idx.pa(), val.pa(), B, n, nnz, lp.pa(), ent.pa(), er.pa(), fires.pa());
    dut.sparse_transpose(rp.pb(), idx.pb(), val.pb(), B, n, nnz, lp.pb(), ent.pb(), er.pb(), fires.pb());
    cmp("sparse_transpose lat_ptr", lp, size_t(n + 1), 0.0);
    cmp("sparse_transpose entries", ent, size_t(nnz), 0.0);
    cmp("sparse_transpose entry rows", er, size_t(nnz), 0.0);
    cmp("sparse_transpose fires", fires, size_t(n), 0.0);
    for (int acc = 0; acc < 2; acc++) {
      Twin<float> gD(ref, dut, randn(size_t(n * d))), gE(ref, dut, randn(size_t(n * d))), gb(ref, dut, randn(size_t(n)));
      ref.sparse_param_grads(lp.pa(), ent.pa(), er.pa(), val.pa(), dpre.pa(), G.pa(), gr, xc.pa(), gD.pa(), gE.pa(), gb.pa(),
                             n, d, acc);
      dut.sparse_param_grads(lp.pb(), ent.pb(), er.pb(), val.pb(), dpre.pb(), G.pb(), gr, xc.pb(), gD.pb(), gE.pb(), gb.pb(),
                             n, d, acc);
      std::string nm = acc ? "sparse_param_grads (accumulating) " : "sparse_param_grads ";
      cmp(nm + "W_dec", gD, size_t(n * d), kTolDot);
      cmp(nm + "W_enc", gE, size_t(n * d), kTolDot);
      cmp(nm + "b_enc", gb, size_t(n), kTolDot);
    }
    cmp_scalar("min_positive", ref.min_positive(val.pa(), nnz), dut.min_positive(val.pb(), nnz), 0.0);

    // dense architectures
    {
      Twin<float> p1(ref, dut, hpre), f(ref, dut, size_t(B * n)), csf(ref, dut, size_t(n));
      Twin<int32_t> fi(ref, dut, size_t(n));
      ref.relu_fwd(p1.pa(), be.pa(), f.pa(), fi.pa(), csf.pa(), B, n);
      dut.relu_fwd(p1.pb(), be.pb(), f.pb(), fi.pb(), csf.pb(), B, n);
      cmp("relu_fwd activations", f, size_t(B * n), kTolElem);
      cmp("relu_fwd fires", fi, size_t(n), 0.0);
      cmp("relu_fwd column sums", csf, size_t(n), kTolDot);
      Twin<float> dfa(ref, dut, randn(size_t(B * n))), dp(ref, dut, size_t(B * n));
      ref.relu_bwd(dfa.pa(), f.pa(), nr.pa(), 0.1f, dp.pa(), B, n);
      dut.relu_bwd(dfa.pb(), f.pb(), nr.pb(), 0.1f, dp.pb(), B, n);
      cmp("relu_bwd", dp, size_t(B * n), kTolElem);
      Twin<float> gD(ref, dut, randn(size_t(n * d)));
      ref.l1_norm_grad(csf.pa(), nr.pa(), D.pa(), 0.2f, gD.pa(), n, d);
      dut.l1_norm_grad(csf.pb(), nr.pb(), D.pb(), 0.2f, gD.pb(), n, d);
      cmp("l1_norm_grad", gD, size_t(n * d), kTolDot);
    }
    {
      std::vector<float> hlt(static_cast<size_t>(n));
      for (auto& v : hlt) v = float(std::log(0.2 + rng.uniform()));
      Twin<float> lt(ref, dut, hlt), p1(ref, dut, hpre), f(ref, dut, size_t(B * n));
      Twin<int32_t> fi(ref, dut, size_t(n));
      ref.jumprelu_fwd(p1.pa(), be.pa(), lt.pa(), f.pa(), fi.pa(), B, n);
      dut.jumprelu_fwd(p1.pb(), be.pb(), lt.pb(), f.pb(), fi.pb(), B, n);
      cmp("jumprelu_fwd activations", f, size_t(B * n), kTolElem);
      cmp("jumprelu_fwd fires", fi, size_t(n), 0.0);
      for (float fs : {0.0f, 0.05f}) {
        Twin<float> dfa(ref, dut, randn(size_t(B * n))), dp(ref, dut, size_t(B * n)), glt(ref, dut, size_t(n));
        ref.jumprelu_bwd(dfa.pa(), p1.pa(), lt.pa(), fi.pa(), 2.0f, 0.3f, fs, dp.pa(), glt.pa(), B, n);
        dut.jumprelu_bwd(dfa.pb(), p1.pb(), lt.pb(), fi.pb(), 2.0f, 0.3f, fs, dp.pb(), glt.pb(), B, n);
        std::string nm = fs > 0 ? "jumprelu_bwd (frequency penalty) " : "jumprelu_bwd ";
        cmp(nm + "dpre", dp, size_t(B * n), kTolElem);
        cmp(nm + "threshold", glt, size_t(n), kTolDot);
      }
    }
    {
      Twin<float> bg(ref, dut, randn(size_t(n), 0.3)), rm(ref, dut, randn(size_t(n), 0.3)), bm(ref, dut, randn(size_t(n), 0.3));
      Twin<float> f(ref, dut, size_t(B * n)), grl(ref, dut, size_t(B * n)), gs(ref, dut, size_t(n));
      Twin<int32_t> fi(ref, dut, size_t(n));
      ref.gated_fwd(pre.pa(), bg.pa(), rm.pa(), bm.pa(), f.pa(), grl.pa(), fi.pa(), gs.pa(), B, n);
      dut.gated_fwd(pre.pb(), bg.pb(), rm.pb(), bm.pb(), f.pb(), grl.pb(), fi.pb(), gs.pb(), B, n);
      cmp("gated_fwd activations", f, size_t(B * n), kTolElem);
      cmp("gated_fwd relu(pi_gate)", grl, size_t(B * n), kTolElem);
      cmp("gated_fwd fires", fi, size_t(n), 0.0);
      cmp("gated_fwd gate sums", gs, size_t(n), kTolDot);
      Twin<float> dfa(ref, dut, randn(size_t(B * n))), dgr(ref, dut, randn(size_t(B * n))), db(ref, dut, size_t(B * n));
      Twin<float> g1(ref, dut, size_t(n)), g2(ref, dut, size_t(n)), g3(ref, dut, size_t(n));
      ref.gated_bwd(pre.pa(), dfa.pa(), dgr.pa(), bg.pa(), rm.pa(), bm.pa(), 0.05f, db.pa(), g1.pa(), g2.pa(), g3.pa(), B, n);
      dut.gated_bwd(pre.pb(), dfa.pb(), dgr.pb(), bg.pb(), rm.pb(), bm.pb(), 0.05f, db.pb(), g1.pb(), g2.pb(), g3.pb(), B, n);
      cmp("gated_bwd dbase", db, size_t(B * n), kTolElem);
      cmp("gated_bwd b_gate", g1, size_t(n), kTolDot);
      cmp("gated_bwd r_mag", g2, size_t(n), kTolDot);
      cmp("gated_bwd b_mag", g3, size_t(n), kTolDot);
    }
    // reductions and the optimiser
    const int64_t big_n = 300007;  // not a multiple of any block size
    Twin<float> a(ref, dut, randn(size_t(big_n))), b(ref, dut, randn(size_t(big_n)));
    cmp_scalar("sumsq", ref.sumsq(a.pa(), big_n), dut.sumsq(a.pb(), big_n), 1e-9);
    cmp_scalar("sum", ref.sum(a.pa(), big_n), dut.sum(a.pb(), big_n), 1e-9);
    cmp_scalar("dot", ref.dot(a.pa(), b.pa(), big_n), dut.dot(a.pb(), b.pb(), big_n), 1e-9);
    {
      std::vector<float> hv = randn(size_t(big_n));
      for (auto& v : hv) v = v * v;
      Twin<float> p(ref, dut, randn(size_t(big_n))), m(ref, dut, randn(size_t(big_n))), v(ref, dut, hv);
      AdamStep s{1e-3f, 0.9f, 0.999f, 1e-8f, 0.19f, 0.002f, 0.7f};
      ref.adam(p.pa(), a.pa(), m.pa(), v.pa(), big_n, s);
      dut.adam(p.pb(), a.pb(), m.pb(), v.pb(), big_n, s);
      cmp("adam parameters", p, size_t(big_n), kTolElem);
      cmp("adam first moments", m, size_t(big_n), kTolElem);
      cmp("adam second moments", v, size_t(big_n), kTolElem);
    }
    Twin<float> gD(ref, dut, randn(size_t(n * d)));
    ref.remove_parallel(D.pa(), gD.pa(), n, d);
    dut.remove_parallel(D.pb(), gD.pb(), n, d);
    cmp("remove_parallel", gD, size_t(n * d), kTolDot);
    ref.normalize_rows(D.pa(), n, d);
    dut.normalize_rows(D.pb(), n, d);
    cmp("normalize_rows", D, size_t(n * d), kTolDot);
  }

  // One training step of every architecture (loss and every gradient), then three full trainer
  // steps (Adam, clipping, decoder constraint, counters) compared through the exported SAE.
  void steps() {
    const int64_t B = 96, d = 40, n = 160;
    std::vector<float> hx = randn(size_t(B * 4 * d));
    for (size_t i = 0; i < hx.size(); i++) hx[i] = std::max(hx[i], 0.0f) * 2.0f + 0.1f * float(i % 7);
    std::vector<float> hb = randn(size_t(d), 0.1);
    std::vector<uint8_t> dead(static_cast<size_t>(n), 0);
    for (int64_t i = 0; i < n; i += 5) dead[size_t(i)] = 1;
    for (const ArchInfo& ai : arch_registry()) {
      const std::string name = ai.name;
      ArchConfig c;
      c.arch = name;
      c.d_in = d;
      c.d_sae = n;
      c.k = 6;
      c.k_aux = 10;
      c.lambda = name == "jumprelu" ? 0.5f : 2.0f;
      c.bandwidth = 0.3f;
      c.init_threshold = 0.2f;
      c.freq_scale = name == "jumprelu" ? 0.1f : 0.0f;
      c.prefixes = {20, 80, n};
      auto A = make_arch(ref, c), Bx = make_arch(dut, c);
      A->init(hb);
      Bx->init(hb);
      Twin<float> x(ref, dut, std::vector<float>(hx.begin(), hx.begin() + B * d));
      Twin<uint8_t> dm(ref, dut, dead);
      StepInput ia, ib;
      ia.x = x.pa();
      ib.x = x.pb();
      ia.B = ib.B = B;
      ia.dead_mask = dm.pa();
      ib.dead_mask = dm.pb();
      ia.num_dead = ib.num_dead = n / 5;
      StepStats sa = A->step(ia), sb = Bx->step(ib);
      cmp_scalar(name + " step: loss", sa.loss, sb.loss, kTolDot);
      double fe = rel_err(sa.fires, sb.fires);
      rep.line(name + " step: firing counts", fe, 0.0, fe == 0.0);
      for (Param* p : A->params()) {
        Param* q = Bx->param(p->name);
        double e = rel_err(p->g.to_vector(), q->g.to_vector());
        rep.line(name + " step: gradient of " + p->name, e, kTolDot * 10, e <= kTolDot * 10);
      }
      // three steps through the trainer, exported
      TrainOptions o;
      o.batch = B;
      o.tokens = 3 * B;
      o.init_rows = B;
      o.dead_tokens = B;  // AuxK from the second step
      o.progress = false;
      RunSpec r;
      r.arch = c;
      r.lr = 1e-3f;
      Trainer ta(o, {r}, ref), tb(o, {r}, dut);
      MemoryRowSource sa_src(hx, d), sb_src(hx, d);
      ta.train(sa_src);
      tb.train(sb_src);
      // After Adam steps, an entry whose gradient is within float noise of zero (or of Adam's
      // epsilon) can move by a different fraction of lr on the two sides, whatever the precision of
      // the gradient: the tolerance is 1e-4 of the tensor's scale plus 1% of one step (lr).
      Sae ea = ta.exported(0), eb = tb.exported(0);
      auto close = [&](const std::vector<float>& u, const std::vector<float>& v) {
        double scale = 0, worst = 0;
        for (size_t i = 0; i < u.size(); i++) scale = std::max(scale, std::abs(double(u[i])));
        for (size_t i = 0; i < u.size() && i < v.size(); i++) {
          double e = std::abs(double(u[i]) - double(v[i]));
          worst = std::max(worst, e == e ? e : INFINITY);
        }
        return u.size() == v.size() ? worst / (1e-4 * scale + 0.01 * r.lr) : INFINITY;
      };
      double e = std::max({close(ea.W_enc, eb.W_enc), close(ea.W_dec, eb.W_dec), close(ea.b_dec, eb.b_dec),
                           close(ea.b_enc, eb.b_enc), close(ea.threshold, eb.threshold), close(ea.b_gate, eb.b_gate),
                           close(ea.r_mag, eb.r_mag), close(ea.b_mag, eb.b_mag)});
      rep.line(name + ": 3 trainer steps, exported weights (err/tol)", e, 1.0, e <= 1.0);
    }
  }

  // The pieces of bf16 compute, on the same inputs on both sides: gemm_bf16 (exact products of
  // bf16 values, f32 sums: agreement to summation order, kTolDot), the rounding of activations
  // and the bf16 embedding (bit for bit), and a projection (rounding, then product).
  void bf16_ops() {
    auto tref = make_transformer_ops(ref.backend()), tdut = make_transformer_ops(dut.backend());
    auto bf16 = [](const std::vector<float>& v) {
      std::vector<uint16_t> h(v.size());
      for (size_t i = 0; i < v.size(); i++) h[i] = f32_to_bf16(v[i]);
      return h;
    };
    for (int ta = 0; ta < 2; ta++)
      for (int tb = 0; tb < 2; tb++) {
        const int64_t m = 37, nn = 53, kk = 71;
        Twin<uint16_t> A(ref, dut, bf16(randn(size_t(m * kk)))), Bm(ref, dut, bf16(randn(size_t(kk * nn))));
        Twin<float> C(ref, dut, randn(size_t(m * nn)));
        const int64_t lda = ta ? m : kk, ldb = tb ? kk : nn;
        ref.backend().gemm_bf16(ta, tb, m, nn, kk, 0.7f, A.pa(), lda, Bm.pa(), ldb, 0.3f, C.pa(), nn);
        dut.backend().gemm_bf16(ta, tb, m, nn, kk, 0.7f, A.pb(), lda, Bm.pb(), ldb, 0.3f, C.pb(), nn);
        cmp(std::string("gemm_bf16 ") + (ta ? "T" : "N") + (tb ? "T" : "N"), C, size_t(m * nn), kTolDot);
      }
    const int64_t rows = 45, in = 48, out = 80, vocab = 97;
    std::vector<float> hx = randn(size_t(rows * in));
    hx[0] = 1.0f + 1.0f / 256;  // ties, to even
    hx[1] = 1.0f + 3.0f / 256;
    hx[2] = -0.0f;
    hx[3] = INFINITY;
    hx[4] = NAN;
    Twin<float> x(ref, dut, hx);
    Twin<uint16_t> xb(ref, dut, size_t(rows * in));
    tref->to_bf16(x.pa(), xb.pa(), rows * in);
    tdut->to_bf16(x.pb(), xb.pb(), rows * in);
    std::vector<uint16_t> ba(size_t(rows * in)), bb(size_t(rows * in));
    xb.a.download(ba.data(), ba.size());
    xb.b.download(bb.data(), bb.size());
    const bool same = ba == bb && ba == bf16(hx);
    rep.line("to_bf16 (bits, ties and specials included)", same ? 0.0 : 1.0, 0.0, same);
    std::vector<int32_t> htok(static_cast<size_t>(rows));
    for (auto& t : htok) t = int32_t(rng.next_u64() % uint64_t(vocab));
    Twin<int32_t> tok(ref, dut, htok);
    std::vector<int32_t> hpos(static_cast<size_t>(rows));
    for (size_t i = 0; i < hpos.size(); i++) hpos[i] = int32_t(i % 15);
    Twin<int32_t> positions(ref, dut, hpos);
    Twin<uint16_t> wte(ref, dut, bf16(randn(size_t(vocab * in))));
    Twin<float> wpe(ref, dut, randn(size_t(15 * in))), emb(ref, dut, size_t(rows * in));
    for (int pos = 0; pos < 2; pos++) {
      // Without positions, Gemma's scale (an exact product, then one rounding: bit for bit too).
      const float scale = pos ? 1.0f : 6.9282f;
      tref->embed_bf16(tok.pa(), positions.pa(), rows, wte.pa(), pos ? wpe.pa() : nullptr, in, scale, emb.pa());
      tdut->embed_bf16(tok.pb(), positions.pb(), rows, wte.pb(), pos ? wpe.pb() : nullptr, in, scale, emb.pb());
      cmp(pos ? "embed_bf16 (with positions)" : "embed_bf16 (scaled, Gemma)", emb, size_t(rows * in), 0.0);
    }
    // Gemma 2's final logit soft-capping, 30 tanh(x / 30), on logits of scale 40: the shared
    // tanh_f32, so only the hardware's rounding of its few operations differs.
    Twin<float> lg(ref, dut, randn(size_t(rows * out), 40.0));
    tref->softcap(lg.pa(), rows * out, 30.0f);
    tdut->softcap(lg.pb(), rows * out, 30.0f);
    cmp("softcap (Gemma 2 logits)", lg, size_t(rows * out), kTolElem);
    Twin<float> xr(ref, dut, randn(size_t(rows * in))), y(ref, dut, size_t(rows * out));
    for (int trans = 0; trans < 2; trans++) {
      Twin<uint16_t> w(ref, dut, bf16(randn(size_t(in * out), 0.2)));
      tref->project_bf16(ref.backend(), trans, rows, out, in, xr.pa(), xb.pa(), w.pa(), y.pa());
      tdut->project_bf16(dut.backend(), trans, rows, out, in, xr.pb(), xb.pb(), w.pb(), y.pb());
      cmp(trans ? "project_bf16 (weights [out, in])" : "project_bf16 (weights [in, out])", y, size_t(rows * out), kTolDot);
    }
  }

  // SparseEncoder (sae/sparse_encode.h) on CUDA against the CPU one, for each inference
  // architecture, with and without b_dec subtracted. Rows and weights lie on a coarse binary grid (x and
  // b_dec multiples of 1/8, W_enc, biases and thresholds of 1/16), so every pre-activation is exact
  // in float32 on both sides, whatever the order of the sums: ties and values exactly at a threshold
  // are frequent, and the two encoders must give identical rows (indices and value bits). Only with
  // --device cuda: the CPU encoder's own test is tests/unit/sae/test_sparse_encode.cpp. (The run-time
  // normalisation is left out: both encoders run it on the host with the same code, and its
  // inexact output would let the two products round differently.)
  void sparse_encode() {
    auto grid = [&](size_t n, int lo, int hi, float step) {
      std::vector<float> v(n);
      for (auto& x : v) x = float(lo + int64_t(rng.next_u64() % uint64_t(hi - lo + 1))) * step;
      return v;
    };
    const int64_t d_in = 48, d_sae = 640, rows = 1000;
    for (const char* arch : {"standard", "jumprelu", "gated", "topk"})
      for (const bool bdec : {true, false}) {
        Sae s;
        s.arch = arch;
        s.d_in = d_in;
        s.d_sae = d_sae;
        s.k = 24;
        s.apply_b_dec_to_input = bdec;
        s.W_enc = grid(size_t(d_in * d_sae), -16, 16, 1.0f / 16);
        s.W_dec = randn(size_t(d_sae * d_in), 0.1);
        s.b_dec = grid(size_t(d_in), -8, 8, 1.0f / 8);
        if (s.arch == "gated") {
          s.b_gate = grid(size_t(d_sae), -32, 16, 1.0f / 16);
          s.r_mag = randn(size_t(d_sae), 0.3);
          s.b_mag = grid(size_t(d_sae), -16, 16, 1.0f / 16);
        } else {
          s.b_enc = grid(size_t(d_sae), -32, 16, 1.0f / 16);
        }
        if (s.arch == "jumprelu") s.threshold = grid(size_t(d_sae), 0, 32, 1.0f / 16);
        s.validate("selftest SAE");
        const std::vector<float> x = grid(size_t(rows * d_in), -16, 16, 1.0f / 8);
        std::vector<uint32_t> ca, ia, cb, ib;
        std::vector<float> va, vb;
        SparseEncoder(s, Device::cpu).encode(x.data(), rows, ca, ia, va);
        SparseEncoder(s, Device::cuda).encode(x.data(), rows, cb, ib, vb);
        const bool same_rows = ca == cb && ia == ib;
        const bool exact =
            same_rows && (va.empty() || std::memcmp(va.data(), vb.data(), va.size() * sizeof(float)) == 0);
        const double err = exact ? 0 : same_rows ? std::max(rel_err(va, vb), 1e-30) : INFINITY;
        if (!same_rows) {
          size_t r = 0;
          while (r < ca.size() && r < cb.size() && ca[r] == cb[r]) r++;
          printf("  sparse encode %s%s: active latents differ (first at row %zu of %zu; %zu against %zu entries)\n",
                 arch, bdec ? "" : " without b_dec", r, size_t(rows), ia.size(), ib.size());
        }
        rep.line(std::string("sparse encode ") + arch + (bdec ? "" : " without b_dec") + " (identical)", err, 0, exact);
      }
  }

  // The transformer forward pass of six small random models, written to a temporary directory:
  //  - a GPT-2 with a tied head;
  //  - a Qwen2, of the Llama family, with grouped-query attention, RoPE, q/k/v biases and an
  //    untied head;
  //  - a Qwen3: the same without biases, with per-head q/k RMSNorm and head_dim 16 != 48 / 4;
  //  - a Gemma 2: (1 + w) norms, post-norms, a scaled embedding, GeGLU, sliding windows of 6
  //    keys on layer 0, attention and final soft-capping;
  //  - a Gemma 3: q/k norms, a sliding layer with its own rope and a global one with linear
  //    scaling;
  //  - a GPT-NeoX: LayerNorm, packed qkv, rotary on half of each head, a parallel residual.
  // Every hook (attn.hook_z included), the logits and the NLL of the device under test against
  // the reference side, in f32 and in bf16 compute (on the CPU, the bf16 emulation).
  void forward() {
    const nlohmann::json gpt2 = {{"model_type", "gpt2"}, {"architectures", {"GPT2LMHeadModel"}}, {"n_layer", 2},
                                 {"n_embd", 48}, {"n_head", 4}, {"n_positions", 32}, {"vocab_size", 97},
                                 {"activation_function", "gelu_new"}, {"layer_norm_epsilon", 1e-5}};
    const nlohmann::json qwen2 = {{"model_type", "qwen2"}, {"architectures", {"Qwen2ForCausalLM"}}, {"hidden_size", 48},
                                  {"intermediate_size", 80}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                                  {"num_key_value_heads", 2}, {"vocab_size", 97}, {"max_position_embeddings", 64},
                                  {"rms_norm_eps", 1e-6}, {"hidden_act", "silu"}, {"tie_word_embeddings", false}};
    const nlohmann::json qwen3 = {{"model_type", "qwen3"}, {"architectures", {"Qwen3ForCausalLM"}}, {"hidden_size", 48},
                                  {"head_dim", 16}, {"intermediate_size", 80}, {"num_hidden_layers", 2},
                                  {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"vocab_size", 97},
                                  {"max_position_embeddings", 64}, {"rms_norm_eps", 1e-6}, {"hidden_act", "silu"},
                                  {"attention_bias", false}, {"tie_word_embeddings", false}};
    const nlohmann::json gemma2 = {{"model_type", "gemma2"}, {"architectures", {"Gemma2ForCausalLM"}}, {"hidden_size", 48},
                                   {"head_dim", 16}, {"intermediate_size", 80}, {"num_hidden_layers", 2},
                                   {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"vocab_size", 97},
                                   {"max_position_embeddings", 64}, {"sliding_window", 6}, {"query_pre_attn_scalar", 20},
                                   {"attn_logit_softcapping", 2.0}, {"final_logit_softcapping", 3.0}, {"dtype", "float32"}};
    const nlohmann::json gemma3 = {
        {"model_type", "gemma3_text"}, {"architectures", {"Gemma3ForCausalLM"}}, {"hidden_size", 48}, {"head_dim", 16},
        {"intermediate_size", 80}, {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
        {"vocab_size", 97}, {"max_position_embeddings", 64}, {"sliding_window", 6}, {"query_pre_attn_scalar", 16},
        {"layer_types", {"sliding_attention", "full_attention"}},
        {"rope_parameters",
         {{"full_attention", {{"rope_type", "linear"}, {"factor", 4.0}, {"rope_theta", 1e6}}},
          {"sliding_attention", {{"rope_type", "default"}, {"rope_theta", 10000.0}}}}}};
    const nlohmann::json neox = {{"model_type", "gpt_neox"}, {"architectures", {"GPTNeoXForCausalLM"}}, {"hidden_size", 48},
                                 {"intermediate_size", 96}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                                 {"vocab_size", 97}, {"max_position_embeddings", 64}, {"rotary_pct", 0.5},
                                 {"hidden_act", "gelu"}, {"use_parallel_residual", true}};
    TempDir dir("sae-selftest");
    for (const auto& [name, cfg] : {std::make_pair(std::string("gpt2"), gpt2), std::make_pair(std::string("qwen2"), qwen2),
                                    std::make_pair(std::string("qwen3"), qwen3), std::make_pair(std::string("gemma2"), gemma2),
                                    std::make_pair(std::string("gemma3"), gemma3), std::make_pair(std::string("gpt_neox"), neox)}) {
      const std::string path = dir / name;
      fs::create_directory(path);
      write_random_model(path, cfg, uint32_t(rng.next_u64()));
      const int64_t batch = 3, seq = 20;
      std::vector<int32_t> tokens(size_t(batch * seq));
      for (auto& t : tokens) t = int32_t(rng.next_u64() % 97);
      for (Compute c : {Compute::f32, Compute::bf16}) {
        Model a(path, ref.backend(), c), b(path, dut.backend(), c);
        ForwardOptions o;
        o.capture = model_hooks(a.config());
        o.want_logits = true;
        o.want_nll = true;
        const ForwardResult ra = a.forward(tokens.data(), batch, seq, o), rb = b.forward(tokens.data(), batch, seq, o);
        const bool bf16 = c == Compute::bf16;
        const double tol = bf16 ? kTolForwardBf16 : kTolForward;
        const std::string what = "forward " + name + " " + compute_name(c) + ": ";
        double hooks = 0;
        for (size_t i = 0; i < o.capture.size(); i++) hooks = std::max(hooks, rel_err(ra.captured[i], rb.captured[i]));
        rep.line(what + "every hook", hooks, tol, hooks <= tol);
        const double lg = rel_err(ra.logits, rb.logits);
        rep.line(what + "logits", lg, tol, lg <= tol);
        double nll = ra.nll.size() == rb.nll.size() && !ra.nll.empty() ? 0 : INFINITY;
        for (size_t i = 0; i < ra.nll.size() && i < rb.nll.size(); i++) {
          const double e = std::abs(double(ra.nll[i]) - double(rb.nll[i]));
          nll = std::max(nll, e == e ? e : INFINITY);
        }
        // An NLL is lse(logits) - logit[target]: it moves by at most twice the largest change of a
        // logit, so in bf16 its tolerance is the logits' (relative) one carried through: twice
        // kTolForwardBf16 times the largest logit magnitude. In f32 it is kTolForward, absolute.
        double scale = 0;
        for (float v : ra.logits) scale = std::max(scale, double(std::abs(v)));
        const double nll_tol = bf16 ? 2 * kTolForwardBf16 * scale : kTolForward;
        rep.line(what + "NLL (absolute)", nll, nll_tol, nll <= nll_tol);
        // Incremental decoding with the KV cache (store_kv, attention over cached slots, left
        // padding): two prompts of 5 and 9 tokens in one padded batch, then 6 single-token steps;
        // every step's logits on both sides, and against the full pass's rows on the reference
        // side (the cache's own identity).
        KvCache ca = a.make_cache(2, 15, {4, 0}), cb = b.make_cache(2, 15, {4, 0});
        ForwardOptions step;
        step.want_logits = true;
        ForwardResult sa, sb;
        double cached = 0;
        for (int64_t s = 0; s < 7; s++) {
          const int64_t n = s == 0 ? 9 : 1;
          std::vector<int32_t> ids(size_t(2 * n));
          for (int64_t i = 0; i < n; i++) {
            ids[size_t(i)] = tokens[size_t(s == 0 ? std::max<int64_t>(i - 4, 0) : 4 + s)];
            ids[size_t(n + i)] = tokens[size_t(seq + (s == 0 ? i : 8 + s))];
          }
          a.forward(ids.data(), 2, n, ca, step, sa);
          b.forward(ids.data(), 2, n, cb, step, sb);
          cached = std::max(cached, rel_err(sa.logits, sb.logits));
        }
        rep.line(what + "KV-cache decoding, left-padded batch (logits)", cached, tol, cached <= tol);
      }
    }
  }
};

int body(int argc, char** argv) {
  po::options_description desc("Options");
  desc.add_options()("seed", po::value<uint64_t>()->default_value(1), "seed of the random inputs")(
      "verbose,v", po::bool_switch(), "print every check, not only failures");
  cli::add_device_option(desc);
  auto vm = cli::parse(argc, argv, desc, "[--device cuda|cpu] [options]",
                       "Compare the SAE training ops, a training step of every architecture and the transformer forward\n"
                       "pass (f32 and bf16 compute) across backends on random data: --device cuda checks the CUDA\n"
                       "backend against the CPU one (needs a GPU); --device cpu checks the CPU backend against the\n"
                       "plain reference. Exit 0: all agree within the stated tolerances; 2: a check failed; 1: the\n"
                       "device is not available.");
  Device dev = resolve_device(cli::device_option(vm));
  std::unique_ptr<SaeOps> dut = make_ops(dev);
  std::unique_ptr<SaeOps> ref = dev == Device::cuda ? make_cpu_ops() : make_reference_ops();
  if (dev == Device::cuda) printf("GPU: %s\n", cuda_describe().c_str());
  printf("comparing %s against %s\n", dut->name(), ref->name());
  Report rep;
  rep.verbose = vm["verbose"].as<bool>();
  Harness h(*ref, *dut, rep, vm["seed"].as<uint64_t>());
  h.ops();
  h.steps();
  h.bf16_ops();
  h.forward();
  if (dev == Device::cuda) h.sparse_encode();
  printf("%d checks: %d passed, %d failed\n", rep.passed + rep.failed, rep.passed, rep.failed);
  return rep.failed ? kExitInternal : 0;
}

}  // namespace

int main(int argc, char** argv) { return sae::cli::run("sae-selftest", argc, argv, body); }
