// sae-explain's costs, as ratios measured in one run (docs/explain.md, "Speed and memory"):
//
//  - with a model: the mining pass over text (forward to the hook, encode, mine) against the
//    forward pass plus the SAE encode alone on the same text (target: at most 1.25x). The model is
//    GPT-2-small-shaped with random weights (written to a temporary directory, with the tokenizer
//    of ../shared/models/gpt2-random), the SAE a random TopK of 16,384 latents (k 32) at
//    blocks.6.hook_resid_post. The decoder's fixed costs (logit lens over 50,257 tokens, decoder
//    neighbours) do not grow with the text and are printed apart.
//  - over a latents stream (16,384 latents, k 32, 1M rows; 200k with --quick): the mining pass's
//    rate against the stream reader's own rate on that stream (target: at least 0.5).
//  - writing latents.jsonl and the dashboard pages for the 16,384 latents against that mining
//    pass (target: less time).
//  - peak memory held by the miner against delphi's design, which keeps every nonzero (about 28
//    bytes each) until the end.
//
// Usage: bench_explain [--quick]
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "base/cli.h"
#include "base/files.h"
#include "base/rng.h"
#include "data/collect_model.h"
#include "explain/explain.h"
#include "model/random.h"
#include "sae/sae.h"
#include "sae/sparse_encode.h"
#include "stream/stream.h"

#include "bench_util.h"

using namespace sae;
using bench::randn;
using bench::seconds_since;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

Sae random_topk(int64_t d_in, int64_t d_sae, int k, uint64_t seed) {
  Sae s;
  s.arch = "topk";
  s.k = k;
  s.d_in = d_in;
  s.d_sae = d_sae;
  s.hook = "blocks.6.hook_resid_post";
  Rng g(seed);
  s.W_enc.resize(size_t(d_in * d_sae));
  for (float& w : s.W_enc) w = float(g.normal() / std::sqrt(double(d_in)));
  s.W_dec.resize(size_t(d_sae * d_in));
  for (int64_t i = 0; i < d_sae; i++)
    for (int64_t j = 0; j < d_in; j++) s.W_dec[size_t(i * d_in + j)] = s.W_enc[size_t(j * d_sae + i)];
  s.b_enc.assign(size_t(d_sae), 0.0f);
  s.b_dec.assign(size_t(d_in), 0.0f);
  return s;
}

// The forward pass to the hook and the encode, doing nothing with the latents.
class EncodeOnly : public ModelRowSink {
 public:
  explicit EncodeOnly(const Sae& sae) : sae_(sae) {}
  void start(const ModelRowsContext&) override { enc_ = std::make_unique<SparseEncoder>(sae_, Device::cpu, 0); }
  bool rows(size_t, Batch& b) override {
    enc_->encode(b.x.data(), b.rows, count, index, value);
    return true;
  }
  std::vector<uint32_t> count, index;
  std::vector<float> value;

 private:
  const Sae& sae_;
  std::unique_ptr<SparseEncoder> enc_;
};

// A latents stream of `rows` rows of `k` distinct latents each (skewed towards low indices, as
// firing densities are), with token ids and 128-row documents.
int64_t write_latents_stream(const std::string& path, int64_t rows, int64_t d_sae, int k) {
  cli::Output out(path, true);
  StreamHeader h = make_header("latents", d_sae, DType::f32);
  StreamWriter w(out.file(), path, h, WriterOptions{3, 2, false});
  Rng g(7);
  int64_t nnz = 0;
  std::vector<char> used(size_t(d_sae), 0);
  for (int64_t r0 = 0; r0 < rows; r0 += 4096) {
    Batch b;
    b.rows = std::min<int64_t>(4096, rows - r0);
    for (int64_t r = r0; r < r0 + b.rows; r++) {
      std::vector<uint32_t> idx;
      while (int(idx.size()) < k) {
        // density ~ 1 / (i + 64): a long tail of rare latents
        const double u = g.uniform();
        const uint32_t l = uint32_t(std::min<double>(double(d_sae - 1), 64.0 * (std::pow(double(d_sae + 64) / 64.0, u) - 1.0)));
        if (!used[l]) used[l] = 1, idx.push_back(l);
      }
      std::sort(idx.begin(), idx.end());
      for (uint32_t l : idx) {
        used[l] = 0;
        b.index.push_back(l);
        b.value.push_back(float(0.1 + g.exponential()));
      }
      b.count.push_back(uint32_t(k));
      b.token.push_back(int32_t(g.below(50257)));
      b.doc.push_back(r / 128);
      b.pos.push_back(int32_t(r % 128));
      nnz += k;
    }
    w.write(std::move(b));
  }
  w.finish();
  out.commit();
  return nnz;
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const std::string shared = std::getenv("SAE_SHARED") ? std::getenv("SAE_SHARED") : "../shared";
  TempDir tmp("bench-explain");
  const std::string dir = tmp.path();
  std::printf("bench_explain%s: 16,384 latents, k 32\n", quick ? " --quick" : "");

  // 1. With a model.
  const std::string tok_src = shared + "/models/gpt2-random";
  const std::string text = shared + "/data/tinystories-sample.txt";
  if (!fs::exists(tok_src + "/tokenizer.json") || !fs::exists(text)) {
    std::printf("model pass: skipped: %s or %s is absent\n", tok_src.c_str(), text.c_str());
  } else {
    const std::string model = dir + "/gpt2-small";
    fs::create_directories(model);
    for (const char* f : {"tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"})
      if (fs::exists(tok_src + "/" + f)) fs::copy_file(tok_src + "/" + f, model + "/" + f);
    write_random_model(model, {{"model_type", "gpt2"}, {"n_embd", 768}, {"n_layer", 12}, {"n_head", 12},
                               {"n_positions", 1024}, {"vocab_size", 50257}, {"_name_or_path", "gpt2-small-random"}},
                       1);
    const Sae sae = random_topk(768, 16384, 32, 2);
    save_sae(sae, dir + "/sae");
    const std::string part = dir + "/text.txt";
    {
      std::string t = read_file(text);
      t.resize(std::min(t.size(), size_t(quick ? 20000 : 80000)));
      t = t.substr(0, t.rfind("\n\n") + 1);
      FILE* f = std::fopen(part.c_str(), "wb");
      std::fwrite(t.data(), 1, t.size(), f);
      std::fclose(f);
    }
    CollectModelOptions co;
    co.model_dir = model;
    co.hooks = {"blocks.6.hook_resid_post"};
    co.inputs = {part};
    EncodeOnly sink(sae);
    auto t0 = Clock::now();
    const CollectModelStats cs = run_model_rows(co, sink);
    const double base = seconds_since(t0);

    ExplainOptions eo;
    eo.sae_dir = dir + "/sae";
    eo.model_dir = model;
    eo.text = {part};
    eo.output = dir + "/dash-model";
    eo.dashboard = false;
    const ExplainStats st = run_explain(eo);
    std::printf("model pass: %lld tokens; forward + encode alone %.2f s, sae-explain's mining pass %.2f s: "
                "ratio %.2f (target <= 1.25)\n",
                (long long)cs.rows, base, st.mine_seconds, st.mine_seconds / base);
    std::printf("  fixed decoder costs (logit lens over 50,257 tokens, decoder and co-firing neighbours): %.2f s; "
                "writing latents.jsonl %.2f s\n",
                st.lens_seconds, st.write_seconds);
  }

  // 2. Over a latents stream.
  const int64_t rows = quick ? 200000 : 1000000;
  const std::string stream = dir + "/latents.sae";
  const int64_t nnz = write_latents_stream(stream, rows, 16384, 32);
  double read = 1e30;
  for (int round = 0; round < 2; round++) {
    auto t0 = Clock::now();
    StreamReader r({stream});
    Batch b;
    while (r.next(b)) {
    }
    read = std::min(read, seconds_since(t0));
  }
  ExplainOptions eo;
  eo.streams = {stream};
  eo.output = dir + "/dash-stream";
  const ExplainStats st = run_explain(eo);
  std::printf("latents stream: %lld rows; reader alone %.2f s (%.0f k rows/s), mining pass %.2f s (%.0f k rows/s): "
              "rate ratio %.2f (target >= 0.5)\n",
              (long long)rows, read, double(rows) / read / 1e3, st.mine_seconds, double(rows) / st.mine_seconds / 1e3,
              read / st.mine_seconds);
  std::printf("  writing latents.jsonl and the dashboard for 16,384 latents: %.2f s, %.2f of the mining pass "
              "(target < 1); co-firing and decoder: %.2f s\n",
              st.write_seconds, st.write_seconds / st.mine_seconds, st.lens_seconds);
  const double held = double(st.example_bytes + st.row_bytes), delphi = 28.0 * double(nnz);
  std::printf("  memory: the miner held %.1f MB (examples %.1f MB + token ids %.1f MB); keeping every nonzero as "
              "delphi does: %lld x 28 B = %.1f MB (%.1fx)\n",
              held / 1e6, double(st.example_bytes) / 1e6, double(st.row_bytes) / 1e6, (long long)nnz, delphi / 1e6,
              delphi / held);
  return 0;
}
