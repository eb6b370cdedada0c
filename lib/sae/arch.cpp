// What every architecture shares: parameters and their initialisation, the encoder product, the
// dense decoder and encoder gradients, export with the input scale folded in, the TopK-family
// sparse engine (with AuxK), and the registry.
#include "sae/arch.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "base/errors.h"

namespace sae {

void SparseCodes::reserve(Backend& be, int64_t B, int64_t n, int64_t c) {
  if (int64_t(row_ptr.size()) < B + 1) row_ptr = Buffer<int32_t>(be, size_t(B + 1));
  if (int64_t(lat_ptr.size()) < n + 1) lat_ptr = Buffer<int32_t>(be, size_t(n + 1));
  if (cap < c) {
    cap = c;
    idx = Buffer<int32_t>(be, size_t(c));
    ent = Buffer<int32_t>(be, size_t(c));
    ent_row = Buffer<int32_t>(be, size_t(c));
    val = Buffer<float>(be, size_t(c));
    dpre = Buffer<float>(be, size_t(c));
  }
}

Arch::Arch(SaeOps& ops, ArchConfig cfg) : ops_(ops), be_(ops.backend()), cfg_(std::move(cfg)) {
  const int64_t n = cfg_.d_sae, d = cfg_.d_in;
  E_ = &add_param("W_enc_T", {n, d});
  if (cfg_.arch != "gated") b_enc_ = &add_param("b_enc", {n});
  D_ = &add_param("W_dec", {n, d});
  b_dec_ = &add_param("b_dec", {d});
  fires_ = Buffer<int32_t>(be_, size_t(n));
  colsum_ = Buffer<float>(be_, size_t(n));
}

Param& Arch::add_param(const std::string& name, std::vector<int64_t> shape) {
  auto p = std::make_unique<Param>();
  p->name = name;
  p->shape = shape;
  p->size = 1;
  for (int64_t s : shape) p->size *= s;
  p->w = Buffer<float>(be_, size_t(p->size));
  p->g = Buffer<float>(be_, size_t(p->size));
  p->m = Buffer<float>(be_, size_t(p->size));
  p->v = Buffer<float>(be_, size_t(p->size));
  p->w.zero();
  p->g.zero();
  p->m.zero();
  p->v.zero();
  params_.push_back(p.get());
  owned_.push_back(std::move(p));
  return *owned_.back();
}

Param* Arch::param(const std::string& name) {
  for (Param* p : params_)
    if (p->name == name) return p;
  return nullptr;
}

void Arch::init(const std::vector<float>& b_dec) {
  const int64_t n = cfg_.d_sae, d = cfg_.d_in;
  if (int64_t(b_dec.size()) != d) throw std::logic_error("Arch::init: b_dec size");
  // Decoder rows from the run's seed, sub-stream 1 (other sub-streams are free for later uses).
  Rng rng = Rng(cfg_.seed).substream(1);
  std::vector<float> D(static_cast<size_t>(n * d));
  const double norm = unit_norm_decoder() ? 1.0 : double(cfg_.dec_init_norm);
  std::vector<double> row(static_cast<size_t>(d));
  for (int64_t i = 0; i < n; i++) {
    double s = 0;
    for (int64_t j = 0; j < d; j++) {
      row[size_t(j)] = rng.normal();
      s += row[size_t(j)] * row[size_t(j)];
    }
    double c = norm / std::sqrt(s);
    for (int64_t j = 0; j < d; j++) D[size_t(i * d + j)] = float(row[size_t(j)] * c);
  }
  D_->w.upload(D);
  E_->w.upload(D);  // W_enc = W_dec^T, i.e. E = D in this layout
  if (b_enc_) b_enc_->w.zero();
  b_dec_->w.upload(b_dec);
  for (Param* p : params_) {
    p->m.zero();
    p->v.zero();
    p->g.zero();
  }
}

void Arch::after_update() {
  if (unit_norm_decoder()) ops_.normalize_rows(D_->w.data(), cfg_.d_sae, cfg_.d_in);
}

Sae Arch::export_sae(float scale) {
  const int64_t n = cfg_.d_sae, d = cfg_.d_in;
  Sae s;
  s.arch = "standard";
  s.d_in = d;
  s.d_sae = n;
  std::vector<float> E = E_->w.to_vector(), D = D_->w.to_vector(), bd = b_dec_->w.to_vector();
  // Trained on x' = scale * x: pre = (x' - b) E^T + c = (x - b/scale) (scale E)^T + c, and the
  // reconstruction of x is xhat'/scale = f (D/scale) + b/scale.
  s.W_enc.resize(size_t(d * n));
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < d; j++) s.W_enc[size_t(j * n + i)] = E[size_t(i * d + j)] * scale;
  s.W_dec.resize(D.size());
  for (size_t i = 0; i < D.size(); i++) s.W_dec[i] = D[i] / scale;
  s.b_dec.resize(bd.size());
  for (size_t i = 0; i < bd.size(); i++) s.b_dec[i] = bd[i] / scale;
  if (b_enc_) s.b_enc = b_enc_->w.to_vector();
  s.apply_b_dec_to_input = true;
  s.normalize_activations = "none";
  return s;
}

void Arch::resample(const std::vector<int64_t>& latents, const std::vector<std::vector<float>>& dirs, float enc_norm,
                    float dec_norm) {
  const int64_t d = cfg_.d_in;
  std::vector<float> zero_row(static_cast<size_t>(d), 0.0f), row(static_cast<size_t>(d));
  for (size_t q = 0; q < latents.size(); q++) {
    const int64_t l = latents[q];
    const std::vector<float>& u = dirs[q];
    for (int64_t j = 0; j < d; j++) row[size_t(j)] = u[size_t(j)] * dec_norm;
    be_.to_device(D_->w.data() + l * d, row.data(), size_t(d) * 4);
    for (int64_t j = 0; j < d; j++) row[size_t(j)] = u[size_t(j)] * enc_norm;
    be_.to_device(E_->w.data() + l * d, row.data(), size_t(d) * 4);
    for (Param* p : {E_, D_}) {
      be_.to_device(p->m.data() + l * d, zero_row.data(), size_t(d) * 4);
      be_.to_device(p->v.data() + l * d, zero_row.data(), size_t(d) * 4);
    }
    if (b_enc_) {
      float z = 0;
      be_.to_device(b_enc_->w.data() + l, &z, 4);
      be_.to_device(b_enc_->m.data() + l, &z, 4);
      be_.to_device(b_enc_->v.data() + l, &z, 4);
    }
  }
}

void Arch::ensure_rows(int64_t B) {
  if (B <= rows_) return;
  const int64_t n = cfg_.d_sae, d = cfg_.d_in;
  rows_ = B;
  xc_ = Buffer<float>(be_, size_t(B * d));
  pre_ = Buffer<float>(be_, size_t(B * n));
  xhat_ = Buffer<float>(be_, size_t(B * d));
  dxc_ = Buffer<float>(be_, size_t(B * d));
  g_ = Buffer<float>(be_, size_t(B * d));
  err_ = Buffer<float>(be_, size_t(B * kern::kMaxGroups));
}

void Arch::encode_pre(const float* x, int64_t B) {
  const int64_t n = cfg_.d_sae, d = cfg_.d_in;
  ops_.center(x, b_dec_->w.data(), xc_.data(), B, d);
  be_.gemm(false, true, B, n, d, 1.0f, xc_.data(), d, E_->w.data(), d, 0.0f, pre_.data(), n);
}

void Arch::dense_decode(const float* f, int64_t B, float* xhat) {
  const int64_t n = cfg_.d_sae, d = cfg_.d_in;
  ops_.set_rows(xhat, b_dec_->w.data(), B, d);
  be_.gemm(false, false, B, d, n, 1.0f, f, n, D_->w.data(), d, 1.0f, xhat, d);
}

void Arch::dense_encoder_grads(const float* dpre, const float* g, int64_t B, float* g_b_enc) {
  const int64_t n = cfg_.d_sae, d = cfg_.d_in;
  be_.gemm(true, false, n, d, B, 1.0f, dpre, n, xc_.data(), d, 0.0f, E_->g.data(), d);
  if (g_b_enc) ops_.col_sum(dpre, n, g_b_enc, B, n, 1.0f, false);
  be_.gemm(false, false, B, d, n, 1.0f, dpre, n, E_->w.data(), d, 0.0f, dxc_.data(), d);
  ops_.col_sum(g, d, b_dec_->g.data(), B, d, 1.0f, false);
  ops_.col_sum(dxc_.data(), d, b_dec_->g.data(), B, d, -1.0f, true);
}

std::vector<int32_t> Arch::download_fires(int64_t n) {
  std::vector<int32_t> f(static_cast<size_t>(n));
  fires_.download(f.data(), size_t(n));
  return f;
}

double Arch::mean_err(int64_t B, int stride, int offset) {
  std::vector<float> e(static_cast<size_t>(B * stride));
  err_.download(e.data(), e.size());
  double s = 0;
  for (int64_t r = 0; r < B; r++) s += e[size_t(r * stride + offset)];
  return s / double(B);
}

// ---------------------------------------------------------------------------------------------
// The TopK family.

SparseArch::SparseArch(SaeOps& ops, ArchConfig cfg, Groups groups) : Arch(ops, std::move(cfg)), groups_(groups) {}

void SparseArch::ensure_sparse(int64_t B) {
  const int64_t n = cfg_.d_sae, d = cfg_.d_in;
  if (int64_t(G_.size()) < B * groups_.n * d) G_ = Buffer<float>(be_, size_t(B * groups_.n * d));
  codes_.reserve(be_, B, n, B * cfg_.k);
}

StepStats SparseArch::step(const StepInput& in) {
  const int64_t B = in.B, n = cfg_.d_sae, d = cfg_.d_in;
  const int ng = groups_.n;
  ensure_rows(B);
  ensure_sparse(B);
  StepStats st;
  encode_pre(in.x, B);
  select(B, in.update_state);
  SparseCodes& c = codes_;
  const float gscale = 2.0f / float(B);
  ops_.sparse_decode(c.row_ptr.data(), c.idx.data(), c.val.data(), D_->w.data(), b_dec_->w.data(), in.x, groups_,
                     gscale, xhat_.data(), G_.data(), err_.data(), B, d);
  {
    std::vector<float> e(static_cast<size_t>(B * ng));
    err_.download(e.data(), e.size());
    for (int t = 0; t < ng; t++) {
      double s = 0;
      for (int64_t r = 0; r < B; r++) s += e[size_t(r * ng + t)];
      s /= double(B);
      if (t == ng - 1)
        st.mse = s;
      else
        st.prefix += s;
    }
  }
  ops_.sparse_dpre(c.row_ptr.data(), c.idx.data(), c.val.data(), D_->w.data(), G_.data(), groups_, c.dpre.data(), B, d);
  ops_.sparse_dx(c.row_ptr.data(), c.idx.data(), c.dpre.data(), E_->w.data(), dxc_.data(), B, d, false);
  ops_.sparse_transpose(c.row_ptr.data(), c.idx.data(), c.val.data(), B, n, c.nnz, c.lat_ptr.data(), c.ent.data(),
                        c.ent_row.data(), fires_.data());
  ops_.sparse_param_grads(c.lat_ptr.data(), c.ent.data(), c.ent_row.data(), c.val.data(), c.dpre.data(), G_.data(),
                          groups_, xc_.data(), D_->g.data(), E_->g.data(), b_enc_->g.data(), n, d, false);

  // AuxK (Gao et al. 2024): the dead latents' top k_aux pre-activations reconstruct the residual
  // x - xhat (held fixed); the loss is scaled by min(num_dead / k_aux, 1).
  const int k_aux_cfg = cfg_.k_aux > 0 ? cfg_.k_aux : int(std::max<int64_t>(1, d / 2));
  if (in.dead_mask && in.num_dead > 0 && cfg_.aux_coef > 0) {
    const int keff = int(std::min<int64_t>(k_aux_cfg, in.num_dead));
    const float coef = cfg_.aux_coef * float(std::min(1.0, double(in.num_dead) / double(k_aux_cfg)));
    if (int64_t(resid_.size()) < B * d) {
      resid_ = Buffer<float>(be_, size_t(B * d));
      aux_xhat_ = Buffer<float>(be_, size_t(B * d));
      aux_G_ = Buffer<float>(be_, size_t(B * d));
      aux_err_ = Buffer<float>(be_, size_t(B));
    }
    aux_.reserve(be_, B, n, B * keff);
    aux_.nnz = B * keff;
    Groups one;
    one.n = 1;
    one.end[0] = int32_t(n);
    ops_.sub(in.x, xhat_.data(), resid_.data(), B * d);
    ops_.topk(pre_.data(), b_enc_->w.data(), in.dead_mask, B, n, keff, aux_.row_ptr.data(), aux_.idx.data(),
              aux_.val.data());
    ops_.sparse_decode(aux_.row_ptr.data(), aux_.idx.data(), aux_.val.data(), D_->w.data(), nullptr, resid_.data(),
                       one, 2.0f * coef / float(B), aux_xhat_.data(), aux_G_.data(), aux_err_.data(), B, d);
    std::vector<float> e(static_cast<size_t>(B));
    aux_err_.download(e.data(), e.size());
    double s = 0;
    for (float v : e) s += v;
    st.aux = coef * s / double(B);
    ops_.sparse_dpre(aux_.row_ptr.data(), aux_.idx.data(), aux_.val.data(), D_->w.data(), aux_G_.data(), one,
                     aux_.dpre.data(), B, d);
    ops_.sparse_dx(aux_.row_ptr.data(), aux_.idx.data(), aux_.dpre.data(), E_->w.data(), dxc_.data(), B, d, true);
    ops_.sparse_transpose(aux_.row_ptr.data(), aux_.idx.data(), aux_.val.data(), B, n, aux_.nnz, aux_.lat_ptr.data(),
                          aux_.ent.data(), aux_.ent_row.data(), nullptr);
    ops_.sparse_param_grads(aux_.lat_ptr.data(), aux_.ent.data(), aux_.ent_row.data(), aux_.val.data(),
                            aux_.dpre.data(), aux_G_.data(), one, xc_.data(), D_->g.data(), E_->g.data(),
                            b_enc_->g.data(), n, d, true);
  }
  // b_dec: through the decoder bias (every prefix reconstruction: G's group-0 rows hold their
  // sum) and through the centred input.
  ops_.col_sum(G_.data(), int64_t(ng) * d, b_dec_->g.data(), B, d, 1.0f, false);
  ops_.col_sum(dxc_.data(), d, b_dec_->g.data(), B, d, -1.0f, true);
  st.loss = st.mse + st.prefix + st.aux;
  st.fires = download_fires(n);
  return st;
}

void SparseArch::reconstruct(const float* x, int64_t B, float* xhat) {
  ensure_rows(B);
  ensure_sparse(B);
  encode_pre(x, B);
  select_infer(B);
  ops_.sparse_decode(codes_.row_ptr.data(), codes_.idx.data(), codes_.val.data(), D_->w.data(), b_dec_->w.data(),
                     nullptr, groups_, 0.0f, xhat, nullptr, nullptr, B, cfg_.d_in);
}

// ---------------------------------------------------------------------------------------------

const std::vector<ArchInfo>& arch_registry() {
  static const std::vector<ArchInfo> r = {
      {"relu", "ReLU with an L1 penalty weighted by decoder row norms (Anthropic, April 2024)", make_relu_arch},
      {"topk", "TopK with AuxK for dead latents (Gao et al. 2024)", make_topk_arch},
      {"batchtopk", "top k*batch over the batch; exported as jumprelu with the learned threshold",
       make_batchtopk_arch},
      {"jumprelu", "JumpReLU, straight-through L0 penalty (Rajamanoharan et al. 2024)", make_jumprelu_arch},
      {"gated", "gated encoder with a frozen-decoder auxiliary loss (Rajamanoharan et al. 2024)", make_gated_arch},
      {"matryoshka", "nested prefix losses over batchtopk (Bussmann et al. 2025)", make_matryoshka_arch},
  };
  return r;
}

static std::string num(double v) {
  std::ostringstream o;
  o << v;
  return o.str();
}

void validate_arch_config(const ArchConfig& c) {
  bool known = false;
  std::string names;
  for (const ArchInfo& a : arch_registry()) {
    known |= c.arch == a.name;
    names += std::string(names.empty() ? "" : ", ") + a.name;
  }
  if (!known) throw UsageError("--arch: unknown architecture '" + c.arch + "' (expected " + names + ")");
  if (c.d_in <= 0) throw UsageError("input rows must have d >= 1");
  if (c.d_sae <= 0) throw UsageError("--latents must be at least 1 (got " + std::to_string(c.d_sae) + ")");
  const bool sparse = c.arch == "topk" || c.arch == "batchtopk" || c.arch == "matryoshka";
  if (sparse) {
    if (c.k < 1) throw UsageError("--k must be at least 1 (got " + std::to_string(c.k) + ")");
    if (c.k > c.d_sae)
      throw UsageError("--k " + std::to_string(c.k) + " exceeds --latents " + std::to_string(c.d_sae));
    if (c.k_aux < 0) throw UsageError("--k-aux must be >= 0 (got " + std::to_string(c.k_aux) + ")");
    if (!(c.aux_coef >= 0)) throw UsageError("--aux-coef must be >= 0 (got " + num(c.aux_coef) + ")");
  }
  if (!(c.lambda >= 0) || !std::isfinite(c.lambda))
    throw UsageError("--lambda must be >= 0 (got " + num(c.lambda) + ")");
  if (c.arch == "jumprelu") {
    if (!(c.bandwidth > 0)) throw UsageError("--bandwidth must be > 0 (got " + num(c.bandwidth) + ")");
    if (!(c.init_threshold > 0)) throw UsageError("--init-threshold must be > 0 (got " + num(c.init_threshold) + ")");
    if (!(c.freq_scale >= 0)) throw UsageError("--freq-scale must be >= 0 (got " + num(c.freq_scale) + ")");
  }
  if ((c.arch == "batchtopk" || c.arch == "matryoshka") && !(c.threshold_lr > 0 && c.threshold_lr <= 1))
    throw UsageError("--threshold-lr must be in (0, 1] (got " + num(c.threshold_lr) + ")");
  if (c.arch == "relu" && !(c.dec_init_norm > 0))
    throw UsageError("--dec-init-norm must be > 0 (got " + num(c.dec_init_norm) + ")");
  if (c.arch == "matryoshka") {
    if (c.prefixes.empty()) throw UsageError("--prefixes: matryoshka needs at least one prefix size");
    if (int(c.prefixes.size()) > kern::kMaxGroups)
      throw UsageError("--prefixes: at most " + std::to_string(kern::kMaxGroups) + " prefix sizes");
    int64_t prev = 0;
    for (int64_t p : c.prefixes) {
      if (p <= prev)
        throw UsageError("--prefixes: sizes must be positive and strictly increasing (got " + std::to_string(p) +
                         " after " + std::to_string(prev) + ")");
      prev = p;
    }
    if (prev != c.d_sae)
      throw UsageError("--prefixes: the last size must equal --latents " + std::to_string(c.d_sae) + " (got " +
                       std::to_string(prev) + ")");
  }
}

std::unique_ptr<Arch> make_arch(SaeOps& ops, const ArchConfig& cfg) {
  validate_arch_config(cfg);
  for (const ArchInfo& a : arch_registry())
    if (cfg.arch == a.name) return a.make(ops, cfg);
  throw std::logic_error("unreachable");
}

}  // namespace sae
