// sae-steer's outputs (lib/steer/report.h).
#include "steer/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

#include "base/svg.h"
#include "base/utf8.h"

namespace sae {

using ojson = nlohmann::ordered_json;

namespace {

ojson number(double v) { return std::isfinite(v) ? ojson(v) : ojson(nullptr); }

// Decoded text, valid UTF-8: a byte-level token (or a text cut after one) may end inside a
// character, which becomes U+FFFD.
std::string decoded(const SteerReportContext& c, const std::vector<int32_t>& ids) {
  return c.tokenizer ? utf8_replace_invalid(c.tokenizer->decode(ids)) : "";
}

std::string token_text(const SteerReportContext& c, int32_t id) {
  return c.tokenizer ? decoded(c, {id}) : std::to_string(id);
}

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

std::string setting_label(const SteerRecord& r) {
  std::string s = r.setting;
  if (r.control >= 0) s += " #" + std::to_string(r.control);
  return s;
}

}  // namespace

ojson steer_record_json(const SteerRecord& r, const SteerReportContext& c) {
  ojson j;
  j["prompt"] = r.prompt;
  j["prompt_text"] = c.prompts.at(size_t(r.prompt));
  j["setting"] = r.setting;
  if (r.control >= 0) j["control"] = r.control;
  j["alpha"] = number(r.alpha);
  ojson ivs = ojson::array();
  for (const Intervention& iv : r.interventions) {
    ojson o;
    o["spec"] = iv.text();
    o["sae"] = c.sae_dirs.at(size_t(iv.sae));
    o["latent"] = iv.latent;
    o["direction"] = iv.direction.empty() ? "decoder" : "random";
    ivs.push_back(o);
  }
  j["interventions"] = ivs;
  j["unit"] = c.unit;
  j["positions"] = c.positions;
  j["text"] = decoded(c, r.tokens);
  j["tokens"] = r.tokens;
  j["ended_at_eos"] = r.ended_at_eos;
  const SteerMeasures& m = r.measures;
  ojson mj;
  mj["mean_kl"] = number(m.mean_kl);
  mj["kl"] = m.kl;
  mj["perplexity"] = number(m.perplexity);
  if (!c.target_tokens.empty()) {
    mj["target_prob"] = number(m.target_prob);
    mj["target_prob_unsteered"] = number(m.target_prob_unsteered);
  }
  mj["latent_act"] = number(m.latent_act);
  auto tokens = [&](const std::vector<std::pair<int32_t, double>>& v) {
    ojson a = ojson::array();
    for (const auto& [id, shift] : v) a.push_back({{"token", id}, {"text", token_text(c, id)}, {"logprob_change", shift}});
    return a;
  };
  mj["promoted"] = tokens(m.promoted);
  mj["suppressed"] = tokens(m.suppressed);
  if (r.judged) {
    const JudgeRatings& jr = r.judge;
    ojson jj;
    jj["concept"] = number(jr.concept);
    jj["instruction"] = number(jr.instruction);
    jj["fluency"] = number(jr.fluency);
    jj["harmonic"] = number(jr.harmonic);
    if (!jr.failed.empty()) jj["failed"] = jr.failed;
    mj["judge"] = jj;
  }
  j["measures"] = mj;
  return j;
}

std::vector<SweepRow> sweep_table(const std::vector<SteerRecord>& records) {
  std::vector<SweepRow> rows;
  for (const SteerRecord& r : records) {
    auto it = std::find_if(rows.begin(), rows.end(), [&](const SweepRow& s) {
      return s.setting == r.setting && (s.alpha == r.alpha || (std::isnan(s.alpha) && std::isnan(r.alpha)));
    });
    if (it == rows.end()) {
      rows.push_back({r.setting, r.alpha});
      it = rows.end() - 1;
    }
    it->n++;
    it->mean_kl += r.measures.mean_kl;
    it->perplexity += r.measures.perplexity;
    it->target_prob += r.measures.target_prob;
    it->latent_act += r.measures.latent_act;
    if (r.judged) {
      const double v[4] = {r.judge.concept, r.judge.instruction, r.judge.fluency, r.judge.harmonic};
      for (int k = 0; k < 4; k++)
        if (!std::isnan(v[k])) {
          it->judge[k] += v[k];
          it->judge_n[k]++;
        }
    }
  }
  for (SweepRow& s : rows) {
    s.mean_kl /= s.n;
    s.perplexity /= s.n;
    s.target_prob /= s.n;
    s.latent_act /= s.n;
    for (int k = 0; k < 4; k++)
      if (s.judge_n[k] > 0) s.judge[k] /= s.judge_n[k];
  }
  return rows;
}

std::string sweep_text(const std::vector<SweepRow>& rows, bool with_targets) {
  bool with_judge = false;
  for (const SweepRow& s : rows)
    for (int k = 0; k < 4; k++) with_judge = with_judge || s.judge_n[k] > 0;
  std::string out = "setting            alpha      runs  mean KL     perplexity  latent act" +
                    std::string(with_targets ? "  target prob" : "") +
                    std::string(with_judge ? "  concept  instruct  fluency  harmonic" : "") + "\n";
  for (const SweepRow& s : rows) {
    char line[200];
    std::snprintf(line, sizeof line, "%-18s %-10s %4d  %-10.4g  %-10.4g  %-10.4g", s.setting.c_str(),
                  std::isnan(s.alpha) ? "-" : fmt("%g", s.alpha).c_str(), s.n, s.mean_kl, s.perplexity, s.latent_act);
    out += line;
    if (with_targets) out += "  " + fmt("%.4g", s.target_prob);
    if (with_targets && with_judge) out += std::string(size_t(std::max(0, 11 - int(fmt("%.4g", s.target_prob).size()))), ' ');
    if (with_judge)
      for (int k = 0; k < 4; k++) {
        const std::string v = s.judge_n[k] > 0 ? fmt("%.3g", s.judge[k]) : "-";
        out += "  " + v + std::string(size_t(std::max(0, (k % 2 == 0 ? 7 : 8) - int(v.size()))), ' ');
      }
    out += "\n";
  }
  return out;
}

std::string sweep_svg(const std::vector<SweepRow>& rows, bool with_targets) {
  std::vector<svg::Series> series;
  for (const SweepRow& s : rows) {
    if (s.setting == "unsteered") continue;
    auto it = std::find_if(series.begin(), series.end(), [&](const svg::Series& x) { return x.label == s.setting; });
    if (it == series.end()) {
      series.push_back({s.setting, {}, {}});
      it = series.end() - 1;
    }
    it->x.push_back(s.perplexity);
    it->y.push_back(with_targets ? s.target_prob : s.mean_kl);
  }
  svg::Plot p;
  p.title = "Steering: effect against fluency, one point per alpha";
  p.xlabel = "perplexity of the continuation under the unsteered model (lower is more fluent)";
  p.ylabel = with_targets ? "probability of the target tokens" : "mean KL from the unsteered model (nats)";
  p.caption = "means over prompts; controls pooled over their draws";
  for (const SweepRow& s : rows)
    if (s.setting == "unsteered") p.vlines.push_back({s.perplexity, "unsteered"});
  return svg::line_chart(series, p);
}

std::string steer_html(const std::vector<SteerRecord>& records, const SteerReportContext& c) {
  const bool judged = std::any_of(records.begin(), records.end(), [](const SteerRecord& r) { return r.judged; });
  auto esc = [](const std::string& s) { return svg::escape(s); };
  std::string h =
      "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>sae-steer</title>\n<style>"
      "body{font-family:sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse;width:100%;margin-bottom:2em}"
      "td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}"
      "th{background:#f0f0f0}.unsteered{background:#eef6ee}.steered{background:#fdf0e6}"
      ".text{white-space:pre-wrap;font-family:monospace}.num{text-align:right;font-family:monospace}</style></head><body>\n";
  h += "<h1>sae-steer</h1>\n<p>Model <code>" + esc(c.model_dir) + "</code>; SAEs";
  for (const auto& d : c.sae_dirs) h += " <code>" + esc(d) + "</code>";
  h += "; unit " + esc(c.unit) + "; positions " + esc(c.positions) + ".";
  if (!c.target_tokens.empty()) {
    h += " Target tokens:";
    for (const auto& t : c.target_tokens) h += " <code>" + esc(t) + "</code>";
    h += ".";
  }
  h += " Every run uses the same sampling seed, so a difference comes from the intervention alone. KL and "
       "perplexity are measured on each run's own continuation: KL of its next-token distributions from the "
       "unsteered model's, perplexity under the unsteered model.</p>\n";
  if (judged)
    h += "<p>The judge (an LLM) rated each continuation 0-2 on the concept, on following the prompt (instruction) and "
         "on fluency; harmonic is their harmonic mean, 0 when any is 0, as AxBench scores steering. A dash: the "
         "answer held no rating.</p>\n";
  std::map<int, std::vector<const SteerRecord*>> by_prompt;
  for (const SteerRecord& r : records) by_prompt[r.prompt].push_back(&r);
  for (const auto& [p, recs] : by_prompt) {
    h += "<h2>Prompt " + std::to_string(p) + "</h2>\n<p class=\"text\">" + esc(c.prompts.at(size_t(p))) + "</p>\n";
    h += "<table><tr><th>setting</th><th>alpha</th><th>interventions</th><th>continuation</th><th>mean KL</th>"
         "<th>perplexity</th><th>latent act</th>";
    if (!c.target_tokens.empty()) h += "<th>target prob</th>";
    if (judged) h += "<th>judge: concept</th><th>instruction</th><th>fluency</th><th>harmonic</th>";
    h += "<th>promoted</th></tr>\n";
    for (const SteerRecord* r : recs) {
      const std::string cls = r->setting == "unsteered" ? "unsteered" : r->setting == "steered" ? "steered" : "control";
      std::string ivs, promoted;
      for (const Intervention& iv : r->interventions)
        ivs += esc(iv.text()) + (iv.direction.empty() ? "" : " (random direction)") + "<br>";
      for (size_t i = 0; i < r->measures.promoted.size() && i < 5; i++)
        promoted += "<code>" + esc(token_text(c, r->measures.promoted[i].first)) + "</code> ";
      h += "<tr class=\"" + cls + "\"><td>" + esc(setting_label(*r)) + "</td><td class=\"num\">" +
           (std::isnan(r->alpha) ? "" : fmt("%g", r->alpha)) + "</td><td>" + ivs + "</td><td class=\"text\">" +
           esc(decoded(c, r->tokens)) + "</td><td class=\"num\">" +
           fmt("%.4f", r->measures.mean_kl) + "</td><td class=\"num\">" + fmt("%.3f", r->measures.perplexity) +
           "</td><td class=\"num\">" + fmt("%.3f", r->measures.latent_act) + "</td>";
      if (!c.target_tokens.empty()) h += "<td class=\"num\">" + fmt("%.4f", r->measures.target_prob) + "</td>";
      if (judged) {
        const double v[4] = {r->judge.concept, r->judge.instruction, r->judge.fluency, r->judge.harmonic};
        for (double x : v) h += "<td class=\"num\">" + (r->judged && !std::isnan(x) ? fmt("%.3g", x) : std::string("&ndash;")) + "</td>";
      }
      h += "<td>" + promoted + "</td></tr>\n";
    }
    h += "</table>\n";
  }
  h += "</body></html>\n";
  return h;
}

std::vector<JudgeItem> judge_items(const std::vector<SteerRecord>& records, const SteerReportContext& c) {
  std::vector<JudgeItem> items;
  for (const SteerRecord& r : records) items.push_back({c.prompts.at(size_t(r.prompt)), decoded(c, r.tokens)});
  return items;
}

}  // namespace sae
