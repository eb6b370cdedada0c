// Gradient checks: every architecture's loss and gradients (computed in float by the CPU op set)
// against an independent plain implementation of the same loss in double, differentiated by
// central finite differences. Where the loss has a straight-through pseudo-gradient (JumpReLU's
// threshold: the true derivative of a step is zero almost everywhere) the check is against the
// formula of the paper instead.
//
// Tolerance: |analytic - numeric| <= 2e-3 * max|numeric| + 1e-5 per parameter entry. The analytic
// side is float (about 1e-6 relative per operation, summed over a few hundred terms); the numeric
// side is double with h = 1e-4 on a loss whose third derivative is small, so its truncation error
// is ~1e-8 and its rounding error ~1e-12 / h. The problems are tiny (d=6, 10 latents, 7 rows) and
// drawn so that no pre-activation is within 1e-3 of a kink or a selection boundary, where finite
// differences would cross a discontinuity.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "base/rng.h"
#include "sae/arch.h"
#include "sae/ops.h"

using namespace sae;

namespace {

using Vec = std::vector<double>;
using Params = std::map<std::string, Vec>;

struct Problem {
  int64_t B = 7, d = 6, n = 10;
  Vec x;                    // [B, d]
  std::vector<uint8_t> dead;  // AuxK dead mask
  int64_t num_dead = 0;
};

// ---- the plain double reference ----

struct Ref {
  const ArchConfig& c;
  const Problem& p;
  double sparsity_scale = 1;

  Vec pre(const Params& P, const std::string& bias) const {
    const auto &E = P.at("W_enc_T"), &bd = P.at("b_dec");
    Vec out(size_t(p.B * p.n));
    for (int64_t r = 0; r < p.B; r++)
      for (int64_t i = 0; i < p.n; i++) {
        double s = bias.empty() ? 0.0 : P.at(bias)[size_t(i)];
        for (int64_t j = 0; j < p.d; j++) s += (p.x[size_t(r * p.d + j)] - bd[size_t(j)]) * E[size_t(i * p.d + j)];
        out[size_t(r * p.n + i)] = s;
      }
    return out;
  }
  // xhat = b + f D (D and b given separately so the gated auxiliary term can use frozen copies)
  Vec decode(const Vec& f, const Vec& D, const Vec& b) const {
    Vec xh(size_t(p.B * p.d));
    for (int64_t r = 0; r < p.B; r++)
      for (int64_t j = 0; j < p.d; j++) {
        double s = b.empty() ? 0.0 : b[size_t(j)];
        for (int64_t i = 0; i < p.n; i++) s += f[size_t(r * p.n + i)] * D[size_t(i * p.d + j)];
        xh[size_t(r * p.d + j)] = s;
      }
    return xh;
  }
  double mse(const Vec& xh, const Vec& target) const {
    double s = 0;
    for (size_t i = 0; i < xh.size(); i++) s += (xh[i] - target[i]) * (xh[i] - target[i]);
    return s / double(p.B);
  }
  // Top-k per row among allowed latents, ties to the lower index; f = relu of the chosen.
  Vec topk(const Vec& z, int k, const std::vector<uint8_t>* allow) const {
    Vec f(z.size(), 0.0);
    for (int64_t r = 0; r < p.B; r++) {
      std::vector<int64_t> idx;
      for (int64_t i = 0; i < p.n; i++)
        if (!allow || (*allow)[size_t(i)]) idx.push_back(i);
      std::stable_sort(idx.begin(), idx.end(),
                       [&](int64_t a, int64_t b) { return z[size_t(r * p.n + a)] > z[size_t(r * p.n + b)]; });
      for (int q = 0; q < k; q++) f[size_t(r * p.n + idx[size_t(q)])] = std::max(0.0, z[size_t(r * p.n + idx[size_t(q)])]);
    }
    return f;
  }
  Vec batchtopk(const Vec& z, int64_t kk) const {
    Vec pos;
    for (double v : z)
      if (v > 0) pos.push_back(v);
    std::sort(pos.begin(), pos.end(), std::greater<double>());
    double thr = int64_t(pos.size()) >= kk ? pos[size_t(kk - 1)] : 0.0;
    Vec f(z.size(), 0.0);
    for (size_t i = 0; i < z.size(); i++)
      if (z[i] > 0 && z[i] >= thr) f[i] = z[i];
    return f;
  }
  // AuxK term with the residual fixed at `resid` (the stop-gradient).
  double auxk(const Vec& z, const Params& P, const Vec& resid) const {
    if (p.num_dead == 0 || c.aux_coef == 0) return 0;
    int k_aux = c.k_aux > 0 ? c.k_aux : int(std::max<int64_t>(1, p.d / 2));
    int keff = int(std::min<int64_t>(k_aux, p.num_dead));
    double scale = std::min(1.0, double(p.num_dead) / double(k_aux));
    Vec f = topk(z, keff, &p.dead);
    return c.aux_coef * scale * mse(decode(f, P.at("W_dec"), {}), resid);
  }
  Vec residual(const Vec& xh) const {
    Vec e(xh.size());
    for (size_t i = 0; i < e.size(); i++) e[i] = p.x[i] - xh[i];
    return e;
  }

  // The loss at P; `frozen` holds the values used where the architecture stops gradients (the
  // AuxK residual, gated's decoder copy): the base parameters of the check.
  double loss(const Params& P, const Params& frozen) const {
    const std::string& a = c.arch;
    const Vec& D = P.at("W_dec");
    const Vec& bd = P.at("b_dec");
    if (a == "relu") {
      Vec z = pre(P, "b_enc"), f(z.size());
      for (size_t i = 0; i < z.size(); i++) f[i] = std::max(0.0, z[i]);
      double pen = 0;
      for (int64_t i = 0; i < p.n; i++) {
        double nn = 0;
        for (int64_t j = 0; j < p.d; j++) nn += D[size_t(i * p.d + j)] * D[size_t(i * p.d + j)];
        for (int64_t r = 0; r < p.B; r++) pen += f[size_t(r * p.n + i)] * std::sqrt(nn);
      }
      return mse(decode(f, D, bd), p.x) + c.lambda * sparsity_scale * pen / double(p.B);
    }
    if (a == "topk" || a == "batchtopk" || a == "matryoshka") {
      Vec z = pre(P, "b_enc");
      Vec f = a == "topk" ? topk(z, c.k, nullptr) : batchtopk(z, p.B * c.k);
      double L = 0;
      std::vector<int64_t> ends = a == "matryoshka" ? c.prefixes : std::vector<int64_t>{p.n};
      for (int64_t m : ends) {
        Vec fm = f;
        for (int64_t r = 0; r < p.B; r++)
          for (int64_t i = m; i < p.n; i++) fm[size_t(r * p.n + i)] = 0;
        L += mse(decode(fm, D, bd), p.x);
      }
      // residual from the frozen (base) parameters
      Vec zf = pre(frozen, "b_enc");
      Vec ff = a == "topk" ? topk(zf, c.k, nullptr) : batchtopk(zf, p.B * c.k);
      Vec resid = residual(decode(ff, frozen.at("W_dec"), frozen.at("b_dec")));
      return L + auxk(z, P, resid);
    }
    if (a == "jumprelu") {
      Vec z = pre(P, "b_enc"), f(z.size());
      const Vec& lt = P.at("log_threshold");
      double pen = 0;
      for (int64_t i = 0; i < p.n; i++) {
        double th = std::exp(lt[size_t(i)]);
        double fires = 0;
        for (int64_t r = 0; r < p.B; r++) {
          double v = z[size_t(r * p.n + i)];
          f[size_t(r * p.n + i)] = v > th ? v : 0.0;
          fires += v > th;
        }
        double q = fires / double(p.B), lam = c.lambda * sparsity_scale;
        pen += c.freq_scale > 0 ? lam * q * (1 + q / c.freq_scale) : lam * q;
      }
      return mse(decode(f, D, bd), p.x) + pen;
    }
    if (a == "gated") {
      Vec base = pre(P, "");
      const Vec &bg = P.at("b_gate"), &rm = P.at("r_mag"), &bm = P.at("b_mag");
      Vec f(base.size()), gr(base.size());
      double l1 = 0;
      for (int64_t r = 0; r < p.B; r++)
        for (int64_t i = 0; i < p.n; i++) {
          double b = base[size_t(r * p.n + i)];
          double pg = b + bg[size_t(i)], pm = std::exp(rm[size_t(i)]) * b + bm[size_t(i)];
          f[size_t(r * p.n + i)] = pg > 0 ? std::max(0.0, pm) : 0.0;
          gr[size_t(r * p.n + i)] = std::max(0.0, pg);
          l1 += gr[size_t(r * p.n + i)];
        }
      return mse(decode(f, D, bd), p.x) + c.lambda * sparsity_scale * l1 / double(p.B) +
             mse(decode(gr, frozen.at("W_dec"), frozen.at("b_dec")), p.x);
    }
    throw std::logic_error("no reference for " + a);
  }

  // JumpReLU's straight-through threshold gradient (Rajamanoharan et al. 2024, eqs. 11-12), in
  // terms of log_threshold: d/dlog(theta) = theta * d/dtheta.
  Vec jumprelu_log_thr_grad(const Params& P) const {
    Vec z = pre(P, "b_enc"), f(z.size());
    const Vec& lt = P.at("log_threshold");
    const Vec& D = P.at("W_dec");
    for (int64_t r = 0; r < p.B; r++)
      for (int64_t i = 0; i < p.n; i++) {
        double v = z[size_t(r * p.n + i)];
        f[size_t(r * p.n + i)] = v > std::exp(lt[size_t(i)]) ? v : 0.0;
      }
    Vec xh = decode(f, D, P.at("b_dec"));
    Vec g(size_t(p.n), 0.0);
    const double eps = c.bandwidth;
    for (int64_t i = 0; i < p.n; i++) {
      const double th = std::exp(lt[size_t(i)]);
      double fires = 0;
      for (int64_t r = 0; r < p.B; r++) fires += z[size_t(r * p.n + i)] > th;
      const double q = fires / double(p.B), lam = c.lambda * sparsity_scale;
      const double coef = (c.freq_scale > 0 ? lam * (1 + 2 * q / c.freq_scale) : lam) / double(p.B);
      double s = 0;
      for (int64_t r = 0; r < p.B; r++) {
        const double u = (z[size_t(r * p.n + i)] - th) / eps;
        const double K = std::abs(u) < 0.5 ? 1.0 : 0.0;
        double df = 0;  // dMSE/df_ri
        for (int64_t j = 0; j < p.d; j++)
          df += 2.0 / double(p.B) * (xh[size_t(r * p.d + j)] - p.x[size_t(r * p.d + j)]) * D[size_t(i * p.d + j)];
        s += -(th / eps) * K * df - (1.0 / eps) * K * coef;
      }
      g[size_t(i)] = th * s;
    }
    return g;
  }
};

// ---- harness ----

Params download(Arch& a) {
  Params P;
  for (Param* p : a.params()) {
    std::vector<float> v = p->w.to_vector();
    P[p->name] = Vec(v.begin(), v.end());
  }
  return P;
}

struct Check {
  std::string arch;
  ArchConfig cfg;
  Problem prob;
  double sparsity_scale = 1;
};

Problem make_problem(uint64_t seed, int64_t num_dead) {
  Problem p;
  Rng rng(seed);
  p.x.resize(size_t(p.B * p.d));
  for (auto& v : p.x) v = rng.normal();
  p.dead.assign(size_t(p.n), 0);
  for (int64_t i = 0; i < num_dead; i++) p.dead[size_t(p.n - 1 - 2 * i)] = 1;
  p.num_dead = num_dead;
  return p;
}

// Random parameters (instead of the training initialisation, whose W_enc = W_dec^T makes
// symmetric problems), with every pre-activation kept away from kinks and selection boundaries.
void randomise(Arch& a, uint64_t seed) {
  Rng rng(seed);
  for (Param* p : a.params()) {
    std::vector<float> v(static_cast<size_t>(p->size));
    for (auto& x : v) x = float(rng.normal() * 0.5);
    if (p->name == "log_threshold")
      for (auto& x : v) x = float(std::log(0.3 + 0.4 * rng.uniform()));
    if (p->name == "r_mag")
      for (auto& x : v) x = float(0.3 * rng.normal());
    p->w.upload(v);
  }
}

double min_gap(const Vec& z, const std::vector<double>& points) {
  double g = 1e9;
  for (double v : z)
    for (double q : points) g = std::min(g, std::abs(v - q));
  return g;
}

// Distance from any pre-activation to the places where the loss is not smooth.
double smoothness_margin(const Ref& ref, const Params& P) {
  const std::string& a = ref.c.arch;
  const Problem& p = ref.p;
  if (a == "gated") {
    Vec base = ref.pre(P, "");
    double g = 1e9;
    for (int64_t r = 0; r < p.B; r++)
      for (int64_t i = 0; i < p.n; i++) {
        double b = base[size_t(r * p.n + i)];
        g = std::min(g, std::abs(b + P.at("b_gate")[size_t(i)]));
        g = std::min(g, std::abs(std::exp(P.at("r_mag")[size_t(i)]) * b + P.at("b_mag")[size_t(i)]));
      }
    return g;
  }
  Vec z = ref.pre(P, "b_enc");
  double g = min_gap(z, {0.0});
  if (a == "jumprelu")
    for (int64_t r = 0; r < p.B; r++)
      for (int64_t i = 0; i < p.n; i++)
        g = std::min(g, std::abs(z[size_t(r * p.n + i)] - std::exp(P.at("log_threshold")[size_t(i)])));
  // selection boundaries: gaps between consecutive sorted values (per row, and over the batch)
  std::vector<double> all(z.begin(), z.end());
  std::sort(all.begin(), all.end());
  for (size_t i = 1; i < all.size(); i++) g = std::min(g, all[i] - all[i - 1]);
  return g;
}

void run_check(Check ch) {
  auto ops = make_cpu_ops();
  ch.cfg.arch = ch.arch;
  ch.cfg.d_in = ch.prob.d;
  ch.cfg.d_sae = ch.prob.n;
  std::unique_ptr<Arch> a = make_arch(*ops, ch.cfg);
  Ref ref{a->config(), ch.prob, ch.sparsity_scale};
  // Find a seed whose problem is smooth enough for finite differences.
  Params P;
  for (uint64_t seed = 1;; seed++) {
    ASSERT_LT(seed, 200u) << "no smooth random problem found";
    randomise(*a, seed);
    P = download(*a);
    if (smoothness_margin(ref, P) > 2e-3) break;
  }
  Buffer<float> x(ops->backend(), ch.prob.x.size());
  std::vector<float> xf(ch.prob.x.begin(), ch.prob.x.end());
  x.upload(xf);
  // The reference works on the float inputs as the architecture sees them.
  for (size_t i = 0; i < xf.size(); i++) ch.prob.x[i] = xf[i];
  Buffer<uint8_t> dead(ops->backend(), ch.prob.dead.size());
  dead.upload(ch.prob.dead);
  StepInput in;
  in.x = x.data();
  in.B = ch.prob.B;
  in.sparsity_scale = float(ch.sparsity_scale);
  in.dead_mask = dead.data();
  in.num_dead = ch.prob.num_dead;
  in.update_state = false;
  StepStats st = a->step(in);
  const double L = ref.loss(P, P);
  EXPECT_NEAR(st.loss, L, 1e-5 * std::max(1.0, std::abs(L))) << ch.arch << ": loss";
  int checked = 0;
  for (Param* p : a->params()) {
    std::vector<float> g = p->g.to_vector();
    Vec num(g.size());
    if (ch.arch == "jumprelu" && p->name == "log_threshold") {
      num = ref.jumprelu_log_thr_grad(P);
    } else {
      const double h = 1e-4;
      for (size_t i = 0; i < g.size(); i++) {
        Params Pp = P, Pm = P;
        Pp[p->name][i] += h;
        Pm[p->name][i] -= h;
        num[i] = (ref.loss(Pp, P) - ref.loss(Pm, P)) / (2 * h);
      }
    }
    double scale = 0;
    for (double v : num) scale = std::max(scale, std::abs(v));
    for (size_t i = 0; i < g.size(); i++) {
      EXPECT_NEAR(g[i], num[i], 2e-3 * scale + 1e-5) << ch.arch << ": d loss / d " << p->name << "[" << i << "]";
      checked++;
    }
    // A check that compares zeros with zeros proves nothing: every parameter tensor must have
    // some gradient here.
    EXPECT_GT(scale, 1e-4) << ch.arch << ": " << p->name << " has no gradient in this problem";
  }
  EXPECT_GT(checked, 100);
}

}  // namespace

TEST(ArchGrad, ReluWeightedL1) {
  Check c{"relu", {}, make_problem(1, 0)};
  c.cfg.lambda = 0.7f;
  c.sparsity_scale = 0.5;  // inside the L1 warm-up
  run_check(c);
}

TEST(ArchGrad, TopK) {
  Check c{"topk", {}, make_problem(2, 0)};
  c.cfg.k = 3;
  run_check(c);
}

TEST(ArchGrad, TopKWithAuxK) {
  Check c{"topk", {}, make_problem(3, 4)};
  c.cfg.k = 3;
  c.cfg.k_aux = 2;
  c.cfg.aux_coef = 0.5f;
  run_check(c);
}

TEST(ArchGrad, BatchTopKWithAuxK) {
  Check c{"batchtopk", {}, make_problem(4, 3)};
  c.cfg.k = 2;
  c.cfg.k_aux = 4;  // more than the dead latents: k_aux is capped and the loss scaled
  c.cfg.aux_coef = 0.25f;
  run_check(c);
}

TEST(ArchGrad, MatryoshkaPrefixes) {
  Check c{"matryoshka", {}, make_problem(5, 0)};
  c.cfg.k = 3;
  c.cfg.prefixes = {2, 5, 10};
  run_check(c);
}

TEST(ArchGrad, JumpReluL0) {
  Check c{"jumprelu", {}, make_problem(6, 0)};
  c.cfg.lambda = 0.3f;
  c.cfg.bandwidth = 0.5f;  // wide enough that the rectangle kernel sees some pre-activations
  run_check(c);
}

TEST(ArchGrad, JumpReluQuadraticFrequency) {
  Check c{"jumprelu", {}, make_problem(7, 0)};
  c.cfg.lambda = 0.3f;
  c.cfg.bandwidth = 0.5f;
  c.cfg.freq_scale = 0.1f;
  run_check(c);
}

TEST(ArchGrad, GatedWithFrozenDecoderAux) {
  Check c{"gated", {}, make_problem(8, 0)};
  c.cfg.lambda = 0.6f;
  run_check(c);
}
