// The SAE training loop: reads rows from a source (activation streams, or memory in tests),
// estimates the input scale and b_dec on the first sample, trains one or more SAEs (a sweep) on
// the same batches with Adam, warm-up/decay schedules, gradient clipping and the decoder-norm
// constraint, tracks dead latents and firing densities, checkpoints (every N tokens, on
// SIGINT/SIGTERM, or after --stop-after) and resumes bit-identically on the CPU, logs JSON lines,
// and writes each SAE as a SAELens directory.
#pragma once
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/cli.h"
#include "base/dtype.h"
#include "sae/arch.h"
#include "sae/ops.h"
#include "sae/row_source.h"
#include "sae/sweep.h"

namespace sae {

struct TrainOptions {
  int64_t batch = 4096;
  int64_t tokens = 0;  // budget over all epochs (0: everything, epochs times)
  int epochs = 1;
  float beta1 = 0.9f, beta2 = 0.999f, adam_eps = 1e-8f;
  double lr_warmup = 0;   // fraction of --tokens with a linear learning-rate ramp from 0
  double lr_decay = 0;    // fraction of --tokens at the end with a linear decay to 0
  double l1_warmup = 0;   // fraction of --tokens with a linear ramp of the sparsity coefficient
  float clip = 1.0f;      // global gradient-norm clip (0: none)
  int64_t init_rows = 4096;  // first rows used for the input scale and the b_dec median
  bool scale_inputs = true;  // scale inputs so that E||x||^2 = d_in
  int64_t dead_tokens = 10000000;  // a latent is dead after this many tokens without firing
  int64_t resample_every = 0;      // relu: resample dead latents every this many tokens (0: never)
  int64_t density_window = 10000000;  // tokens of the window sparsity.safetensors is measured over
  int64_t checkpoint_every = 0;    // tokens between checkpoints (0: only on signal / --stop-after)
  int64_t stop_after = 0;          // write a checkpoint and stop after this many tokens (0: never)
  std::string checkpoint_dir;
  std::string output;              // the SAE directory, or the parent of a sweep's directories
  bool sweep = false;              // output holds one directory per run
  std::string log_path;
  int64_t log_every = 10;          // steps between log lines
  DType dtype = DType::f32;        // storage dtype of the exported weights
  bool skip_nonfinite = false;     // drop rows with NaN/Inf (counted) instead of failing
  bool progress = true;            // progress line on a terminal

  nlohmann::json to_json() const;
  static TrainOptions from_json(const nlohmann::json& j);
};

// Per-step metrics (of one run).
struct StepMetrics {
  int64_t step = 0, tokens = 0;
  double loss = 0, mse = 0, fvu = 0, l0 = 0, dead_frac = 0, sparsity = 0, aux = 0, lr = 0;
  int64_t resampled = 0;  // relu: latents resampled so far
};

class Trainer {
 public:
  enum class Status { done, stopped, interrupted };

  Trainer(TrainOptions opt, std::vector<RunSpec> runs, SaeOps& ops);
  // Continues the run checkpointed in `dir` (options and runs come from it; `override` may change
  // output, log, checkpointing, stop_after, progress).
  static std::unique_ptr<Trainer> resume(const std::string& dir, SaeOps& ops,
                                         const std::function<void(TrainOptions&)>& override = nullptr);
  ~Trainer();

  // Provenance from the stream header copied into each SAE's cfg metadata.
  void set_provenance(const nlohmann::json& provenance, const std::vector<std::string>& inputs);
  const std::vector<std::string>& checkpoint_inputs() const { return inputs_; }
  // Trains until the budget or the input ends (done), --stop-after (stopped) or a signal
  // (interrupted); writes a checkpoint in the last two cases.
  Status train(RowSource& src);
  // Writes every run's SAE directory.
  void export_all();

  // For tests and tools.
  const TrainOptions& options() const { return opt_; }
  size_t runs() const { return runs_.size(); }
  Arch& arch(size_t i);
  const RunSpec& spec(size_t i) const;
  float scale() const { return scale_; }
  int64_t tokens_seen() const { return tokens_; }
  // Wall time spent in the training steps of the last train() call (not the first-sample set-up).
  double train_seconds() const { return t_train_; }
  // ... of which the first step (it allocates the batch buffers and faults their pages in).
  double first_step_seconds() const { return t_first_; }
  const StepMetrics& last_metrics(size_t i) const;
  Sae exported(size_t i);  // the SAE as export_all writes it
  std::vector<float> log10_density(size_t i) const;
  std::string output_dir(size_t i) const;
  void write_checkpoint(const std::string& dir);

 private:
  struct Run;
  void start(RowSource& src, std::vector<float>& pending);
  void step(const float* xs_host, int64_t B);
  void log_metrics();
  void maybe_resample(Run& r, const float* xs_host, int64_t B);
  float lr_factor(int64_t tokens_before, int64_t B) const;
  float sparsity_factor(int64_t tokens_before, int64_t B) const;

  TrainOptions opt_;
  SaeOps& ops_;
  std::vector<std::unique_ptr<Run>> runs_;
  int64_t d_ = 0;
  bool started_ = false;
  float scale_ = 1.0f;
  std::vector<float> b_dec0_;
  int64_t tokens_ = 0, steps_ = 0, epoch_ = 0, rows_in_epoch_ = 0;
  int64_t skipped_rows_ = 0;
  nlohmann::json provenance_ = nlohmann::json::object();
  std::vector<std::string> inputs_;
  Buffer<float> x_dev_;
  std::vector<float> xs_;  // the scaled batch on the host
  std::unique_ptr<cli::LineLog> log_;  // --log: JSON lines, appended and written whole
  double t_start_ = 0, t_train_ = 0, t_first_ = 0;
  int64_t tokens_at_start_ = 0;
};

// Geometric median (Weiszfeld iterations from the mean) of n rows of width d, in double.
std::vector<float> geometric_median(const float* x, int64_t n, int64_t d, int iterations = 30);

}  // namespace sae
