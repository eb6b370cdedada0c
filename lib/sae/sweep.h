// Sweeps: several SAEs trained on the same batches, each a RunSpec made from the command line's
// settings with some keys changed (sae-train --sweep, docs/training.md).
#pragma once
#include <string>
#include <vector>

#include "sae/arch.h"

namespace sae {

// One SAE of a run (a sweep has several).
struct RunSpec {
  std::string label;  // directory name inside the sweep output ("" for a single run)
  ArchConfig arch;
  float lr = 3e-4f;
};

// "k=16,32;seed=1,2" (Cartesian product) or "@FILE" (one run per line, "k=16 seed=1"): runs made
// from `base` with the given keys changed. Keys: arch, k, k-aux, aux-coef, lambda, latents, seed,
// lr, bandwidth, freq-scale. Errors are UsageError naming --sweep.
std::vector<RunSpec> parse_sweep(const std::string& spec, const RunSpec& base);

}  // namespace sae
