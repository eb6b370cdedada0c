#include "explain/explain.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include "backend/backend.h"
#include "base/cli.h"
#include "base/errors.h"
#include "base/strings.h"
#include "data/collect_model.h"
#include "explain/dashboard.h"
#include "explain/lens.h"
#include "model/model.h"
#include "sae/sae.h"
#include "sae/sparse_encode.h"
#include "sae/stream_check.h"
#include "stream/stream.h"
#include "tokenizer/tokenizer.h"

namespace sae {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::vector<std::string> vocabulary_texts(const Tokenizer& tok) {
  std::vector<std::string> t(size_t(tok.vocab_size()));
  for (int32_t id = 0; id < tok.vocab_size(); id++) t[size_t(id)] = tok.token_text(id);
  return t;
}

MinerOptions miner_options(const ExplainOptions& o) {
  MinerOptions m = o.miner;
  m.threads = o.threads;
  return m;
}

// The pass: rows in (dense, encoded here, or already sparse), mined, with progress and the
// --max-tokens stop.
class Pass {
 public:
  Pass(const ExplainOptions& o, int64_t d_sae, std::vector<int64_t> latents)
      : o_(o), miner_(d_sae, std::move(latents), miner_options(o)), start_(Clock::now()) {}

  void set_encoder(const Sae& sae, Device device) { encoder_ = std::make_unique<SparseEncoder>(sae, device, o_.threads); }

  // Returns false once --max-tokens rows have been taken.
  bool add_dense(const float* x, int64_t rows, const int32_t* token, const int64_t* doc) {
    rows = take(rows);
    if (rows > 0) {
      encoder_->encode(x, rows, count_, index_, value_);
      miner_.add(rows, count_.data(), index_.data(), value_.data(), token, doc);
    }
    return report();
  }
  bool add_sparse(int64_t rows, const uint32_t* count, const uint32_t* index, const float* value, const int32_t* token,
                  const int64_t* doc) {
    rows = take(rows);
    if (rows > 0) miner_.add(rows, count, index, value, token, doc);
    return report();
  }
  LatentMiner& miner() { return miner_; }
  void done() { progress_.done(); }

 private:
  int64_t take(int64_t rows) {
    if (o_.max_tokens > 0) rows = std::min(rows, o_.max_tokens - miner_.rows());
    return std::max<int64_t>(rows, 0);
  }
  bool report() {
    if (progress_.enabled()) {
      const double s = since(start_);
      progress_.update("explain: " + cli::human_count(double(miner_.rows())) + " tokens, " +
                       cli::human_count(double(miner_.rows()) / std::max(s, 1e-9)) + " tokens/s");
    }
    return o_.max_tokens <= 0 || miner_.rows() < o_.max_tokens;
  }

  const ExplainOptions& o_;
  LatentMiner miner_;
  std::unique_ptr<SparseEncoder> encoder_;
  std::vector<uint32_t> count_, index_;
  std::vector<float> value_;
  cli::Progress progress_;
  Clock::time_point start_;
};

void check_names(const std::string& what_a, const std::string& a, const std::string& what_b, const std::string& b) {
  if (!a.empty() && !b.empty() && !same_model_name(a, b))
    throw InputError(what_a + " is for model '" + a + "', but " + what_b + " is '" + b + "'");
}

// Rows of the model's forward pass at the SAE's hook, encoded and mined as they come.
class ModelSink : public ModelRowSink {
 public:
  ModelSink(const ExplainOptions& o, const Sae& sae, Pass& pass, std::vector<std::string>& token_text)
      : o_(o), sae_(sae), pass_(pass), token_text_(token_text) {}
  void start(const ModelRowsContext& c) override {
    const int64_t width = hook_width(c.points[0], c.cfg);
    if (width != sae_.d_in)
      throw InputError(o_.sae_dir + ": the SAE reads " + std::to_string(sae_.d_in) + "-wide rows, but " + o_.model_dir +
                       "'s " + c.points[0].name() + " is " + std::to_string(width) + " wide");
    check_names(o_.sae_dir, sae_.model, "--model " + o_.model_dir, c.cfg.name);
    token_text_ = vocabulary_texts(c.tokenizer);
    pass_.set_encoder(sae_, c.device);
  }
  bool rows(size_t, Batch& b) override { return pass_.add_dense(b.x.data(), b.rows, b.token.data(), b.doc.data()); }

 private:
  const ExplainOptions& o_;
  const Sae& sae_;
  Pass& pass_;
  std::vector<std::string>& token_text_;
};

// log10(density) of the latents that fired, on quarter-decade bins, trimmed to those used.
void density_histogram(const LatentMiner& m, ExplainSummary& s) {
  const int kPerDecade = 4, kLowest = -12;
  std::vector<int64_t> counts(size_t(-kLowest * kPerDecade + 1), 0);
  for (size_t k = 0; k < m.latents().size(); k++) {
    if (m.fires(k) == 0) continue;
    const double l = std::log10(double(m.fires(k)) / double(m.rows()));
    const int b = std::clamp(int(std::floor((l - kLowest) * kPerDecade)), 0, int(counts.size()) - 1);
    counts[size_t(b)]++;
  }
  int first = 0, last = int(counts.size()) - 1;
  while (first <= last && counts[size_t(first)] == 0) first++;
  while (last >= first && counts[size_t(last)] == 0) last--;
  for (int b = first; b <= last; b++) {
    s.density_edges.push_back(kLowest + double(b) / kPerDecade);
    s.density_counts.push_back(counts[size_t(b)]);
  }
  if (first <= last) s.density_edges.push_back(kLowest + double(last + 1) / kPerDecade);
}

}  // namespace

std::vector<int64_t> parse_latent_list(const std::string& spec, int64_t d_sae) {
  std::vector<int64_t> out;
  auto number = [&](const std::string& t) {
    const std::string s = trim(t);
    if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos || s.size() > 18)
      throw UsageError("--latents: '" + s + "' is not a latent number (expected e.g. 0-99,512)");
    const int64_t v = std::stoll(s);
    if (v >= d_sae)
      throw UsageError("--latents: " + s + " is out of range: the SAE has " + std::to_string(d_sae) + " latents (0-" +
                       std::to_string(d_sae - 1) + ")");
    return v;
  };
  for (const std::string& part : split(spec, ",")) {
    const size_t dash = part.find('-');
    if (dash == std::string::npos) {
      out.push_back(number(part));
      continue;
    }
    const int64_t a = number(part.substr(0, dash)), b = number(part.substr(dash + 1));
    if (b < a) throw UsageError("--latents: '" + trim(part) + "' is an empty range");
    for (int64_t v = a; v <= b; v++) out.push_back(v);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

ExplainStats run_explain(const ExplainOptions& o) {
  const auto start = Clock::now();
  ExplainStats st;
  const bool text_mode = !o.text.empty();
  if (text_mode && o.model_dir.empty()) throw UsageError("--text needs --model DIR (the model to run over it)");
  if (text_mode && o.sae_dir.empty()) throw UsageError("--text needs --sae DIR (the SAE to encode the model's activations with)");
  if (text_mode && !o.streams.empty())
    throw UsageError("give either --text (with --model) or activation/latent streams, not both");
  if (!text_mode && !o.hook.empty()) throw UsageError("--hook is for --text input: a stream records its own hook");
  if (o.output.empty()) throw UsageError("-o DIR is required: the directory to write the dashboard into");
  if (fs::exists(o.output) && !o.force)
    throw InputError(o.output + ": exists (give --force to replace it)");
  cli::OutputDir out(o.output, "output");

  Sae sae;
  const bool have_sae = !o.sae_dir.empty();
  if (have_sae) sae = load_sae(o.sae_dir);
  const Device device = resolve_device(o.device);

  ExplainSummary summary;
  std::vector<std::string> token_text;
  std::unique_ptr<Pass> pass;
  int64_t d_sae = sae.d_sae;
  std::string hook = o.hook.empty() ? sae.hook : o.hook;

  if (text_mode) {
    if (hook.empty()) throw UsageError(o.sae_dir + " records no hook (cfg.json hook_name): give it with --hook");
    if (!o.hook.empty() && !sae.hook.empty() && o.hook != sae.hook)
      st.notes.push_back("running the model to --hook " + o.hook + ", not to the SAE's recorded hook " + sae.hook);
    pass = std::make_unique<Pass>(o, d_sae, o.latents.empty() ? parse_latent_list("0-" + std::to_string(d_sae - 1), d_sae)
                                                              : parse_latent_list(o.latents, d_sae));
    CollectModelOptions co;
    co.model_dir = o.model_dir;
    co.hooks = {hook};
    co.inputs = o.text;
    co.jsonl_field = o.jsonl_field;
    co.lines = o.lines;
    co.replace_invalid_utf8 = o.replace_invalid_utf8;
    co.context = o.context;
    co.batch = o.batch;
    co.device = device_name(device);
    co.compute = parse_compute_option(o.compute);
    co.progress_label = "explain";
    ModelSink sink(o, sae, *pass, token_text);
    run_model_rows(co, sink);
    summary.model = o.model_dir;
  } else {
    ReaderOptions ro;
    ro.threads = o.threads;
    StreamReader reader(o.streams, ro);
    const StreamHeader& h = reader.header();
    const std::string where = streams_display_name(o.streams);
    const bool latents = h.kind == "latents";
    if (latents) {
      if (have_sae && h.d != sae.d_sae)
        throw InputError(where + ": a latents stream of " + std::to_string(h.d) + " latents, but " + o.sae_dir + " has " +
                         std::to_string(sae.d_sae));
      d_sae = h.d;
    } else {
      if (!have_sae) throw UsageError(where + " is an activations stream: give --sae DIR to encode it");
      check_stream_for_sae(h, where, sae, o.sae_dir, "sae-explain");
    }
    if (have_sae) {
      for (const std::string& why : {stream_hook_mismatch(h, sae), stream_model_mismatch(h, sae)})
        if (!why.empty()) throw InputError(where + ": " + why);
    }
    const std::string stream_model =
        h.provenance.contains("model_name") && h.provenance["model_name"].is_string() ? h.provenance["model_name"].get<std::string>() : "";
    if (!o.model_dir.empty()) {
      const ModelConfig cfg = load_model_config(o.model_dir);
      if (have_sae) check_names(o.sae_dir, sae.model, "--model " + o.model_dir, cfg.name);
      check_names(where, stream_model, "--model " + o.model_dir, cfg.name);
      auto tok = Tokenizer::load(o.model_dir);
      const std::string recorded =
          h.provenance.contains("tokenizer") && h.provenance["tokenizer"].is_string() ? h.provenance["tokenizer"].get<std::string>() : "";
      if (!recorded.empty() && recorded != tok->identity())
        throw InputError(where + ": tokenized with " + recorded + ", but " + o.model_dir + "'s tokenizer is " + tok->identity());
      token_text = vocabulary_texts(*tok);
      summary.model = o.model_dir;
    } else {
      summary.model = stream_model;
    }
    if (hook.empty()) hook = h.hook();
    pass = std::make_unique<Pass>(o, d_sae, o.latents.empty() ? parse_latent_list("0-" + std::to_string(d_sae - 1), d_sae)
                                                              : parse_latent_list(o.latents, d_sae));
    if (!latents) pass->set_encoder(sae, device);
    Batch b;
    bool first = true;
    while (reader.next(b)) {
      if (latents && first && (b.token.empty() || b.doc.empty()) && b.rows > 0)
        throw InputError(reader.where() + ": the latents stream has no " +
                         std::string(b.token.empty() && b.doc.empty() ? "token and doc columns" : b.token.empty() ? "token column" : "doc column") +
                         ": sae-explain needs token and doc columns to rebuild each context (sae-collect --model records them, "
                         "sae-encode carries them through)");
      if (b.rows > 0) first = false;
      const int32_t* tok = b.token.empty() ? nullptr : b.token.data();
      const int64_t* doc = b.doc.empty() ? nullptr : b.doc.data();
      const bool more = latents ? pass->add_sparse(b.rows, b.count.data(), b.index.data(), b.value.data(), tok, doc)
                                : pass->add_dense(b.x.data(), b.rows, tok, doc);
      if (!more) break;
    }
    if (pass->miner().rows() == 0) throw InputError(where + ": the input holds no rows");
  }
  pass->done();
  LatentMiner& miner = pass->miner();
  miner.finish();
  st.mine_seconds = since(start);

  // What the decoder says: the logit lens (needs the model's unembedding) and the neighbours.
  auto t0 = Clock::now();
  const std::vector<int64_t>& chosen = miner.latents();
  std::vector<LatentLens> lens;
  if (have_sae && !o.model_dir.empty()) {
    const Unembedding u = load_unembedding(o.model_dir);
    const std::string why = logit_lens_unavailable(sae, u);
    if (why.empty()) lens = logit_lens(sae, u, chosen, o.logit_tokens, o.threads);
    else st.notes.push_back("no logit lens: " + why);
  } else {
    st.notes.push_back(std::string("no logit lens: it needs ") + (have_sae ? "" : "--sae (the decoder) and ") +
                       (o.model_dir.empty() ? "--model (the unembedding)" : ""));
  }
  std::vector<std::vector<Neighbour>> dec_nb;
  if (have_sae) dec_nb = decoder_neighbours(sae, chosen, o.neighbours, o.threads);
  else st.notes.push_back("no decoder neighbours: they need --sae");
  const std::vector<std::vector<Neighbour>> cofire_nb = miner.cofire_neighbours(o.neighbours);
  st.lens_seconds = since(t0);

  // Automated interpretability (docs/autointerp.md): explanations and scores, a chunk of latents at a
  // time (each report rebuilt by the miner), before anything is written.
  AutointerpRun ai;
  if (o.autointerp.explain) {
    const auto ta = Clock::now();
    ai = run_autointerp(chosen.size(), [&](size_t k) { return miner.report(k); }, o.autointerp, o.llm, token_text);
    st.autointerp = ai.aggregates;
    st.explained = ai.explained;
    st.explain_failed = ai.failed;
    st.dry_run_requests = ai.dry_run_requests;
    st.llm_usage = ai.usage;
    st.autointerp_seconds = since(ta);
    if (o.llm.dry_run) {  // the prompts are written; no output directory
      st.rows = miner.rows();
      st.latents = int64_t(chosen.size());
      st.total_seconds = since(start);
      return st;
    }
  }

  t0 = Clock::now();
  summary.sae = have_sae ? o.sae_dir : "";
  summary.hook = hook;
  summary.architecture = have_sae ? sae.arch : "";
  summary.d_sae = d_sae;
  summary.d_in = have_sae ? sae.d_in : 0;
  summary.rows = miner.rows();
  summary.documents = miner.documents();
  summary.latents_reported = int64_t(chosen.size());
  for (size_t k = 0; k < chosen.size(); k++) summary.dead += miner.fires(k) == 0;
  summary.cofire_rows = miner.cofire_rows();
  density_histogram(miner, summary);
  const MinerOptions& m = o.miner;
  summary.options = {{"top", m.top},       {"quantiles", m.quantiles},   {"per_quantile", m.per_quantile},
                     {"contrast", m.contrast}, {"before", m.before},     {"after", m.after},
                     {"cofire_rows", m.cofire_rows}, {"seed", m.seed},  {"logit_tokens", o.logit_tokens},
                     {"neighbours", o.neighbours}, {"max_tokens", o.max_tokens}};
  st.example_bytes = miner.example_bytes();
  st.row_bytes = miner.row_bytes();
  summary.options["memory"] = {{"example_bytes", st.example_bytes}, {"row_bytes", st.row_bytes}};
  summary.options["notes"] = st.notes;
  if (o.autointerp.explain) {
    const AutointerpOptions& a = o.autointerp;
    summary.options["autointerp"] = {{"model", o.llm.model},          {"methods", a.methods},
                                     {"mark_fraction", a.mark_fraction}, {"show_activations", a.show_activations},
                                     {"score_batch", a.batch},          {"logprobs", a.logprobs},
                                     {"prompt_dir", a.prompt_dir},      {"explained", ai.explained},
                                     {"failed", ai.failed}};
    summary.autointerp = nlohmann::json::object();
    for (const Aggregate& g : ai.aggregates) summary.autointerp[g.method] = aggregate_to_json(g);
  }

  const std::string jsonl_path = out.tmp_path() + "/latents.jsonl";
  FILE* jsonl = std::fopen(jsonl_path.c_str(), "wb");
  if (!jsonl) throw InputError(o.output + "/latents.jsonl: cannot write: " + std::strerror(errno));
  std::unique_ptr<FILE, int (*)(FILE*)> jsonl_closer(jsonl, std::fclose);
  std::unique_ptr<DashboardWriter> dash;
  if (o.dashboard) dash = std::make_unique<DashboardWriter>(out.tmp_path(), summary, token_text);
  std::string line;
  for (size_t k = 0; k < chosen.size(); k++) {
    LatentReport r = miner.report(k);
    if (!lens.empty()) {
      r.has_logit_lens = true;
      r.logit_top = std::move(lens[k].top);
      r.logit_bottom = std::move(lens[k].bottom);
      r.logit_top_corrected = std::move(lens[k].top_corrected);
      r.logit_bottom_corrected = std::move(lens[k].bottom_corrected);
    }
    if (!dec_nb.empty()) r.decoder_neighbours = dec_nb[k];
    r.cofire_neighbours = cofire_nb[k];
    if (o.autointerp.explain) attach_autointerp(r, ai.results[k], o.autointerp.methods);
    line.clear();
    append_latent_jsonl(line, r, token_text);
    if (std::fwrite(line.data(), 1, line.size(), jsonl) != line.size())
      throw InputError(o.output + "/latents.jsonl: write failed: " + std::strerror(errno));
    if (dash) dash->add(r);
  }
  if (std::fclose(jsonl_closer.release()) != 0)
    throw InputError(o.output + "/latents.jsonl: write failed: " + std::strerror(errno));
  if (dash) dash->finish();
  cli::write_file_atomic(out.tmp_path() + "/summary.json", summary_to_json(summary).dump(2) + "\n");
  out.commit();
  st.write_seconds = since(t0);

  st.rows = miner.rows();
  st.documents = miner.documents();
  st.latents = int64_t(chosen.size());
  st.dead = summary.dead;
  st.total_seconds = since(start);
  return st;
}

}  // namespace sae
