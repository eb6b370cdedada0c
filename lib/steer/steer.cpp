// Interventions, controls, measures and the experiment of lib/steer/steer.h.
#include "steer/steer.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

#include "base/errors.h"
#include "base/rng.h"
#include "base/strings.h"

namespace sae {

namespace {

const float* decoder_row(const Sae& s, int64_t latent) { return s.W_dec.data() + latent * s.d_in; }

double row_norm(const float* v, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; i++) s += double(v[i]) * v[i];
  return std::sqrt(s);
}

bool parse_index(const std::string& s, int64_t& out) {
  if (s.empty() || s.size() > 12 || s.find_first_not_of("0123456789") != std::string::npos) return false;
  out = std::stoll(s);
  return true;
}

const char* op_name(SteerOp op) {
  switch (op) {
    case SteerOp::add: return "add";
    case SteerOp::clamp: return "clamp";
    case SteerOp::ablate_zero: return "ablate";
    case SteerOp::ablate_mean: return "ablate";
  }
  return "";
}

// A value for the JSON-free text form: integers without decimals.
std::string number_text(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.6g", v);
  return b;
}

}  // namespace

std::string Intervention::text() const {
  std::string s = (sae ? std::to_string(sae) + "/" : "") + std::to_string(latent) + ":" + op_name(op);
  if (op == SteerOp::ablate_mean) return s + "=mean";
  if (has_value && op != SteerOp::ablate_zero) s += "=" + number_text(value);
  return s;
}

Intervention parse_intervention(const std::string& spec, int n_saes) {
  const std::string bad = "--steer '" + spec + "': ";
  const std::string form = " (expected [S/]LATENT:add[=ALPHA], LATENT:clamp=VALUE or LATENT:ablate[=zero|mean])";
  Intervention iv;
  std::string rest = spec;
  const size_t slash = rest.find('/');
  if (slash != std::string::npos) {
    int64_t s = 0;
    if (!parse_index(rest.substr(0, slash), s)) throw UsageError(bad + "'" + rest.substr(0, slash) + "' is not an SAE index" + form);
    if (s >= n_saes)
      throw UsageError(bad + "SAE " + std::to_string(s) + " is out of range (" + std::to_string(n_saes) +
                       " given with --sae, numbered from 0)");
    iv.sae = int(s);
    rest = rest.substr(slash + 1);
  }
  const size_t colon = rest.find(':');
  if (colon == std::string::npos) throw UsageError(bad + "no operation" + form);
  if (!parse_index(rest.substr(0, colon), iv.latent))
    throw UsageError(bad + "'" + rest.substr(0, colon) + "' is not a latent index" + form);
  std::string op = rest.substr(colon + 1), value;
  const size_t eq = op.find('=');
  if (eq != std::string::npos) {
    value = op.substr(eq + 1);
    op = op.substr(0, eq);
  }
  if (op == "add" || op == "clamp") {
    iv.op = op == "add" ? SteerOp::add : SteerOp::clamp;
    if (eq != std::string::npos) {
      if (!parse_finite(value, iv.value)) throw UsageError(bad + "'" + value + "' is not a number");
      iv.has_value = true;
    }
  } else if (op == "ablate") {
    if (eq == std::string::npos || value == "zero") iv.op = SteerOp::ablate_zero;
    else if (value == "mean") iv.op = SteerOp::ablate_mean;
    else throw UsageError(bad + "ablate takes zero or mean, not '" + value + "'");
    iv.has_value = true;
  } else {
    throw UsageError(bad + "unknown operation '" + op + "'" + form);
  }
  return iv;
}

void check_interventions(const std::vector<SteerSae>& saes, const std::vector<Intervention>& ivs, AlphaUnit unit) {
  for (const Intervention& iv : ivs) {
    const std::string bad = "--steer '" + iv.text() + "': ";
    const SteerSae& s = saes.at(size_t(iv.sae));
    if (iv.latent >= s.sae.d_sae)
      throw UsageError(bad + "latent " + std::to_string(iv.latent) + " is out of range (" + s.dir + " has " +
                       std::to_string(s.sae.d_sae) + " latents, 0-" + std::to_string(s.sae.d_sae - 1) + ")");
    if (iv.op == SteerOp::add && unit == AlphaUnit::max_activation && s.max_act.empty())
      throw UsageError(bad + "--unit max needs each latent's largest activation: give --stats-text");
    if (iv.op == SteerOp::ablate_mean && s.mean_act.empty())
      throw UsageError(bad + "ablating to the mean needs each latent's mean activation: give --stats-text");
    if (iv.op != SteerOp::add && s.sae.normalize_activations != "none" &&
        s.sae.normalize_activations != "expected_average_only_in")
      throw UsageError(bad + s.dir + " normalises its input at run time (" + s.sae.normalize_activations +
                       "), so a clamp in its space is not a fixed direction in the model's; only add is supported");
  }
}

bool SteerScope::selects(int64_t position, bool in_prompt) const {
  switch (positions) {
    case SteerPositions::all: return true;
    case SteerPositions::prompt: return in_prompt;
    case SteerPositions::generated: return !in_prompt;
    case SteerPositions::from: return position >= from;
  }
  return true;
}

SteerScope parse_scope(const std::string& s) {
  SteerScope sc;
  if (s == "all") sc.positions = SteerPositions::all;
  else if (s == "prompt") sc.positions = SteerPositions::prompt;
  else if (s == "generated") sc.positions = SteerPositions::generated;
  else if (s.rfind("from:", 0) == 0 && parse_index(s.substr(5), sc.from)) sc.positions = SteerPositions::from;
  else throw UsageError("--positions: '" + s + "' is not all, prompt, generated or from:P");
  return sc;
}

std::vector<HookEdit> steering_edits(const std::vector<SteerSae>& saes, const std::vector<Intervention>& ivs,
                                     AlphaUnit unit, std::function<bool(int64_t row)> selected) {
  // One edit per hook, holding the interventions there.
  std::vector<std::pair<HookPoint, std::vector<Intervention>>> by_hook;
  for (const Intervention& iv : ivs) {
    const HookPoint& h = saes.at(size_t(iv.sae)).hook;
    auto it = std::find_if(by_hook.begin(), by_hook.end(), [&](const auto& p) { return p.first == h; });
    if (it == by_hook.end()) by_hook.push_back({h, {iv}});
    else it->second.push_back(iv);
  }
  std::vector<HookEdit> edits;
  for (auto& [hook, here] : by_hook) {
    edits.push_back({hook, [&saes, ivs = here, unit, selected](float* acts, int64_t rows, int64_t d, Backend& be) {
                       std::vector<int64_t> chosen;
                       for (int64_t r = 0; r < rows; r++)
                         if (selected(r)) chosen.push_back(r);
                       if (chosen.empty()) return;
                       std::vector<float> h(size_t(rows * d));
                       be.to_host(h.data(), acts, h.size() * sizeof(float));
                       // The latents of the chosen rows, before any change, for each SAE a clamp needs.
                       std::map<int, std::vector<float>> latents;
                       std::vector<float> x(chosen.size() * size_t(d));
                       for (size_t i = 0; i < chosen.size(); i++)
                         std::copy_n(h.data() + chosen[i] * d, d, x.data() + i * size_t(d));
                       for (const Intervention& iv : ivs) {
                         if (iv.op == SteerOp::add || latents.count(iv.sae)) continue;
                         const Sae& s = saes[size_t(iv.sae)].sae;
                         auto& f = latents[iv.sae];
                         f.resize(chosen.size() * size_t(s.d_sae));
                         s.encode(x.data(), int64_t(chosen.size()), f.data());
                       }
                       for (size_t i = 0; i < chosen.size(); i++) {
                         float* row = h.data() + chosen[i] * d;
                         for (const Intervention& iv : ivs) {
                           const SteerSae& s = saes[size_t(iv.sae)];
                           const float* dec = decoder_row(s.sae, iv.latent);
                           const float* dir = iv.direction.empty() ? dec : iv.direction.data();
                           double coef = 0;
                           if (iv.op == SteerOp::add) {
                             coef = iv.value;
                             if (unit == AlphaUnit::unit) coef /= row_norm(dec, d);
                             if (unit == AlphaUnit::max_activation) coef *= s.max_act[size_t(iv.latent)];
                           } else {
                             const double f = latents[iv.sae][i * size_t(s.sae.d_sae) + size_t(iv.latent)];
                             const double target = iv.op == SteerOp::clamp        ? iv.value
                                                    : iv.op == SteerOp::ablate_mean ? double(s.mean_act[size_t(iv.latent)])
                                                                                    : 0.0;
                             coef = target - f;
                           }
                           const float c = float(coef);
                           if (c == 0.0f) continue;  // leaves the row's bits as they were
                           for (int64_t j = 0; j < d; j++) row[j] += c * dir[j];
                         }
                       }
                       be.to_device(acts, h.data(), h.size() * sizeof(float));
                     }});
  }
  return edits;
}

void latent_stats(Model& model, SteerSae& s, const std::vector<std::vector<int32_t>>& windows) {
  const int64_t n = s.sae.d_sae, d = s.sae.d_in;
  std::vector<double> sum(size_t(n), 0.0);
  std::vector<int64_t> fired(size_t(n), 0);
  s.max_act.assign(size_t(n), 0.0f);
  int64_t tokens = 0;
  ForwardOptions o;
  o.capture = {s.hook};
  const size_t batch = 8;
  for (size_t w0 = 0; w0 < windows.size(); w0 += batch) {
    const size_t nb = std::min(batch, windows.size() - w0);
    size_t T = 0;
    for (size_t i = 0; i < nb; i++) T = std::max(T, windows[w0 + i].size());
    // Right-padded with each window's last token: causal attention keeps padding out of the rows before it.
    std::vector<int32_t> ids(nb * T);
    for (size_t i = 0; i < nb; i++) {
      const auto& w = windows[w0 + i];
      std::copy(w.begin(), w.end(), ids.begin() + i * T);
      std::fill(ids.begin() + i * T + w.size(), ids.begin() + (i + 1) * T, w.back());
    }
    const ForwardResult r = model.forward(ids.data(), int64_t(nb), int64_t(T), o);
    std::vector<float> x;
    for (size_t i = 0; i < nb; i++)
      for (size_t t = 1; t < windows[w0 + i].size(); t++)  // BOS rows left out
        x.insert(x.end(), r.captured[0].begin() + (i * T + t) * size_t(d), r.captured[0].begin() + (i * T + t + 1) * size_t(d));
    const int64_t rows = int64_t(x.size()) / d;
    std::vector<float> f(size_t(rows * n));
    s.sae.encode(x.data(), rows, f.data());
    for (int64_t r0 = 0; r0 < rows; r0++)
      for (int64_t j = 0; j < n; j++) {
        const float v = f[size_t(r0 * n + j)];
        sum[size_t(j)] += v;
        if (v != 0.0f) fired[size_t(j)]++;
        s.max_act[size_t(j)] = std::max(s.max_act[size_t(j)], v);
      }
    tokens += rows;
  }
  if (tokens == 0) throw InputError("--stats-text: no tokens besides BOS");
  s.mean_act.resize(size_t(n));
  s.density.resize(size_t(n));
  for (int64_t j = 0; j < n; j++) {
    s.mean_act[size_t(j)] = float(sum[size_t(j)] / double(tokens));
    s.density[size_t(j)] = float(double(fired[size_t(j)]) / double(tokens));
  }
}

std::vector<Intervention> random_direction_control(const std::vector<SteerSae>& saes, std::vector<Intervention> ivs,
                                                   uint64_t seed, int draw) {
  for (size_t i = 0; i < ivs.size(); i++) {
    Intervention& iv = ivs[i];
    const Sae& s = saes.at(size_t(iv.sae)).sae;
    const double norm = row_norm(decoder_row(s, iv.latent), s.d_in);
    Rng rng = Rng(seed).substream(uint64_t(draw)).substream(i);
    std::vector<double> g(size_t(s.d_in));
    for (auto& v : g) v = rng.normal();
    const double gn = row_norm(std::vector<float>(g.begin(), g.end()).data(), s.d_in);
    iv.direction.resize(size_t(s.d_in));
    for (int64_t j = 0; j < s.d_in; j++) iv.direction[size_t(j)] = float(g[size_t(j)] / gn * norm);
  }
  return ivs;
}

std::vector<Intervention> density_matched_control(const std::vector<SteerSae>& saes, std::vector<Intervention> ivs,
                                                  int draw) {
  for (Intervention& iv : ivs) {
    const SteerSae& s = saes.at(size_t(iv.sae));
    if (s.density.empty())
      throw UsageError("density-matched controls need the latents' firing densities: give --stats-text (or an SAE "
                       "directory with SAELens's sparsity.safetensors), or --density-controls 0");
    auto log_density = [&](int64_t j) { return std::log10(std::max(double(s.density[size_t(j)]), 1e-12)); };
    const double own = log_density(iv.latent);
    std::vector<int64_t> candidates;
    for (int64_t j = 0; j < s.sae.d_sae; j++)
      if (j != iv.latent && s.density[size_t(j)] > 0) candidates.push_back(j);
    if (int64_t(candidates.size()) <= draw)
      throw UsageError("density-matched controls: " + s.dir + " has only " + std::to_string(candidates.size()) +
                       " other latents that fire on the --stats-text");
    std::stable_sort(candidates.begin(), candidates.end(), [&](int64_t a, int64_t b) {
      return std::fabs(log_density(a) - own) < std::fabs(log_density(b) - own);
    });
    iv.latent = candidates[size_t(draw)];
    iv.direction.clear();
  }
  return ivs;
}

namespace {

// Selects teacher-forced rows (one sequence, row = position) by the scope.
std::function<bool(int64_t)> scope_rows(const SteerScope& scope, int64_t prompt_len) {
  return [scope, prompt_len](int64_t row) { return scope.selects(row, row < prompt_len); };
}

}  // namespace

SteerMeasures measure_steering(Model& model, const std::vector<SteerSae>& saes, const std::vector<Intervention>& ivs,
                               AlphaUnit unit, const SteerScope& scope, const std::vector<int32_t>& prompt,
                               const std::vector<int32_t>& generated, const std::vector<int32_t>& targets,
                               const Intervention& report) {
  SteerMeasures m;
  std::vector<int32_t> seq = prompt;
  seq.insert(seq.end(), generated.begin(), generated.end());
  const int64_t T = int64_t(seq.size()), P = int64_t(prompt.size()), G = int64_t(generated.size());
  const int64_t V = model.config().vocab;
  const SteerSae& rs = saes.at(size_t(report.sae));
  ForwardOptions clean;
  clean.want_log_probs = true;
  clean.capture = {rs.hook};
  const ForwardResult q = model.forward(seq.data(), 1, T, clean);
  ForwardResult p;
  if (ivs.empty()) {
    p = q;
  } else {
    ForwardOptions steered;
    steered.want_log_probs = true;
    steered.edits = steering_edits(saes, ivs, unit, scope_rows(scope, P));
    p = model.forward(seq.data(), 1, T, steered);
  }
  // Row P - 1 + s gives the distribution of generated token s.
  const float* lp = p.logits.data() + (P - 1) * V;
  const float* lq = q.logits.data() + (P - 1) * V;
  m.kl = kl_divergence_rows(lp, lq, G, V);
  double nll = 0;
  std::vector<double> shift(size_t(V), 0.0);
  for (int64_t s = 0; s < G; s++) {
    m.mean_kl += m.kl[size_t(s)] / double(G);
    nll -= lq[s * V + generated[size_t(s)]];
    for (int32_t t : targets) {
      m.target_prob += std::exp(double(lp[s * V + t])) / double(G);
      m.target_prob_unsteered += std::exp(double(lq[s * V + t])) / double(G);
    }
    for (int64_t v = 0; v < V; v++) shift[size_t(v)] += (double(lp[s * V + v]) - lq[s * V + v]) / double(G);
  }
  m.perplexity = std::exp(nll / double(G));
  // The unsteered run has no change to rank.
  std::vector<int32_t> order(ivs.empty() ? 0 : static_cast<size_t>(V));
  for (size_t v = 0; v < order.size(); v++) order[v] = int32_t(v);
  const size_t top = std::min<size_t>(10, order.size());
  std::partial_sort(order.begin(), order.begin() + top, order.end(),
                    [&](int32_t a, int32_t b) { return shift[size_t(a)] > shift[size_t(b)] || (shift[size_t(a)] == shift[size_t(b)] && a < b); });
  for (size_t i = 0; i < top; i++) m.promoted.push_back({order[i], shift[size_t(order[i])]});
  std::partial_sort(order.begin(), order.begin() + top, order.end(),
                    [&](int32_t a, int32_t b) { return shift[size_t(a)] < shift[size_t(b)] || (shift[size_t(a)] == shift[size_t(b)] && a < b); });
  for (size_t i = 0; i < top; i++) m.suppressed.push_back({order[i], shift[size_t(order[i])]});
  // The reported latent on the generated tokens, unsteered model (does the text itself evoke it?).
  const int64_t d = rs.sae.d_in, n = rs.sae.d_sae;
  std::vector<float> f(size_t(G * n));
  rs.sae.encode(q.captured[0].data() + P * d, G, f.data());
  for (int64_t s = 0; s < G; s++) m.latent_act += f[size_t(s * n + report.latent)] / double(G);
  return m;
}

std::vector<SteerRecord> run_steering(Model& model, const std::vector<SteerSae>& saes,
                                      const std::vector<std::vector<int32_t>>& prompts, const SteerOptions& opt) {
  if (opt.interventions.empty()) throw UsageError("no interventions (--steer)");
  std::vector<SteerRecord> out;
  const SteerScope scope = opt.scope;
  auto run = [&](const std::string& setting, int control, double alpha, const std::vector<Intervention>& ivs) {
    GenerateOptions g = opt.generation;
    if (!ivs.empty())
      g.edits = [&saes, ivs, unit = opt.unit, scope](const StepRows& rows) {
        return steering_edits(saes, ivs, unit, [rows, scope](int64_t r) {
          return !rows.is_pad(r) && scope.selects(rows.position(r), rows.is_prompt(r));
        });
      };
    const Generation gen = generate(model, prompts, g);
    for (size_t i = 0; i < prompts.size(); i++) {
      SteerRecord rec;
      rec.prompt = int(i);
      rec.setting = setting;
      rec.control = control;
      rec.alpha = alpha;
      rec.interventions = ivs;
      rec.tokens = gen.tokens[i];
      rec.ended_at_eos = gen.ended_at_eos[i];
      const Intervention& report = ivs.empty() ? opt.interventions[0] : ivs[0];
      rec.measures = measure_steering(model, saes, ivs, opt.unit, scope, prompts[i], rec.tokens, opt.targets, report);
      out.push_back(std::move(rec));
    }
  };
  const double none = std::numeric_limits<double>::quiet_NaN();
  run("unsteered", -1, none, {});
  std::vector<double> alphas = opt.alphas;
  if (alphas.empty()) alphas = {none};
  for (double a : alphas) {
    std::vector<Intervention> ivs = opt.interventions;
    for (Intervention& iv : ivs) {
      if (iv.has_value) continue;
      if (std::isnan(a)) throw UsageError("--steer '" + iv.text() + "' has no value: give it one, or --alpha");
      iv.value = a;
    }
    run("steered", -1, a, ivs);
    for (int k = 0; k < opt.random_controls; k++)
      run("random-direction", k, a, random_direction_control(saes, ivs, opt.control_seed, k));
    for (int k = 0; k < opt.density_controls; k++) run("density-matched", k, a, density_matched_control(saes, ivs, k));
  }
  return out;
}

}  // namespace sae
