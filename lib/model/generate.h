// Text generation with the KV cache (Model::forward with a KvCache): a batch of prompts of any
// lengths, left-padded to a common length and decoded together, greedily or by sampling
// (temperature, top-k, top-p) from a seeded random stream per sequence, until EOS or a token
// budget. Interventions (lib/steer) come in as hook edits chosen per step, so they can act on
// the prompt, on the generated tokens, or from a position on.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "model/model.h"

namespace sae {

struct Sampling {
  double temperature = 0;  // 0: greedy (the most likely token; the lowest id on a tie)
  int top_k = 0;           // keep the k most likely tokens; 0 keeps all
  double top_p = 1.0;      // then the smallest set of most likely tokens whose probability reaches top_p
  uint64_t seed = 0;       // with the sequence's index and the step, names every random draw
};

// What one decoding step runs, for an edit that must know which rows are which: rows
// b * n_new + t are sequence b's slots past + t, of which the first prompt_slots (pad included)
// hold the padded prompt.
struct StepRows {
  int64_t step = 0;  // 0: the prompt (prefill); then 1, 2, ..., one token per sequence each
  int64_t batch = 0, n_new = 0, past = 0, prompt_slots = 0;
  const KvCache* cache = nullptr;
  int64_t slot(int64_t row) const { return past + row % n_new; }
  bool is_pad(int64_t row) const { return slot(row) < cache->pad()[size_t(row / n_new)]; }
  bool is_prompt(int64_t row) const { return slot(row) < prompt_slots; }
  // The row's position in its own sequence (0 is the first real prompt token).
  int64_t position(int64_t row) const { return cache->position(row / n_new, slot(row)); }
};

struct GenerateOptions {
  int64_t max_new_tokens = 32;
  Sampling sampling;
  bool stop_at_eos = true;  // a sequence ends with the model's EOS token (kept in its output)
  // The edits of each step (none when empty).
  std::function<std::vector<HookEdit>(const StepRows&)> edits;
};

struct Generation {
  std::vector<std::vector<int32_t>> tokens;  // per prompt, the generated tokens
  std::vector<bool> ended_at_eos;
  int64_t steps = 0;  // forward passes after the prompt's
};

// Generates for every prompt (each non-empty, BOS included by the caller). The prompt plus
// max_new_tokens must fit the model's positions (InputError naming the field otherwise).
Generation generate(Model& model, const std::vector<std::vector<int32_t>>& prompts, const GenerateOptions& opt);

// The next token from one row of logits: greedy when temperature is 0, else a draw with
// uniform u in [0, 1) from softmax(logits / temperature) restricted by top_k and top_p. Ties in
// probability order by token id, so the result depends on nothing but the arguments.
int32_t choose_token(const float* logits, int64_t vocab, const Sampling& s, double u);

// The uniform draw of sequence `index` at `step` for `seed`: a hash, so it does not depend on
// the order or threads that ask for it.
double sampling_uniform(uint64_t seed, int64_t index, int64_t step);

}  // namespace sae
