// Reading with ReaderOptions::keep_stored: batches keep their payload as stored (dtype bytes,
// shuffled or not) and convert on demand. Everything a stored batch hands out must equal, bit for
// bit, what the decoding reader gives, and a writer given stored batches must write what it would
// have written from decoded ones.
#include <gtest/gtest.h>

#include <cstring>

#include "support/stream_util.h"

using namespace sae;
using namespace sae::test;

namespace {

std::vector<Batch> read_all(const std::string& s, bool keep_stored, bool prefetch) {
  ReaderOptions o;
  o.keep_stored = keep_stored;
  o.prefetch = prefetch;
  o.threads = 2;
  StreamReader r(s.data(), s.size(), "<memory>", o);
  std::vector<Batch> out;
  Batch b;
  while (r.next(b)) out.push_back(b);  // (copies: also checks that a copy owns its payload)
  return out;
}

bool same_bits(const float* a, const float* b, size_t n) { return n == 0 || memcmp(a, b, n * 4) == 0; }

}  // namespace

TEST(StreamStored, HandsOutExactlyWhatDecodingGives) {
  const int64_t d = 24;
  for (DType t : {DType::f32, DType::f16, DType::bf16})
    for (bool shuffle : {false, true})
      for (bool prefetch : {false, true}) {
        SCOPED_TRACE(std::string(dtype_name(t)) + (shuffle ? " shuffled" : "") + (prefetch ? " prefetch" : ""));
        StreamHeader h = header("activations", d, t);
        std::vector<Batch> in;
        for (int i = 0; i < 4; i++) in.push_back(dense_batch(9 + 4 * i, d, uint32_t(i + 11), {true, i % 2 == 0, true}));
        WriterOptions wo;
        wo.byte_shuffle = shuffle;
        const std::string s = write_stream(h, in, wo);
        const auto dec = read_all(s, false, prefetch);
        const auto st = read_all(s, true, prefetch);
        ASSERT_EQ(st.size(), dec.size());
        for (size_t i = 0; i < st.size(); i++) {
          const Batch &a = dec[i], &b = st[i];
          ASSERT_EQ(b.rows, a.rows);
          ASSERT_TRUE(b.is_stored());
          EXPECT_TRUE(b.x.empty());
          EXPECT_EQ(b.stored.dtype, t);
          EXPECT_EQ(b.stored.shuffled, shuffle);
          EXPECT_EQ(b.stored.values, a.x.size());
          EXPECT_EQ(b.token, a.token);
          EXPECT_EQ(b.doc, a.doc);
          EXPECT_EQ(b.pos, a.pos);
          // Whole batch, then a range in the middle (shuffled planes are offset per row range).
          std::vector<float> got(a.x.size());
          b.rows_f32(d, 0, b.rows, got.data());
          EXPECT_TRUE(same_bits(got.data(), a.x.data(), got.size()));
          std::vector<float> part(size_t(5 * d));
          b.rows_f32(d, 3, 5, part.data());
          EXPECT_TRUE(same_bits(part.data(), a.x.data() + 3 * d, part.size()));
          // Rows past the end, or a d that does not fit the payload, are the caller's bug.
          EXPECT_THROW(b.rows_f32(d, b.rows - 1, 2, part.data()), std::logic_error);
          EXPECT_THROW(b.rows_f32(d + 1, 0, b.rows, got.data()), std::logic_error);
          // The same call on a decoded batch copies from x.
          a.rows_f32(d, 3, 5, part.data());
          EXPECT_TRUE(same_bits(part.data(), a.x.data() + 3 * d, part.size()));
          // A row's stored bytes are the dtype's encoding of the decoded row.
          const size_t es = dtype_size(t);
          std::vector<uint8_t> want(size_t(d) * es), row(size_t(d) * es);
          for (int64_t r : {int64_t(0), b.rows / 2, b.rows - 1}) {
            encode_f32(t, a.x.data() + r * d, size_t(d), want.data());
            b.row_stored_bytes(d, r, row.data());
            EXPECT_EQ(row, want) << "row " << r;
          }
          Batch c = b;
          c.decode_stored();
          EXPECT_FALSE(c.is_stored());
          ASSERT_EQ(c.x.size(), a.x.size());
          EXPECT_TRUE(same_bits(c.x.data(), a.x.data(), a.x.size()));
        }
      }
}

TEST(StreamStored, WriterCopiesMatchingBytesAndConvertsOthers) {
  const int64_t d = 16;
  std::vector<Batch> in;
  for (int i = 0; i < 3; i++) in.push_back(dense_batch(7 + i, d, uint32_t(i + 3), {true, true, false}));
  for (DType t : {DType::f32, DType::bf16})
    for (bool shuffle : {false, true}) {
      SCOPED_TRACE(std::string(dtype_name(t)) + (shuffle ? " shuffled" : ""));
      WriterOptions wo;
      wo.byte_shuffle = shuffle;
      const std::string s = write_stream(header("activations", d, t), in, wo);
      const auto st = read_all(s, true, true);
      const auto dec = read_all(s, false, true);
      // Same dtype and shuffle: the frames are the same bytes, so the stream is too.
      EXPECT_EQ(write_stream(header("activations", d, t), st, wo), s);
      // Anything else goes through f32 and must equal writing the decoded batches.
      for (DType t2 : {DType::f32, DType::f16, DType::bf16})
        for (bool shuffle2 : {false, true}) {
          WriterOptions wo2;
          wo2.byte_shuffle = shuffle2;
          wo2.threads = 2;
          EXPECT_EQ(write_stream(header("activations", d, t2), st, wo2), write_stream(header("activations", d, t2), dec, wo2))
              << "to " << dtype_name(t2) << (shuffle2 ? " shuffled" : "");
        }
    }
}

TEST(StreamStored, LatentBatchesAreAlwaysDecoded) {
  StreamHeader h = header("latents", 40, DType::bf16);
  std::vector<Batch> in = {latent_batch(12, 40, 6, 5)};
  const std::string s = write_stream(h, in);
  const auto st = read_all(s, true, false);
  ASSERT_EQ(st.size(), 1u);
  EXPECT_FALSE(st[0].is_stored());
  EXPECT_EQ(st[0].count, in[0].count);
  EXPECT_EQ(st[0].index, in[0].index);
  ASSERT_EQ(st[0].value.size(), in[0].value.size());
  for (size_t i = 0; i < in[0].value.size(); i++) EXPECT_EQ(st[0].value[i], stored(DType::bf16, in[0].value[i]));
}

// A batch object reused across a stored and a decoded read starts clean each time.
TEST(StreamStored, ReusedBatchSwitchesModesCleanly) {
  const int64_t d = 8;
  StreamHeader h = header("activations", d, DType::f16);
  const std::string s = write_stream(h, {dense_batch(6, d, 1)});
  Batch b;
  {
    ReaderOptions o;
    o.keep_stored = true;
    StreamReader r(s.data(), s.size(), "<memory>", o);
    ASSERT_TRUE(r.next(b));
    EXPECT_TRUE(b.is_stored());
  }
  ReaderOptions o;
  StreamReader r(s.data(), s.size(), "<memory>", o);
  ASSERT_TRUE(r.next(b));
  EXPECT_FALSE(b.is_stored());
  EXPECT_EQ(b.x.size(), size_t(6 * d));
  b.clear();
  EXPECT_FALSE(b.is_stored());
  EXPECT_EQ(b.rows, 0);
}

// A batch moved away from (its buffer taken) goes back to the reader, whose recycled buffers it
// then joins: it must be empty and usable, not a buffer that claims capacity it no longer has.
TEST(StreamStored, MovedFromBatchesAreReused) {
  const int64_t d = 12;
  StreamHeader h = header("activations", d, DType::bf16);
  std::vector<Batch> in;
  for (int i = 0; i < 6; i++) in.push_back(dense_batch(5 + i, d, uint32_t(40 + i)));
  const std::string s = write_stream(h, in);
  const auto want = read_all(s, false, false);
  for (bool prefetch : {false, true}) {
    ReaderOptions o;
    o.keep_stored = true;
    o.prefetch = prefetch;
    StreamReader r(s.data(), s.size(), "<memory>", o);
    std::vector<Batch> kept;
    Batch b;
    size_t i = 0;
    while (r.next(b)) {
      ASSERT_LT(i, want.size());
      std::vector<float> got(size_t(b.rows * d));
      b.rows_f32(d, 0, b.rows, got.data());
      EXPECT_TRUE(same_bits(got.data(), want[i].x.data(), got.size())) << "batch " << i;
      kept.push_back(std::move(b));  // b is now moved-from, and next() hands it to the reader
      i++;
    }
    EXPECT_EQ(i, want.size());
  }
  ByteBuffer a;
  a.resize_discard(64);
  ByteBuffer c = std::move(a);
  EXPECT_EQ(a.size(), 0u);
  a.resize_discard(16);  // must allocate again
  ASSERT_NE(a.data(), nullptr);
  memset(a.data(), 7, 16);
  EXPECT_EQ(c.size(), 64u);
}
