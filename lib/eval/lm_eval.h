// LM-loss metrics of an SAE (docs/lm-eval.md): the model runs on text with the SAE's
// reconstruction spliced in at the SAE's hook, and the next-token loss is compared with the clean
// model's and with zero ablation of the hook.
//
// Positions. Text is windowed as sae-collect does it: each document is tokenized without BOS and
// cut into windows of context-1 tokens, and each window runs with BOS prepended. In a window of n
// text tokens (n+1 positions, BOS at 0) every text token is a target: the prediction made at
// position t (t = 0..n-1) is scored against token t+1. BOS is never a target, and the prediction
// made at the last position (which has no next token in the window) is never scored. Losses are
// means over all targets of all windows (token-weighted, not a mean of window means).
//
// Splicing. The hook's activations are replaced, at every position of every window except BOS
// (unless splice_bos), by the SAE's reconstruction x_hat (Sae::reconstruct: encode, decode, the
// SAE's input normalisation undone); zero ablation sets the same positions to 0; keep-error
// writes x_hat + (x - x_hat). BOS is left alone by default because sae-collect leaves the BOS rows
// out of the training data (their norm is far outside the other rows'). Predictions made at
// position 0 then see only the untouched BOS and equal the clean ones; they are still counted.
//
// Per batch of windows the model runs three passes (four with keep_error), each to the end of the
// model: clean (NLL and log-probs), spliced, zero-ablated (and keep-error). The SAE runs on the
// host: on CUDA the hook's activations are copied to the host, reconstructed and copied back.
#pragma once
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tokenizer/documents.h"  // TextWindow, append_windows: text is windowed as sae-collect does it
#include "eval/metrics.h"
#include "model/model.h"
#include "sae/sae.h"

namespace sae {

// The hook the SAE is evaluated at on this model: `hook_override` when given (a note saying so
// goes to *note when the SAE records a different hook), else the SAE's own hook. InputError naming
// both directories when the hook is not one of the model's or d_in differs from d_model;
// UsageError when neither the SAE nor the caller names a hook.
HookPoint lm_eval_hook(const Sae& sae, const std::string& sae_dir, const ModelConfig& cfg,
                       const std::string& model_dir, const std::string& hook_override, std::string* note = nullptr);

struct LmEvalOptions {
  int64_t batch = 8;        // windows per forward pass
  bool splice_bos = false;  // also replace the BOS position's activations
  bool keep_error = false;  // also run the pass with x_hat + (x - x_hat) at the hook
  bool structural = true;   // accumulate the structural metrics (FVU, L0...) of the spliced rows
};

struct LmEvalResult {
  static constexpr double nan = std::numeric_limits<double>::quiet_NaN();
  int64_t windows = 0;
  int64_t tokens = 0;        // targets scored
  int64_t spliced_rows = 0;  // positions whose activations were replaced
  // Mean NLL per target (nats).
  double ce_clean = nan, ce_spliced = nan, ce_zero = nan, ce_keep_error = nan;
  // (ce_zero - ce_spliced) / (ce_zero - ce_clean); NaN when zero ablation does not change the loss.
  double ce_recovered = nan;
  double delta_lm_loss = nan;  // ce_spliced - ce_clean
  // Mean over the scored predictions of KL(clean || other) of the next-token distributions (nats).
  double kl = nan, kl_zero = nan, kl_keep_error = nan;
  // The structural metrics of the spliced rows (x the clean activations, x_hat the reconstruction).
  bool has_structural = false;
  EvalResult structural;
};

// Accumulates the metrics over any number of add() calls. The model's backend runs the passes.
class LmEvaluator {
 public:
  LmEvaluator(Model& model, const Sae& sae, HookPoint hook, LmEvalOptions opt);
  ~LmEvaluator();
  LmEvaluator(const LmEvaluator&) = delete;
  LmEvaluator& operator=(const LmEvaluator&) = delete;
  // Runs the windows (any number; opt.batch per forward pass). Windows hold at least BOS and one
  // text token; none is longer than the model's positions.
  void add(const std::vector<TextWindow>& windows);
  int64_t tokens() const { return tokens_; }
  LmEvalResult result() const;

 private:
  void run_batch(const TextWindow* w, int64_t n);
  Model& model_;
  const Sae& sae_;
  HookPoint hook_;
  LmEvalOptions opt_;
  int64_t chunk_rows_;  // rows reconstructed at once (bounds the dense latents buffer)
  SaeEvaluator structural_;
  int64_t windows_ = 0, tokens_ = 0, spliced_rows_ = 0;
  double nll_clean_ = 0, nll_spliced_ = 0, nll_zero_ = 0, nll_keep_ = 0;
  double kl_spliced_ = 0, kl_zero_ = 0, kl_keep_ = 0;
  // Per batch: the rows (indices into batch*seq) to replace, and their clean activations and
  // reconstruction, kept from the spliced pass for the keep-error pass.
  std::vector<int64_t> rows_;
  std::vector<float> host_, x_, x_hat_, latents_;
  ForwardResult clean_, other_;  // reused from batch to batch (log-probs are rows x vocab)
};

// sae-eval --model: text files in, the LM-loss report out.
struct LmEvalTextOptions {
  std::string model_dir;
  std::string hook;                   // "" = the SAE's hook
  std::vector<std::string> inputs;    // text files; "-" = stdin
  std::string jsonl_field;            // as sae-collect: "" = plain text, else JSONL with this field
  bool lines = false;                 // plain text: one document per line
  bool replace_invalid_utf8 = false;
  int64_t context = 0;    // tokens per window with BOS; 0 = the SAE's context_size, else 128
  int64_t max_tokens = 0;  // stop after this many targets (0 = all the text)
  int splice_bos = -1;     // -1: yes when the SAE's activations kept the BOS rows, else no
  LmEvalOptions eval;      // batch, keep_error, structural (splice_bos is set from the above)
  std::string device = "cpu";
  Compute compute = Compute::f32;  // bf16: bf16 weights and GEMM inputs (CUDA only; lib/model/model.h)
};

struct LmEvalReport {
  std::string model_dir, sae_dir, hook, device;
  std::string compute = "f32";  // the forward pass's compute type (compute_name)
  std::vector<std::string> inputs;
  int64_t context = 0;
  bool splice_bos = false;
  int64_t documents = 0, empty_documents = 0;
  LmEvalResult result;
  double seconds = 0;
};

// Loads the model and tokenizer, checks the SAE against the model, reads and windows the text,
// and evaluates. Notes for the user (hook override, skipped empty documents) go to stderr.
LmEvalReport lm_eval_text(const Sae& sae, const std::string& sae_dir, const LmEvalTextOptions& o);

// The "lm_loss" object of sae-eval's JSON report (non-finite numbers become null) and its table.
nlohmann::ordered_json lm_eval_json(const LmEvalReport& r);
std::string lm_eval_table(const LmEvalReport& r);

}  // namespace sae
