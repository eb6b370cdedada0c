// .npy headers (numpy's dict literal in its variants), the chunked reader, and the stream <-> npy
// conversion functions.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "stream/npy.h"
#include "stream/npy_convert.h"
#include "support/stream_util.h"

using namespace sae;
using namespace sae::npy;

namespace {

void write_file(const std::string& path, const std::string& bytes) { std::ofstream(path, std::ios::binary) << bytes; }

template <class T>
std::string raw(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

std::string parse_error(const std::string& dict) {
  try {
    parse_dict(dict);
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(NpyHeader, ParsesWhatNumpyWrites) {
  Header h = parse_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (10, 4), }");
  EXPECT_EQ(h.elem, Elem::f4);
  EXPECT_FALSE(h.fortran_order);
  EXPECT_EQ(h.shape, (std::vector<uint64_t>{10, 4}));
  EXPECT_EQ(h.count(), 40u);
  // Key order, double quotes, no trailing comma, odd spacing, Python 2 longs, 1-D and 0-D.
  h = parse_dict("{ \"shape\" : ( 3L , 2L ) , \"fortran_order\":True,\"descr\":\"<f2\"}");
  EXPECT_EQ(h.elem, Elem::f2);
  EXPECT_TRUE(h.fortran_order);
  EXPECT_EQ(h.shape, (std::vector<uint64_t>{3, 2}));
  EXPECT_EQ(parse_dict("{'descr': '<i8', 'fortran_order': False, 'shape': (7,), }").shape, (std::vector<uint64_t>{7}));
  h = parse_dict("{'descr': '<f8', 'fortran_order': False, 'shape': (), }");
  EXPECT_TRUE(h.shape.empty());
  EXPECT_EQ(h.count(), 1u);
  // Unknown keys (whatever their value) are skipped.
  h = parse_dict("{'descr': '<i4', 'extra': {'a': [1, (2, 3)], 'b': 'x,y'}, 'fortran_order': False, 'shape': (2,)}");
  EXPECT_EQ(h.elem, Elem::i4);
}

TEST(NpyHeader, RefusesWhatItCannotRead) {
  EXPECT_EQ(parse_error("{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }"),
            "big-endian data ('>f4') is not supported; convert it with arr.astype('<f4')");
  EXPECT_EQ(parse_error("{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }"),
            "unsupported dtype '<c8' (supported: <f4, <f2, <f8, and <i4, <i8 for integer columns)");
  EXPECT_EQ(parse_error("{'descr': [('x', '<f4')], 'fortran_order': False, 'shape': (1,), }"),
            "'descr' is not a simple dtype string (structured arrays are not supported)");
  EXPECT_EQ(parse_error("{'descr': '<f4', 'shape': (1,), }"), "header has no 'fortran_order'");
  EXPECT_EQ(parse_error("{'descr': '<f4', 'fortran_order': False}"), "header has no 'shape'");
  EXPECT_EQ(parse_error("{'fortran_order': False, 'shape': (1,)}"), "header has no 'descr'");
  EXPECT_EQ(parse_error("{'descr': '<f4', 'fortran_order': Maybe, 'shape': (1,)}"),
            "malformed header dict ('fortran_order' is not True or False)");
  EXPECT_EQ(parse_error("{'descr': '<f4', 'fortran_order': False, 'shape': (1, x)}"),
            "malformed header dict ('shape' is not a tuple of integers)");
  EXPECT_EQ(parse_error("{'descr': '<f4"), "malformed header dict (unterminated string)");
  EXPECT_EQ(parse_error("['descr']"), "malformed header dict (expected '{' at offset 0)");
  EXPECT_EQ(parse_error("{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296), }"),
            "shape (4294967296, 4294967296) is too large");
  EXPECT_EQ(parse_error("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}"),
            "shape dimension too large");
}

TEST(NpyHeader, FormatIsAlignedAndReadsBack) {
  for (auto shape : {std::vector<uint64_t>{0, 8}, std::vector<uint64_t>{123456789, 4096}, std::vector<uint64_t>{5}}) {
    std::string h = format_header(Elem::f4, shape);
    EXPECT_EQ(h.size() % 64, 0u);
    EXPECT_EQ(h.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
    EXPECT_EQ(h.back(), '\n');
    size_t hlen = uint8_t(h[8]) | uint8_t(h[9]) << 8;
    EXPECT_EQ(hlen + 10, h.size());
    EXPECT_EQ(parse_dict(h.substr(10)).shape, shape);
  }
  // min_len keeps the length fixed while the numbers change (the header is rewritten in place).
  size_t l = format_header(Elem::f2, {UINT64_MAX, 7}).size();
  EXPECT_EQ(format_header(Elem::f2, {0, 7}, l).size(), l);
  EXPECT_EQ(format_header(Elem::f2, {12345, 7}, l).size(), l);
  // Beyond a 65535-byte header, version 2.0 with a 4-byte length.
  std::string big = format_header(Elem::f4, {1}, 70000);
  EXPECT_EQ(big[6], 2);
  EXPECT_EQ(big.size() % 64, 0u);
}

TEST(NpyReader, ReadsEveryElementTypeAndFindsTruncation) {
  TempDir tmp;
  const std::string& dir = tmp.path();
  std::vector<float> f = {1.5f, -2.f, 0.f, 3.25f, 1e-3f, -7.f};
  write_file(dir + "/f4.npy", format_header(Elem::f4, {3, 2}) + raw(f));
  std::vector<uint16_t> h;
  for (float v : f) h.push_back(f32_to_f16(v));
  write_file(dir + "/f2.npy", format_header(Elem::f2, {3, 2}) + raw(h));
  std::vector<double> dd(f.begin(), f.end());
  write_file(dir + "/f8.npy", format_header(Elem::f8, {3, 2}) + raw(dd));
  for (const char* n : {"f4", "f2", "f8"}) {
    Reader r(dir + "/" + n + ".npy");
    std::vector<float> got(6);
    r.read_f32(got.data(), 4);  // in two pieces, as import reads batches
    r.read_f32(got.data() + 4, 2);
    r.expect_end();
    for (size_t i = 0; i < 6; i++)
      EXPECT_EQ(got[i], std::string(n) == "f2" ? test::stored(DType::f16, f[i]) : f[i]) << n << " " << i;
  }
  std::vector<int32_t> i4 = {1, -2, 2147483647};
  write_file(dir + "/i4.npy", format_header(Elem::i4, {3}) + raw(i4));
  Reader ri(dir + "/i4.npy");
  std::vector<int64_t> gi(3);
  ri.read_i64(gi.data(), 3);
  EXPECT_EQ(gi, (std::vector<int64_t>{1, -2, 2147483647}));
  EXPECT_THROW(Reader(dir + "/i4.npy").read_f32(nullptr, 0), InputError);

  // A regular file too short for its header's shape: check_size() refuses it before anything is
  // sized from the shape, and a read that runs out says the same (all a pipe can do).
  // Versions 2.0 and 3.0: a 4-byte header length. (Reading it once overran a 10-byte buffer on
  // the stack; fuzz_npy found it under ASan.)
  for (char version : {'\x02', '\x03'}) {
    std::string v1 = format_header(Elem::f4, {3, 2});
    std::string v = "\x93NUMPY";
    v += version;
    v += '\0';
    const uint32_t hlen = uint32_t(v1.size() - 10);
    for (int i = 0; i < 4; i++) v += char((hlen >> (8 * i)) & 0xff);
    write_file(dir + "/v.npy", v + v1.substr(10) + raw(f));
    Reader r(dir + "/v.npy");
    EXPECT_EQ(r.header().major, int(version));
    EXPECT_EQ(r.header().shape, (std::vector<uint64_t>{3, 2}));
    std::vector<float> got(6);
    r.read_f32(got.data(), 6);
    r.expect_end();
    EXPECT_EQ(got, f);
  }

  write_file(dir + "/short.npy", format_header(Elem::f4, {3, 2}) + raw(f).substr(0, 20));
  std::vector<float> got(6);
  const std::string short_msg = dir + "/short.npy: truncated: shape (3, 2) of <f4 needs 24 bytes of data, the file holds 20";
  for (bool check_first : {true, false}) {
    Reader rs(dir + "/short.npy");
    try {
      if (check_first) rs.check_size();
      else rs.read_f32(got.data(), 6);
      FAIL();
    } catch (const InputError& e) {
      EXPECT_EQ(std::string(e.what()), short_msg);
    }
  }
  Reader(dir + "/f4.npy").check_size();  // a whole file passes
  write_file(dir + "/long.npy", format_header(Elem::f4, {3, 2}) + raw(f) + "!");
  Reader rl(dir + "/long.npy");
  rl.read_f32(got.data(), 6);
  EXPECT_THROW(rl.expect_end(), InputError);
  EXPECT_THROW(Reader(dir + "/missing.npy"), InputError);
}

// The library functions behind sae-npy: a stream with columns goes to .npy files and back.
TEST(NpyConvert, StreamToNpyAndBack) {
  TempDir tmp;
  const std::string& dir = tmp.path();
  const int64_t d = 12;
  StreamHeader h = test::header("activations", d, DType::f32);
  std::vector<Batch> in;
  for (int i = 0; i < 4; i++) in.push_back(test::dense_batch(100 + i, d, uint32_t(i), {true, true, true}));
  write_file(dir + "/a.sae", test::write_stream(h, in));

  auto export_to = [&](const std::string& path, const ExportOptions& o) {
    StreamReader r({dir + "/a.sae"});
    FILE* f = fopen(path.c_str(), "w+b");
    int64_t rows = export_npy(r, f, path, o);
    fclose(f);
    return rows;
  };
  ExportOptions ex;
  EXPECT_EQ(export_to(dir + "/x.npy", ex), 406);
  for (const char* c : {"token", "doc", "pos"}) {
    ex.column = c;
    export_to(dir + "/" + c + ".npy", ex);
  }
  Reader xr(dir + "/x.npy");
  EXPECT_EQ(xr.header().shape, (std::vector<uint64_t>{406, uint64_t(d)}));
  Reader dr(dir + "/doc.npy");
  EXPECT_EQ(dr.header().elem, Elem::i8);

  ImportOptions im;
  im.token = dir + "/token.npy";
  im.doc = dir + "/doc.npy";
  im.pos = dir + "/pos.npy";
  im.batch_rows = 150;
  im.provenance["hook"] = "blocks.0.hook_resid_post";
  FILE* f = fopen((dir + "/b.sae").c_str(), "wb");
  EXPECT_EQ(import_npy(dir + "/x.npy", f, "b.sae", im), 406);
  fclose(f);
  auto back = test::frames_of(read_file(dir + "/b.sae"));
  EXPECT_EQ(back.size(), 2u + 3u);  // header, 150+150+106, footer
  StreamHeader bh;
  auto out = read_stream_bytes(read_file(dir + "/b.sae"), &bh);
  EXPECT_EQ(bh.provenance["hook"], "blocks.0.hook_resid_post");
  EXPECT_EQ(bh.provenance["source"], dir + "/x.npy");
  Batch all_in, all_out;
  for (auto* v : {&in, &out})
    for (auto& b : *v) {
      Batch& dst = v == &in ? all_in : all_out;
      dst.x.insert(dst.x.end(), b.x.begin(), b.x.end());
      dst.token.insert(dst.token.end(), b.token.begin(), b.token.end());
      dst.doc.insert(dst.doc.end(), b.doc.begin(), b.doc.end());
      dst.pos.insert(dst.pos.end(), b.pos.begin(), b.pos.end());
    }
  EXPECT_EQ(all_in.x, all_out.x);
  EXPECT_EQ(all_in.token, all_out.token);
  EXPECT_EQ(all_in.doc, all_out.doc);
  EXPECT_EQ(all_in.pos, all_out.pos);
}

TEST(NpyConvert, LatentStreamsAreRefused) {
  std::string s = test::write_stream(test::header("latents", 16, DType::f32), {test::latent_batch(5, 16, 3, 1)});
  StreamReader r(s.data(), s.size(), "lat.sae");
  FILE* f = tmpfile();
  try {
    export_npy(r, f, "out.npy", ExportOptions{});
    FAIL();
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()), "lat.sae: a latents stream is sparse; only activations streams convert to .npy");
  }
  fclose(f);
}
