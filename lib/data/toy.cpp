#include "data/toy.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <sstream>

#include "base/cli.h"
#include "base/manual.h"
#include "base/errors.h"

namespace sae::toy {

namespace po = boost::program_options;
using json = nlohmann::json;

namespace {

// Sub-stream ids under Rng(seed): one for the feature directions, one for the rows. Row r draws
// from Rng(seed).substream(kRowStream).substream(r), so any split of rows over threads or
// batches gives the same data.
constexpr uint64_t kFeatureStream = 1;
constexpr uint64_t kRowStream = 2;

// Row chunk handled by one OpenMP task: large enough to amortise scheduling, small enough to
// balance 2-16 threads on one batch.
constexpr int64_t kChunkRows = 256;

// Hard limits that keep indices in uint32 and the dictionary in memory.
constexpr int64_t kMaxFeatures = int64_t(1) << 30;
constexpr int64_t kMaxDictionary = int64_t(1) << 31;  // features * d floats

std::string num(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

[[noreturn]] void bad(const std::string& msg) { throw UsageError(msg); }

// Most active features a row can have: every free feature and every parent, plus one child per
// parent (children of one parent are mutually exclusive).
double max_active(const ToyConfig& c) {
  return double(c.features - c.parents * c.children) + double(c.parents);
}

}  // namespace

const char* freq_name(FreqLaw f) { return f == FreqLaw::uniform ? "uniform" : "power"; }
const char* mag_name(MagLaw m) {
  switch (m) {
    case MagLaw::uniform: return "uniform";
    case MagLaw::exponential: return "exponential";
    default: return "constant";
  }
}

FreqLaw parse_freq(const std::string& s) {
  if (s == "uniform") return FreqLaw::uniform;
  if (s == "power") return FreqLaw::power;
  bad("--freq: unknown frequency law '" + s + "' (expected uniform or power)");
}

MagLaw parse_mag(const std::string& s) {
  if (s == "uniform") return MagLaw::uniform;
  if (s == "exponential") return MagLaw::exponential;
  if (s == "constant") return MagLaw::constant;
  bad("--magnitude: unknown magnitude law '" + s + "' (expected uniform, exponential or constant)");
}

void parse_hierarchy(const std::string& s, int64_t& parents, int64_t& children) {
  auto fail = [&]() {
    bad("--hierarchy: expected PARENTS:CHILDREN with positive integers (e.g. 8:4), got '" + s + "'");
  };
  const size_t colon = s.find(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == s.size()) fail();
  const std::string a = s.substr(0, colon), b = s.substr(colon + 1);
  for (const std::string* t : {&a, &b}) {
    if (t->size() > 9) fail();
    for (char ch : *t)
      if (ch < '0' || ch > '9') fail();
  }
  parents = std::stoll(a);
  children = std::stoll(b);
  if (parents < 1 || children < 1) fail();
}

void validate(const ToyConfig& c) {
  if (c.d < 1) bad("--d must be at least 1, got " + std::to_string(c.d));
  if (c.features < 1) bad("--features must be at least 1, got " + std::to_string(c.features));
  if (c.features > kMaxFeatures) bad("--features must be at most " + std::to_string(kMaxFeatures));
  if (double(c.features) * double(c.d) > double(kMaxDictionary))
    bad("--features x --d must be at most " + std::to_string(kMaxDictionary) + " (the dictionary is held in memory)");
  if (c.rows < 1) bad("--rows must be at least 1, got " + std::to_string(c.rows));
  if (c.seed < 0) bad("--seed must be non-negative, got " + std::to_string(c.seed));
  if (c.context < 0) bad("--context must be non-negative, got " + std::to_string(c.context));
  if (c.parents < 0 || c.children < 0 || (c.parents > 0) != (c.children > 0))
    bad("hierarchy: parents and children must both be positive or both zero");
  if (c.parents > 0 && c.parents * (1 + c.children) > c.features)
    bad("--hierarchy " + std::to_string(c.parents) + ":" + std::to_string(c.children) + " needs " +
        std::to_string(c.parents * (1 + c.children)) + " features, more than --features " +
        std::to_string(c.features));
  if (!std::isfinite(c.active) || c.active <= 0) bad("--active must be positive, got " + num(c.active));
  const double most = max_active(c);
  if (c.active > most) {
    if (c.parents == 0)
      bad("--active (" + num(c.active) + ") must be at most --features (" + std::to_string(c.features) + ")");
    bad("--active (" + num(c.active) + ") must be at most " + num(most) +
        " with this hierarchy (every free feature and parent, one child per parent)");
  }
  if (!std::isfinite(c.freq_exponent) || c.freq_exponent < 0 || c.freq_exponent > 10)
    bad("--freq-exponent must be in [0, 10], got " + num(c.freq_exponent));
  if (c.magnitude == MagLaw::uniform) {
    if (!std::isfinite(c.mag_lo) || !std::isfinite(c.mag_hi) || c.mag_lo < 0 || c.mag_hi < c.mag_lo ||
        c.mag_hi <= 0)
      bad("--mag-lo/--mag-hi must satisfy 0 <= lo <= hi and hi > 0, got " + num(c.mag_lo) + " and " +
          num(c.mag_hi));
  } else if (!std::isfinite(c.mag_mean) || c.mag_mean <= 0) {
    bad("--mag-mean must be positive, got " + num(c.mag_mean));
  }
  if (!std::isfinite(c.noise) || c.noise < 0) bad("--noise must be non-negative, got " + num(c.noise));
}

json to_json(const ToyConfig& c) {
  json j;
  j["generator_version"] = kToyGeneratorVersion;
  j["d"] = c.d;
  j["features"] = c.features;
  j["active"] = c.active;
  j["freq"] = freq_name(c.freq);
  j["freq_exponent"] = c.freq_exponent;
  j["magnitude"] = mag_name(c.magnitude);
  j["mag_lo"] = c.mag_lo;
  j["mag_hi"] = c.mag_hi;
  j["mag_mean"] = c.mag_mean;
  j["hierarchy"] = c.parents ? std::to_string(c.parents) + ":" + std::to_string(c.children) : "";
  j["noise"] = c.noise;
  j["rows"] = c.rows;
  j["seed"] = c.seed;
  j["context"] = c.context;
  return j;
}

// ---- the model ----

ToyModel::ToyModel(const ToyConfig& c) : cfg_(c) {
  validate(cfg_);
  make_probabilities();
  make_features();
}

// Firing probabilities. Every feature gets a weight from the frequency law (1, or (i+1)^-alpha);
// free features and parents fire independently with q_i = min(1, s w_i); the children of a parent
// are mutually exclusive, child j firing with c_j = min(1, s w_j) (scaled down so that they sum to
// at most 1), and the parent fires whenever a child does, or else on its own with q_parent. The
// scale s is found by bisection so that the expected number of active features per row, parents
// fired by children included, equals --active. Clipping at 1 with s raised until the total is met
// is what "redistributing the excess" means: the features not clipped share it in proportion to
// their weights.
void ToyModel::make_probabilities() {
  const int64_t n = cfg_.features, P = cfg_.parents, C = cfg_.children;
  std::vector<double> w(size_t(n), 1.0);
  if (cfg_.freq == FreqLaw::power)
    for (int64_t i = 0; i < n; i++)
      w[size_t(i)] = rng_detail::portable_exp(-cfg_.freq_exponent * rng_detail::portable_log(double(i + 1)));
  double wmin = *std::min_element(w.begin(), w.end());

  base_.assign(size_t(n), 0.0);
  marginal_.assign(size_t(n), 0.0);
  // Expected active count at scale s; fills base_ and marginal_ as a side effect.
  auto expected = [&](double s) {
    double total = 0;
    for (int64_t i = P + P * C; i < n; i++) {
      const double q = std::min(1.0, s * w[size_t(i)]);
      base_[size_t(i)] = marginal_[size_t(i)] = q;
      total += q;
    }
    for (int64_t p = 0; p < P; p++) {
      const int64_t c0 = P + p * C;
      double S = 0;
      for (int64_t j = c0; j < c0 + C; j++) S += std::min(1.0, s * w[size_t(j)]);
      const double scale = S > 1 ? 1 / S : 1.0;
      double S2 = 0;
      for (int64_t j = c0; j < c0 + C; j++) {
        const double cj = std::min(1.0, s * w[size_t(j)]) * scale;
        base_[size_t(j)] = marginal_[size_t(j)] = cj;
        S2 += cj;
      }
      S2 = std::min(S2, 1.0);
      const double q = std::min(1.0, s * w[size_t(p)]);
      base_[size_t(p)] = q;
      marginal_[size_t(p)] = std::fma(1 - q, S2, q);  // fires by a child, or else on its own
      total += S2 + marginal_[size_t(p)];
    }
    return total;
  };
  // At s = 1 / wmin every probability is clipped to 1 and the total is max_active() >= active.
  double lo = 0, hi = 1 / wmin;
  for (int it = 0; it < 2000; it++) {
    const double mid = 0.5 * (lo + hi);
    if (!(mid > lo && mid < hi)) break;
    (expected(mid) < cfg_.active ? lo : hi) = mid;
  }
  expected(hi);

  // Independent features (free and parents) by probability, in buckets within a factor 2, so that
  // a row samples them by geometric skips over each bucket (cost ~ the number that fire) instead
  // of one draw per feature.
  std::map<int, Bucket, std::greater<int>> by_exponent;
  auto add_independent = [&](int64_t i) {
    const double q = base_[size_t(i)];
    if (!(q > 0)) return;  // never fires (a weight that underflowed)
    int e = 0;
    std::frexp(q, &e);
    Bucket& b = by_exponent[e];
    b.index.push_back(uint32_t(i));
    b.bound = std::max(b.bound, q);
  };
  for (int64_t p = 0; p < P; p++) add_independent(p);
  for (int64_t i = P + P * C; i < n; i++) add_independent(i);
  buckets_.clear();
  for (auto& kv : by_exponent) {
    Bucket& b = kv.second;
    for (uint32_t i : b.index) b.ratio.push_back(base_[i] / b.bound);
    b.inv_log1m = Rng::geometric_param(b.bound);
    buckets_.push_back(std::move(b));
  }
  groups_.clear();
  for (int64_t p = 0; p < P; p++) {
    Group g;
    g.parent = uint32_t(p);
    g.first_child = uint32_t(P + p * C);
    double cum = 0;
    for (int64_t j = 0; j < C; j++) {
      cum += base_[size_t(g.first_child + j)];
      g.cumulative.push_back(cum);
    }
    groups_.push_back(std::move(g));
  }
}

double ToyModel::expected_active() const {
  double t = 0;
  for (double m : marginal_) t += m;
  return t;
}

// Feature i is a standard normal vector from its own sub-stream, normalised to unit length.
void ToyModel::make_features() {
  const int64_t n = cfg_.features, d = cfg_.d;
  features_.assign(size_t(n * d), 0.f);
  const Rng root = Rng(uint64_t(cfg_.seed)).substream(kFeatureStream);
#pragma omp parallel
  {
    std::vector<double> z(static_cast<size_t>(d));
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; i++) {
      Rng rng = root.substream(uint64_t(i));
      double ss = 0;
      while (!(ss > 0)) {  // an all-zero draw has probability ~2^-53d; redraw rather than divide by 0
        ss = 0;
        for (auto& v : z) {
          v = rng.normal();
          ss = std::fma(v, v, ss);
        }
      }
      const double norm = std::sqrt(ss);
      float* f = features_.data() + i * d;
      for (int64_t j = 0; j < d; j++) f[j] = float(z[size_t(j)] / norm);
    }
  }
}

// One row's active set (feature indices ascending) and magnitudes.
void ToyModel::sample_row(Rng& rng, std::vector<uint32_t>& fired, std::vector<float>& mags) const {
  fired.clear();
  for (const Bucket& b : buckets_) {
    const size_t m = b.index.size();
    if (b.bound >= 1) {
      for (size_t k = 0; k < m; k++)
        if (b.ratio[k] >= 1 || rng.uniform() < b.ratio[k]) fired.push_back(b.index[k]);
      continue;
    }
    // Positions chosen independently with probability `bound` (geometric gaps), each then kept
    // with probability ratio = q / bound: every feature fires independently with probability q.
    double pos = -1;
    for (;;) {
      pos += 1 + rng.geometric(b.inv_log1m);
      if (pos >= double(m)) break;
      const size_t k = size_t(pos);
      if (b.ratio[k] >= 1 || rng.uniform() < b.ratio[k]) fired.push_back(b.index[k]);
    }
  }
  for (const Group& g : groups_) {
    const double u = rng.uniform();
    const auto it = std::upper_bound(g.cumulative.begin(), g.cumulative.end(), u);
    if (it == g.cumulative.end()) continue;  // no child this row
    fired.push_back(g.first_child + uint32_t(it - g.cumulative.begin()));
    fired.push_back(g.parent);
  }
  std::sort(fired.begin(), fired.end());
  fired.erase(std::unique(fired.begin(), fired.end()), fired.end());  // a parent fired twice
  mags.resize(fired.size());
  for (auto& v : mags) {
    switch (cfg_.magnitude) {
      case MagLaw::uniform: v = float(rng.uniform(cfg_.mag_lo, cfg_.mag_hi)); break;
      case MagLaw::exponential: v = float(cfg_.mag_mean * rng.exponential()); break;
      case MagLaw::constant: v = float(cfg_.mag_mean); break;
    }
  }
}

void ToyModel::generate(int64_t first, int64_t n, Batch& acts, Batch* codes, int threads) const {
  const int64_t d = cfg_.d;
  acts.clear();
  acts.rows = n;
  acts.x.assign(size_t(n * d), 0.f);
  if (cfg_.context > 0) {
    acts.doc.resize(size_t(n));
    acts.pos.resize(size_t(n));
    for (int64_t r = 0; r < n; r++) {
      acts.doc[size_t(r)] = (first + r) / cfg_.context;
      acts.pos[size_t(r)] = int32_t((first + r) % cfg_.context);
    }
  }
  const int64_t chunks = (n + kChunkRows - 1) / kChunkRows;
  // Codes of each chunk, concatenated in row order afterwards.
  std::vector<std::vector<uint32_t>> chunk_index(codes ? size_t(chunks) : 0);
  std::vector<std::vector<float>> chunk_value(codes ? size_t(chunks) : 0);
  if (codes) {
    codes->clear();
    codes->rows = n;
    codes->count.assign(size_t(n), 0);
  }
  const Rng rows = Rng(uint64_t(cfg_.seed)).substream(kRowStream);
  const float noise = float(cfg_.noise);
  if (threads <= 0) threads = omp_get_max_threads();
#pragma omp parallel num_threads(threads) if (chunks > 1)
  {
    std::vector<uint32_t> fired;
    std::vector<float> mags;
#pragma omp for schedule(dynamic, 1)
    for (int64_t ch = 0; ch < chunks; ch++) {
      const int64_t r0 = ch * kChunkRows, r1 = std::min(n, r0 + kChunkRows);
      for (int64_t r = r0; r < r1; r++) {
        Rng rng = rows.substream(uint64_t(first + r));
        sample_row(rng, fired, mags);
        float* x = acts.x.data() + r * d;
        for (size_t k = 0; k < fired.size(); k++) {
          const float* f = features_.data() + int64_t(fired[k]) * d;
          const float m = mags[k];
          for (int64_t j = 0; j < d; j++) x[j] = std::fma(m, f[j], x[j]);
        }
        if (noise > 0)
          for (int64_t j = 0; j < d; j++) x[j] = std::fma(noise, float(rng.normal()), x[j]);
        if (codes) {
          codes->count[size_t(r)] = uint32_t(fired.size());
          auto& ci = chunk_index[size_t(ch)];
          auto& cv = chunk_value[size_t(ch)];
          ci.insert(ci.end(), fired.begin(), fired.end());
          cv.insert(cv.end(), mags.begin(), mags.end());
        }
      }
    }
  }
  if (codes) {
    size_t nnz = 0;
    for (const auto& v : chunk_index) nnz += v.size();
    codes->index.reserve(nnz);
    codes->value.reserve(nnz);
    for (int64_t ch = 0; ch < chunks; ch++) {
      codes->index.insert(codes->index.end(), chunk_index[size_t(ch)].begin(), chunk_index[size_t(ch)].end());
      codes->value.insert(codes->value.end(), chunk_value[size_t(ch)].begin(), chunk_value[size_t(ch)].end());
    }
  }
}

Sae ToyModel::truth() const {
  const int64_t n = cfg_.features, d = cfg_.d;
  Sae s;
  s.arch = "standard";
  s.d_in = d;
  s.d_sae = n;
  s.W_dec = features_;
  s.W_enc.assign(size_t(n * d), 0.f);
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < d; j++) s.W_enc[size_t(j * n + i)] = features_[size_t(i * d + j)];
  s.b_enc.assign(size_t(n), 0.f);
  s.b_dec.assign(size_t(d), 0.f);
  s.hook = "toy";
  s.model = "toy";
  // Run metadata (SAELens keeps it under "metadata"): what this dictionary is and how it was made.
  s.cfg = json::object();
  s.cfg["metadata"]["toy_truth"] = true;
  s.cfg["metadata"]["toy"] = to_json(cfg_);
  return s;
}

// ---- options ----

po::options_description toy_options() {
  const ToyConfig c;
  po::options_description g("Toy source (--toy): synthetic activations with known features");
  g.add_options()
    ("d", po::value<int64_t>()->default_value(c.d), "row width (dimension of the activations)")
    ("features", po::value<int64_t>()->default_value(c.features),
     "number of ground-truth features (unit directions; more than d puts them in superposition)")
    ("active", po::value<double>()->default_value(c.active, num(c.active)),
     "expected number of active features per row (parents fired by children included)")
    ("freq", cli::choice({"uniform", "power"})->default_value(freq_name(c.freq)),
     "feature frequency law: uniform, or power (p_i proportional to (i+1)^-exponent)")
    ("freq-exponent", po::value<double>()->default_value(c.freq_exponent, num(c.freq_exponent)),
     "exponent of the power law, in [0, 10]")
    ("magnitude", cli::choice({"uniform", "exponential", "constant"})->default_value(mag_name(c.magnitude)),
     "magnitude of an active feature: uniform in [mag-lo, mag-hi), exponential with mean "
     "mag-mean, or constant mag-mean")
    ("mag-lo", po::value<double>()->default_value(c.mag_lo, num(c.mag_lo)), "uniform magnitudes: lower bound")
    ("mag-hi", po::value<double>()->default_value(c.mag_hi, num(c.mag_hi)), "uniform magnitudes: upper bound")
    ("mag-mean", po::value<double>()->default_value(c.mag_mean, num(c.mag_mean)),
     "exponential magnitudes: the mean; constant magnitudes: the value")
    ("hierarchy", po::value<std::string>()->default_value(""),
     "P:C makes features 0..P-1 parents with C mutually exclusive children each (a parent "
     "always fires when one of its children does, and also on its own); empty = none")
    ("noise", po::value<double>()->default_value(c.noise, num(c.noise)),
     "standard deviation of the Gaussian noise added to every coordinate")
    ("rows", po::value<int64_t>()->default_value(c.rows), "number of rows to generate")
    ("seed", po::value<int64_t>()->default_value(c.seed), "random seed (features and rows)")
    ("context", po::value<int64_t>()->default_value(c.context),
     "if > 0, rows carry doc = row / context and pos = row % context columns, as if cut from "
     "documents of that length; 0 = no doc/pos columns")
    ("truth", po::value<std::string>()->default_value(""),
     "also write the ground-truth dictionary as an SAE directory (W_dec = the features)")
    ("latents-out", po::value<std::string>()->default_value(""),
     "also write the true sparse codes as a latents stream (f32) to this file");
  return g;
}

ToyConfig toy_config(const po::variables_map& vm) {
  ToyConfig c;
  c.d = vm["d"].as<int64_t>();
  c.features = vm["features"].as<int64_t>();
  c.active = vm["active"].as<double>();
  c.freq = parse_freq(vm["freq"].as<std::string>());
  c.freq_exponent = vm["freq-exponent"].as<double>();
  c.magnitude = parse_mag(vm["magnitude"].as<std::string>());
  c.mag_lo = vm["mag-lo"].as<double>();
  c.mag_hi = vm["mag-hi"].as<double>();
  c.mag_mean = vm["mag-mean"].as<double>();
  const std::string h = vm["hierarchy"].as<std::string>();
  if (!h.empty()) parse_hierarchy(h, c.parents, c.children);
  c.noise = vm["noise"].as<double>();
  c.rows = vm["rows"].as<int64_t>();
  c.seed = vm["seed"].as<int64_t>();
  c.context = vm["context"].as<int64_t>();
  validate(c);
  return c;
}

void toy_output_paths(const po::variables_map& vm, ToyOutput& out) {
  out.truth = vm["truth"].as<std::string>();
  out.latents_out = vm["latents-out"].as<std::string>();
}

// ---- writing ----

void write_toy(const ToyConfig& cfg, const ToyOutput& out) {
  const bool acts_stdout = out.path.empty() || out.path == "-";
  if (out.latents_out == "-" && acts_stdout)
    throw UsageError("--latents-out - needs -o FILE: the activations already go to stdout");
  if (!out.latents_out.empty() && out.latents_out != "-" && !acts_stdout &&
      std::filesystem::path(out.latents_out).lexically_normal() == std::filesystem::path(out.path).lexically_normal())
    throw UsageError("--latents-out and -o name the same file: " + out.path);
  if (out.batch_rows < 1) throw UsageError("--batch-rows must be at least 1, got " + std::to_string(out.batch_rows));
  if (!out.truth.empty()) cli::check_output_dir(out.truth, "truth");  // before any work

  const ToyModel model(cfg);
  // Outputs are opened (and their directories checked) before the work starts.
  cli::Output acts_out(out.path, true);
  std::unique_ptr<cli::Output> codes_out;
  if (!out.latents_out.empty()) codes_out = std::make_unique<cli::Output>(out.latents_out, true);

  json prov;
  prov["model"] = "toy";
  prov["hook"] = "toy";
  prov["seed"] = cfg.seed;
  prov["toy"] = to_json(cfg);
  StreamHeader ha = make_header("activations", cfg.d, out.dtype);
  ha.provenance.update(prov);
  const int threads = out.threads > 0 ? out.threads : omp_get_max_threads();
  WriterOptions wo = out.writer;
  wo.threads = threads;
  StreamWriter acts_w(acts_out.file(), acts_out.name(), ha, wo);
  std::unique_ptr<StreamWriter> codes_w;
  if (codes_out) {
    StreamHeader hl = make_header("latents", cfg.features, DType::f32);
    hl.provenance.update(prov);
    codes_w = std::make_unique<StreamWriter>(codes_out->file(), codes_out->name(), hl, wo);
  }

  cli::Progress progress;
  const auto start = std::chrono::steady_clock::now();
  for (int64_t first = 0; first < cfg.rows; first += out.batch_rows) {
    const int64_t n = std::min(out.batch_rows, cfg.rows - first);
    Batch acts, codes;
    model.generate(first, n, acts, codes_w ? &codes : nullptr, threads);
    acts_w.write(std::move(acts));
    if (codes_w) codes_w->write(std::move(codes));
    if (progress.enabled()) {
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const double done = double(first + n), rate = done / std::max(s, 1e-9);
      progress.update("toy: " + cli::human_count(done) + "/" + cli::human_count(double(cfg.rows)) + " rows, " +
                      cli::human_count(rate) + " rows/s, ETA " +
                      cli::human_duration((double(cfg.rows) - done) / rate));
    }
  }
  acts_w.finish();
  if (codes_w) codes_w->finish();
  progress.done();

  if (!out.truth.empty()) {
    // SAELens-style log10 feature density of the truth: the marginal firing probabilities.
    SaveOptions so;
    for (double p : model.firing_probability())
      so.log10_density.push_back(p > 0 ? float(rng_detail::portable_log(p) / 2.30258509299404568402) : -30.f);
    save_sae(model.truth(), out.truth, so);
  }
  acts_out.commit();
  if (codes_out) codes_out->commit();
}

}  // namespace sae::toy
