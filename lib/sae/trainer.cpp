#include "sae/trainer.h"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <sstream>

#include "base/cli.h"
#include "base/errors.h"
#include "base/files.h"
#include "stream/safetensors.h"

namespace sae {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr const char* kCheckpointFormat = "saetools-train-checkpoint";
constexpr int kCheckpointVersion = 1;

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

json arch_to_json(const ArchConfig& a) {
  return {{"arch", a.arch},
          {"d_in", a.d_in},
          {"d_sae", a.d_sae},
          {"k", a.k},
          {"k_aux", a.k_aux},
          {"aux_coef", a.aux_coef},
          {"lambda", a.lambda},
          {"bandwidth", a.bandwidth},
          {"init_threshold", a.init_threshold},
          {"freq_scale", a.freq_scale},
          {"prefixes", a.prefixes},
          {"threshold_lr", a.threshold_lr},
          {"dec_init_norm", a.dec_init_norm},
          {"seed", a.seed}};
}

ArchConfig arch_from_json(const json& j) {
  ArchConfig a;
  a.arch = j.at("arch").get<std::string>();
  a.d_in = j.at("d_in").get<int64_t>();
  a.d_sae = j.at("d_sae").get<int64_t>();
  a.k = j.at("k").get<int>();
  a.k_aux = j.at("k_aux").get<int>();
  a.aux_coef = j.at("aux_coef").get<float>();
  a.lambda = j.at("lambda").get<float>();
  a.bandwidth = j.at("bandwidth").get<float>();
  a.init_threshold = j.at("init_threshold").get<float>();
  a.freq_scale = j.at("freq_scale").get<float>();
  a.prefixes = j.at("prefixes").get<std::vector<int64_t>>();
  a.threshold_lr = j.at("threshold_lr").get<float>();
  a.dec_init_norm = j.at("dec_init_norm").get<float>();
  a.seed = j.at("seed").get<uint64_t>();
  return a;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

std::vector<float> geometric_median(const float* x, int64_t n, int64_t d, int iterations) {
  std::vector<double> y(static_cast<size_t>(d), 0.0), num(static_cast<size_t>(d));
  for (int64_t r = 0; r < n; r++)
    for (int64_t j = 0; j < d; j++) y[size_t(j)] += x[r * d + j];
  for (auto& v : y) v /= double(std::max<int64_t>(n, 1));
  // Weiszfeld: y <- sum_i w_i x_i / sum_i w_i with w_i = 1 / ||x_i - y||.
  for (int it = 0; it < iterations; it++) {
    std::fill(num.begin(), num.end(), 0.0);
    double den = 0;
    for (int64_t r = 0; r < n; r++) {
      double s = 0;
      for (int64_t j = 0; j < d; j++) {
        double e = x[r * d + j] - y[size_t(j)];
        s += e * e;
      }
      double w = 1.0 / std::max(std::sqrt(s), 1e-8);
      for (int64_t j = 0; j < d; j++) num[size_t(j)] += w * x[r * d + j];
      den += w;
    }
    double move = 0, norm = 0;
    for (int64_t j = 0; j < d; j++) {
      double v = num[size_t(j)] / den;
      move += (v - y[size_t(j)]) * (v - y[size_t(j)]);
      norm += v * v;
      y[size_t(j)] = v;
    }
    if (std::sqrt(move) <= 1e-7 * (std::sqrt(norm) + 1.0)) break;
  }
  return std::vector<float>(y.begin(), y.end());
}

// ---------------------------------------------------------------------------------------------
// Options

json TrainOptions::to_json() const {
  return {{"batch", batch},
          {"tokens", tokens},
          {"epochs", epochs},
          {"beta1", beta1},
          {"beta2", beta2},
          {"adam_eps", adam_eps},
          {"lr_warmup", lr_warmup},
          {"lr_decay", lr_decay},
          {"l1_warmup", l1_warmup},
          {"clip", clip},
          {"init_rows", init_rows},
          {"scale_inputs", scale_inputs},
          {"dead_tokens", dead_tokens},
          {"resample_every", resample_every},
          {"density_window", density_window},
          {"checkpoint_every", checkpoint_every},
          {"stop_after", stop_after},
          {"checkpoint_dir", checkpoint_dir},
          {"output", output},
          {"sweep", sweep},
          {"log_path", log_path},
          {"log_every", log_every},
          {"dtype", dtype_name(dtype)},
          {"skip_nonfinite", skip_nonfinite}};
}

TrainOptions TrainOptions::from_json(const json& j) {
  TrainOptions o;
  o.batch = j.at("batch").get<int64_t>();
  o.tokens = j.at("tokens").get<int64_t>();
  o.epochs = j.at("epochs").get<int>();
  o.beta1 = j.at("beta1").get<float>();
  o.beta2 = j.at("beta2").get<float>();
  o.adam_eps = j.at("adam_eps").get<float>();
  o.lr_warmup = j.at("lr_warmup").get<double>();
  o.lr_decay = j.at("lr_decay").get<double>();
  o.l1_warmup = j.at("l1_warmup").get<double>();
  o.clip = j.at("clip").get<float>();
  o.init_rows = j.at("init_rows").get<int64_t>();
  o.scale_inputs = j.at("scale_inputs").get<bool>();
  o.dead_tokens = j.at("dead_tokens").get<int64_t>();
  o.resample_every = j.at("resample_every").get<int64_t>();
  o.density_window = j.at("density_window").get<int64_t>();
  o.checkpoint_every = j.at("checkpoint_every").get<int64_t>();
  o.stop_after = j.at("stop_after").get<int64_t>();
  o.checkpoint_dir = j.at("checkpoint_dir").get<std::string>();
  o.output = j.at("output").get<std::string>();
  o.sweep = j.at("sweep").get<bool>();
  o.log_path = j.at("log_path").get<std::string>();
  o.log_every = j.at("log_every").get<int64_t>();
  o.dtype = parse_dtype(j.at("dtype").get<std::string>());
  o.skip_nonfinite = j.at("skip_nonfinite").get<bool>();
  return o;
}

// ---------------------------------------------------------------------------------------------
// Trainer

struct Trainer::Run {
  RunSpec spec;
  std::unique_ptr<Arch> arch;
  std::vector<int32_t> since_fired;  // tokens since the latent last fired (saturating)
  std::vector<int32_t> win_fires, prev_fires;  // density windows
  int64_t win_tokens = 0, prev_tokens = 0;
  std::vector<uint8_t> dead;
  int64_t num_dead = 0;
  Buffer<uint8_t> dead_dev;
  StepMetrics last;
  int64_t resampled = 0;

  void update_dead(int64_t dead_tokens) {
    num_dead = 0;
    for (size_t l = 0; l < since_fired.size(); l++) {
      dead[l] = since_fired[l] >= dead_tokens;
      num_dead += dead[l];
    }
    dead_dev.upload(dead);
  }
};

Trainer::Trainer(TrainOptions opt, std::vector<RunSpec> runs, SaeOps& ops) : opt_(std::move(opt)), ops_(ops) {
  if (runs.empty()) throw std::logic_error("Trainer: no runs");
  if (opt_.batch < 1) throw UsageError("--batch must be at least 1");
  d_ = runs[0].arch.d_in;
  for (auto& s : runs) {
    auto r = std::make_unique<Run>();
    r->spec = s;
    r->arch = make_arch(ops_, s.arch);
    const size_t n = size_t(s.arch.d_sae);
    r->since_fired.assign(n, 0);
    r->win_fires.assign(n, 0);
    r->prev_fires.assign(n, 0);
    r->dead.assign(n, 0);
    r->dead_dev = Buffer<uint8_t>(ops_.backend(), n);
    r->dead_dev.zero();
    runs_.push_back(std::move(r));
  }
}

Arch& Trainer::arch(size_t i) { return *runs_[i]->arch; }
const RunSpec& Trainer::spec(size_t i) const { return runs_[i]->spec; }
const StepMetrics& Trainer::last_metrics(size_t i) const { return runs_[i]->last; }

Trainer::~Trainer() = default;

void Trainer::set_provenance(const json& provenance, const std::vector<std::string>& inputs) {
  provenance_ = provenance.is_object() ? provenance : json::object();
  inputs_ = inputs;
}

float Trainer::lr_factor(int64_t before, int64_t B) const {
  const double T = double(opt_.tokens);
  double f = 1.0;
  if (opt_.lr_warmup > 0 && T > 0) f = std::min(1.0, double(before + B) / (opt_.lr_warmup * T));
  if (opt_.lr_decay > 0 && T > 0) {
    double left = T - double(before);
    f *= std::clamp(left / (opt_.lr_decay * T), 0.0, 1.0);
  }
  return float(f);
}

float Trainer::sparsity_factor(int64_t before, int64_t B) const {
  const double T = double(opt_.tokens);
  if (opt_.l1_warmup > 0 && T > 0) return float(std::min(1.0, double(before + B) / (opt_.l1_warmup * T)));
  return 1.0f;
}

void Trainer::start(RowSource& src, std::vector<float>& pending) {
  const int64_t n0 = std::max<int64_t>(1, opt_.init_rows);
  // The buffer grows as rows arrive (about 64 MiB at a time), so a short input with a large
  // --init-rows costs what it holds, not what was asked for.
  const int64_t step_rows = std::max<int64_t>(1, (int64_t(64) << 20) / (4 * d_));
  int64_t got = 0;
  while (got < n0) {
    const int64_t want = std::min(step_rows, n0 - got);
    pending.resize(size_t((got + want) * d_));
    int64_t m = src.read(pending.data() + got * d_, want);
    got += m;
    if (m == 0) break;
  }
  if (got == 0) throw InputError(src.name() + ": no activation rows to train on");
  pending.resize(size_t(got * d_));
  double ms = 0;
  for (int64_t r = 0; r < got; r++) {
    double s = 0;
    for (int64_t j = 0; j < d_; j++) s += double(pending[size_t(r * d_ + j)]) * pending[size_t(r * d_ + j)];
    ms += s;
  }
  ms /= double(got);
  scale_ = (opt_.scale_inputs && ms > 0) ? float(std::sqrt(double(d_) / ms)) : 1.0f;
  std::vector<float> xs(pending.size());
  for (size_t i = 0; i < xs.size(); i++) xs[i] = pending[i] * scale_;
  b_dec0_ = geometric_median(xs.data(), got, d_);
  for (auto& r : runs_) r->arch->init(b_dec0_);
  started_ = true;
}

Trainer::Status Trainer::train(RowSource& src) {
  if (started_ && src.d() != d_)
    throw InputError(src.name() + ": rows have d=" + std::to_string(src.d()) + " but the checkpoint was trained on d_in=" +
                     std::to_string(d_));
  if (!started_ && src.d() != d_)
    throw std::logic_error("Trainer: source d differs from the configured d_in");
  std::vector<float> pending;
  size_t pending_pos = 0;
  if (!started_) {
    start(src, pending);
  } else {
    // Resume: go back to where the checkpoint left the input.
    for (int64_t e = 0; e < epoch_; e++)
      if (!src.rewind()) throw InputError(src.name() + ": cannot re-read the input to resume in epoch " + std::to_string(e + 1));
    std::vector<float> scratch(static_cast<size_t>(std::min<int64_t>(opt_.batch, 65536) * d_));
    int64_t left = rows_in_epoch_;
    while (left > 0) {
      int64_t m = src.read(scratch.data(), std::min<int64_t>(left, int64_t(scratch.size()) / d_));
      if (m == 0)
        throw InputError(src.name() + ": input ended after " + std::to_string(rows_in_epoch_ - left) +
                         " rows, but the checkpoint had trained on " + std::to_string(rows_in_epoch_) +
                         " rows of it (resume needs the same input)");
      left -= m;
    }
  }
  if (!opt_.log_path.empty() && !log_) {
    log_ = std::make_unique<cli::LineLog>(opt_.log_path, tokens_ > 0);  // a resumed run appends
  }
  cli::Progress progress;
  t_start_ = now_s();
  tokens_at_start_ = tokens_;
  const int64_t B = opt_.batch;
  std::vector<float> xb(static_cast<size_t>(B * d_));
  if (int64_t(x_dev_.size()) < B * d_) x_dev_ = Buffer<float>(ops_.backend(), size_t(B * d_));
  Status status = Status::done;
  bool ended = false;
  while (!ended) {
    if (opt_.tokens > 0 && tokens_ >= opt_.tokens) break;
    int64_t want = B;
    if (opt_.tokens > 0) want = std::min(want, opt_.tokens - tokens_);
    int64_t got = 0;
    while (got < want) {
      if (pending_pos < pending.size()) {
        int64_t m = std::min<int64_t>(want - got, int64_t(pending.size() - pending_pos) / d_);
        std::memcpy(xb.data() + got * d_, pending.data() + pending_pos, size_t(m * d_) * 4);
        pending_pos += size_t(m * d_);
        got += m;
        rows_in_epoch_ += m;
        continue;
      }
      int64_t m = 0;
      try {
        m = src.read(xb.data() + got * d_, want - got);
      } catch (const cli::Interrupted&) {
        // A signal while the input is idle (a pipe with no writer): train on what has arrived,
        // then stop below as after any step, with a checkpoint.
        ended = true;
        break;
      }
      if (m > 0) {
        got += m;
        rows_in_epoch_ += m;
        continue;
      }
      if (epoch_ + 1 < opt_.epochs) {
        if (!src.rewind()) throw InputError(src.name() + ": cannot re-read the input for another epoch");
        epoch_++;
        rows_in_epoch_ = 0;
        continue;
      }
      ended = true;
      break;
    }
    if (got == 0) {
      if (cli::interrupted()) status = Status::interrupted;
      break;
    }
    const int64_t before = tokens_;
    step(xb.data(), got);
    if (tokens_ == tokens_at_start_) t_first_ = now_s() - t_start_;
    tokens_ += got;
    steps_++;
    for (auto& r : runs_) maybe_resample(*r, xb.data(), got);
    if (log_ && (steps_ % std::max<int64_t>(1, opt_.log_every) == 0)) log_metrics();
    if (opt_.progress && progress.enabled()) {
      const StepMetrics& m = runs_[0]->last;
      double el = now_s() - t_start_;
      double rate = double(tokens_ - tokens_at_start_) / std::max(el, 1e-9);
      std::ostringstream o;
      o.precision(4);
      o << cli::human_count(double(tokens_));
      if (opt_.tokens > 0) o << "/" << cli::human_count(double(opt_.tokens));
      o << " tokens, " << cli::human_count(rate) << " tok/s, loss " << m.loss << ", FVU " << m.fvu << ", L0 " << m.l0
        << ", dead " << 100.0 * m.dead_frac << "%";
      if (opt_.tokens > 0) o << ", ETA " << cli::human_duration(double(opt_.tokens - tokens_) / std::max(rate, 1e-9));
      if (runs_.size() > 1) o << " (run 1 of " << runs_.size() << ")";
      progress.update(o.str());
    }
    if (opt_.checkpoint_every > 0 && before / opt_.checkpoint_every != tokens_ / opt_.checkpoint_every &&
        !(opt_.tokens > 0 && tokens_ >= opt_.tokens))
      write_checkpoint(opt_.checkpoint_dir);
    if (cli::interrupted()) {
      status = Status::interrupted;
      break;
    }
    if (opt_.stop_after > 0 && tokens_ >= opt_.stop_after && !(opt_.tokens > 0 && tokens_ >= opt_.tokens)) {
      status = Status::stopped;
      break;
    }
  }
  progress.done();
  t_train_ = now_s() - t_start_;
  if (log_ && (steps_ % std::max<int64_t>(1, opt_.log_every) != 0)) log_metrics();
  skipped_rows_ += src.skipped();
  if (status != Status::done) {
    write_checkpoint(opt_.checkpoint_dir);
    return status;
  }
  if (tokens_ == 0) throw InputError(src.name() + ": no activation rows to train on");
  return status;
}

void Trainer::step(const float* xb, int64_t B) {
  const int64_t d = d_;
  // Scale the rows and, in the same pass, the batch's variance about its mean (FVU denominator):
  // sum ||x||^2 - B ||mean||^2, in double.
  std::vector<float>& xs = xs_;
  xs.resize(size_t(B * d));
  std::vector<double> colsum(static_cast<size_t>(d), 0.0);
  double sq = 0;
  for (int64_t r = 0; r < B; r++)
    for (int64_t j = 0; j < d; j++) {
      const float v = xb[r * d + j] * scale_;
      xs[size_t(r * d + j)] = v;
      colsum[size_t(j)] += v;
      sq += double(v) * v;
    }
  double var = sq;
  for (double c : colsum) var -= c * c / double(B);
  x_dev_.upload(xs.data(), xs.size());
  const int64_t t = steps_ + 1;
  for (auto& rp : runs_) {
    Run& r = *rp;
    Arch& a = *r.arch;
    const int64_t n = a.config().d_sae;
    StepInput in;
    in.x = x_dev_.data();
    in.B = B;
    in.sparsity_scale = sparsity_factor(tokens_, B);
    in.dead_mask = r.dead_dev.data();
    in.num_dead = r.num_dead;
    StepStats st = a.step(in);
    if (a.unit_norm_decoder()) {
      Param* D = a.param("W_dec");
      ops_.remove_parallel(D->w.data(), D->g.data(), n, a.config().d_in);
    }
    float gscale = 1.0f;
    if (opt_.clip > 0) {
      double ss = 0;
      for (Param* p : a.params()) ss += ops_.sumsq(p->g.data(), p->size);
      double norm = std::sqrt(ss);
      if (norm > opt_.clip) gscale = float(opt_.clip / norm);
    }
    AdamStep s;
    s.lr = r.spec.lr * lr_factor(tokens_, B);
    s.beta1 = opt_.beta1;
    s.beta2 = opt_.beta2;
    s.eps = opt_.adam_eps;
    s.bc1 = float(1.0 - std::pow(double(opt_.beta1), double(t)));
    s.bc2 = float(1.0 - std::pow(double(opt_.beta2), double(t)));
    s.gscale = gscale;
    for (Param* p : a.params()) ops_.adam(p->w.data(), p->g.data(), p->m.data(), p->v.data(), p->size, s);
    a.after_update();
    // Dead latents and densities.
    int64_t active = 0;
    for (int64_t l = 0; l < n; l++) {
      const int32_t f = st.fires[size_t(l)];
      active += f;
      if (f > 0)
        r.since_fired[size_t(l)] = 0;
      else
        r.since_fired[size_t(l)] =
            int32_t(std::min<int64_t>(std::numeric_limits<int32_t>::max(), int64_t(r.since_fired[size_t(l)]) + B));
      r.win_fires[size_t(l)] += f;
    }
    r.win_tokens += B;
    if (r.win_tokens >= opt_.density_window) {
      r.prev_fires = r.win_fires;
      r.prev_tokens = r.win_tokens;
      std::fill(r.win_fires.begin(), r.win_fires.end(), 0);
      r.win_tokens = 0;
    }
    r.update_dead(opt_.dead_tokens);
    StepMetrics& m = r.last;
    m.step = t;
    m.tokens = tokens_ + B;
    m.loss = st.loss;
    m.mse = st.mse;
    m.fvu = var > 0 ? st.mse * double(B) / var : 0.0;
    m.l0 = double(active) / double(B);
    m.dead_frac = double(r.num_dead) / double(n);
    m.sparsity = st.sparsity;
    m.aux = st.aux;
    m.lr = s.lr;
    m.resampled = r.resampled;
  }
}

void Trainer::maybe_resample(Run& r, const float* xb, int64_t B) {
  Arch& a = *r.arch;
  if (opt_.resample_every <= 0 || a.config().arch != "relu") return;
  if ((tokens_ - B) / opt_.resample_every == tokens_ / opt_.resample_every) return;
  std::vector<int64_t> dead;
  for (size_t l = 0; l < r.since_fired.size(); l++)
    if (r.since_fired[l] >= opt_.dead_tokens) dead.push_back(int64_t(l));
  if (dead.empty()) return;
  const int64_t d = d_, n = a.config().d_sae;
  // Inputs are drawn with probability proportional to their squared reconstruction loss under the
  // current weights (Bricken et al. 2023); the generator is seeded from the run's seed and the
  // token count, so a resumed run draws the same.
  Buffer<float> xhat(ops_.backend(), size_t(B * d));
  a.reconstruct(x_dev_.data(), B, xhat.data());
  std::vector<float> xh = xhat.to_vector();
  std::vector<double> cum(static_cast<size_t>(B));
  double tot = 0;
  for (int64_t i = 0; i < B; i++) {
    double e = 0;
    for (int64_t j = 0; j < d; j++) {
      double v = double(xb[i * d + j]) * scale_ - xh[size_t(i * d + j)];
      e += v * v;
    }
    tot += e * e;
    cum[size_t(i)] = tot;
  }
  if (!(tot > 0)) return;
  std::vector<float> bd = a.param("b_dec")->w.to_vector();
  std::vector<float> E = a.param("W_enc_T")->w.to_vector(), D = a.param("W_dec")->w.to_vector();
  double en = 0, dn = 0;
  int64_t alive = 0;
  for (int64_t l = 0; l < n; l++) {
    if (r.since_fired[size_t(l)] >= opt_.dead_tokens) continue;
    double se = 0, sd = 0;
    for (int64_t j = 0; j < d; j++) {
      se += double(E[size_t(l * d + j)]) * E[size_t(l * d + j)];
      sd += double(D[size_t(l * d + j)]) * D[size_t(l * d + j)];
    }
    en += std::sqrt(se);
    dn += std::sqrt(sd);
    alive++;
  }
  const float enc_norm = alive ? float(0.2 * en / double(alive)) : 0.2f;
  const float dec_norm = alive ? float(dn / double(alive)) : a.config().dec_init_norm;
  Rng rng = Rng(a.config().seed).substream(2).substream(uint64_t(tokens_));
  std::vector<std::vector<float>> dirs;
  for (size_t q = 0; q < dead.size(); q++) {
    double u = rng.uniform() * tot;
    int64_t i = std::lower_bound(cum.begin(), cum.end(), u) - cum.begin();
    i = std::min(i, B - 1);
    std::vector<float> v(static_cast<size_t>(d));
    double s = 0;
    for (int64_t j = 0; j < d; j++) {
      v[size_t(j)] = xb[i * d + j] * scale_ - bd[size_t(j)];
      s += double(v[size_t(j)]) * v[size_t(j)];
    }
    s = s > 0 ? 1.0 / std::sqrt(s) : 0.0;
    for (auto& x : v) x = float(x * s);
    dirs.push_back(v);
  }
  a.resample(dead, dirs, enc_norm, dec_norm);
  for (int64_t l : dead) r.since_fired[size_t(l)] = 0;
  r.update_dead(opt_.dead_tokens);
  r.resampled += int64_t(dead.size());
  r.last.resampled = r.resampled;
  r.last.dead_frac = double(r.num_dead) / double(n);
}

void Trainer::log_metrics() {
  double el = now_s() - t_start_;
  double rate = double(tokens_ - tokens_at_start_) / std::max(el, 1e-9);
  for (auto& rp : runs_) {
    const StepMetrics& m = rp->last;
    json j = {{"step", m.step},       {"tokens", m.tokens}, {"tokens_per_s", rate}, {"loss", m.loss},
              {"mse", m.mse},         {"fvu", m.fvu},       {"l0", m.l0},           {"dead_frac", m.dead_frac},
              {"sparsity", m.sparsity}, {"aux", m.aux},     {"lr", m.lr},           {"elapsed_s", el}};
    if (!rp->spec.label.empty()) j["run"] = rp->spec.label;
    if (rp->resampled) j["resampled"] = rp->resampled;
    log_->write_line(j.dump());
  }
}

std::vector<float> Trainer::log10_density(size_t i) const {
  const Run& r = *runs_[i];
  std::vector<float> out(r.win_fires.size());
  const double tokens = double(r.win_tokens + r.prev_tokens);
  for (size_t l = 0; l < out.size(); l++) {
    double c = double(r.win_fires[l]) + double(r.prev_fires[l]);
    out[l] = float(std::log10((tokens > 0 ? c / tokens : 0.0) + 1e-10));
  }
  return out;
}

std::string Trainer::output_dir(size_t i) const {
  if (!opt_.sweep) return opt_.output;
  return (fs::path(opt_.output) / runs_[i]->spec.label).string();
}

Sae Trainer::exported(size_t i) {
  Run& r = *runs_[i];
  Sae s = r.arch->export_sae(scale_);
  const json& p = provenance_;
  if (p.contains("hook") && p["hook"].is_string()) s.hook = p["hook"].get<std::string>();
  if (p.contains("model") && p["model"].is_string()) s.model = p["model"].get<std::string>();
  json meta = json::object();
  if (p.contains("context") && p["context"].is_number_integer()) meta["context_size"] = p["context"];
  if (p.contains("layer") && p["layer"].is_number_integer()) meta["hook_layer"] = p["layer"];
  meta["activation_provenance"] = p;
  const ArchConfig& c = r.spec.arch;
  json train = {{"architecture", c.arch},
                {"tokens", tokens_},
                {"steps", steps_},
                {"batch", opt_.batch},
                {"lr", r.spec.lr},
                {"seed", c.seed},
                {"activation_scale", scale_},
                {"scale_folded_into_weights", true}};
  if (c.arch == "relu" || c.arch == "jumprelu" || c.arch == "gated") train["lambda"] = c.lambda;
  if (c.arch == "topk" || c.arch == "batchtopk" || c.arch == "matryoshka") train["k"] = c.k;
  if (c.arch == "matryoshka") train["prefixes"] = c.prefixes;
  if (c.arch == "jumprelu") {
    train["bandwidth"] = c.bandwidth;
    if (c.freq_scale > 0) train["freq_scale"] = c.freq_scale;
  }
  if (skipped_rows_) train["skipped_nonfinite_rows"] = skipped_rows_;
  meta["saetools_training"] = train;
  s.cfg = json::object();
  s.cfg["metadata"] = meta;
  return s;
}

void Trainer::export_all() {
  if (opt_.sweep) {
    std::error_code ec;
    fs::create_directory(opt_.output, ec);
    if (!fs::is_directory(opt_.output, ec)) throw InputError(opt_.output + ": cannot create the sweep directory");
  }
  for (size_t i = 0; i < runs_.size(); i++) {
    SaveOptions so;
    so.dtype = opt_.dtype;
    so.log10_density = log10_density(i);
    save_sae(exported(i), output_dir(i), so);
  }
}

// ---------------------------------------------------------------------------------------------
// Checkpoints: trainer.json (options, runs, counters, input position, provenance) and one
// run-<i>.safetensors per run holding every parameter with its Adam moments (F32, exact) and the
// per-latent counters (I32).

void Trainer::write_checkpoint(const std::string& dir) {
  cli::OutputDir out(dir, "checkpoint");
  json runs = json::array();
  for (size_t i = 0; i < runs_.size(); i++) {
    Run& r = *runs_[i];
    SafeTensorsWriter w;
    for (Param* p : r.arch->params()) {
      std::vector<float> v = p->w.to_vector(), m = p->m.to_vector(), s = p->v.to_vector();
      w.add(p->name, p->shape, v.data());
      w.add(p->name + ".adam_m", p->shape, m.data());
      w.add(p->name + ".adam_v", p->shape, s.data());
    }
    const int64_t n = r.spec.arch.d_sae;
    w.add_i32("since_fired", {n}, r.since_fired.data());
    w.add_i32("window_fires", {n}, r.win_fires.data());
    w.add_i32("previous_window_fires", {n}, r.prev_fires.data());
    w.write(out.tmp_path() + "/run-" + std::to_string(i) + ".safetensors");
    runs.push_back({{"label", r.spec.label},
                    {"lr", r.spec.lr},
                    {"arch", arch_to_json(r.spec.arch)},
                    {"arch_state", r.arch->state()},
                    {"window_tokens", r.win_tokens},
                    {"previous_window_tokens", r.prev_tokens},
                    {"resampled", r.resampled}});
  }
  json j = {{"format", kCheckpointFormat},
            {"version", kCheckpointVersion},
            {"d_in", d_},
            {"scale", scale_},
            {"tokens", tokens_},
            {"steps", steps_},
            {"epoch", epoch_},
            {"rows_in_epoch", rows_in_epoch_},
            {"skipped_rows", skipped_rows_},
            {"options", opt_.to_json()},
            {"runs", runs},
            {"inputs", inputs_},
            {"provenance", provenance_}};
  cli::write_file_atomic(out.tmp_path() + "/trainer.json", j.dump(2) + "\n");
  out.commit();
}

std::unique_ptr<Trainer> Trainer::resume(const std::string& dir, SaeOps& ops,
                                         const std::function<void(TrainOptions&)>& override) {
  std::string path = dir + "/trainer.json";
  struct stat st;
  if (stat(path.c_str(), &st) != 0) throw InputError(dir + ": not a sae-train checkpoint (no trainer.json)");
  const json j = read_json_file(path);
  try {
    if (j.at("format").get<std::string>() != kCheckpointFormat || j.at("version").get<int>() != kCheckpointVersion)
      throw InputError(path + ": not a sae-train checkpoint of version " + std::to_string(kCheckpointVersion));
    TrainOptions opt = TrainOptions::from_json(j.at("options"));
    if (override) override(opt);
    std::vector<RunSpec> specs;
    for (const json& r : j.at("runs")) {
      RunSpec s;
      s.label = r.at("label").get<std::string>();
      s.lr = r.at("lr").get<float>();
      s.arch = arch_from_json(r.at("arch"));
      specs.push_back(s);
    }
    auto t = std::make_unique<Trainer>(opt, specs, ops);
    t->d_ = j.at("d_in").get<int64_t>();
    t->scale_ = j.at("scale").get<float>();
    t->tokens_ = j.at("tokens").get<int64_t>();
    t->steps_ = j.at("steps").get<int64_t>();
    t->epoch_ = j.at("epoch").get<int64_t>();
    t->rows_in_epoch_ = j.at("rows_in_epoch").get<int64_t>();
    t->skipped_rows_ = j.at("skipped_rows").get<int64_t>();
    t->inputs_ = j.at("inputs").get<std::vector<std::string>>();
    t->provenance_ = j.at("provenance");
    for (size_t i = 0; i < t->runs_.size(); i++) {
      Run& r = *t->runs_[i];
      const json& rj = j.at("runs")[i];
      SafeTensors st(dir + "/run-" + std::to_string(i) + ".safetensors");
      for (Param* p : r.arch->params()) {
        p->w.upload(st.read_f32(p->name, p->shape));
        p->m.upload(st.read_f32(p->name + ".adam_m", p->shape));
        p->v.upload(st.read_f32(p->name + ".adam_v", p->shape));
      }
      const int64_t n = r.spec.arch.d_sae;
      auto counters = [&](const char* name) {
        std::vector<int32_t> v = st.read_i32(name);
        if (int64_t(v.size()) != n) throw InputError(st.path() + ": '" + name + "' has the wrong size");
        return v;
      };
      r.since_fired = counters("since_fired");
      r.win_fires = counters("window_fires");
      r.prev_fires = counters("previous_window_fires");
      r.win_tokens = rj.at("window_tokens").get<int64_t>();
      r.prev_tokens = rj.at("previous_window_tokens").get<int64_t>();
      r.resampled = rj.at("resampled").get<int64_t>();
      r.arch->load_state(rj.at("arch_state"));
      r.update_dead(opt.dead_tokens);
    }
    t->started_ = true;
    return t;
  } catch (const json::exception& e) {
    throw InputError(path + ": malformed checkpoint (" + std::string(e.what()) + ")");
  }
}

}  // namespace sae
