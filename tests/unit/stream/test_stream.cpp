// Stream round trips: every dtype, column set, kind and byte-shuffle setting; writer and reader
// thread counts; headers with provenance and unknown keys; the byte layout the spec describes;
// concatenation.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <thread>

#include "support/stream_util.h"

using namespace sae;
using namespace sae::test;

namespace {

void expect_same_batch(const StreamHeader& h, const Batch& want, const Batch& got, const char* what) {
  SCOPED_TRACE(what);
  ASSERT_EQ(got.rows, want.rows);
  // Conversions are deterministic, so values must match their stored form exactly (tolerance 0).
  if (h.kind == "latents") {
    EXPECT_EQ(got.count, want.count);
    EXPECT_EQ(got.index, want.index);
    ASSERT_EQ(got.value.size(), want.value.size());
    for (size_t i = 0; i < want.value.size(); i++) ASSERT_EQ(got.value[i], stored(h.dtype, want.value[i])) << i;
    EXPECT_TRUE(got.x.empty());
  } else {
    ASSERT_EQ(got.x.size(), want.x.size());
    for (size_t i = 0; i < want.x.size(); i++) ASSERT_EQ(got.x[i], stored(h.dtype, want.x[i])) << i;
  }
  EXPECT_EQ(got.token, want.token);
  EXPECT_EQ(got.doc, want.doc);
  EXPECT_EQ(got.pos, want.pos);
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

}  // namespace

// Every combination of kind, dtype, columns and shuffle round-trips, and the writer's bytes do not
// depend on its thread count.
TEST(StreamRoundTrip, EveryDtypeColumnKindAndShuffle) {
  for (const char* kind : {"activations", "latents"})
    for (DType t : {DType::f32, DType::f16, DType::bf16})
      for (int cols = 0; cols < 8; cols++)
        for (bool shuffle : {false, true}) {
          std::string what = std::string(kind) + " " + dtype_name(t) + " cols=" + std::to_string(cols) +
                             (shuffle ? " shuffled" : "");
          SCOPED_TRACE(what);
          Cols c{bool(cols & 1), bool(cols & 2), bool(cols & 4)};
          const int64_t d = 24;
          StreamHeader h = header(kind, d, t);
          std::vector<Batch> in;
          for (int i = 0; i < 3; i++) {
            uint32_t seed = uint32_t(100 * i + cols);
            in.push_back(h.kind == "latents" ? latent_batch(17 + i, d, 5, seed, c) : dense_batch(17 + i, d, seed, c));
          }
          WriterOptions wo;
          wo.byte_shuffle = shuffle;
          wo.threads = 0;
          std::string s0 = write_stream(h, in, wo);
          for (int th : {1, 3}) {
            wo.threads = th;
            ASSERT_EQ(write_stream(h, in, wo), s0) << "threads=" << th << " changed the bytes";
          }
          StreamHeader got_h;
          auto out = read_stream_bytes(s0, &got_h);
          EXPECT_EQ(got_h.kind, h.kind);
          EXPECT_EQ(got_h.d, d);
          EXPECT_EQ(got_h.dtype, t);
          EXPECT_EQ(got_h.provenance, h.provenance);
          ASSERT_EQ(out.size(), in.size());
          for (size_t i = 0; i < in.size(); i++) expect_same_batch(h, in[i], out[i], what.c_str());
        }
}

// Reading with read-ahead and several threads gives the same batches as reading in place.
TEST(StreamRoundTrip, ReaderThreadsAndPrefetchAgree) {
  StreamHeader h = header("activations", 32, DType::bf16);
  std::vector<Batch> in;
  for (int i = 0; i < 23; i++) in.push_back(dense_batch(1 + (i * 37) % 50, 32, uint32_t(i), {true, true, true}));
  std::string s = write_stream(h, in);
  for (bool prefetch : {false, true})
    for (int threads : {1, 2, 4}) {
      ReaderOptions o;
      o.threads = threads;
      o.prefetch = prefetch;
      StreamReader r(s.data(), s.size(), "<memory>", o);
      Batch b;
      size_t i = 0;
      int64_t rows = 0;
      while (r.next(b)) {
        ASSERT_LT(i, in.size());
        expect_same_batch(h, in[i], b, "prefetch");
        rows += b.rows;
        i++;
      }
      EXPECT_EQ(i, in.size());
      EXPECT_EQ(r.rows_read(), rows);
      EXPECT_EQ(r.batches_read(), int64_t(in.size()));
      EXPECT_EQ(r.streams_read(), 1);
      EXPECT_EQ(r.compressed_bytes(), int64_t(s.size()));
      EXPECT_FALSE(r.next(b)) << "next() after the end stays false";
    }
}

// A stream with a header and footer but no batches is valid and empty.
TEST(StreamRoundTrip, NoBatches) {
  StreamHeader h = header("activations", 8, DType::f32);
  std::string s = write_stream(h, {});
  EXPECT_EQ(frames_of(s).size(), 2u);
  EXPECT_TRUE(read_stream_bytes(s).empty());
  // Zero-row batches are not written at all.
  Batch empty;
  std::string s2 = write_stream(h, {empty, dense_batch(2, 8, 1), empty});
  EXPECT_EQ(frames_of(s2).size(), 3u);
}

// Provenance and unknown top-level keys (any msgpack type) survive a write and a read.
TEST(StreamRoundTrip, HeaderProvenanceAndUnknownKeysPassThrough) {
  StreamHeader h = header("activations", 4, DType::f16);
  h.provenance["layer"] = 6;
  h.provenance["context"] = 128;
  h.provenance["tokenizer"] = "hf-bpe:abc";
  h.provenance["nested"] = {{"a", json::array({1, -2, 3.5, nullptr, true, "s"})}};
  h.extra["future_key"] = json::array({1, 2, 3});
  h.extra["blob"] = json::binary({1, 2, 3, 255});
  h.extra["negative"] = -123456789012LL;
  StreamHeader got;
  read_stream_bytes(write_stream(h, {dense_batch(3, 4, 1)}), &got);
  EXPECT_EQ(got.provenance, h.provenance);
  EXPECT_EQ(got.extra, h.extra);
  EXPECT_EQ(got.hook(), "blocks.0.hook_resid_post");
}

// The bytes are what docs/stream-format.md says, checked by hand on a tiny stream: 2 rows, d=2,
// bf16, byte-shuffled, with a token column.
TEST(StreamFormat, BytesMatchTheSpec) {
  StreamHeader h;
  h.kind = "activations";
  h.d = 2;
  h.dtype = DType::bf16;
  Batch b;
  b.rows = 2;
  b.x = {1.0f, -2.0f, 0.5f, 3.0f};  // bf16: 3f80 c000 3f00 4040
  b.token = {7, 258};
  WriterOptions o;
  o.byte_shuffle = true;
  std::string s = write_stream(h, {b}, o);
  auto offs = frame_offsets(s);
  ASSERT_EQ(offs.size(), 4u);  // header, batch, footer, end
  for (size_t i = 0; i + 1 < offs.size(); i++) {
    const uint8_t* f = reinterpret_cast<const uint8_t*>(s.data() + offs[i]);
    EXPECT_EQ(f[0], 0x28);
    EXPECT_EQ(f[1], 0xb5);
    EXPECT_EQ(f[2], 0x2f);
    EXPECT_EQ(f[3], 0xfd);
    EXPECT_TRUE(f[4] & 0x04) << "content checksum flag";
    EXPECT_NE(ZSTD_getFrameContentSize(f, offs[i + 1] - offs[i]), ZSTD_CONTENTSIZE_UNKNOWN);
  }
  auto fr = frames_of(s);
  // header: a map whose keys include the required ones
  mp::Reader hr(fr[0].data(), fr[0].size());
  json hj = mp::read_json(hr);
  EXPECT_EQ(hj["type"], "header");
  EXPECT_EQ(hj["format"], "saetools-stream");
  EXPECT_EQ(hj["version"], 1);
  EXPECT_EQ(hj["kind"], "activations");
  EXPECT_EQ(hj["d"], 2);
  EXPECT_EQ(hj["dtype"], "bf16");
  EXPECT_TRUE(hj["provenance"].is_object());
  // batch: exact msgpack bytes
  std::string want;
  want += "\x85";                                   // map of 5
  want += "\xa4type\xa5" "batch";                  // "type": "batch"
  want += "\xa4rows\x02";                           // "rows": 2
  want += "\xab" "byteshuffle\xc3";                 // "byteshuffle": true
  want += "\xa1x\xc4\x08";                          // "x": bin8 of 8 bytes
  want += std::string("\x80\x00\x00\x40", 4);       // low bytes of 3f80 c000 3f00 4040
  want += std::string("\x3f\xc0\x3f\x40", 4);       // high bytes
  want += "\xa5token\xc4\x08";                      // "token": bin8 of 8 bytes
  want += std::string("\x07\x00\x00\x00\x02\x01\x00\x00", 8);  // int32 LE 7, 258
  EXPECT_EQ(fr[1], want);
  std::string foot = "\x83\xa4type\xa6" "footer\xa4rows\x02\xa7" "batches\x01";
  EXPECT_EQ(fr[2], foot);
}

// A reader must accept what another writer may legally produce: keys in any order, integers in
// wider or signed encodings, no 'byteshuffle' key, unknown keys in batches and footers.
TEST(StreamFormat, AcceptsOtherLegalEncodings) {
  std::string hdr;
  mp::put_map(hdr, 7);
  mp::put_str(hdr, "dtype");
  mp::put_str(hdr, "f32");
  mp::put_str(hdr, "d");
  hdr += "\xd1";  // int16: a signed encoding of d = 2
  hdr += std::string("\x00\x02", 2);
  mp::put_str(hdr, "kind");
  mp::put_str(hdr, "activations");
  mp::put_str(hdr, "version");
  hdr += std::string("\xcf\0\0\0\0\0\0\0\x01", 9);  // uint64 1
  mp::put_str(hdr, "format");
  mp::put_str(hdr, "saetools-stream");
  mp::put_str(hdr, "type");
  mp::put_str(hdr, "header");
  mp::put_str(hdr, "comment");
  mp::put_str(hdr, "written by hand");
  std::string bat;
  mp::put_map(bat, 4);
  mp::put_str(bat, "x");
  mp::put_bin_header(bat, 8);
  float v[2] = {1.5f, -3.0f};
  bat.append(reinterpret_cast<const char*>(v), 8);
  mp::put_str(bat, "extra");
  mp::put_array(bat, 2);
  mp::put_uint(bat, 1);
  mp::put_map(bat, 0);
  mp::put_str(bat, "rows");
  bat += std::string("\xce\0\0\0\x01", 5);  // uint32 1
  mp::put_str(bat, "type");
  mp::put_str(bat, "batch");
  std::string foot;
  mp::put_map(foot, 4);
  mp::put_str(foot, "batches");
  mp::put_uint(foot, 1);
  mp::put_str(foot, "note");
  mp::put_nil(foot);
  mp::put_str(foot, "rows");
  mp::put_uint(foot, 1);
  mp::put_str(foot, "type");
  mp::put_str(foot, "footer");
  StreamHeader h;
  auto out = read_stream_bytes(zframe(hdr) + zframe(bat) + zframe(foot), &h);
  EXPECT_EQ(h.d, 2);
  EXPECT_EQ(h.extra["comment"], "written by hand");
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].x, (std::vector<float>{1.5f, -3.0f}));
}

// Byte shuffle changes the stored bytes and (on activation-like bf16 data) makes them smaller.
TEST(StreamFormat, ByteShuffleHelpsBf16) {
  StreamHeader h = header("activations", 64, DType::bf16);
  std::vector<Batch> in;
  for (int i = 0; i < 4; i++) in.push_back(dense_batch(256, 64, uint32_t(i)));
  WriterOptions o;
  std::string plain = write_stream(h, in, o);
  o.byte_shuffle = true;
  std::string shuffled = write_stream(h, in, o);
  EXPECT_LT(shuffled.size(), plain.size());
  auto a = read_stream_bytes(plain), b = read_stream_bytes(shuffled);
  for (size_t i = 0; i < a.size(); i++) EXPECT_EQ(a[i].x, b[i].x);
}

// `cat a b` is one stream: in memory, as one file, and as two files given together.
TEST(StreamConcat, CatReadsAsOneStream) {
  StreamHeader h = header("activations", 16, DType::f16);
  std::vector<Batch> a = {dense_batch(5, 16, 1), dense_batch(6, 16, 2)};
  std::vector<Batch> b = {dense_batch(7, 16, 3)};
  std::string sa = write_stream(h, a), sb = write_stream(h, b);
  std::vector<Batch> all = a;
  all.insert(all.end(), b.begin(), b.end());
  auto out = read_stream_bytes(sa + sb);
  ASSERT_EQ(out.size(), 3u);
  for (size_t i = 0; i < 3; i++) expect_same_batch(h, all[i], out[i], "cat");

  TempDir tmp;
  const std::string& dir = tmp.path();
  write_file(dir + "/a.sae", sa);
  write_file(dir + "/b.sae", sb);
  write_file(dir + "/ab.sae", sa + sb);
  for (auto files : {std::vector<std::string>{dir + "/a.sae", dir + "/b.sae"}, std::vector<std::string>{dir + "/ab.sae"},
                     std::vector<std::string>{dir + "/ab.sae", dir + "/a.sae"}}) {
    for (bool prefetch : {false, true}) {
      ReaderOptions o;
      o.prefetch = prefetch;
      o.threads = 2;
      StreamReader r(files, o);
      Batch got;
      int64_t n = 0, rows = 0;
      while (r.next(got)) {
        n++;
        rows += got.rows;
      }
      EXPECT_EQ(r.rows_read(), rows);
      EXPECT_EQ(n, files.size() == 2 && files[1] == dir + "/a.sae" ? 5 : 3);
      EXPECT_EQ(r.streams_read(), files.size() == 2 && files[1] == dir + "/a.sae" ? 3 : 2);
    }
  }
}

// Headers that disagree on kind, d, dtype or hook are refused with one line naming both sides.
TEST(StreamConcat, MismatchedHeadersAreRefused) {
  StreamHeader h = header("activations", 16, DType::f32, "blocks.1.hook_resid_post");
  std::string sa = write_stream(h, {dense_batch(2, 16, 1)});
  auto other = [&](StreamHeader o) {
    std::vector<Batch> b;
    if (o.kind == "latents")
      b.push_back(latent_batch(2, o.d, 3, 1));
    else
      b.push_back(dense_batch(2, o.d, 1));
    return write_stream(o, b);
  };
  StreamHeader d32 = h;
  d32.d = 32;
  StreamHeader bf = h;
  bf.dtype = DType::bf16;
  StreamHeader lat = h;
  lat.kind = "latents";
  StreamHeader hook = h;
  hook.provenance["hook"] = "blocks.2.hook_resid_post";
  EXPECT_EQ(read_error(sa + other(d32)),
            "<memory>: stream 2: does not match the first stream (<memory>): d=32 here, d=16 there");
  EXPECT_EQ(read_error(sa + other(bf)),
            "<memory>: stream 2: does not match the first stream (<memory>): dtype bf16 here, f32 there");
  EXPECT_EQ(read_error(sa + other(lat)),
            "<memory>: stream 2: does not match the first stream (<memory>): kind latents here, activations there");
  EXPECT_EQ(read_error(sa + other(hook)),
            "<memory>: stream 2: does not match the first stream (<memory>): hook 'blocks.2.hook_resid_post' here, "
            "'blocks.1.hook_resid_post' there");
  // Other provenance (model, seed, tool) may differ.
  StreamHeader seed = h;
  seed.provenance["seed"] = 99;
  seed.provenance["tool"] = "other";
  EXPECT_EQ(read_error(sa + other(seed)), "");

  TempDir tmp;
  const std::string& dir = tmp.path();
  write_file(dir + "/a.sae", sa);
  write_file(dir + "/b.sae", other(d32));
  for (bool prefetch : {false, true}) {
    ReaderOptions o;
    o.prefetch = prefetch;
    try {
      StreamReader r({dir + "/a.sae", dir + "/b.sae"}, o);
      Batch b;
      while (r.next(b)) {
      }
      FAIL() << "no error";
    } catch (const InputError& e) {
      EXPECT_EQ(std::string(e.what()),
                dir + "/b.sae: does not match the first stream (" + dir + "/a.sae): d=32 here, d=16 there");
    }
  }
}

// A reader dropped half-way through a pipe whose writer is still open returns at once (its
// read-ahead thread must not wait for input that never comes).
TEST(StreamReader, DestroyedEarlyOnAnIdlePipe) {
  StreamHeader h = header("activations", 8, DType::f32);
  std::string s = write_stream(h, {dense_batch(4, 8, 1), dense_batch(4, 8, 2)});
  s.resize(s.size() - 30);  // the writer has not sent the end yet
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  ASSERT_EQ(write(fds[1], s.data(), s.size()), ssize_t(s.size()));
  int saved = dup(0);
  dup2(fds[0], 0);
  auto t0 = std::chrono::steady_clock::now();
  {
    ReaderOptions o;
    o.threads = 2;
    StreamReader r({"-"}, o);
    Batch b;
    ASSERT_TRUE(r.next(b));
    EXPECT_EQ(b.rows, 4);
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  dup2(saved, 0);
  close(saved);
  close(fds[0]);
  close(fds[1]);
  EXPECT_LT(secs, 2.0);
}

// next() hands the caller's old buffers back for reuse; values must still be right when the
// caller keeps the batch object across calls (the usual loop).
TEST(StreamReader, ReusedBatchObjectGetsFreshValues) {
  StreamHeader h = header("activations", 16, DType::f32);
  std::vector<Batch> in;
  for (int i = 0; i < 10; i++) in.push_back(dense_batch(8 + (i % 3), 16, uint32_t(i), {i % 2 == 0, false, false}));
  std::string s = write_stream(h, in);
  ReaderOptions o;
  o.threads = 2;
  StreamReader r(s.data(), s.size(), "<memory>", o);
  Batch b;
  for (size_t i = 0; i < in.size(); i++) {
    ASSERT_TRUE(r.next(b));
    expect_same_batch(h, in[i], b, "reuse");
  }
  EXPECT_FALSE(r.next(b));
}

// The writer refuses batches that do not fit its header (a bug in the caller: logic_error).
TEST(StreamWriter, RefusesInconsistentBatches) {
  char* buf = nullptr;
  size_t len = 0;
  FILE* f = open_memstream(&buf, &len);
  {
    StreamWriter w(f, "out.sae", header("activations", 4, DType::f32));
    Batch b = dense_batch(2, 4, 1);
    b.x.pop_back();
    EXPECT_THROW(w.write(b), std::logic_error);
    Batch c = dense_batch(2, 4, 1, {true, false, false});
    c.token.pop_back();
    EXPECT_THROW(w.write(c), std::logic_error);
  }
  {
    StreamWriter w(f, "lat.sae", header("latents", 4, DType::f32));
    Batch b = latent_batch(3, 4, 2, 1);
    b.count[0] = 9;
    EXPECT_THROW(w.write(b), std::logic_error);
    Batch c;
    c.rows = 1;
    c.count = {1};
    c.index = {4};  // not below d
    c.value = {1};
    EXPECT_THROW(w.write(c), std::logic_error);
  }
  EXPECT_THROW(StreamWriter(f, "x", header("activations", 4, DType::f32), WriterOptions{99, 1, false}), UsageError);
  fclose(f);
  free(buf);
}
