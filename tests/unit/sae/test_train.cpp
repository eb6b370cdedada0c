// The trainer: export with the input scale folded in (and read back), bit-identical resume on the
// CPU, sweeps equal to separate runs, the first-sample estimates, schedules, sweep parsing and
// input errors.
#include <gtest/gtest.h>
#include <omp.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "base/errors.h"
#include "base/files.h"
#include "data/toy.h"
#include "sae/arch.h"
#include "sae/ops.h"
#include "sae/sae.h"
#include "sae/trainer.h"

using namespace sae;
namespace fs = std::filesystem;

namespace {

const char* kArchs[] = {"relu", "topk", "batchtopk", "jumprelu", "gated", "matryoshka"};

std::string slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// Toy rows with a non-trivial scale (x10) and offset, so that the input scaling and b_dec matter.
std::vector<float> rows(int64_t n, int64_t d = 16, int64_t seed = 3) {
  toy::ToyConfig c;
  c.d = d;
  c.features = 48;
  c.active = 3;
  c.seed = seed;
  toy::ToyModel m(c);
  Batch b;
  m.generate(0, n, b, nullptr, 1);
  for (size_t i = 0; i < b.x.size(); i++) b.x[i] = 10.0f * b.x[i] + 0.5f * float(i % size_t(d));
  return b.x;
}

RunSpec spec(const std::string& arch, int64_t d = 16, int64_t n = 40) {
  RunSpec s;
  s.arch.arch = arch;
  s.arch.d_in = d;
  s.arch.d_sae = n;
  s.arch.k = 3;
  s.arch.k_aux = 4;
  s.arch.lambda = arch == "jumprelu" ? 1.0f : 3.0f;
  s.arch.bandwidth = 0.2f;
  s.arch.init_threshold = 0.5f;
  s.arch.freq_scale = arch == "jumprelu" ? 0.05f : 0.0f;
  if (arch == "matryoshka") s.arch.prefixes = {8, 20, n};
  s.lr = 3e-3f;
  return s;
}

TrainOptions options(int64_t tokens) {
  TrainOptions o;
  o.batch = 64;
  o.tokens = tokens;
  o.init_rows = 256;
  o.lr_warmup = 0.1;
  o.lr_decay = 0.3;
  o.l1_warmup = 0.2;
  o.dead_tokens = 300;  // so AuxK and resampling happen in these short runs
  o.resample_every = 1000;
  o.density_window = 700;
  o.progress = false;
  return o;
}

}  // namespace

// The exported SAE, applied by the reference encoder/decoder to raw activations, gives the
// training-time reconstruction of the scaled activations divided by the scale; and save_sae +
// load_sae preserve it. Tolerance 1e-4 relative to the row norm: the fold multiplies W_enc by
// the scale instead of the input, a float rounding difference of a few ulp per product.
TEST(Train, ExportFoldsTheScaleAndReadsBack) {
  auto ops = make_cpu_ops();
  for (const char* arch : kArchs) {
    SCOPED_TRACE(arch);
    const int64_t d = 16;
    std::vector<float> x = rows(1600, d);
    MemoryRowSource src(x, d);
    Trainer t(options(1600), {spec(arch)}, *ops);
    ASSERT_EQ(t.train(src), Trainer::Status::done);
    EXPECT_NE(t.scale(), 1.0f);
    const int64_t B = 200;
    std::vector<float> raw(x.begin(), x.begin() + B * d), xs(raw.size());
    for (size_t i = 0; i < raw.size(); i++) xs[i] = raw[i] * t.scale();
    Buffer<float> xd(ops->backend(), xs.size()), xh(ops->backend(), xs.size());
    xd.upload(xs);
    t.arch(0).reconstruct(xd.data(), B, xh.data());
    std::vector<float> train_xhat = xh.to_vector();
    TempDir tmp;
    Sae s = t.exported(0);
    SaveOptions so;
    so.log10_density = t.log10_density(0);
    save_sae(s, tmp / "sae", so);
    Sae back = load_sae(tmp / "sae");
    EXPECT_EQ(back.arch, std::string(arch) == "relu" ? "standard"
                         : std::string(arch) == "batchtopk" || std::string(arch) == "matryoshka" ? "jumprelu"
                                                                                                 : arch);
    std::vector<float> f(size_t(B * back.d_sae)), out(raw.size());
    back.encode(raw.data(), B, f.data());
    back.decode(f.data(), B, out.data());
    double worst = 0, norm = 0;
    for (int64_t r = 0; r < B; r++) {
      double rn = 0;
      for (int64_t j = 0; j < d; j++) rn += double(raw[size_t(r * d + j)]) * raw[size_t(r * d + j)];
      norm = std::max(norm, std::sqrt(rn));
      for (int64_t j = 0; j < d; j++)
        worst = std::max(worst, std::abs(double(out[size_t(r * d + j)]) - train_xhat[size_t(r * d + j)] / t.scale()));
    }
    EXPECT_LT(worst, 1e-4 * norm);
    EXPECT_TRUE(fs::exists(tmp / "sae/sparsity.safetensors"));
  }
}

// Training N tokens in one go and training N/2, checkpointing, and resuming for the rest give the
// same bytes, for every architecture (with AuxK, relu resampling, density windows, schedules and
// BatchTopK's threshold estimate all active), across an epoch boundary too.
TEST(Train, ResumeIsBitIdentical) {
  auto ops = make_cpu_ops();
  for (const char* arch : kArchs) {
    SCOPED_TRACE(arch);
    const int64_t d = 16, N = 2240;  // 35 steps; 2 epochs of 1120 rows
    std::vector<float> x = rows(1120, d);
    TempDir tmp;
    TrainOptions o = options(N);
    o.epochs = 2;
    o.output = tmp / "a";
    {
      MemoryRowSource src(x, d);
      Trainer t(o, {spec(arch)}, *ops);
      ASSERT_EQ(t.train(src), Trainer::Status::done);
      t.export_all();
    }
    TrainOptions o2 = o;
    o2.output = tmp / "b";
    o2.stop_after = 1300;  // in the second epoch, mid-way through its rows
    o2.checkpoint_dir = tmp / "ckpt";
    {
      MemoryRowSource src(x, d);
      Trainer t(o2, {spec(arch)}, *ops);
      ASSERT_EQ(t.train(src), Trainer::Status::stopped);
      EXPECT_EQ(t.tokens_seen(), 1344);
    }
    {
      auto t = Trainer::resume(tmp / "ckpt", *ops, [](TrainOptions& opt) { opt.stop_after = 0; });
      MemoryRowSource src(x, d);
      ASSERT_EQ(t->train(src), Trainer::Status::done);
      EXPECT_EQ(t->tokens_seen(), N);
      t->export_all();
    }
    for (const char* f : {"sae_weights.safetensors", "sparsity.safetensors", "cfg.json"})
      EXPECT_EQ(slurp(tmp / "a/" + f), slurp(tmp / "b/" + f)) << f;
  }
}

// A sweep trains every run on the same batches from one read; each run equals the same run
// trained alone.
TEST(Train, SweepRunsEqualSeparateRuns) {
  auto ops = make_cpu_ops();
  const int64_t d = 16;
  std::vector<float> x = rows(960, d);
  RunSpec base = spec("topk");
  std::vector<RunSpec> runs = parse_sweep("k=2,4;seed=1,2", base);
  ASSERT_EQ(runs.size(), 4u);
  EXPECT_EQ(runs[0].label, "k-2_seed-1");
  EXPECT_EQ(runs[3].label, "k-4_seed-2");
  TempDir tmp;
  TrainOptions o = options(960);
  o.sweep = true;
  o.output = tmp / "sweep";
  MemoryRowSource src(x, d);
  Trainer t(o, runs, *ops);
  ASSERT_EQ(t.train(src), Trainer::Status::done);
  t.export_all();
  for (size_t i = 0; i < runs.size(); i++) {
    TrainOptions oi = options(960);
    oi.output = tmp / ("single-" + std::to_string(i));
    MemoryRowSource s1(x, d);
    Trainer one(oi, {runs[i]}, *ops);
    ASSERT_EQ(one.train(s1), Trainer::Status::done);
    one.export_all();
    EXPECT_EQ(slurp(tmp / ("sweep/" + runs[i].label + "/sae_weights.safetensors")),
              slurp(oi.output + "/sae_weights.safetensors"))
        << runs[i].label;
  }
}

TEST(Train, SweepParsing) {
  RunSpec base = spec("relu");
  auto r = parse_sweep("lambda=1,2.5 ; latents=32", base);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[1].arch.lambda, 2.5f);
  EXPECT_EQ(r[1].arch.d_sae, 32);
  EXPECT_EQ(r[1].label, "lambda-2.5_latents-32");
  TempDir tmp;
  std::ofstream(tmp / "runs.txt") << "# two runs\nk=8 seed=3\narch=topk, lr=0.001  # trailing comment\n\n";
  r = parse_sweep("@" + tmp / "runs.txt", base);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].arch.k, 8);
  EXPECT_EQ(r[0].arch.seed, 3u);
  EXPECT_EQ(r[1].arch.arch, "topk");
  EXPECT_FLOAT_EQ(r[1].lr, 0.001f);
  auto msg = [&](const std::string& s) {
    try {
      parse_sweep(s, base);
    } catch (const UsageError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(msg("width=3"), "--sweep: unknown key 'width' (expected arch, k, k-aux, aux-coef, lambda, latents, seed, "
                            "lr, bandwidth, freq-scale)");
  EXPECT_EQ(msg("k=two"), "--sweep: k=two is not a number");
  EXPECT_EQ(msg("k=1.5"), "--sweep: k=1.5 is not an integer");
  EXPECT_EQ(msg("k=1,1"), "--sweep: run 'k-1' appears twice");
  EXPECT_EQ(msg("k"), "--sweep: expected key=v1,v2,... got 'k'");
  EXPECT_EQ(msg("k=1,"), "--sweep: empty value for 'k'");
}

// b_dec starts at the geometric median of the (scaled) first sample; the scale makes
// E||x||^2 = d_in on that sample.
TEST(Train, FirstSampleEstimates) {
  // The geometric median of points symmetric about c is c; an outlier moves the mean, not it.
  std::vector<float> pts = {1, 1, 3, 1, 1, 3, 3, 3, 2, 2};  // 4 corners of a square and the centre, d=2
  std::vector<float> gm = geometric_median(pts.data(), 5, 2);
  EXPECT_NEAR(gm[0], 2.0, 1e-5);
  EXPECT_NEAR(gm[1], 2.0, 1e-5);
  std::vector<float> with_outlier = {0, 0, 0, 0, 0, 0, 1000, 1000};  // three at 0, one far away
  gm = geometric_median(with_outlier.data(), 4, 2);
  EXPECT_LT(std::abs(gm[0]), 1e-3);  // the mean would be 250

  auto ops = make_cpu_ops();
  const int64_t d = 16;
  std::vector<float> x = rows(512, d);
  TrainOptions o = options(64);
  o.init_rows = 256;
  MemoryRowSource src(x, d);
  Trainer t(o, {spec("topk")}, *ops);
  t.train(src);
  double ms = 0;
  for (int64_t r = 0; r < 256; r++)
    for (int64_t j = 0; j < d; j++) ms += double(x[size_t(r * d + j)] * t.scale()) * (x[size_t(r * d + j)] * t.scale());
  EXPECT_NEAR(ms / 256, double(d), 1e-3 * d);
}

// Learning rate: linear warm-up over the first 10% and decay to 0 over the last 30% of --tokens.
TEST(Train, LearningRateSchedule) {
  auto ops = make_cpu_ops();
  const int64_t d = 16;
  std::vector<float> x = rows(1000, d);
  auto lr_after = [&](int64_t tokens) {
    TrainOptions o = options(1000);
    o.stop_after = tokens;
    TempDir tmp;
    o.checkpoint_dir = tmp / "c";
    MemoryRowSource src(x, d);
    Trainer t(o, {spec("topk")}, *ops);
    t.train(src);
    return t.last_metrics(0).lr;
  };
  const double lr = 3e-3;
  EXPECT_NEAR(lr_after(64), lr * 64 / 100.0, 1e-9);       // first step ends at 64 tokens, warm-up to 100
  EXPECT_NEAR(lr_after(512), lr, 1e-9);                   // plateau
  EXPECT_NEAR(lr_after(832), lr * (1000 - 768) / 300.0, 1e-9);  // step starting at 768, decay from 700
}

TEST(Train, ResumeRefusesADifferentWidth) {
  auto ops = make_cpu_ops();
  TempDir tmp;
  TrainOptions o = options(256);
  o.stop_after = 64;
  o.checkpoint_dir = tmp / "ckpt";
  {
    std::vector<float> x = rows(256, 16);
    MemoryRowSource src(x, 16);
    Trainer t(o, {spec("topk")}, *ops);
    ASSERT_EQ(t.train(src), Trainer::Status::stopped);
  }
  auto t = Trainer::resume(tmp / "ckpt", *ops);
  std::vector<float> x = rows(256, 12);
  MemoryRowSource src(x, 12);
  try {
    t->train(src);
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(), "<memory>: rows have d=12 but the checkpoint was trained on d_in=16");
  }
  try {
    Trainer::resume(tmp / "nothing", *ops);
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()), tmp / "nothing" + ": not a sae-train checkpoint (no trainer.json)");
  }
}

TEST(Train, EmptyInputIsAnError) {
  auto ops = make_cpu_ops();
  MemoryRowSource src({}, 16);
  Trainer t(options(0), {spec("topk")}, *ops);
  try {
    t.train(src);
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(), "<memory>: no activation rows to train on");
  }
}

// Out-of-range configurations are usage errors naming the option.
TEST(Train, ConfigurationErrors) {
  auto msg = [](ArchConfig c) {
    try {
      validate_arch_config(c);
    } catch (const UsageError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  ArchConfig c;
  c.d_in = 16;
  c.d_sae = 64;
  c.arch = "topk";
  EXPECT_EQ(msg(c), "no error");
  c.k = 65;
  EXPECT_EQ(msg(c), "--k 65 exceeds --latents 64");
  c.k = 0;
  EXPECT_EQ(msg(c), "--k must be at least 1 (got 0)");
  c.k = 4;
  c.arch = "relu";
  c.lambda = -1;
  EXPECT_EQ(msg(c), "--lambda must be >= 0 (got -1)");
  c.lambda = 1;
  c.arch = "sparse";
  EXPECT_EQ(msg(c), "--arch: unknown architecture 'sparse' (expected relu, topk, batchtopk, jumprelu, gated, matryoshka)");
  c.arch = "jumprelu";
  c.bandwidth = 0;
  EXPECT_EQ(msg(c), "--bandwidth must be > 0 (got 0)");
  c.bandwidth = 0.1f;
  c.arch = "matryoshka";
  c.prefixes = {16, 8, 64};
  EXPECT_EQ(msg(c), "--prefixes: sizes must be positive and strictly increasing (got 8 after 16)");
  c.prefixes = {16, 32};
  EXPECT_EQ(msg(c), "--prefixes: the last size must equal --latents 64 (got 32)");
  EXPECT_EQ(default_matryoshka_prefixes(1024), (std::vector<int64_t>{16, 64, 256, 1024}));
  EXPECT_EQ(default_matryoshka_prefixes(8), (std::vector<int64_t>{2, 8}));
}

namespace {
// Writes rows (rows x d) as an activations stream in batches of `per` rows.
void write_stream(const std::string& path, const std::vector<float>& x, int64_t d, int64_t per,
                  const std::string& kind = "activations") {
  FILE* f = fopen(path.c_str(), "wb");
  ASSERT_TRUE(f);
  StreamHeader h = make_header(kind, d, DType::f32);
  h.provenance["model"] = "m";
  h.provenance["hook"] = "blocks.0.hook_resid_post";
  h.provenance["context"] = 128;
  {
    StreamWriter w(f, path, h);
    const int64_t rows = int64_t(x.size()) / d;
    for (int64_t r = 0; r < rows; r += per) {
      Batch b;
      b.rows = std::min(per, rows - r);
      if (kind == "latents") {
        b.count.assign(size_t(b.rows), 0);
      } else {
        b.x.assign(x.begin() + r * d, x.begin() + (r + b.rows) * d);
      }
      w.write(b);
    }
    w.finish();
  }
  fclose(f);
}
}  // namespace

// Streams: NaN rows stop training with the reader's message naming the batch, or are skipped and
// counted; a stream without rows and a latents stream are input errors; the header's model, hook
// and context reach the SAE's cfg.
TEST(Train, StreamInputs) {
  TempDir tmp;
  const int64_t d = 16;
  std::vector<float> x = rows(600, d);
  x[size_t(250 * d + 3)] = NAN;
  x[size_t(410 * d)] = INFINITY;
  write_stream(tmp / "nan.sae", x, d, 200);
  auto ops = make_cpu_ops();
  {
    StreamRowSource src({tmp / "nan.sae"}, false);
    Trainer t(options(0), {spec("topk")}, *ops);
    try {
      t.train(src);
      FAIL() << "no error";
    } catch (const InputError& e) {
      EXPECT_EQ(std::string(e.what()), tmp / "nan.sae" + ": batch 2: row 50 has a NaN or Inf value (1 such row in this batch)");
    }
  }
  {
    StreamRowSource src({tmp / "nan.sae"}, true);
    TrainOptions o = options(0);
    o.output = tmp / "sae";
    Trainer t(o, {spec("topk")}, *ops);
    t.set_provenance(src.header().provenance, {tmp / "nan.sae"});
    ASSERT_EQ(t.train(src), Trainer::Status::done);
    EXPECT_EQ(src.skipped(), 2);
    EXPECT_EQ(t.tokens_seen(), 598);
    t.export_all();
    Sae s = load_sae(tmp / "sae");
    EXPECT_EQ(s.model, "m");
    EXPECT_EQ(s.hook, "blocks.0.hook_resid_post");
    EXPECT_EQ(s.cfg["metadata"]["context_size"], 128);
    EXPECT_EQ(s.cfg["metadata"]["saetools_training"]["skipped_nonfinite_rows"], 2);
  }
  write_stream(tmp / "none.sae", {}, d, 10);
  {
    StreamRowSource src({tmp / "none.sae"}, false);
    Trainer t(options(0), {spec("topk")}, *ops);
    try {
      t.train(src);
      FAIL() << "no error";
    } catch (const InputError& e) {
      EXPECT_EQ(std::string(e.what()), tmp / "none.sae" + ": no activation rows to train on");
    }
  }
  write_stream(tmp / "lat.sae", std::vector<float>(size_t(10 * d)), d, 10, "latents");
  try {
    StreamRowSource src({tmp / "lat.sae"}, false);
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()), tmp / "lat.sae" + ": a 'latents' stream; sae-train needs an activations stream");
  }
}

// The same seed gives the same bytes, whatever the number of OpenMP threads (every reduction of
// the CPU op set has a fixed order); another seed gives other weights. The shapes are large
// enough for every op to take its multi-threaded path (see kParMin in lib/sae/ops_cpu.cpp).
TEST(Train, DeterministicAcrossThreadCounts) {
  auto ops = make_cpu_ops();
  const int64_t d = 160, n = 2048, B = 512;
  std::vector<float> x = rows(2 * B, d);
  TempDir tmp;
  auto run = [&](const std::string& name, int threads, uint64_t seed) {
    int before = omp_get_max_threads();
    omp_set_num_threads(threads);
    for (const char* arch : kArchs) {
      TrainOptions o = options(2 * B);
      o.batch = B;
      o.init_rows = B;
      o.dead_tokens = B;  // AuxK in the second step
      o.output = tmp / (name + "-" + arch);
      RunSpec s = spec(arch, d, n);
      s.arch.k = 8;
      s.arch.k_aux = 32;
      if (std::string(arch) == "matryoshka") s.arch.prefixes = {128, 512, n};
      s.arch.seed = seed;
      MemoryRowSource src(x, d);
      Trainer t(o, {s}, *ops);
      t.train(src);
      t.export_all();
    }
    omp_set_num_threads(before);
  };
  run("one", 1, 7);
  run("two", 2, 7);
  run("seed", 2, 8);
  for (const char* arch : kArchs) {
    SCOPED_TRACE(arch);
    std::string a = slurp(tmp / (std::string("one-") + arch + "/sae_weights.safetensors"));
    EXPECT_EQ(a, slurp(tmp / (std::string("two-") + arch + "/sae_weights.safetensors")));
    EXPECT_NE(a, slurp(tmp / (std::string("seed-") + arch + "/sae_weights.safetensors")));
  }
}

// relu resampling: with a sparsity penalty strong enough to kill latents, dead latents are
// re-initialised every --resample-every tokens (counted), come back with unit-direction decoder
// rows scaled to the live rows' mean norm, and fire again.
TEST(Train, ReluResamplesDeadLatents) {
  auto ops = make_cpu_ops();
  const int64_t d = 16;
  std::vector<float> x = rows(4096, d);
  TrainOptions o = options(4096);
  o.l1_warmup = 0;
  o.dead_tokens = 256;
  o.resample_every = 1024;
  RunSpec s = spec("relu");
  s.arch.lambda = 40;
  s.lr = 1e-2f;
  MemoryRowSource src(x, d);
  Trainer t(o, {s}, *ops);
  ASSERT_EQ(t.train(src), Trainer::Status::done);
  EXPECT_GT(t.last_metrics(0).resampled, 0);
  TrainOptions o2 = o;
  o2.resample_every = 0;
  MemoryRowSource src2(x, d);
  Trainer t2(o2, {s}, *ops);
  ASSERT_EQ(t2.train(src2), Trainer::Status::done);
  EXPECT_EQ(t2.last_metrics(0).resampled, 0);
  // Without resampling more latents end up dead.
  EXPECT_GT(t2.last_metrics(0).dead_frac, t.last_metrics(0).dead_frac);
}
