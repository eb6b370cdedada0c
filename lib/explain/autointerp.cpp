// Automated interpretability: explanations, scores and their aggregates (explain/autointerp.h).
#include "explain/autointerp.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <set>

#include "base/cli.h"
#include "base/errors.h"
#include "base/files.h"
#include "base/rng.h"
#include "base/strings.h"
#include "base/utf8.h"

namespace sae {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

const double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  size_t pos = 0;
  while ((pos = s.find(from, pos)) != std::string::npos) {
    s.replace(pos, from.size(), to);
    pos += to.size();
  }
}

std::string display(int32_t id, const std::vector<std::string>& table) {
  std::string s = id < 0 || size_t(id) >= table.size() ? "[" + std::to_string(id) + "]" : table[size_t(id)];
  replace_all(s, "\r", "\\r");
  replace_all(s, "\n", "\\n");
  return s;
}

float window_peak(const ContextExample& e) {
  float m = 0;
  for (float a : e.acts) m = std::max(m, a);
  return m;
}

int quantise(double v, double max) {
  if (!(max > 0) || !(v > 0)) return 0;
  return std::clamp(int(std::lround(10.0 * v / max)), 0, 10);
}

enum Stream : uint64_t { kSplit = 1, kDetection = 2, kFuzzing = 3, kSimulation = 4 };

const std::vector<std::string>& all_methods() {
  static const std::vector<std::string> m = {"detection", "fuzzing", "simulation"};
  return m;
}

std::string fill(const std::string& text, const std::string& examples, size_t count, const std::string& explanation,
                 const std::string& activation_note) {
  std::string s = text;
  replace_all(s, "{{activation_note}}", activation_note);
  replace_all(s, "{{explanation}}", explanation);
  replace_all(s, "{{count}}", std::to_string(count));
  replace_all(s, "{{examples}}", examples);  // last: the examples may hold anything
  return s;
}

llm::Request make_request(const PromptTemplate& t, const std::string& user, const AutointerpOptions& o) {
  llm::Request r;
  if (!t.system.empty()) r.messages.push_back({"system", t.system});
  r.messages.push_back({"user", user});
  r.temperature = 0;
  r.max_tokens = o.max_answer_tokens;
  return r;
}

// Average ranks (1-based), ties sharing the mean of their positions.
std::vector<double> ranks(const std::vector<double>& v) {
  std::vector<size_t> idx(v.size());
  for (size_t i = 0; i < idx.size(); i++) idx[i] = i;
  std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return v[a] < v[b]; });
  std::vector<double> r(v.size());
  for (size_t i = 0; i < idx.size();) {
    size_t j = i;
    while (j + 1 < idx.size() && v[idx[j + 1]] == v[idx[i]]) j++;
    const double rank = (double(i) + double(j)) / 2 + 1;
    for (size_t k = i; k <= j; k++) r[idx[k]] = rank;
    i = j + 1;
  }
  return r;
}

std::string fmt(double v, int digits = 3) {
  if (!std::isfinite(v)) return "-";
  char b[32];
  std::snprintf(b, sizeof b, "%.*f", digits, v);
  return b;
}

json real(double v) {
  if (!std::isfinite(v)) return nullptr;
  char b[32];
  std::snprintf(b, sizeof b, "%.6g", v);
  return std::stod(b);
}

}  // namespace

std::vector<std::string> parse_score_methods(const std::string& spec) {
  std::vector<std::string> out;
  for (const std::string& part : split(spec, ",")) {
    const std::string m = trim(part);
    if (m.empty()) continue;
    if (m == "all") {
      for (const auto& a : all_methods())
        if (std::find(out.begin(), out.end(), a) == out.end()) out.push_back(a);
      continue;
    }
    if (std::find(all_methods().begin(), all_methods().end(), m) == all_methods().end())
      throw UsageError("--score: unknown method '" + m + "' (detection, fuzzing, simulation, all)");
    if (std::find(out.begin(), out.end(), m) == out.end()) out.push_back(m);
  }
  if (out.empty()) throw UsageError("--score: name at least one method (detection, fuzzing, simulation, all)");
  return out;
}

const char* main_metric(const std::string& method) { return method == "simulation" ? "spearman" : "balanced_accuracy"; }

// ---- prompts

PromptTemplate parse_prompt(const std::string& text) {
  PromptTemplate t;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t e = text.find('\n', pos);
    if (e == std::string::npos) e = text.size();
    std::string line = text.substr(pos, e - pos);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line == "----") {
      t.system = trim(text.substr(0, pos));
      t.user = trim(e < text.size() ? text.substr(e + 1) : "");
      return t;
    }
    pos = e + 1;
  }
  t.user = trim(text);
  return t;
}

PromptTemplates load_prompts(const std::string& dir) {
  auto load = [&](const std::string& name, PromptTemplate& t, int& found) {
    std::string text = default_prompt_text(name);
    if (!dir.empty() && fs::is_regular_file(dir + "/" + name + ".txt")) {
      text = read_file(dir + "/" + name + ".txt");
      found++;
    }
    t = parse_prompt(text);
    if (t.user.empty()) throw InputError(dir + "/" + name + ".txt: the template has no user message");
  };
  if (!dir.empty() && !fs::is_directory(dir)) throw InputError(dir + ": not a directory (--prompt-dir)");
  PromptTemplates p;
  int found = 0;
  load("explain", p.explain, found);
  load("detection", p.detection, found);
  load("fuzzing", p.fuzzing, found);
  load("simulation", p.simulation, found);
  if (!dir.empty() && found == 0)
    throw InputError(dir + ": holds none of explain.txt, detection.txt, fuzzing.txt, simulation.txt (--prompt-dir)");
  return p;
}

std::vector<char> activation_marks(const ContextExample& e, double fraction, double max_activation) {
  std::vector<char> m(e.tokens.size(), 0);
  const double th = std::max(0.0, fraction * max_activation);
  for (size_t i = 0; i < m.size() && i < e.acts.size(); i++) m[i] = e.acts[i] > th;
  if (e.peak >= 0 && size_t(e.peak) < m.size() && e.activation > 0) m[size_t(e.peak)] = 1;
  return m;
}

std::string render_context(const ContextExample& e, const std::vector<std::string>& token_text, const std::vector<char>& mark) {
  std::string s;
  for (size_t i = 0; i < e.tokens.size(); i++) {
    const bool m = i < mark.size() && mark[i];
    const bool prev = i > 0 && i - 1 < mark.size() && mark[i - 1];
    const bool next = i + 1 < mark.size() && mark[i + 1];
    if (m && !prev) s += "<<";
    s += display(e.tokens[i], token_text);
    if (m && !next) s += ">>";
  }
  return s;
}

// ---- the split

ExampleSplit split_examples(const LatentReport& r, uint64_t seed) {
  ExampleSplit s;
  std::set<int64_t> explain_rows, held_rows;
  Rng rng = Rng(seed).substream(uint64_t(r.latent)).substream(kSplit);
  for (const ContextExample& e : r.top)
    if (explain_rows.insert(e.row).second) s.explain.push_back(e);
  // Each group shuffled: its first half explains, the rest is held out. Groups highest first in the
  // prompt, after the top contexts.
  std::vector<std::vector<const ContextExample*>> held(r.quantiles.size());
  std::vector<ContextExample> quantile_explain;
  for (size_t g = r.quantiles.size(); g-- > 0;) {
    std::vector<const ContextExample*> ex;
    for (const ContextExample& e : r.quantiles[g]) ex.push_back(&e);
    Rng gr = rng.substream(g);
    gr.shuffle(ex.begin(), ex.size());
    const size_t half = ex.size() / 2;
    for (size_t i = 0; i < ex.size(); i++) {
      if (i < half) {
        if (explain_rows.insert(ex[i]->row).second) s.explain.push_back(*ex[i]);
      } else {
        held[g].push_back(ex[i]);
      }
    }
  }
  for (size_t g = 0; g < held.size(); g++)
    for (const ContextExample* e : held[g])
      if (!explain_rows.count(e->row) && held_rows.insert(e->row).second) s.activating.push_back(*e);
  for (const ContextExample& e : r.contrast)
    if (!explain_rows.count(e.row) && held_rows.insert(e.row).second) s.non_activating.push_back(e);
  return s;
}

// ---- explanations

llm::Request explanation_request(const PromptTemplate& t, const ExampleSplit& s, const LatentReport& r,
                                 const AutointerpOptions& o, const std::vector<std::string>& token_text) {
  std::string examples;
  for (size_t i = 0; i < s.explain.size(); i++) {
    const ContextExample& e = s.explain[i];
    const std::vector<char> m = activation_marks(e, o.mark_fraction, r.max_activation);
    examples += "Example " + std::to_string(i + 1) + ": " + render_context(e, token_text, m);
    if (o.show_activations) {
      std::string vals;
      for (size_t j = 0; j < m.size(); j++)
        if (m[j] && j < e.acts.size())
          vals += (vals.empty() ? "" : ", ") + display(e.tokens[j], token_text) + " " +
                  std::to_string(quantise(e.acts[j], r.max_activation));
      examples += "  (activations: " + vals + ")";
    }
    examples += "\n";
  }
  if (!examples.empty()) examples.pop_back();
  const std::string note = o.show_activations
                               ? " After each context, the marked tokens are listed with the latent's activation on them, "
                                 "from 0 to 10 (10: as strongly as it ever fires)."
                               : "";
  return make_request(t, fill(t.user, examples, s.explain.size(), "", note), o);
}

ParsedExplanation parse_explanation(const std::string& answer) {
  ParsedExplanation p;
  std::vector<std::string> lines;
  {
    size_t pos = 0;
    while (pos <= answer.size()) {
      size_t e = answer.find('\n', pos);
      if (e == std::string::npos) e = answer.size();
      lines.push_back(trim(answer.substr(pos, e - pos)));
      pos = e + 1;
    }
  }
  std::string text;
  bool found = false;
  for (size_t i = lines.size(); i-- > 0 && !found;) {
    std::string l = lines[i];
    // "**Explanation:**", "Explanation -", "explanation:" are all taken.
    std::string stripped;
    for (char c : l)
      if (c != '*' && c != '#') stripped += c;
    stripped = trim(stripped);
    const std::string low = lower(stripped);
    if (low.rfind("explanation", 0) != 0) continue;
    std::string rest = trim(stripped.substr(11));
    if (rest.empty() || (rest[0] != ':' && rest[0] != '-')) continue;
    rest = trim(rest.substr(1));
    if (rest.empty()) {  // the explanation on the next non-empty line
      for (size_t j = i + 1; j < lines.size(); j++)
        if (!lines[j].empty()) {
          rest = lines[j];
          break;
        }
    }
    text = rest;
    found = true;
  }
  if (!found) {
    std::vector<std::string> nonempty;
    for (const auto& l : lines)
      if (!l.empty()) nonempty.push_back(l);
    if (nonempty.empty()) {
      p.failure = "empty answer";
      return p;
    }
    if (nonempty.size() == 1 && nonempty[0].size() <= 200) text = nonempty[0];
  }
  // Trim quotes and trailing full stops.
  text = trim(text);
  while (text.size() >= 2 && ((text.front() == '"' && text.back() == '"') || (text.front() == '\'' && text.back() == '\'') ||
                              (text.front() == '`' && text.back() == '`')))
    text = trim(text.substr(1, text.size() - 2));
  while (!text.empty() && text.back() == '.') text.pop_back();
  text = trim(text);
  const std::string low = lower(answer);
  const bool refusal = low.find("i'm sorry") != std::string::npos || low.find("i am sorry") != std::string::npos ||
                       low.find("i cannot") != std::string::npos || low.find("i can't") != std::string::npos ||
                       low.find("as an ai") != std::string::npos || low.find("unable to") != std::string::npos;
  if (!found && trim(answer).empty()) p.failure = "empty answer";
  else if (refusal && (!found || text.empty() || lower(text).find("sorry") != std::string::npos ||
                       lower(text).find("cannot") != std::string::npos))
    p.failure = "refused";
  else if (!found && text.empty()) p.failure = "no \"Explanation:\" line";
  else if (text.empty()) p.failure = "empty explanation";
  else if (text.find("<<") != std::string::npos || text.find(">>") != std::string::npos)
    p.failure = "echoed the prompt's <<markers>>";
  else if (text == "<a short explanation>" || lower(text) == "a short explanation")
    p.failure = "echoed the prompt's placeholder";
  if (!p.failure.empty()) return p;
  if (text.size() > 500) text = text.substr(0, 500);
  text = utf8_replace_invalid(text);  // an answer cut mid-character, or not UTF-8 at all
  p.ok = true;
  p.text = text;
  return p;
}

// ---- scoring

std::vector<int> parse_answer_list(const std::string& answer, size_t n, int lo, int hi) {
  const size_t close = answer.rfind(']');
  if (close == std::string::npos) return {};
  const size_t open = answer.rfind('[', close);
  if (open == std::string::npos) return {};
  std::vector<int> out;
  for (std::string t : split(answer.substr(open + 1, close - open - 1), ",")) {
    t = trim(t);
    if (t.size() >= 2 && (t.front() == '"' || t.front() == '\'') && t.back() == t.front()) t = t.substr(1, t.size() - 2);
    if (t.empty() || t.size() > 3 || t.find_first_not_of("0123456789") != std::string::npos) return {};
    const int v = std::stoi(t);
    if (v < lo || v > hi) return {};
    out.push_back(v);
  }
  if (out.size() != n) return {};
  return out;
}

std::vector<double> label_probabilities(const std::vector<llm::TokenLogprob>& lp, size_t n) {
  auto label = [](const std::string& tok) {
    std::string s;
    for (char c : tok)
      if (!std::isspace(static_cast<unsigned char>(c)) && c != '[' && c != ']' && c != ',' && c != '.' && c != '"') s += c;
    return s == "0" ? 0 : s == "1" ? 1 : -1;
  };
  std::vector<double> p;
  for (const llm::TokenLogprob& t : lp) {
    const int l = label(t.token);
    if (l < 0) continue;
    double p1 = 0, p0 = 0;
    std::set<std::string> seen;
    auto add = [&](const std::string& tok, double logprob) {
      if (!seen.insert(tok).second) return;
      const int k = label(tok);
      if (k == 1) p1 += std::exp(logprob);
      if (k == 0) p0 += std::exp(logprob);
    };
    add(t.token, t.logprob);
    for (const auto& [tok, alt] : t.top) add(tok, alt);
    p.push_back(p0 + p1 > 0 ? p1 / (p0 + p1) : double(l));
  }
  if (p.size() < n) return {};
  return std::vector<double>(p.end() - std::ptrdiff_t(n), p.end());
}

std::vector<ScoringBatch> scoring_batches(const std::string& method, const PromptTemplates& t, const std::string& explanation,
                                          const ExampleSplit& s, const LatentReport& r, const AutointerpOptions& o,
                                          const std::vector<std::string>& token_text) {
  std::vector<ScoringItem> items;
  const std::vector<char> none;
  Rng rng = Rng(o.seed).substream(uint64_t(r.latent));
  const PromptTemplate* tpl = nullptr;
  if (method == "detection") {
    tpl = &t.detection;
    rng = rng.substream(kDetection);
    for (const auto& e : s.activating) items.push_back({render_context(e, token_text, none), 1});
    for (const auto& e : s.non_activating) items.push_back({render_context(e, token_text, none), 0});
  } else if (method == "simulation") {
    tpl = &t.simulation;
    rng = rng.substream(kSimulation);
    for (const auto& e : s.activating)
      items.push_back({render_context(e, token_text, none), quantise(window_peak(e), r.max_activation)});
    for (const auto& e : s.non_activating) items.push_back({render_context(e, token_text, none), 0});
  } else if (method == "fuzzing") {
    tpl = &t.fuzzing;
    rng = rng.substream(kFuzzing);
    std::vector<size_t> order(s.activating.size());
    for (size_t i = 0; i < order.size(); i++) order[i] = i;
    rng.shuffle(order.begin(), order.size());
    for (size_t j = 0; j < order.size(); j++) {
      const ContextExample& e = s.activating[order[j]];
      std::vector<char> m = activation_marks(e, o.mark_fraction, r.max_activation);
      int truth = 1;
      if (j % 2 == 1) {  // every other one: as many marks, on tokens where the latent does not fire above the mark
        std::vector<size_t> free;
        size_t marked = 0;
        for (size_t i = 0; i < m.size(); i++) {
          if (m[i]) marked++;
          else if (i >= e.acts.size() || e.acts[i] <= 0) free.push_back(i);
        }
        if (marked > 0 && !free.empty()) {
          rng.shuffle(free.begin(), free.size());
          std::fill(m.begin(), m.end(), 0);
          for (size_t i = 0; i < std::min(marked, free.size()); i++) m[free[i]] = 1;
          truth = 0;
        }
      }
      items.push_back({render_context(e, token_text, m), truth});
    }
  } else {
    throw std::logic_error("unknown scoring method " + method);
  }
  rng.shuffle(items.begin(), items.size());
  std::vector<ScoringBatch> out;
  const size_t b = size_t(std::max(1, o.batch));
  for (size_t start = 0; start < items.size(); start += b) {
    ScoringBatch sb;
    sb.method = method;
    sb.items.assign(items.begin() + std::ptrdiff_t(start), items.begin() + std::ptrdiff_t(std::min(items.size(), start + b)));
    std::string examples;
    for (size_t i = 0; i < sb.items.size(); i++)
      examples += "Example " + std::to_string(i + 1) + ": " + sb.items[i].line + (i + 1 < sb.items.size() ? "\n" : "");
    sb.request = make_request(*tpl, fill(tpl->user, examples, sb.items.size(), explanation, ""), o);
    if (method == "detection" && o.logprobs) {
      sb.request.logprobs = true;
      sb.request.top_logprobs = 5;
    }
    out.push_back(std::move(sb));
  }
  return out;
}

double roc_auc(const std::vector<int>& truth, const std::vector<double>& score) {
  std::vector<double> r = ranks(score);
  double pos = 0, neg = 0, sum = 0;
  for (size_t i = 0; i < truth.size(); i++) {
    if (truth[i]) {
      pos++;
      sum += r[i];
    } else {
      neg++;
    }
  }
  if (pos == 0 || neg == 0) return kNaN;
  return (sum - pos * (pos + 1) / 2) / (pos * neg);
}

double spearman(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size() || a.size() < 2) return kNaN;
  const std::vector<double> ra = ranks(a), rb = ranks(b);
  double ma = 0, mb = 0;
  for (size_t i = 0; i < ra.size(); i++) {
    ma += ra[i];
    mb += rb[i];
  }
  ma /= double(ra.size());
  mb /= double(rb.size());
  double sab = 0, saa = 0, sbb = 0;
  for (size_t i = 0; i < ra.size(); i++) {
    sab += (ra[i] - ma) * (rb[i] - mb);
    saa += (ra[i] - ma) * (ra[i] - ma);
    sbb += (rb[i] - mb) * (rb[i] - mb);
  }
  if (saa == 0 || sbb == 0) return kNaN;
  return sab / std::sqrt(saa * sbb);
}

BinaryMetrics binary_metrics(const std::vector<int>& truth, const std::vector<int>& predicted,
                             const std::vector<double>& probability) {
  BinaryMetrics m;
  double tp = 0, fp = 0, tn = 0, fn = 0;
  for (size_t i = 0; i < truth.size(); i++) {
    if (truth[i] && predicted[i]) tp++;
    else if (truth[i]) fn++;
    else if (predicted[i]) fp++;
    else tn++;
  }
  m.n = int64_t(truth.size());
  m.positives = int64_t(tp + fn);
  if (m.n == 0) {
    m.accuracy = m.balanced_accuracy = m.f1 = m.precision = m.recall = kNaN;
    return m;
  }
  m.accuracy = (tp + tn) / double(m.n);
  m.recall = tp + fn > 0 ? tp / (tp + fn) : kNaN;
  const double specificity = tn + fp > 0 ? tn / (tn + fp) : kNaN;
  if (std::isfinite(m.recall) && std::isfinite(specificity)) m.balanced_accuracy = (m.recall + specificity) / 2;
  else m.balanced_accuracy = std::isfinite(m.recall) ? m.recall : specificity;
  m.precision = tp + fp > 0 ? tp / (tp + fp) : kNaN;
  m.f1 = 2 * tp + fp + fn > 0 ? 2 * tp / (2 * tp + fp + fn) : kNaN;
  if (!probability.empty() && probability.size() == truth.size()) {
    const double a = roc_auc(truth, probability);
    if (std::isfinite(a)) m.auc = a;
  }
  return m;
}

// ---- aggregates

Aggregate aggregate_scores(const std::string& method, const std::string& metric, const std::vector<double>& score,
                           const std::vector<int64_t>& fires, uint64_t seed, int bootstrap) {
  Aggregate a;
  a.method = method;
  a.metric = metric;
  std::vector<double> s;
  std::vector<double> w;
  std::vector<int64_t> f;
  for (size_t i = 0; i < score.size(); i++)
    if (std::isfinite(score[i])) {
      s.push_back(score[i]);
      w.push_back(double(fires[i]));
      f.push_back(fires[i]);
    }
  a.latents = int64_t(s.size());
  auto means = [&](const std::vector<size_t>& idx, double& u, double& wm) {
    double su = 0, sw = 0, sws = 0;
    for (size_t i : idx) {
      su += s[i];
      sw += w[i];
      sws += w[i] * s[i];
    }
    u = idx.empty() ? kNaN : su / double(idx.size());
    wm = sw > 0 ? sws / sw : u;
  };
  if (s.empty()) {
    a.uniform = a.uniform_lo = a.uniform_hi = a.weighted = a.weighted_lo = a.weighted_hi = kNaN;
    return a;
  }
  std::vector<size_t> all(s.size());
  for (size_t i = 0; i < all.size(); i++) all[i] = i;
  means(all, a.uniform, a.weighted);
  Rng rng = Rng(seed).substream(0xb007);
  std::vector<double> bu, bw;
  std::vector<size_t> idx(s.size());
  for (int b = 0; b < bootstrap; b++) {
    for (size_t i = 0; i < idx.size(); i++) idx[i] = size_t(rng.below(s.size()));
    double u, wm;
    means(idx, u, wm);
    bu.push_back(u);
    bw.push_back(wm);
  }
  auto interval = [](std::vector<double>& v, double& lo, double& hi, double fallback) {
    if (v.empty()) {
      lo = hi = fallback;
      return;
    }
    std::sort(v.begin(), v.end());
    lo = v[size_t(std::floor(0.025 * double(v.size() - 1)))];
    hi = v[size_t(std::ceil(0.975 * double(v.size() - 1)))];
  };
  interval(bu, a.uniform_lo, a.uniform_hi, a.uniform);
  interval(bw, a.weighted_lo, a.weighted_hi, a.weighted);
  // Deciles of firing frequency: latents sorted by firing count, ten groups of equal size.
  std::vector<size_t> by(all);
  std::stable_sort(by.begin(), by.end(), [&](size_t x, size_t y) { return f[x] < f[y]; });
  const size_t n = by.size();
  for (size_t d = 0; d < 10; d++) {
    const size_t lo = d * n / 10, hi = (d + 1) * n / 10;
    if (hi <= lo) continue;
    DecileMean dm;
    dm.latents = int64_t(hi - lo);
    dm.fires_lo = f[by[lo]];
    dm.fires_hi = f[by[hi - 1]];
    double sum = 0;
    for (size_t i = lo; i < hi; i++) sum += s[by[i]];
    dm.mean = sum / double(hi - lo);
    a.deciles.push_back(dm);
  }
  return a;
}

json aggregate_to_json(const Aggregate& a) {
  json d = json::array();
  for (const DecileMean& m : a.deciles)
    d.push_back({{"latents", m.latents}, {"fires_min", m.fires_lo}, {"fires_max", m.fires_hi}, {"mean", real(m.mean)}});
  return {{"metric", a.metric},
          {"latents", a.latents},
          {"uniform_mean", real(a.uniform)},
          {"uniform_ci95", {real(a.uniform_lo), real(a.uniform_hi)}},
          {"weighted_mean", real(a.weighted)},
          {"weighted_ci95", {real(a.weighted_lo), real(a.weighted_hi)}},
          {"deciles", d}};
}

std::string aggregate_table(const std::vector<Aggregate>& aggs) {
  char line[256];
  std::snprintf(line, sizeof line, "%-11s %-18s %7s  %-24s %s\n", "method", "metric", "latents", "uniform mean [95% CI]",
                "weighted by firing [95% CI]");
  std::string s = line;
  for (const Aggregate& a : aggs) {
    const std::string u = fmt(a.uniform) + " [" + fmt(a.uniform_lo) + ", " + fmt(a.uniform_hi) + "]";
    const std::string w = fmt(a.weighted) + " [" + fmt(a.weighted_lo) + ", " + fmt(a.weighted_hi) + "]";
    std::snprintf(line, sizeof line, "%-11s %-18s %7lld  %-24s %s\n", a.method.c_str(), a.metric.c_str(),
                  static_cast<long long>(a.latents), u.c_str(), w.c_str());
    s += line;
  }
  for (const Aggregate& a : aggs) {
    if (a.deciles.empty()) continue;
    s += a.method + " by firing-frequency decile (lowest first):";
    for (const DecileMean& d : a.deciles) s += " " + fmt(d.mean, 2);
    s += "\n";
  }
  if (!s.empty()) s.pop_back();
  return s;
}

// ---- the driver

namespace {

struct Pending {
  size_t k = 0;
  LatentReport head;  // latent, fires, max_activation (no examples)
  ExampleSplit split;
};

void score_latent(const Pending& p, const std::vector<const ScoringBatch*>& batches,
                  const std::vector<const llm::Response*>& responses, AutointerpResult& res, const std::string& method) {
  MethodScore ms;
  ms.method = method;
  std::vector<int> truth, pred;
  std::vector<double> prob, t_sim, p_sim;
  bool have_prob = method == "detection";
  for (size_t b = 0; b < batches.size(); b++) {
    const ScoringBatch& sb = *batches[b];
    const llm::Response& r = *responses[b];
    const int hi = method == "simulation" ? 10 : 1;
    const std::vector<int> got = r.ok ? parse_answer_list(r.text, sb.items.size(), 0, hi) : std::vector<int>{};
    if (got.empty()) {
      ms.failed += int64_t(sb.items.size());
      continue;
    }
    std::vector<double> pr;
    if (have_prob) {
      pr = label_probabilities(r.logprobs, sb.items.size());
      if (pr.empty()) have_prob = false;
    }
    for (size_t i = 0; i < sb.items.size(); i++) {
      if (method == "simulation") {
        t_sim.push_back(sb.items[i].truth);
        p_sim.push_back(got[i]);
      } else {
        truth.push_back(sb.items[i].truth);
        pred.push_back(got[i]);
        if (have_prob) prob.push_back(pr[i]);
      }
    }
  }
  auto put = [&](const char* name, double v) {
    if (std::isfinite(v)) ms.metrics.push_back({name, v});
  };
  if (method == "simulation") {
    ms.n = int64_t(t_sim.size());
    put("spearman", spearman(t_sim, p_sim));
  } else {
    ms.n = int64_t(truth.size());
    const BinaryMetrics m = binary_metrics(truth, pred, have_prob ? prob : std::vector<double>{});
    put("accuracy", m.accuracy);
    // Balanced accuracy only with both classes: over one class it would reward a constant answer.
    if (m.positives > 0 && m.positives < m.n) put("balanced_accuracy", m.balanced_accuracy);
    put("f1", m.f1);
    put("precision", m.precision);
    put("recall", m.recall);
    if (m.auc) put("auc", *m.auc);
  }
  (void)p;
  res.scores.push_back(std::move(ms));
}

}  // namespace

AutointerpRun run_autointerp(size_t n, const std::function<LatentReport(size_t)>& report_of, const AutointerpOptions& o,
                             const llm::Options& lo, const std::vector<std::string>& token_text) {
  AutointerpRun run;
  run.results.resize(n);
  const PromptTemplates templates = load_prompts(o.prompt_dir);
  llm::Client client(lo);
  // The first SIGINT/SIGTERM lets the requests in flight finish into the cache (the client then throws
  // cli::Interrupted); a second one ends the process.
  struct Graceful {
    Graceful() { cli::set_graceful_interrupt(true); }
    ~Graceful() { cli::set_graceful_interrupt(false); }
  } graceful;
  const std::vector<std::string>& methods = o.methods;
  std::vector<Pending> prev;
  std::vector<int64_t> fires(n, 0);
  // At least 4 requests in flight's worth of latents per chunk, so that the queue stays full.
  const size_t chunk = std::max<size_t>({1, o.chunk, size_t(std::max(1, lo.parallel)) * 4});
  cli::Progress progress;
  size_t done = 0;
  // A dry run writes each batch's requests to one file, which the client rewrites per batch: the
  // lines of all batches are gathered here and written once at the end.
  const std::string dry_path =
      !lo.dry_run ? "" : !lo.dry_run_path.empty() ? (lo.dry_run_path == "-" ? "" : lo.dry_run_path)
                                                   : lo.cache_dir.empty() ? "" : lo.cache_dir + "/dry-run.jsonl";
  std::string dry_lines;
  auto fail_message = [&](const std::string& e) {
    std::string m = e;
    if (!lo.cache_dir.empty() && m.find(lo.cache_dir) == std::string::npos)
      m += " (the answers received are kept in " + lo.cache_dir + ": the same command resumes from them)";
    return m;
  };
  for (size_t start = 0; start < n || !prev.empty(); start += chunk) {
    cli::throw_if_interrupted();
    std::vector<Pending> cur;
    std::vector<llm::Request> reqs;
    if (o.explain)
      for (size_t k = start; k < std::min(n, start + chunk); k++) {
        LatentReport r = report_of(k);
        fires[k] = r.fires;
        if (r.fires == 0) {
          run.results[k].failure = "never fired";
          continue;
        }
        Pending p;
        p.k = k;
        p.split = split_examples(r, o.seed);
        p.head.latent = r.latent;
        p.head.fires = r.fires;
        p.head.max_activation = r.max_activation;
        if (p.split.explain.empty()) {
          run.results[k].failure = "no examples";
          continue;
        }
        reqs.push_back(explanation_request(templates.explain, p.split, r, o, token_text));
        cur.push_back(std::move(p));
      }
    // Scoring requests of the previous chunk, in the same batch as this chunk's explanations.
    struct Ref {
      size_t pending, method;
      std::vector<ScoringBatch> batches;
      size_t first;
    };
    std::vector<Ref> refs;
    for (size_t i = 0; i < prev.size(); i++) {
      const AutointerpResult& res = run.results[prev[i].k];
      if (!res.explanation) continue;
      LatentReport head = prev[i].head;
      for (size_t m = 0; m < methods.size(); m++) {
        Ref ref{i, m, scoring_batches(methods[m], templates, *res.explanation, prev[i].split, head, o, token_text), reqs.size()};
        for (const auto& b : ref.batches) reqs.push_back(b.request);
        refs.push_back(std::move(ref));
      }
    }
    std::vector<llm::Response> rs;
    if (!reqs.empty()) {
      if (!dry_path.empty()) fs::remove(dry_path);  // the client rewrites it on each batch: collected below
      rs = client.run(reqs, [&](size_t, const llm::Response&) {
        if (progress.enabled())
          progress.update("autointerp: " + std::to_string(done) + "/" + std::to_string(n) + " latents, " +
                          std::to_string(client.stats().requests) + " requests sent, " +
                          std::to_string(client.stats().cached) + " from the cache");
      });
      for (const auto& r : rs) run.dry_run_requests += lo.dry_run && r.not_sent;
      if (!dry_path.empty() && fs::exists(dry_path)) dry_lines += read_file(dry_path);
      if (!lo.dry_run) {
        const std::string e = llm::first_error(rs);
        if (!e.empty()) {
          progress.done();
          throw InputError(fail_message(e));
        }
      }
    }
    for (size_t i = 0; i < cur.size(); i++) {
      AutointerpResult& res = run.results[cur[i].k];
      const llm::Response& r = rs[i];
      if (!r.ok) {
        res.failure = r.not_sent ? "not sent" : r.error;
        continue;
      }
      const ParsedExplanation pe = parse_explanation(r.text);
      if (pe.ok) {
        res.explanation = pe.text;
        run.explained++;
      } else {
        res.failure = pe.failure;
        run.failed++;
      }
    }
    for (const Ref& ref : refs) {
      std::vector<const ScoringBatch*> bs;
      std::vector<const llm::Response*> rr;
      for (size_t b = 0; b < ref.batches.size(); b++) {
        bs.push_back(&ref.batches[b]);
        rr.push_back(&rs[ref.first + b]);
      }
      score_latent(prev[ref.pending], bs, rr, run.results[prev[ref.pending].k], methods[ref.method]);
    }
    done += prev.size();
    prev = std::move(cur);
    if (methods.empty()) {
      done += prev.size();
      prev.clear();
    }
  }
  if (!dry_path.empty()) {
    const fs::path parent = fs::path(dry_path).parent_path();
    if (!parent.empty()) fs::create_directories(parent);
    cli::write_file_atomic(dry_path, dry_lines);
  }
  progress.done();
  // Aggregates: the main metric of each method, over the latents that have it.
  for (const std::string& m : methods) {
    std::vector<double> s(n, std::numeric_limits<double>::quiet_NaN());
    for (size_t k = 0; k < n; k++)
      for (const MethodScore& ms : run.results[k].scores)
        if (ms.method == m)
          if (auto v = ms.metric(main_metric(m))) s[k] = *v;
    run.aggregates.push_back(aggregate_scores(m, main_metric(m), s, fires, o.seed, o.bootstrap));
  }
  run.usage = client.usage_report();
  run.stats = client.stats();
  return run;
}

}  // namespace sae

namespace sae {

nlohmann::json autointerp_json(const AutointerpResult& r) {
  json j = json::object();
  if (r.explanation) j["explanation"] = utf8_replace_invalid(*r.explanation);
  else j["failed"] = utf8_replace_invalid(r.failure);
  if (!r.scores.empty()) {
    json s = json::object();
    for (const MethodScore& m : r.scores) {
      json ms = json::object();
      for (const auto& [k, v] : m.metrics) ms[k] = real(v);
      ms["n"] = m.n;
      ms["failed"] = m.failed;
      s[m.method] = std::move(ms);
    }
    j["scores"] = std::move(s);
  }
  return j;
}

void attach_autointerp(LatentReport& report, const AutointerpResult& r, const std::vector<std::string>& methods) {
  report.explanation = r.explanation;
  report.score.reset();
  if (!methods.empty())
    for (const MethodScore& m : r.scores)
      if (m.method == methods[0]) report.score = m.metric(main_metric(m.method));
  report.autointerp = r;
}

}  // namespace sae
