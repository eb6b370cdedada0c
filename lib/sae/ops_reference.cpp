// The plain reference SAE op set: the simplest correct version of every op, on one thread, with
// full sorts for the selections, double sums, and the reference backend's double-summing gemm. It
// calls the same per-element functions of sae/kernels.h as the CPU and CUDA op sets, and is what
// the unit tests and sae-selftest --device cpu check the fast CPU op set against.
#include <algorithm>
#include <cmath>
#include <functional>
#include <stdexcept>
#include <utility>
#include <vector>

#include "sae/ops.h"

namespace sae {

using namespace kern;

namespace {

class RefOps : public SaeOps {
 public:
  Backend& backend() override { return *be_; }
  const char* name() const override { return "reference"; }

  void center(const float* x, const float* b, float* xc, int64_t B, int64_t d) override {
    for (int64_t r = 0; r < B; r++)
      for (int64_t j = 0; j < d; j++) xc[r * d + j] = x[r * d + j] - b[j];
  }
  void set_rows(float* out, const float* v, int64_t B, int64_t n) override {
    for (int64_t r = 0; r < B; r++)
      for (int64_t j = 0; j < n; j++) out[r * n + j] = v[j];
  }
  void sub(const float* a, const float* b, float* out, int64_t count) override {
    for (int64_t i = 0; i < count; i++) out[i] = a[i] - b[i];
  }
  void recon_error(const float* xhat, const float* target, float* g, float* err, int64_t B, int64_t d,
                   float scale) override {
    for (int64_t r = 0; r < B; r++) {
      double s = 0;
      for (int64_t j = 0; j < d; j++) s += recon_grad(xhat[r * d + j], target[r * d + j], scale, &g[r * d + j]);
      err[r] = float(s);
    }
  }
  void col_sum(const float* a, int64_t lda, float* out, int64_t B, int64_t n, float alpha, bool accumulate) override {
    for (int64_t j = 0; j < n; j++) {
      double s = 0;
      for (int64_t r = 0; r < B; r++) s += a[r * lda + j];
      out[j] = float((accumulate ? out[j] : 0.0) + alpha * s);
    }
  }
  void row_norms(const float* A, float* out, int64_t n, int64_t d) override {
    for (int64_t i = 0; i < n; i++) {
      double s = 0;
      for (int64_t j = 0; j < d; j++) s += double(A[i * d + j]) * A[i * d + j];
      out[i] = float(std::sqrt(s));
    }
  }
  void topk(const float* pre, const float* bias, const uint8_t* mask, int64_t B, int64_t n, int k, int32_t* row_ptr,
            int32_t* idx, float* val) override {
    for (int64_t r = 0; r < B; r++) {
      std::vector<int32_t> c;
      for (int64_t j = 0; j < n; j++)
        if (!mask || mask[j]) c.push_back(int32_t(j));
      if (int64_t(c.size()) < k) throw std::logic_error("topk: fewer candidates than k in a row");
      auto v = [&](int32_t j) { return bias ? pre[r * n + j] + bias[j] : pre[r * n + j]; };
      std::sort(c.begin(), c.end(), [&](int32_t a, int32_t b) { return topk_before(v(a), a, v(b), b); });
      c.resize(size_t(k));
      std::sort(c.begin(), c.end());
      for (int i = 0; i < k; i++) {
        idx[r * k + i] = c[size_t(i)];
        val[r * k + i] = relu(v(c[size_t(i)]));
      }
    }
    for (int64_t r = 0; r <= B; r++) row_ptr[r] = int32_t(r * k);
  }
  float batch_kth(const float* pre, const float* bias, int64_t B, int64_t n, int64_t kk) override {
    std::vector<float> pos;
    for (int64_t r = 0; r < B; r++)
      for (int64_t j = 0; j < n; j++) {
        float v = bias ? pre[r * n + j] + bias[j] : pre[r * n + j];
        if (v > 0.0f) pos.push_back(v);
      }
    if (int64_t(pos.size()) < kk || kk <= 0) return 0.0f;
    std::sort(pos.begin(), pos.end(), std::greater<float>());
    return pos[size_t(kk - 1)];
  }
  int64_t select_above(const float* pre, const float* bias, float thr, bool inclusive, int64_t B, int64_t n,
                       int32_t* row_ptr, int32_t* idx, float* val, int64_t cap) override {
    std::vector<int32_t> ii;
    std::vector<float> vv;
    for (int64_t r = 0; r < B; r++) {
      row_ptr[r] = int32_t(ii.size());
      for (int64_t j = 0; j < n; j++) {
        float v = bias ? pre[r * n + j] + bias[j] : pre[r * n + j];
        if (v > 0.0f && (inclusive ? v >= thr : v > thr)) {
          ii.push_back(int32_t(j));
          vv.push_back(v);
        }
      }
    }
    row_ptr[B] = int32_t(ii.size());
    if (int64_t(ii.size()) <= cap) {
      std::copy(ii.begin(), ii.end(), idx);
      std::copy(vv.begin(), vv.end(), val);
    }
    return int64_t(ii.size());
  }
  void sparse_decode(const int32_t* row_ptr, const int32_t* idx, const float* val, const float* D, const float* bias,
                     const float* target, Groups groups, float gscale, float* xhat, float* G, float* err, int64_t B,
                     int64_t d) override {
    // Independent of decode_row: each group's reconstruction from scratch, in double.
    const int ng = groups.n;
    std::vector<double> xt(static_cast<size_t>(ng) * size_t(d));
    for (int64_t r = 0; r < B; r++) {
      for (int t = 0; t < ng; t++) {
        double* a = xt.data() + size_t(t) * size_t(d);
        for (int64_t j = 0; j < d; j++) a[j] = bias ? bias[j] : 0.0;
        for (int32_t e = row_ptr[r]; e < row_ptr[r + 1]; e++)
          if (group_of(groups, idx[e]) <= t)
            for (int64_t j = 0; j < d; j++) a[j] += double(val[e]) * D[int64_t(idx[e]) * d + j];
        if (target && err) {
          double s = 0;
          for (int64_t j = 0; j < d; j++) s += (a[j] - target[r * d + j]) * (a[j] - target[r * d + j]);
          err[r * ng + t] = float(s);
        }
      }
      for (int64_t j = 0; j < d; j++) xhat[r * d + j] = float(xt[size_t(ng - 1) * size_t(d) + size_t(j)]);
      if (G && target)
        for (int t = 0; t < ng; t++)
          for (int64_t j = 0; j < d; j++) {
            double s = 0;
            for (int u = t; u < ng; u++) s += xt[size_t(u) * size_t(d) + size_t(j)] - target[r * d + j];
            G[(r * ng + t) * d + j] = float(gscale * s);
          }
    }
  }
  void sparse_dpre(const int32_t* row_ptr, const int32_t* idx, const float* val, const float* D, const float* G,
                   Groups groups, float* dpre, int64_t B, int64_t d) override {
    for (int64_t r = 0; r < B; r++)
      for (int32_t e = row_ptr[r]; e < row_ptr[r + 1]; e++) {
        double s = 0;
        const float* g = G + (r * groups.n + group_of(groups, idx[e])) * d;
        for (int64_t j = 0; j < d; j++) s += double(D[int64_t(idx[e]) * d + j]) * g[j];
        dpre[e] = val[e] > 0.0f ? float(s) : 0.0f;
      }
  }
  void sparse_dx(const int32_t* row_ptr, const int32_t* idx, const float* dpre, const float* E, float* dx, int64_t B,
                 int64_t d, bool accumulate) override {
    for (int64_t r = 0; r < B; r++)
      for (int64_t j = 0; j < d; j++) {
        double s = accumulate ? dx[r * d + j] : 0.0;
        for (int32_t e = row_ptr[r]; e < row_ptr[r + 1]; e++) s += double(dpre[e]) * E[int64_t(idx[e]) * d + j];
        dx[r * d + j] = float(s);
      }
  }
  void sparse_transpose(const int32_t* row_ptr, const int32_t* idx, const float* val, int64_t B, int64_t n,
                        int64_t nnz, int32_t* lat_ptr, int32_t* ent, int32_t* ent_row, int32_t* fires) override {
    std::vector<std::pair<int64_t, int32_t>> keyed;  // (latent * B + row, entry)
    for (int64_t r = 0; r < B; r++)
      for (int32_t e = row_ptr[r]; e < row_ptr[r + 1]; e++) keyed.push_back({int64_t(idx[e]) * B + r, e});
    std::sort(keyed.begin(), keyed.end());
    if (int64_t(keyed.size()) != nnz) throw std::logic_error("sparse_transpose: nnz mismatch");
    for (int64_t l = 0; l <= n; l++) lat_ptr[l] = 0;
    for (size_t p = 0; p < keyed.size(); p++) {
      ent[p] = keyed[p].second;
      ent_row[p] = int32_t(keyed[p].first % B);
      lat_ptr[keyed[p].first / B + 1]++;
    }
    for (int64_t l = 0; l < n; l++) lat_ptr[l + 1] += lat_ptr[l];
    if (fires)
      for (int64_t l = 0; l < n; l++) {
        fires[l] = 0;
        for (int32_t p = lat_ptr[l]; p < lat_ptr[l + 1]; p++) fires[l] += val[ent[p]] > 0.0f;
      }
  }
  void sparse_param_grads(const int32_t* lat_ptr, const int32_t* ent, const int32_t* ent_row, const float* val,
                          const float* dpre, const float* G, Groups groups, const float* xc, float* gD, float* gE,
                          float* gb, int64_t n, int64_t d, bool accumulate) override {
    for (int64_t l = 0; l < n; l++) {
      const int t = group_of(groups, int32_t(l));
      for (int64_t j = 0; j < d; j++) {
        double sd = accumulate ? gD[l * d + j] : 0.0, se = accumulate ? gE[l * d + j] : 0.0;
        for (int32_t p = lat_ptr[l]; p < lat_ptr[l + 1]; p++) {
          int64_t r = ent_row[p];
          sd += double(val[ent[p]]) * G[(r * groups.n + t) * d + j];
          se += double(dpre[ent[p]]) * xc[r * d + j];
        }
        gD[l * d + j] = float(sd);
        gE[l * d + j] = float(se);
      }
      double sb = accumulate ? gb[l] : 0.0;
      for (int32_t p = lat_ptr[l]; p < lat_ptr[l + 1]; p++) sb += dpre[ent[p]];
      gb[l] = float(sb);
    }
  }
  float min_positive(const float* val, int64_t count) override {
    float m = 0;
    for (int64_t i = 0; i < count; i++)
      if (val[i] > 0.0f && (m == 0.0f || val[i] < m)) m = val[i];
    return m;
  }
  void relu_fwd(float* pre, const float* bias, float* f, int32_t* fires, float* colsum_f, int64_t B,
                int64_t n) override {
    for (int64_t j = 0; j < n; j++) {
      double s = 0;
      int32_t c = 0;
      for (int64_t r = 0; r < B; r++) {
        float v = pre[r * n + j] + (bias ? bias[j] : 0.0f);
        pre[r * n + j] = v;
        f[r * n + j] = relu(v);
        s += f[r * n + j];
        c += v > 0.0f;
      }
      colsum_f[j] = float(s);
      fires[j] = c;
    }
  }
  void relu_bwd(const float* df, const float* f, const float* norms, float coef, float* dpre, int64_t B,
                int64_t n) override {
    for (int64_t r = 0; r < B; r++)
      for (int64_t j = 0; j < n; j++) dpre[r * n + j] = relu_dpre(df[r * n + j], f[r * n + j], norms[j], coef);
  }
  void l1_norm_grad(const float* colsum_f, const float* norms, const float* D, float coef, float* gD, int64_t n,
                    int64_t d) override {
    for (int64_t i = 0; i < n; i++)
      if (norms[i] > 0.0f)
        for (int64_t j = 0; j < d; j++) gD[i * d + j] += coef * colsum_f[i] / norms[i] * D[i * d + j];
  }
  void jumprelu_fwd(float* pre, const float* bias, const float* log_thr, float* f, int32_t* fires, int64_t B,
                    int64_t n) override {
    for (int64_t j = 0; j < n; j++) {
      float thr = std::exp(log_thr[j]);
      fires[j] = 0;
      for (int64_t r = 0; r < B; r++) {
        float v = pre[r * n + j] + (bias ? bias[j] : 0.0f);
        pre[r * n + j] = v;
        f[r * n + j] = jumprelu(v, thr);
        fires[j] += v > thr;
      }
    }
  }
  void jumprelu_bwd(const float* df, const float* pre, const float* log_thr, const int32_t* fires, float inv_eps,
                    float lambda, float freq_scale, float* dpre, float* g_log_thr, int64_t B, int64_t n) override {
    for (int64_t j = 0; j < n; j++) {
      float thr = std::exp(log_thr[j]);
      float c = l0_coef(float(fires[j]) / float(B), lambda, freq_scale) / float(B);
      double s = 0;
      for (int64_t r = 0; r < B; r++) {
        float dt;
        dpre[r * n + j] = jumprelu_grad(pre[r * n + j], thr, df[r * n + j], inv_eps, c, &dt);
        s += dt;
      }
      g_log_thr[j] = float(thr * s);
    }
  }
  void gated_fwd(const float* base, const float* b_gate, const float* r_mag, const float* b_mag, float* f,
                 float* gate_relu, int32_t* fires, float* gate_sum, int64_t B, int64_t n) override {
    for (int64_t j = 0; j < n; j++) {
      fires[j] = 0;
      double s = 0;
      for (int64_t r = 0; r < B; r++) {
        GatedFwd o = kern::gated_fwd(base[r * n + j], b_gate[j], r_mag[j], b_mag[j]);
        f[r * n + j] = o.f;
        gate_relu[r * n + j] = o.gate_relu;
        fires[j] += o.f > 0.0f;
        s += o.gate_relu;
      }
      gate_sum[j] = float(s);
    }
  }
  void gated_bwd(const float* base, const float* df, const float* dgr, const float* b_gate, const float* r_mag,
                 const float* b_mag, float l1, float* dbase, float* g_b_gate, float* g_r_mag, float* g_b_mag, int64_t B,
                 int64_t n) override {
    for (int64_t j = 0; j < n; j++) {
      double sg = 0, sr = 0, sm = 0;
      for (int64_t r = 0; r < B; r++) {
        GatedBwd o = kern::gated_bwd(base[r * n + j], df[r * n + j], dgr[r * n + j], b_gate[j], r_mag[j], b_mag[j], l1);
        dbase[r * n + j] = o.dbase;
        sg += o.dpi_gate;
        sr += o.dr_mag;
        sm += o.dpi_mag;
      }
      g_b_gate[j] = float(sg);
      g_r_mag[j] = float(sr);
      g_b_mag[j] = float(sm);
    }
  }
  double sumsq(const float* a, int64_t count) override {
    double s = 0;
    for (int64_t i = 0; i < count; i++) s += double(a[i]) * a[i];
    return s;
  }
  double sum(const float* a, int64_t count) override {
    double s = 0;
    for (int64_t i = 0; i < count; i++) s += a[i];
    return s;
  }
  double dot(const float* a, const float* b, int64_t count) override {
    double s = 0;
    for (int64_t i = 0; i < count; i++) s += double(a[i]) * b[i];
    return s;
  }
  void adam(float* p, const float* g, float* m, float* v, int64_t count, const AdamStep& s) override {
    for (int64_t i = 0; i < count; i++) adam_update(&p[i], g[i], &m[i], &v[i], s);
  }
  void remove_parallel(const float* D, float* gD, int64_t n, int64_t d) override {
    for (int64_t i = 0; i < n; i++) {
      double s = 0;
      for (int64_t j = 0; j < d; j++) s += double(gD[i * d + j]) * D[i * d + j];
      for (int64_t j = 0; j < d; j++) gD[i * d + j] = float(gD[i * d + j] - s * D[i * d + j]);
    }
  }
  void normalize_rows(float* D, int64_t n, int64_t d) override {
    for (int64_t i = 0; i < n; i++) {
      double s = 0;
      for (int64_t j = 0; j < d; j++) s += double(D[i * d + j]) * D[i * d + j];
      if (s > 0)
        for (int64_t j = 0; j < d; j++) D[i * d + j] = float(D[i * d + j] / std::sqrt(s));
    }
  }

 private:
  std::unique_ptr<Backend> be_ = make_reference_backend();
};

}  // namespace

std::unique_ptr<SaeOps> make_reference_ops() { return std::make_unique<RefOps>(); }

}  // namespace sae
