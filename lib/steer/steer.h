// Steering: generation with SAE latents added, clamped or ablated at their hooks, the controls
// that tell a real effect from noise (the same intervention along random directions of equal
// norm, and along other latents of similar firing density), and measures that need no LLM.
// docs/steer.md describes the experiment; tools/sae-steer.cpp is its command line.
//
// Every intervention is a coefficient times a direction, added to the hook's activations h:
//   add     h += a · d, d the latent's decoder row; a = alpha (absolute), alpha / |d| (unit: alpha
//           along the unit direction), or alpha · max activation (max: in units of the latent's
//           largest activation, as AxBench does)
//   clamp   h += (v - f_i(h)) · d, f_i(h) the latent's activation on h: the SAE's error term
//           stays, so clamping a latent to its current value changes nothing
//   ablate  clamp to 0, or to the latent's mean activation
// A control keeps the coefficient and replaces d.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/generate.h"
#include "model/model.h"
#include "sae/sae.h"
#include "steer/judge.h"

namespace sae {

enum class SteerOp { add, clamp, ablate_zero, ablate_mean };
enum class AlphaUnit { absolute, unit, max_activation };
enum class SteerPositions { all, prompt, generated, from };

// An SAE at its hook of the model, with what is known of its latents (each empty when unknown).
struct SteerSae {
  Sae sae;
  std::string dir;
  HookPoint hook;
  std::vector<float> max_act, mean_act;  // over a reference text (latent_stats)
  std::vector<float> density;            // firing fraction: latent_stats, or SAELens's sparsity file
};

struct Intervention {
  int sae = 0;  // index into the SAEs
  int64_t latent = 0;
  SteerOp op = SteerOp::add;
  double value = 0;        // add: alpha (in the run's unit); clamp: the value
  bool has_value = false;  // false: the value comes from the alpha sweep
  // What the coefficient multiplies; empty: the latent's decoder row. Controls set it.
  std::vector<float> direction;
  std::string text() const;  // as parsed: "[S/]LATENT:OP[=VALUE]"
};

// "LATENT:add[=A]", "LATENT:clamp=V", "LATENT:ablate[=zero|mean]", with an optional "S/" naming
// the S-th --sae (from 0). A malformed spec, an index out of range or a value that is not a number
// is a UsageError naming the spec.
Intervention parse_intervention(const std::string& spec, int n_saes);
// Checks each intervention against its SAE: the latent in range, and what its op and the unit
// need (max activations, mean activations); UsageError naming the intervention otherwise.
void check_interventions(const std::vector<SteerSae>& saes, const std::vector<Intervention>& ivs, AlphaUnit unit);

struct SteerScope {
  SteerPositions positions = SteerPositions::all;
  int64_t from = 0;  // SteerPositions::from: positions >= from
  bool selects(int64_t position, bool in_prompt) const;
};
// "all", "prompt", "generated" or "from:P".
SteerScope parse_scope(const std::string& s);

// The hook edits that apply `ivs` (values filled in) to the rows `selected` chooses: one edit per
// hook, reading the activations to the host, changing the chosen rows, writing them back.
std::vector<HookEdit> steering_edits(const std::vector<SteerSae>& saes, const std::vector<Intervention>& ivs,
                                     AlphaUnit unit, std::function<bool(int64_t row)> selected);

// Per latent of `s`, over the token windows (BOS first in each; the BOS rows are left out): the
// largest and the mean activation and the firing fraction, stored into s.
void latent_stats(Model& model, SteerSae& s, const std::vector<std::vector<int32_t>>& windows);

// Controls: each intervention's direction replaced by a random one of the same norm as its
// decoder row (seeded by seed and draw), or moved to the latent of the same SAE whose firing
// density is the draw-th nearest its own on a log scale (dead latents and itself excluded).
std::vector<Intervention> random_direction_control(const std::vector<SteerSae>& saes, std::vector<Intervention> ivs,
                                                   uint64_t seed, int draw);
std::vector<Intervention> density_matched_control(const std::vector<SteerSae>& saes, std::vector<Intervention> ivs,
                                                  int draw);

// Measures of one generated continuation, all from teacher-forced passes over prompt + generated:
// the steered model (the interventions at the scope's positions; none for the unsteered run)
// against the unsteered one; latent_act is `report`'s latent.
struct SteerMeasures {
  std::vector<double> kl;   // per generated token: KL(steered || unsteered) of its next-token distribution
  double mean_kl = 0;
  double perplexity = 0;    // of the generated tokens under the unsteered model (fluency)
  double target_prob = 0, target_prob_unsteered = 0;  // mean over steps of the targets' total probability
  double latent_act = 0;    // the reported latent's mean activation on the generated tokens (unsteered model)
  std::vector<std::pair<int32_t, double>> promoted, suppressed;  // top 10 by mean log-prob change
};
SteerMeasures measure_steering(Model& model, const std::vector<SteerSae>& saes, const std::vector<Intervention>& ivs,
                               AlphaUnit unit, const SteerScope& scope, const std::vector<int32_t>& prompt,
                               const std::vector<int32_t>& generated, const std::vector<int32_t>& targets,
                               const Intervention& report);

struct SteerOptions {
  std::vector<Intervention> interventions;
  std::vector<double> alphas;  // the sweep: values for the interventions without their own
  AlphaUnit unit = AlphaUnit::absolute;
  SteerScope scope;
  GenerateOptions generation;  // its edits are set per setting
  int random_controls = 3, density_controls = 1;
  uint64_t control_seed = 1;
  std::vector<int32_t> targets;  // target token ids (--target-tokens)
};

struct SteerRecord {
  int prompt = 0;
  std::string setting;  // unsteered | steered | random-direction | density-matched
  int control = -1;     // the control's draw (-1 for the others)
  double alpha = 0;     // the sweep's value (NaN when there is no sweep, or unsteered)
  std::vector<Intervention> interventions;
  std::vector<int32_t> tokens;  // generated
  bool ended_at_eos = false;
  SteerMeasures measures;
  bool judged = false;  // rated by the LLM judge (steer/judge.h; sae-steer --llm-url)
  JudgeRatings judge;
};

// The whole experiment: for every prompt the unsteered continuation, then for each alpha the
// steered one and its controls, all with the same sampling seed.
std::vector<SteerRecord> run_steering(Model& model, const std::vector<SteerSae>& saes,
                                      const std::vector<std::vector<int32_t>>& prompts, const SteerOptions& opt);

}  // namespace sae
