// Seedable, fast, platform-independent random numbers for everything in saetools that needs them
// (synthetic data, weight initialisation, shuffling): xoshiro256** seeded through splitmix64, with
// uniform, normal (ziggurat), exponential, Bernoulli and bounded-integer draws, shuffling, and
// sub-streams derived from (seed, id) so that parallel work can give every batch or row its own
// generator and produce the same result on any number of threads.
//
// Reproducibility contract: a given seed (and sub-stream path) yields the same bits from every
// draw on every platform, compiler and build flag set:
//  - the core generator is pure 64-bit integer arithmetic;
//  - the floating-point draws use only correctly rounded IEEE-754 operations (+ - * / sqrt, and
//    fma written out explicitly, so a compiler contracting a*b+c into an FMA under -march=native
//    cannot change a result), plus the exact frexp/ldexp/floor (checked: g++ -O0, -O2, -O3
//    -march=native -ffp-contract=fast and clang++ give the same bits; -ffast-math, which allows
//    reassociation, does not, and must not be used on code that draws from here);
//  - no libm transcendental is called: log and exp are computed here (portable_log/portable_exp),
//    because libm's may differ in the last bit between C libraries and versions.
// Anyone changing a draw below changes every seeded result in the project: the unit tests pin
// the first values of each stream so that such a change is noticed.
//
// Usage:
//   sae::Rng rng(seed);                    // one stream
//   sae::Rng row = rng.substream(r);       // an independent stream for row r (cheap: a few hashes)
//   double z = row.normal(), u = row.uniform();
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <utility>

namespace sae {

// splitmix64's output function (Stafford's "mix 13"): a bijection of 64-bit integers whose
// outputs look independent for consecutive inputs.
constexpr uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// splitmix64 (Steele, Lea, Flood 2014): a tiny generator used to expand a seed into xoshiro state.
struct SplitMix64 {
  uint64_t state;
  constexpr uint64_t next() {
    state += 0x9e3779b97f4a7c15ull;
    return mix64(state);
  }
};

// log and exp from IEEE basic operations only (see the contract above). Accurate to a few ulp over
// the ranges used here; not a general libm replacement (no special handling beyond 0, Inf, NaN).
namespace rng_detail {

// ln(x) for x > 0: x = m 2^e with m in [sqrt(1/2), sqrt(2)), ln m = 2 atanh(s), s = (m-1)/(m+1),
// |s| <= 0.172, summed as an odd series in s to 2e-17 relative.
inline double portable_log(double x) {
  if (!(x > 0)) return x == 0 ? -HUGE_VAL : NAN;
  if (x == HUGE_VAL) return x;
  int e = 0;
  double m = std::frexp(x, &e);  // x = m 2^e, m in [0.5, 1)
  if (m < 0.70710678118654752440) {
    m *= 2;
    e -= 1;
  }
  const double s = (m - 1) / (m + 1);
  const double z = s * s;
  // 1 + z/3 + z^2/5 + ... + z^13/27, Horner from the highest power.
  double p = 1.0 / 27;
  p = std::fma(p, z, 1.0 / 25);
  p = std::fma(p, z, 1.0 / 23);
  p = std::fma(p, z, 1.0 / 21);
  p = std::fma(p, z, 1.0 / 19);
  p = std::fma(p, z, 1.0 / 17);
  p = std::fma(p, z, 1.0 / 15);
  p = std::fma(p, z, 1.0 / 13);
  p = std::fma(p, z, 1.0 / 11);
  p = std::fma(p, z, 1.0 / 9);
  p = std::fma(p, z, 1.0 / 7);
  p = std::fma(p, z, 1.0 / 5);
  p = std::fma(p, z, 1.0 / 3);
  p = std::fma(p, z, 1.0);
  // ln2 split in two so that e*ln2 keeps full precision for large |e|.
  const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
  const double de = double(e);
  return std::fma(de, ln2_hi, std::fma(de, ln2_lo, 2 * s * p));
}

// ln(1 + x) for x > -1, accurate also for tiny |x| (Goldberg's trick: the rounding error of
// u = 1 + x is cancelled by the ratio x / (u - 1)).
inline double portable_log1p(double x) {
  const double u = 1 + x;
  if (u == 1) return x;
  return portable_log(u) * (x / (u - 1));
}

// e^x: x = k ln2 + r with |r| <= ln2/2, e^r by its Taylor series to r^14 (error < 1e-17).
inline double portable_exp(double x) {
  if (x != x) return x;
  if (x > 709.78) return HUGE_VAL;
  if (x < -745.2) return 0;
  const double k = std::floor(std::fma(x, 1.44269504088896340736, 0.5));
  const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
  const double r = std::fma(-k, ln2_lo, std::fma(-k, ln2_hi, x));
  double p = 1.0 / 87178291200.0;  // 1/14!
  p = std::fma(p, r, 1.0 / 6227020800.0);
  p = std::fma(p, r, 1.0 / 479001600.0);
  p = std::fma(p, r, 1.0 / 39916800.0);
  p = std::fma(p, r, 1.0 / 3628800.0);
  p = std::fma(p, r, 1.0 / 362880.0);
  p = std::fma(p, r, 1.0 / 40320.0);
  p = std::fma(p, r, 1.0 / 5040.0);
  p = std::fma(p, r, 1.0 / 720.0);
  p = std::fma(p, r, 1.0 / 120.0);
  p = std::fma(p, r, 1.0 / 24.0);
  p = std::fma(p, r, 1.0 / 6.0);
  p = std::fma(p, r, 0.5);
  p = std::fma(p, r, 1.0);
  p = std::fma(p, r, 1.0);
  return std::ldexp(p, int(k));  // exact, or one correct rounding into the subnormals
}

// Tables for the 256-layer ziggurat of the half-normal density f(x) = exp(-x^2/2) (Marsaglia and
// Tsang 2000, in the layout of Doornik 2005): layer i >= 1 is the rectangle [0, x[i]] x
// [f(x[i]), f(x[i+1])], layer 0 the base strip [0, x[0]] x [0, f(R)] standing for the rectangle
// [0, R] x [0, f(R)] plus the tail beyond R. Every layer has area V.
struct ZigguratNormal {
  static constexpr int kLayers = 256;
  static constexpr double R = 3.6541528853610088;   // start of the tail
  static constexpr double V = 4.92867323399e-3;     // area of each layer
  double x[kLayers + 1];
  double f[kLayers + 1];  // f(x[i])
  ZigguratNormal() {
    f[1] = portable_exp(-0.5 * R * R);
    x[0] = V / f[1];
    f[0] = 0;
    x[1] = R;
    for (int i = 2; i < kLayers; i++) {
      x[i] = std::sqrt(-2 * portable_log(V / x[i - 1] + f[i - 1]));
      f[i] = portable_exp(-0.5 * x[i] * x[i]);
    }
    x[kLayers] = 0;
    f[kLayers] = 1;
  }
  static const ZigguratNormal& get() {
    static const ZigguratNormal t;
    return t;
  }
};

}  // namespace rng_detail

// xoshiro256** 1.0 (Blackman and Vigna 2018): 256 bits of state, period 2^256 - 1, passes BigCrush;
// about 1 ns per 64-bit draw.
class Rng {
 public:
  // A stream for `seed`. Equal seeds give equal streams; the seed is hashed first, so nearby seeds
  // (0, 1, 2...) give unrelated streams.
  explicit Rng(uint64_t seed = 0) { init(mix64(seed)); }

  // An independent stream identified by `id` within this one (for batch or row `id`, or for a
  // purpose such as "features" vs "rows"). It depends only on this generator's seed path and
  // `id`, never on how many draws were taken from this generator, so work split across threads
  // can create its streams in any order. Sub-streams nest: rng.substream(a).substream(b).
  Rng substream(uint64_t id) const {
    Rng r;
    r.init(mix64(key_ ^ mix64(id + 0x9e3779b97f4a7c15ull)));
    return r;
  }

  // 64 uniformly random bits.
  uint64_t next_u64() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }
  uint32_t next_u32() { return uint32_t(next_u64() >> 32); }  // the high bits are the best ones

  // Uniform in [0, 1) on the grid k 2^-53 (every double of that grid equally likely).
  double uniform() { return double(next_u64() >> 11) * 0x1.0p-53; }
  // Uniform in (0, 1]: for logarithms.
  double uniform_pos() { return double((next_u64() >> 11) + 1) * 0x1.0p-53; }
  // Uniform in [lo, hi).
  double uniform(double lo, double hi) { return std::fma(uniform(), hi - lo, lo); }
  // Uniform float in [0, 1) on the grid k 2^-24.
  float uniform_f() { return float(next_u64() >> 40) * 0x1.0p-24f; }

  // Uniform integer in [0, n), unbiased (Lemire 2019, multiply and reject); n must be > 0.
  uint64_t below(uint64_t n) {
    unsigned __int128 m = (unsigned __int128)next_u64() * n;
    uint64_t low = uint64_t(m);
    if (low < n) {
      const uint64_t threshold = (0 - n) % n;
      while (low < threshold) {
        m = (unsigned __int128)next_u64() * n;
        low = uint64_t(m);
      }
    }
    return uint64_t(m >> 64);
  }

  // true with probability p (p <= 0: never, p >= 1: always).
  bool bernoulli(double p) { return uniform() < p; }

  // Standard normal N(0, 1) by the ziggurat: one 64-bit draw and one multiply in 98.8% of
  // calls. Bits 0-7 pick the layer, bit 8 the sign, bits 11-63 the position within the layer.
  double normal() {
    const auto& z = rng_detail::ZigguratNormal::get();
    for (;;) {
      const uint64_t b = next_u64();
      const int i = int(b & 0xff);
      const bool neg = (b >> 8) & 1;
      const double x = double(b >> 11) * 0x1.0p-53 * z.x[i];
      if (x < z.x[i + 1]) return neg ? -x : x;  // strictly inside the curve: accept
      if (i == 0) {
        // The tail beyond R (Marsaglia 1964): R + a with a ~ Exp(R) accepted w.p. exp(-a^2/2).
        double a, c;
        do {
          a = -rng_detail::portable_log(uniform_pos()) / z.R;
          c = -rng_detail::portable_log(uniform_pos());
        } while (c + c < a * a);
        return neg ? -(z.R + a) : z.R + a;
      }
      // The wedge between the curve and the layer's rectangle: accept if a uniform height in the
      // layer falls under the curve.
      const double y = std::fma(uniform(), z.f[i + 1] - z.f[i], z.f[i]);
      if (y < rng_detail::portable_exp(-0.5 * x * x)) return neg ? -x : x;
    }
  }
  double normal(double mean, double std) { return std::fma(normal(), std, mean); }

  // Exponential with mean 1, by inversion.
  double exponential() { return -rng_detail::portable_log(uniform_pos()); }

  // Geometric: the number of failures before the first success of Bernoulli(p) trials, given
  // inv_log1m = 1 / ln(1 - p) (precomputed by the caller: it is the same for many draws).
  // Returns a double so that huge skips for tiny p do not overflow; p = 1 (inv_log1m = -0) gives 0.
  double geometric(double inv_log1m) {
    return std::floor(rng_detail::portable_log(uniform_pos()) * inv_log1m);
  }
  // 1 / ln(1 - p) for geometric(), p in (0, 1].
  static double geometric_param(double p) {
    return p >= 1 ? -0.0 : 1 / rng_detail::portable_log1p(-p);
  }

  // Fisher-Yates shuffle of [first, first + n).
  template <class RandomIt>
  void shuffle(RandomIt first, size_t n) {
    for (size_t i = n; i > 1; i--) {
      const size_t j = size_t(below(i));
      using std::swap;
      swap(first[i - 1], first[j]);
    }
  }

 private:
  static constexpr uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  // The 256-bit state is four consecutive splitmix64 outputs from `key`: they are distinct (mix64
  // is a bijection), so the state is never all zero.
  void init(uint64_t key) {
    key_ = key;
    SplitMix64 sm{key};
    for (auto& w : s_) w = sm.next();
  }
  uint64_t s_[4] = {0, 0, 0, 0};
  uint64_t key_ = 0;  // identifies the stream; sub-streams are derived from it

  friend struct RngTestAccess;
};

}  // namespace sae
