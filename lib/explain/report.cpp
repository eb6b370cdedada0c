// latents.jsonl and the run summary as JSON (lib/explain/report.h; the schema is in docs/explain.md).
#include "explain/report.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <string_view>

#include "base/utf8.h"
#include "explain/json_text.h"

namespace sae {

using json = nlohmann::json;

namespace {

// Real numbers of the summary with 6 significant digits, as latents.jsonl writes them: printed so,
// read back as the nearest double, which nlohmann's shortest round-trip printing then writes with
// those digits and no more. Non-finite values become null.
json real(double v) {
  if (!std::isfinite(v)) return nullptr;
  if (v == 0) return 0.0;
  char buf[40];
  auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::general, 6);
  double out = v;
  std::from_chars(buf, r.ptr, out);
  return out;
}

json reals(const std::vector<double>& v) {
  json a = json::array();
  for (double x : v) a.push_back(real(x));
  return a;
}

}  // namespace

bool quantile_bounds(const LatentReport& r, size_t g, double& lo, double& hi) {
  if (r.quantile_edges.size() == r.quantiles.size() + 1) {
    lo = r.quantile_edges[g];
    hi = r.quantile_edges[g + 1];
    return true;
  }
  const std::vector<ContextExample>& ex = r.quantiles[g];
  if (ex.empty()) return false;
  lo = hi = ex[0].activation;
  for (const ContextExample& e : ex) {
    lo = std::min(lo, double(e.activation));
    hi = std::max(hi, double(e.activation));
  }
  return true;
}

namespace {

constexpr int kDigits = 6;

// Writes token `id`'s display text as a JSON string: the table's entry made valid UTF-8, or
// "[ID]" when the id is unknown (-1, or outside the table).
void put_text(JsonText& o, int32_t id, const std::vector<std::string>& table) {
  if (id < 0 || size_t(id) >= table.size()) {
    o.ch('"');
    o.ch('[');
    o.i64(id);
    o.raw("]\"");
    return;
  }
  const std::string& s = table[size_t(id)];
  bool ascii = true;
  for (char c : s) ascii &= static_cast<unsigned char>(c) < 0x80;
  if (ascii || utf8_find_invalid(s) == std::string_view::npos) o.string(s, false);
  else o.string(utf8_replace_invalid(s), false);
}

void put_example(JsonText& o, const ContextExample& e, const std::vector<std::string>& table) {
  o.raw("{\"row\":");
  o.i64(e.row);
  o.raw(",\"doc\":");
  o.i64(e.doc);
  o.raw(",\"peak\":");
  o.i64(e.peak);
  o.raw(",\"activation\":");
  o.real(e.activation, kDigits);
  o.raw(",\"tokens\":[");
  for (size_t i = 0; i < e.tokens.size(); i++) {
    if (i) o.ch(',');
    o.i64(e.tokens[i]);
  }
  o.raw("],\"text\":[");
  for (size_t i = 0; i < e.tokens.size(); i++) {
    if (i) o.ch(',');
    put_text(o, e.tokens[i], table);
  }
  o.raw("],\"acts\":[");
  for (size_t i = 0; i < e.acts.size(); i++) {
    if (i) o.ch(',');
    o.real(e.acts[i], kDigits);
  }
  o.raw("]}");
}

void put_examples(JsonText& o, const std::vector<ContextExample>& v, const std::vector<std::string>& table) {
  o.ch('[');
  for (size_t i = 0; i < v.size(); i++) {
    if (i) o.ch(',');
    put_example(o, v[i], table);
  }
  o.ch(']');
}

void put_scores(JsonText& o, const std::vector<TokenScore>& v, const std::vector<std::string>& table) {
  o.ch('[');
  for (size_t i = 0; i < v.size(); i++) {
    if (i) o.ch(',');
    o.raw("{\"token\":");
    o.i64(v[i].token);
    o.raw(",\"text\":");
    put_text(o, v[i].token, table);
    o.raw(",\"score\":");
    o.real(v[i].score, kDigits);
    o.ch('}');
  }
  o.ch(']');
}

void put_neighbours(JsonText& o, const std::vector<Neighbour>& v, const char* score_name) {
  o.ch('[');
  for (size_t i = 0; i < v.size(); i++) {
    if (i) o.ch(',');
    o.raw("{\"latent\":");
    o.i64(v[i].latent);
    o.raw(",\"");
    o.raw(score_name);
    o.raw("\":");
    o.real(v[i].score, kDigits);
    o.ch('}');
  }
  o.ch(']');
}

}  // namespace

void append_latent_jsonl(std::string& out, const LatentReport& r, const std::vector<std::string>& token_text) {
  JsonText o;
  o.s.swap(out);
  o.raw("{\"latent\":");
  o.i64(r.latent);
  o.raw(",\"fires\":");
  o.i64(r.fires);
  o.raw(",\"rows\":");
  o.i64(r.rows);
  o.raw(",\"density\":");
  o.real(r.density, kDigits);
  o.raw(",\"max_activation\":");
  o.real(r.max_activation, kDigits);
  o.raw(",\"mean_activation\":");
  o.real(r.mean_activation, kDigits);
  o.raw(",\"histogram\":{\"edges\":[");
  for (size_t i = 0; i < r.hist_edges.size(); i++) {
    if (i) o.ch(',');
    o.real(r.hist_edges[i], kDigits);
  }
  o.raw("],\"counts\":[");
  for (size_t i = 0; i < r.hist_counts.size(); i++) {
    if (i) o.ch(',');
    o.i64(r.hist_counts[i]);
  }
  o.raw("]},\"top\":");
  put_examples(o, r.top, token_text);
  o.raw(",\"quantiles\":[");
  for (size_t g = 0; g < r.quantiles.size(); g++) {
    if (g) o.ch(',');
    o.ch('{');
    double lo, hi;
    if (quantile_bounds(r, g, lo, hi)) {
      o.raw("\"min\":");
      o.real(lo, kDigits);
      o.raw(",\"max\":");
      o.real(hi, kDigits);
      o.ch(',');
    }
    o.raw("\"examples\":");
    put_examples(o, r.quantiles[g], token_text);
    o.ch('}');
  }
  o.raw("],\"contrast\":");
  put_examples(o, r.contrast, token_text);
  if (r.has_logit_lens) {
    o.raw(",\"logit_lens\":{\"top\":");
    put_scores(o, r.logit_top, token_text);
    o.raw(",\"bottom\":");
    put_scores(o, r.logit_bottom, token_text);
    o.raw(",\"top_corrected\":");
    put_scores(o, r.logit_top_corrected, token_text);
    o.raw(",\"bottom_corrected\":");
    put_scores(o, r.logit_bottom_corrected, token_text);
    o.ch('}');
  }
  o.raw(",\"decoder_neighbours\":");
  put_neighbours(o, r.decoder_neighbours, "cosine");
  o.raw(",\"cofire_neighbours\":");
  put_neighbours(o, r.cofire_neighbours, "jaccard");
  if (r.explanation) {
    o.raw(",\"explanation\":");
    if (utf8_find_invalid(*r.explanation) == std::string_view::npos) o.string(*r.explanation, false);
    else o.string(utf8_replace_invalid(*r.explanation), false);
  }
  if (r.score) {
    o.raw(",\"score\":");
    o.real(*r.score, kDigits);
  }
  if (r.autointerp) {  // docs/autointerp.md: the same value as latent_to_json's
    o.raw(",\"autointerp\":");
    o.raw(autointerp_json(*r.autointerp).dump());
  }
  o.raw("}\n");
  o.s.swap(out);
}

json summary_to_json(const ExplainSummary& s) {
  json j;
  j["sae"] = utf8_replace_invalid(s.sae);
  j["model"] = utf8_replace_invalid(s.model);
  j["hook"] = utf8_replace_invalid(s.hook);
  j["architecture"] = utf8_replace_invalid(s.architecture);
  j["d_sae"] = s.d_sae;
  j["d_in"] = s.d_in;
  j["rows"] = s.rows;
  j["documents"] = s.documents;
  j["latents_reported"] = s.latents_reported;
  j["dead"] = s.dead;
  j["density_histogram"] = {{"log10_edges", reals(s.density_edges)}, {"counts", s.density_counts}};
  j["cofire_rows"] = s.cofire_rows;
  j["options"] = s.options;
  if (!s.autointerp.is_null()) j["autointerp"] = s.autointerp;  // docs/autointerp.md
  return j;
}

json latent_to_json(const LatentReport& r, const std::vector<std::string>& token_text) {
  // One writer of the schema: the JSON value is the line append_latent_jsonl writes, parsed.
  std::string line;
  append_latent_jsonl(line, r, token_text);
  return json::parse(line);
}

}  // namespace sae
