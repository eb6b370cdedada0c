// f16/bf16 conversions against exact expectations.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "base/dtype.h"

using namespace sae;

TEST(DType, Bf16RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  // 1 + 2^-8 is exactly halfway between bf16 1.0 and 1.0078125: ties to even (1.0).
  EXPECT_EQ(f32_to_bf16(1.0f + 1.0f / 256), 0x3f80);
  // 1 + 3*2^-8 is halfway between 1.0078125 (odd mantissa) and 1.015625: rounds up to even.
  EXPECT_EQ(f32_to_bf16(1.0f + 3.0f / 256), 0x3f82);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(-2.5f)), -2.5f);
}

TEST(DType, F16ExactValuesAndEdges) {
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(f32_to_f16(-2.0f), 0xc000);
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);                 // largest finite half
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);                 // rounds to Inf
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -24)), 0x0001);    // smallest subnormal
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);    // halfway to 0: ties to even (0)
  EXPECT_EQ(f32_to_f16(std::ldexp(3.0f, -25)), 0x0002);    // 1.5 ulp: rounds to even (2)
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_TRUE(std::isinf(f16_to_f32(0x7c00)));
  EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(std::numeric_limits<float>::quiet_NaN()))));
}

TEST(DType, F16RoundTripsEveryHalf) {
  // Every finite half value must survive half -> f32 -> half exactly.
  for (uint32_t h = 0; h < 0x10000; h++) {
    if ((h & 0x7c00) == 0x7c00) continue;  // Inf/NaN
    EXPECT_EQ(f32_to_f16(f16_to_f32(uint16_t(h))), h) << h;
  }
}

TEST(DType, F16MatchesNearestOnRandomValues) {
  // The chosen half must be the nearest representable value (checked by brute force neighbours).
  uint32_t s = 12345;
  for (int i = 0; i < 20000; i++) {
    s = s * 1664525u + 1013904223u;
    float v = std::ldexp(float(s >> 8) / float(1 << 24) * 2 - 1, int(s % 36) - 30);  // |v| < 64: subnormals up to normals
    uint16_t h = f32_to_f16(v);
    float got = f16_to_f32(h);
    float err = std::fabs(got - v);
    for (int dlt : {-1, 1}) {
      uint16_t n = uint16_t(h + dlt);
      if ((n & 0x7c00) == 0x7c00) continue;
      if (((n ^ h) & 0x8000) != 0) continue;
      EXPECT_LE(err, std::fabs(f16_to_f32(n) - v)) << v;
    }
  }
}
