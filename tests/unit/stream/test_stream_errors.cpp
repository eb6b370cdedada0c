// Bad input for the stream reader: each case gets its exact one-line message, the same with and
// without read-ahead. Also the non-finite policy (error/skip/allow).
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cmath>
#include <fstream>
#include <limits>

#include "support/stream_util.h"

using namespace sae;
using namespace sae::test;

namespace {

const char* M = "<memory>";

// Reads `bytes` without and with read-ahead (2 threads); both must fail with `want`.
void expect_error(const std::string& bytes, const std::string& want, size_t max_frame = kMaxFrameBytes) {
  for (bool prefetch : {false, true}) {
    ReaderOptions o;
    o.prefetch = prefetch;
    o.threads = prefetch ? 2 : 1;
    o.max_frame_bytes = max_frame;
    EXPECT_EQ(read_error(bytes, o), want) << (prefetch ? "with read-ahead" : "without read-ahead");
  }
}

std::string good_stream(int batches = 3) {
  std::vector<Batch> b;
  for (int i = 0; i < batches; i++) b.push_back(dense_batch(10, 16, uint32_t(i + 1)));
  return write_stream(header("activations", 16, DType::f32), b);
}

std::string hdr() { return zframe(header_map()); }  // d=4, f32

}  // namespace

TEST(StreamBadInput, EmptyRandomTextShort) {
  expect_error("", std::string(M) + ": empty input (no stream header)");
  std::mt19937 g(5);
  std::string rnd(1000, '\0');
  for (auto& c : rnd) c = char(g());
  expect_error(rnd, std::string(M) + ": not a saetools stream (bad magic)");
  expect_error("The quick brown fox\njumps over the lazy dog\n", std::string(M) + ": not a saetools stream (bad magic)");
  expect_error("ab", std::string(M) + ": not a saetools stream (too short or truncated inside the header)");
}

TEST(StreamBadInput, ZstdFramesTheFormatDoesNotAllow) {
  expect_error(zframe(header_map(), false), std::string(M) + ": corrupt frame (no content checksum)");
  expect_error(zframe(header_map(), true, false),
               std::string(M) + ": corrupt frame (no content size in the zstd frame header)");
  // A zstd file holding something else than msgpack maps.
  expect_error(zframe("hello"), std::string(M) + ": frame holds a msgpack integer, not a map");
  expect_error(zframe("\x81\xa4type"), std::string(M) + ": msgpack: truncated value");
  expect_error(zframe(std::string("\xdf\xff\xff\xff\xff", 5)), std::string(M) + ": msgpack: map longer than its input");
}

TEST(StreamBadInput, HeaderFields) {
  std::string foot = zframe(footer_map(0, 0));
  expect_error(zframe(header_map("other-format")) + foot, std::string(M) + ": not a saetools stream (format 'other-format')");
  expect_error(zframe(header_map("saetools-stream", 2)) + foot,
               std::string(M) + ": unsupported format version 2 (this build reads version 1)");
  expect_error(zframe(header_map("saetools-stream", 1, "weights")) + foot,
               std::string(M) + ": unknown stream kind 'weights' (expected activations or latents)");
  expect_error(zframe(header_map("saetools-stream", 1, "activations", 0)) + foot,
               std::string(M) + ": row width d=0 out of range");
  expect_error(zframe(header_map("saetools-stream", 1, "activations", 4, "f64")) + foot,
               std::string(M) + ": unknown dtype 'f64' (expected f32, f16 or bf16)");
  std::string no_d;
  mp::put_map(no_d, 3);
  mp::put_str(no_d, "type");
  mp::put_str(no_d, "header");
  mp::put_str(no_d, "format");
  mp::put_str(no_d, "saetools-stream");
  mp::put_str(no_d, "version");
  mp::put_uint(no_d, 1);
  expect_error(zframe(no_d) + foot, std::string(M) + ": header has no 'kind'");
  // A later stream's header is checked too, and named as such.
  expect_error(good_stream(1) + zframe(header_map("saetools-stream", 2)) + foot,
               std::string(M) + ": header of stream 2: unsupported format version 2 (this build reads version 1)");
}

TEST(StreamBadInput, Truncation) {
  std::string s = good_stream(3);
  auto offs = frame_offsets(s);  // header, 3 batches, footer
  ASSERT_EQ(offs.size(), 6u);
  expect_error(s.substr(0, offs[1]), std::string(M) + ": truncated stream (no batches and no footer after the header)");
  expect_error(s.substr(0, offs[4]), std::string(M) + ": truncated stream (no footer after batch 3)");
  expect_error(s.substr(0, offs[2]), std::string(M) + ": truncated stream (no footer after batch 1)");
  // Cut in the middle of the second batch's frame, and of the footer.
  expect_error(s.substr(0, (offs[2] + offs[3]) / 2), std::string(M) + ": truncated stream (ends inside the frame after batch 1)");
  expect_error(s.substr(0, offs[5] - 2), std::string(M) + ": truncated stream (ends inside the frame after batch 3)");
  expect_error(s.substr(0, offs[0] + 10), std::string(M) + ": not a saetools stream (too short or truncated inside the header)");
}

TEST(StreamBadInput, FlippedBytes) {
  std::string s = good_stream(3);
  auto offs = frame_offsets(s);
  // In the content checksum (the last 4 bytes of the frame): the data decodes but does not match.
  std::string a = s;
  a[offs[3] - 2] ^= 0x10;
  expect_error(a, std::string(M) + ": batch 2: corrupt frame (checksum mismatch)");
  // In the middle of the compressed data of batch 2: found by zstd (whatever its reason), one line.
  std::string b = s;
  b[(offs[2] + offs[3]) / 2] ^= 0x01;
  std::string e = read_error(b);
  EXPECT_EQ(e.rfind(std::string(M) + ": batch 2: corrupt frame (", 0), 0u) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos);
  // In the footer's checksum.
  std::string c = s;
  c[offs[5] - 1] ^= 0x80;
  expect_error(c, std::string(M) + ": batch 4: corrupt frame (checksum mismatch)");
  // Every single-bit flip anywhere in the stream is detected (no silent success).
  for (size_t i = 0; i < s.size(); i += 7) {
    std::string f = s;
    f[i] ^= char(1 << (i % 8));
    EXPECT_NE(read_error(f), "") << "flip at byte " << i << " went unnoticed";
  }
}

TEST(StreamBadInput, StructureOfTheStream) {
  std::string h = hdr();
  std::string b1 = zframe(batch_map(2, 4));
  expect_error(zframe(batch_map(2, 4)) + zframe(footer_map(2, 1)), std::string(M) + ": stream does not start with a header");
  expect_error(h + b1 + zframe(footer_map(3, 1)),
               std::string(M) + ": footer says 3 rows in 1 batches, but the stream held 2 rows in 1");
  expect_error(h + b1 + zframe(footer_map(2, 2)),
               std::string(M) + ": footer says 2 rows in 2 batches, but the stream held 2 rows in 1");
  expect_error(h + b1 + zframe(footer_map(2, 1)) + b1, std::string(M) + ": batch 2 after the footer, without a header");
  expect_error(h + b1 + h, std::string(M) + ": header in the middle of a stream (no footer after batch 1)");
  expect_error(h + b1 + zframe(footer_map(2, 1)) + zframe(footer_map(0, 0)),
               std::string(M) + ": footer without a header (after batch 1)");
  expect_error(h + b1 + zframe(footer_map(2, 1)) + "junk", std::string(M) + ": unexpected bytes after the footer (not a zstd frame)");
  expect_error(h + b1 + "XXXXXXXX" + b1, std::string(M) + ": batch 2: not a zstd frame (corrupt stream)");
  // Trailing bytes after a complete stream that look like the start of a frame.
  expect_error(good_stream(1) + std::string("\x28\xb5\x2f\xfd\x24", 5) + "0123",
               std::string(M) + ": truncated stream (ends inside a frame after the footer)");
}

TEST(StreamBadInput, BatchContents) {
  std::string h = hdr();
  auto with = [&](const std::string& batch) { return h + zframe(batch) + zframe(footer_map(2, 1)); };
  std::string short_x = batch_map(2, 4);
  short_x = batch_map(1, 4);
  short_x[short_x.find("rows") + 4] = 2;  // claims 2 rows, holds 1
  expect_error(with(short_x), std::string(M) + ": batch 1: payload 'x' has 16 bytes, expected 32");
  std::string no_x;
  mp::put_map(no_x, 2);
  mp::put_str(no_x, "type");
  mp::put_str(no_x, "batch");
  mp::put_str(no_x, "rows");
  mp::put_uint(no_x, 2);
  expect_error(with(no_x), std::string(M) + ": batch 1: missing payload 'x'");
  std::string tok = batch_map(2, 4);
  tok[0] = char(0x84);
  mp::put_str(tok, "token");
  mp::put_bin_header(tok, 4);
  tok += std::string(4, '\0');
  expect_error(with(tok), std::string(M) + ": batch 1: column 'token' has 4 bytes, expected 8");
  std::string rows_str;
  mp::put_map(rows_str, 2);
  mp::put_str(rows_str, "type");
  mp::put_str(rows_str, "batch");
  mp::put_str(rows_str, "rows");
  mp::put_str(rows_str, "2");
  expect_error(with(rows_str), std::string(M) + ": batch 1: 'rows' is a string, not a non-negative integer");
  std::string huge_rows;
  mp::put_map(huge_rows, 2);
  mp::put_str(huge_rows, "type");
  mp::put_str(huge_rows, "batch");
  mp::put_str(huge_rows, "rows");
  mp::put_uint(huge_rows, uint64_t(1) << 62);
  expect_error(with(huge_rows), std::string(M) + ": batch 1: 'rows' is 4611686018427387904, more than the frame could hold");
  expect_error(with(batch_map(2, 4) + "abc"), std::string(M) + ": batch 1: corrupt frame (3 bytes after the msgpack map)");
  std::string dup = batch_map(2, 4);
  dup[0] = char(0x84);
  mp::put_str(dup, "rows");
  mp::put_uint(dup, 2);
  expect_error(with(dup), std::string(M) + ": batch 1: duplicate key 'rows'");
  std::string weird;
  mp::put_map(weird, 1);
  mp::put_str(weird, "type");
  mp::put_str(weird, "weird");
  expect_error(with(weird), std::string(M) + ": batch 1: unknown frame type 'weird'");
  std::string shuf = batch_map(2, 4);
  shuf[0] = char(0x84);
  mp::put_str(shuf, "byteshuffle");
  mp::put_uint(shuf, 1);
  expect_error(with(shuf), std::string(M) + ": batch 1: 'byteshuffle' is not a boolean");
}

TEST(StreamBadInput, LatentContents) {
  std::string h = zframe(header_map("saetools-stream", 1, "latents", 4, "f32"));
  auto latent = [&](std::vector<uint32_t> count, std::vector<uint32_t> index, size_t nvalues) {
    std::string o;
    mp::put_map(o, 5);
    mp::put_str(o, "type");
    mp::put_str(o, "batch");
    mp::put_str(o, "rows");
    mp::put_uint(o, count.size());
    mp::put_str(o, "count");
    mp::put_bin_header(o, count.size() * 4);
    o.append(reinterpret_cast<const char*>(count.data()), count.size() * 4);
    mp::put_str(o, "index");
    mp::put_bin_header(o, index.size() * 4);
    o.append(reinterpret_cast<const char*>(index.data()), index.size() * 4);
    mp::put_str(o, "value");
    mp::put_bin_header(o, nvalues * 4);
    o += std::string(nvalues * 4, '\0');
    return h + zframe(o) + zframe(footer_map(count.size(), 1));
  };
  EXPECT_EQ(read_error(latent({1, 2}, {0, 1, 3}, 3)), "");
  expect_error(latent({1, 2}, {0, 1, 9}, 3), std::string(M) + ": batch 1: latent index 9 is not below d=4");
  expect_error(latent({1, 5}, {0, 1, 2, 3, 0, 1}, 6), std::string(M) + ": batch 1: a row has 5 latents, more than d");
  expect_error(latent({1, 2}, {0, 1}, 3), std::string(M) + ": batch 1: column 'index' has 8 bytes, expected 12");
  expect_error(latent({1, 2}, {0, 1, 2}, 2), std::string(M) + ": batch 1: payload 'value' has 8 bytes, expected 12");
}

// A frame that claims more decompressed bytes than the reader allows is refused before anything is
// allocated for it.
TEST(StreamBadInput, FrameOverTheSizeLimit) {
  std::string s = hdr() + zframe(batch_map(100, 4)) + zframe(footer_map(100, 1));
  expect_error(s, std::string(M) + ": batch 1: corrupt frame (claims 1623 bytes decompressed, over the limit of 1000)", 1000);
  expect_error(s, "", 2000);
}

// A frame whose content size field claims more than its blocks can regenerate is refused before
// a buffer is sized from the claim: the field is not covered by any checksum, so only the block
// headers can tell. Here an 80 kB batch (one compressed block of at most 128 KiB) claims 512 MiB.
TEST(StreamBadInput, FrameClaimingMoreThanItsBlocksHold) {
  std::string batch = zframe(batch_map(5000, 4));
  const uint8_t fhd = uint8_t(batch[4]);
  ASSERT_EQ(fhd >> 6, 2) << "expected a 4-byte content size field";
  const size_t at = 5 + ((fhd & 0x20) ? 0 : 1);
  const uint32_t claim = uint32_t(1) << 29;
  for (int i = 0; i < 4; i++) batch[at + size_t(i)] = char((claim >> (8 * i)) & 0xff);
  std::string s = hdr() + batch + zframe(footer_map(5000, 1));
  expect_error(s, std::string(M) + ": batch 1: corrupt frame (claims 536870912 bytes decompressed, more than its " +
                      std::to_string(batch.size()) + " bytes can hold)");
  // The same frame with its true size reads (so the bound is not simply refusing large frames).
  expect_error(hdr() + zframe(batch_map(5000, 4)) + zframe(footer_map(5000, 1)), "");
}

TEST(StreamBadInput, MissingAndUnreadableFiles) {
  TempDir tmp;
  const std::string& dir = tmp.path();
  for (bool prefetch : {false, true}) {
    ReaderOptions o;
    o.prefetch = prefetch;
    auto err = [&](std::vector<std::string> files) -> std::string {
      try {
        StreamReader r(files, o);
        Batch b;
        while (r.next(b)) {
        }
      } catch (const InputError& e) {
        return e.what();
      }
      return "";
    };
    EXPECT_EQ(err({dir + "/nope.sae"}), dir + "/nope.sae: No such file or directory");
    EXPECT_EQ(err({dir}), dir + ": is a directory");
    std::ofstream(dir + "/good.sae", std::ios::binary) << good_stream(1);
    std::ofstream(dir + "/empty.sae", std::ios::binary) << "";
    EXPECT_EQ(err({dir + "/good.sae", dir + "/nope.sae"}), dir + "/nope.sae: No such file or directory");
    EXPECT_EQ(err({dir + "/good.sae", dir + "/empty.sae"}), dir + "/empty.sae: empty input (no stream header)");
    if (geteuid() != 0) {  // root reads anything
      std::ofstream(dir + "/locked.sae") << "x";
      chmod((dir + "/locked.sae").c_str(), 0);
      EXPECT_EQ(err({dir + "/locked.sae"}), dir + "/locked.sae: Permission denied");
    }
  }
}

namespace {
// Batches of d=4 where batch 1 (of 0..2) has NaN in row 1 and +Inf in row 3.
std::vector<Batch> with_nonfinite(bool latents) {
  std::vector<Batch> in;
  for (int i = 0; i < 3; i++) {
    Batch b = latents ? latent_batch(5, 4, 4, uint32_t(i + 1), {true, true, true})
                      : dense_batch(5, 4, uint32_t(i + 1), {true, true, true});
    if (i == 1) {
      if (latents) {
        // Give rows 1 and 3 at least one entry, then poison it.
        b = Batch();
        b.rows = 5;
        b.count = {1, 2, 0, 1, 1};
        b.index = {0, 1, 2, 3, 0};
        b.value = {1, std::numeric_limits<float>::quiet_NaN(), 2, std::numeric_limits<float>::infinity(), 3};
        for (int r = 0; r < 5; r++) {
          b.token.push_back(100 + r);
          b.doc.push_back(r);
          b.pos.push_back(r);
        }
      } else {
        b.x[1 * 4 + 2] = std::numeric_limits<float>::quiet_NaN();
        b.x[3 * 4 + 0] = std::numeric_limits<float>::infinity();
      }
    }
    in.push_back(b);
  }
  return in;
}
}  // namespace

TEST(StreamNonFinite, ErrorSkipAndAllow) {
  for (bool latents : {false, true})
    for (DType t : {DType::f32, DType::bf16, DType::f16}) {
      SCOPED_TRACE(std::string(latents ? "latents " : "activations ") + dtype_name(t));
      auto in = with_nonfinite(latents);
      std::string s = write_stream(header(latents ? "latents" : "activations", 4, t), in);
      for (bool keep_stored : {false, true})
      for (bool prefetch : {false, true}) {
        SCOPED_TRACE(std::string(keep_stored ? "kept as stored" : "decoded") + (prefetch ? ", prefetch" : ""));
        ReaderOptions o;
        o.prefetch = prefetch;
        o.threads = 2;
        o.keep_stored = keep_stored;
        o.nonfinite = NonFinite::error;
        EXPECT_EQ(read_error(s, o), "<memory>: batch 2: row 1 has a NaN or Inf value (2 such rows in this batch)");

        o.nonfinite = NonFinite::skip;
        StreamReader r(s.data(), s.size(), "<memory>", o);
        Batch b;
        std::vector<Batch> out;
        while (r.next(b)) out.push_back(b);
        ASSERT_EQ(out.size(), 3u);
        EXPECT_EQ(r.rows_skipped(), 2);
        EXPECT_EQ(r.rows_read(), 13);
        const Batch& m = out[1];
        ASSERT_EQ(m.rows, 3);
        // Only the batch that lost rows is decoded; the others stay as stored when asked.
        EXPECT_FALSE(m.is_stored());
        EXPECT_EQ(out[0].is_stored(), keep_stored && !latents);
        EXPECT_EQ(m.token, (std::vector<int32_t>{in[1].token[0], in[1].token[2], in[1].token[4]}));
        EXPECT_EQ(m.doc, (std::vector<int64_t>{in[1].doc[0], in[1].doc[2], in[1].doc[4]}));
        EXPECT_EQ(m.pos, (std::vector<int32_t>{in[1].pos[0], in[1].pos[2], in[1].pos[4]}));
        if (latents) {
          EXPECT_EQ(m.count, (std::vector<uint32_t>{1, 0, 1}));
          EXPECT_EQ(m.index, (std::vector<uint32_t>{0, 0}));
          EXPECT_EQ(m.value, (std::vector<float>{1, 3}));
        } else {
          for (int r2 : {0, 1, 2})
            for (int j = 0; j < 4; j++)
              EXPECT_EQ(m.x[size_t(r2 * 4 + j)], stored(t, in[1].x[size_t((2 * r2) * 4 + j)]));
        }

        o.nonfinite = NonFinite::allow;
        auto all = read_stream_bytes(s, nullptr, o);
        ASSERT_EQ(all[1].rows, 5);
        if (latents) {
          EXPECT_TRUE(std::isnan(all[1].value[1]));
          EXPECT_TRUE(std::isinf(all[1].value[3]));
        } else {
          std::vector<float> x(20);
          all[1].rows_f32(4, 0, 5, x.data());
          EXPECT_TRUE(std::isnan(x[6]));
          EXPECT_TRUE(std::isinf(x[12]));
        }
      }
    }
}
