// The toy activation source (sae-collect --toy): rows that are sparse non-negative combinations
// of known unit feature directions in superposition, plus Gaussian noise, with the ground truth
// (the dictionary, the true sparse codes, the firing probabilities) available to later stages.
// docs/toy.md describes the generative model; every choice there is implemented here.
//
// Output depends only on the configuration and the seed: never on the thread count or on the
// batch size (every row draws from its own RNG sub-stream, lib/base/rng.h).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include <boost/program_options.hpp>

#include "base/dtype.h"
#include "base/rng.h"
#include "sae/sae.h"
#include "stream/stream.h"

namespace sae::toy {

// Bumped whenever the same configuration and seed would give different data.
constexpr int kToyGeneratorVersion = 1;

enum class FreqLaw { uniform, power };
enum class MagLaw { uniform, exponential, constant };

struct ToyConfig {
  int64_t d = 64;           // row width
  int64_t features = 256;   // number of ground-truth features
  double active = 4;        // expected number of active features per row
  FreqLaw freq = FreqLaw::uniform;
  double freq_exponent = 1.0;  // power law: p_i proportional to (i+1)^-exponent
  MagLaw magnitude = MagLaw::uniform;
  double mag_lo = 0.5, mag_hi = 1.5;  // uniform magnitudes in [lo, hi)
  double mag_mean = 1.0;              // exponential: its mean; constant: the value
  int64_t parents = 0, children = 0;  // hierarchy: `parents` parents with `children` children each
  double noise = 0.01;                // std of the iid Gaussian noise added to every coordinate
  int64_t rows = 100000;
  int64_t seed = 0;
  int64_t context = 0;  // > 0: rows carry doc = row / context and pos = row % context
};

const char* freq_name(FreqLaw f);
const char* mag_name(MagLaw m);
FreqLaw parse_freq(const std::string& s);            // UsageError naming the value
MagLaw parse_mag(const std::string& s);              // UsageError naming the value
void parse_hierarchy(const std::string& s, int64_t& parents, int64_t& children);  // "P:C"

// Throws UsageError with a one-line message naming the option for any bad value: d, features,
// rows < 1; active not in (0, max achievable]; bad magnitudes, noise, exponent; hierarchy larger
// than the feature count.
void validate(const ToyConfig& c);

// Every parameter, for stream provenance and the truth SAE's cfg.json.
nlohmann::json to_json(const ToyConfig& c);

// The generative model built from a configuration: the feature directions and everything the
// sampler needs. Features are laid out as: parents [0, P), then the children of parent p at
// [P + p C, P + (p+1) C), then the free features.
class ToyModel {
 public:
  explicit ToyModel(const ToyConfig& c);  // validates c
  const ToyConfig& config() const { return cfg_; }
  int64_t d() const { return cfg_.d; }
  int64_t n_features() const { return cfg_.features; }

  // Unit feature directions, row-major [n_features, d].
  const std::vector<float>& features() const { return features_; }
  // Marginal probability that feature i fires in a row (parents include firing through a child).
  const std::vector<double>& firing_probability() const { return marginal_; }
  // Expected number of active features per row under the final probabilities (equals
  // config().active up to rounding).
  double expected_active() const;

  // Generates rows [first, first + n): `acts` gets the activations (rows x d, and doc/pos columns
  // if context > 0); `codes`, if given, the true sparse codes (feature indices ascending, with
  // their magnitudes). Rows are generated in parallel on `threads` OpenMP threads (0 = default).
  void generate(int64_t first, int64_t n, Batch& acts, Batch* codes = nullptr, int threads = 0) const;

  // The ground truth as an SAE: arch standard, W_dec = features, W_enc = W_dec^T, zero biases,
  // hook and model "toy", and cfg metadata naming it the toy truth with every parameter.
  Sae truth() const;

 private:
  struct Bucket {  // independent features whose probabilities are within a factor 2 of `bound`
    double bound = 0, inv_log1m = 0;
    std::vector<uint32_t> index;
    std::vector<double> ratio;  // p_i / bound, in (0.5, 1]
  };
  struct Group {  // a parent and its mutually exclusive children
    uint32_t parent = 0, first_child = 0;
    std::vector<double> cumulative;  // cumulative child probabilities, last <= 1
  };
  void sample_row(Rng& rng, std::vector<uint32_t>& fired, std::vector<float>& mags) const;
  void make_probabilities();
  void make_features();

  ToyConfig cfg_;
  std::vector<float> features_;
  std::vector<double> base_;      // own firing probability (free features and parents) or child rate
  std::vector<double> marginal_;  // marginal firing probability
  std::vector<Bucket> buckets_;
  std::vector<Group> groups_;
};

// The "Toy source" option group for sae-collect, with defaults from ToyConfig{}, and the config
// read back from parsed options (validated).
boost::program_options::options_description toy_options();
ToyConfig toy_config(const boost::program_options::variables_map& vm);

// Where and how the toy source writes.
struct ToyOutput {
  std::string path = "-";   // activations stream ("-" = stdout)
  std::string latents_out;  // true sparse codes as a latents stream (f32), "" = none
  std::string truth;        // ground-truth SAE directory, "" = none
  DType dtype = DType::f32;
  int64_t batch_rows = 4096;
  WriterOptions writer;
  int threads = 0;  // generation threads (0 = all cores)
};

// Reads --truth and --latents-out (options of the toy group) into `out`.
void toy_output_paths(const boost::program_options::variables_map& vm, ToyOutput& out);

// Generates config.rows rows and writes the requested outputs; every output appears atomically
// and only if all of them were written.
void write_toy(const ToyConfig& cfg, const ToyOutput& out);

}  // namespace sae::toy
