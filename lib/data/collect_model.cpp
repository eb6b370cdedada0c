// sae-collect --model: documents -> tokens -> windows -> batched forward passes -> one activation
// stream per hook.
#include "data/collect_model.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <set>

#include "backend/backend.h"
#include "base/cli.h"
#include "model/model.h"
#include "tokenizer/documents.h"
#include "tokenizer/tokenizer.h"

namespace sae {

using Clock = std::chrono::steady_clock;

namespace {
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }
}  // namespace

std::string collect_output_path(const std::string& pattern, const std::string& hook) {
  std::string out = pattern;
  for (size_t at = out.find("{hook}"); at != std::string::npos; at = out.find("{hook}", at + hook.size()))
    out.replace(at, 6, hook);
  return out;
}

namespace {

// The checks that need no model, made before anything is loaded or opened.
void check_options(const CollectModelOptions& o) {
  if (o.hooks.empty()) throw UsageError("--hook: give at least one hook (e.g. blocks.0.hook_resid_post)");
  if (o.batch < 1) throw UsageError("--batch must be at least 1, got " + std::to_string(o.batch));
  if (o.batch_rows < 1) throw UsageError("--batch-rows must be at least 1, got " + std::to_string(o.batch_rows));
  if (o.context < 2)
    throw UsageError("--context must be at least 2 (the BOS token and one token of text), got " + std::to_string(o.context));
  std::set<std::string> seen;
  for (const auto& h : o.hooks)
    if (!seen.insert(h).second) throw UsageError("--hook: " + h + " is given twice");
}

}  // namespace

CollectModelStats run_model_rows(const CollectModelOptions& o, ModelRowSink& sink) {
  const auto start = Clock::now();
  CollectModelStats st;
  check_options(o);
  const Device dev = resolve_device(o.device);
  check_compute_device(o.compute, dev);
  auto be = make_backend(dev);
  Model model(o.model_dir, *be, o.compute);
  const ModelConfig& cfg = model.config();
  std::vector<HookPoint> points;
  for (const auto& h : o.hooks) {
    try {
      points.push_back(parse_hook(h, cfg));
    } catch (const UsageError& e) {
      throw UsageError(std::string("--hook: ") + e.what());
    }
  }
  if (o.context > cfg.max_positions)
    throw UsageError("--context " + std::to_string(o.context) + " is longer than the model's " +
                     std::to_string(cfg.max_positions) + " positions (" + cfg.max_positions_field + " in " +
                     o.model_dir + "/config.json)");
  auto tok = Tokenizer::load(o.model_dir);
  const int32_t bos = sequence_bos(tok->bos_id(), cfg, o.model_dir);
  st.load_seconds = since(start);
  sink.start(ModelRowsContext{cfg, points, *tok, bos, be->device()});

  std::vector<Batch> gathered(points.size());  // each hook's rows for its next batch
  bool stopped = false;
  auto hand_over = [&](size_t k) {
    if (gathered[k].rows == 0 || stopped) return;
    if (!sink.rows(k, gathered[k])) stopped = true;
    gathered[k] = Batch();
  };
  std::vector<TextWindow> pending;
  ForwardOptions fo;
  fo.capture = points;
  ForwardResult r;  // reused: its buffers keep their memory from batch to batch
  auto run_batch = [&] {
    if (pending.empty() || stopped) return;
    int64_t T = 0;
    for (const auto& w : pending) T = std::max<int64_t>(T, int64_t(w.tokens.size()));
    const int64_t B = int64_t(pending.size());
    // Shorter windows are padded after their end (with BOS): causal attention keeps the padding
    // from reaching their rows, which are the only ones kept.
    std::vector<int32_t> ids(size_t(B * T), bos);
    for (int64_t b = 0; b < B; b++) std::copy(pending[size_t(b)].tokens.begin(), pending[size_t(b)].tokens.end(), ids.begin() + b * T);
    auto t0 = Clock::now();
    model.forward(ids.data(), B, T, fo, r);
    st.forward_seconds += since(t0);
    t0 = Clock::now();
    const int64_t first = o.exclude_bos ? 1 : 0;
    for (size_t k = 0; k < points.size(); k++) {
      Batch& g = gathered[k];
      const std::vector<float>& acts = r.captured[k];
      const int64_t D = hook_width(points[k], cfg);
      for (int64_t b = 0; b < B; b++) {
        const TextWindow& w = pending[size_t(b)];
        for (int64_t p = first; p < int64_t(w.tokens.size()); p++) {
          const float* row = acts.data() + (b * T + p) * D;
          g.x.insert(g.x.end(), row, row + D);
          g.token.push_back(w.tokens[size_t(p)]);
          g.doc.push_back(w.doc);
          g.pos.push_back(int32_t(p));
          g.rows++;
          if (g.rows == o.batch_rows) hand_over(k);
        }
      }
    }
    for (const auto& w : pending) st.rows += int64_t(w.tokens.size()) - first;
    st.write_seconds += since(t0);
    st.sequences += B;
    pending.clear();
  };

  cli::Progress progress;
  TextDocumentReader reader(o.inputs, o.jsonl_field, o.lines, o.replace_invalid_utf8);
  TextDocument doc;
  std::vector<TextWindow> doc_windows;  // one document's, handed to `pending` a batch at a time
  for (int64_t doc_id = 0; !stopped; doc_id++) {
    auto t0 = Clock::now();
    if (!reader.next(doc)) break;
    std::vector<int32_t> ids = encode_document(*tok, doc);
    st.tokenize_seconds += since(t0);
    st.documents++;
    if (ids.empty()) {
      st.empty_documents++;
      continue;
    }
    st.tokens += int64_t(ids.size());
    doc_windows.clear();
    append_windows(ids, doc_id, bos, o.context, doc_windows);
    for (auto& w : doc_windows) {
      pending.push_back(std::move(w));
      if (int64_t(pending.size()) == o.batch) run_batch();
    }
    if (progress.enabled()) {
      const double s = since(start);
      progress.update(o.progress_label + ": " + cli::human_count(double(st.documents)) + " documents, " +
                      cli::human_count(double(st.tokens)) + " tokens, " +
                      cli::human_count(double(st.tokens) / std::max(s, 1e-9)) + " tokens/s");
    }
  }
  run_batch();
  progress.done();
  if (st.tokens == 0) throw_no_text(o.inputs);  // before anything is committed: no empty stream
  auto t0 = Clock::now();
  for (size_t k = 0; k < points.size(); k++) hand_over(k);
  st.write_seconds += since(t0);
  st.total_seconds = since(start);
  return st;
}

namespace {

// sae-collect's sink: one stream per hook, opened before any text is read so that a bad path
// fails at once, committed only when every one was written.
class StreamSink : public ModelRowSink {
 public:
  explicit StreamSink(const CollectModelOptions& o) : o_(o) {
    const bool pattern = o.output.find("{hook}") != std::string::npos;
    if (o.hooks.size() > 1 && !pattern)
      throw UsageError("--hook: " + std::to_string(o.hooks.size()) +
                       " hooks need one output each: give -o a pattern with {hook}, e.g. -o acts.{hook}.sae");
  }
  void start(const ModelRowsContext& c) override {
    for (size_t i = 0; i < c.points.size(); i++) {
      const std::string path = collect_output_path(o_.output, o_.hooks[i]);
      for (size_t j = 0; j < i; j++)
        if (outs_[j]->name() == path && path != "-")
          throw UsageError("-o: hooks " + o_.hooks[j] + " and " + o_.hooks[i] + " would both write " + path);
      outs_.push_back(std::make_unique<cli::Output>(path, true));
      StreamHeader head = make_header("activations", hook_width(c.points[i], c.cfg), o_.dtype);
      head.provenance["model"] = o_.model_dir;
      if (!c.cfg.name.empty()) head.provenance["model_name"] = c.cfg.name;
      head.provenance["model_type"] = c.cfg.model_type;
      head.provenance["hook"] = o_.hooks[i];
      head.provenance["layer"] = c.points[i].layer;
      head.provenance["context"] = o_.context;
      head.provenance["prepend_bos"] = true;
      head.provenance["exclude_bos"] = o_.exclude_bos;
      head.provenance["bos_token_id"] = c.bos;
      head.provenance["tokenizer"] = c.tokenizer.identity();
      head.provenance["device"] = device_name(c.device);
      head.provenance["compute"] = compute_name(o_.compute);
      writers_.push_back(std::make_unique<StreamWriter>(outs_.back()->file(), outs_.back()->name(), head, o_.writer));
    }
  }
  bool rows(size_t hook, Batch& b) override {
    writers_[hook]->write(std::move(b));
    return true;
  }
  void commit() {
    for (auto& w : writers_) w->finish();
    for (auto& o : outs_) o->commit();
  }

 private:
  const CollectModelOptions& o_;
  std::vector<std::unique_ptr<cli::Output>> outs_;
  std::vector<std::unique_ptr<StreamWriter>> writers_;
};

}  // namespace

CollectModelStats collect_model(const CollectModelOptions& o) {
  check_options(o);
  StreamSink sink(o);
  CollectModelStats st = run_model_rows(o, sink);
  const auto t0 = Clock::now();
  sink.commit();
  st.write_seconds += since(t0);
  st.total_seconds += since(t0);
  return st;
}

}  // namespace sae
