// .npz archives (stream/npz.h): members stored, deflated and in zip64 form read back exactly, and
// every defect an InputError naming the file, the member and the problem.
#include <gtest/gtest.h>

#include <fstream>

#include "base/errors.h"
#include "base/files.h"
#include "stream/npz.h"
#include "support/npz_writer.h"

using namespace sae;
using fixtures::npy_bytes;
using fixtures::npz_bytes;
using fixtures::NpzOptions;
using npy::Elem;

namespace {

std::string write_file(const TempDir& dir, const std::string& name, const std::string& bytes) {
  const std::string path = dir / name;
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

const std::vector<double> kMatrix = {1.5, -2.25, 3.0, 0.125, -0.5, 1e-3};  // shape (2, 3)
const std::vector<double> kVector = {4.0, -8.5};

std::vector<std::pair<std::string, std::string>> members(Elem e) {
  return {{"W.npy", npy_bytes(e, {2, 3}, kMatrix)}, {"b.npy", npy_bytes(e, {2}, kVector)}};
}

template <class F>
void expect_error(F f, const std::string& message) {
  try {
    f();
    ADD_FAILURE() << "no error; expected: " << message;
  } catch (const InputError& e) {
    EXPECT_EQ(e.what(), message);
  }
}

}  // namespace

TEST(Npz, StoredDeflatedAndZip64MembersReadBackExactly) {
  TempDir dir;
  for (bool deflate : {false, true})
    for (bool zip64 : {false, true}) {
      SCOPED_TRACE(std::string(deflate ? "deflated" : "stored") + (zip64 ? ", zip64" : ""));
      NpzOptions o;
      o.deflate = deflate;
      o.zip64 = zip64;
      o.comment = "an archive comment";
      npz::Archive a(write_file(dir, "a.npz", npz_bytes(members(Elem::f4), o)));
      EXPECT_EQ(a.names(), (std::vector<std::string>{"W", "b"}));
      EXPECT_TRUE(a.has("W"));
      EXPECT_FALSE(a.has("W.npy"));
      EXPECT_EQ(a.header("W").shape, (std::vector<uint64_t>{2, 3}));
      const std::vector<float> w = a.read_f32("W", {2, 3}), b = a.read_f32("b", {2});
      for (size_t i = 0; i < kMatrix.size(); i++) EXPECT_EQ(w[i], float(kMatrix[i]));
      EXPECT_EQ(b, (std::vector<float>{4.0f, -8.5f}));
    }
}

TEST(Npz, HalfAndDoubleArraysConvertToFloat) {
  TempDir dir;
  npz::Archive h(write_file(dir, "h.npz", npz_bytes(members(Elem::f2))));
  const std::vector<float> w = h.read_f32("W", {2, 3});
  for (size_t i = 0; i < kMatrix.size(); i++) EXPECT_EQ(w[i], f16_to_f32(f32_to_f16(float(kMatrix[i]))));
  npz::Archive d(write_file(dir, "d.npz", npz_bytes(members(Elem::f8))));
  const std::vector<float> wd = d.read_f32("W", {2, 3});
  for (size_t i = 0; i < kMatrix.size(); i++) EXPECT_EQ(wd[i], float(kMatrix[i]));
}

TEST(Npz, EveryDefectNamesTheFileTheMemberAndTheProblem) {
  TempDir dir;
  const std::string good = npz_bytes(members(Elem::f4));
  const std::string path = write_file(dir, "p.npz", good);
  npz::Archive a(path);
  expect_error([&] { a.read_f32("W", {3, 2}); }, path + ": member W.npy: shape (2, 3), expected (3, 2)");
  expect_error([&] { a.read_f32("missing", {1}); }, path + ": no array 'missing'");

  expect_error([&] { npz::Archive x(write_file(dir, "t.npz", "not a zip at all, just text")); },
               dir / "t.npz" + ": not a zip archive (no end-of-central-directory record), so not an .npz");
  expect_error([&] { npz::Archive x(dir / "absent.npz"); }, dir / "absent.npz" + ": No such file or directory");

  // One flipped data byte: the CRC-32 catches it (the value bytes of b start 8 bytes from its end).
  std::string flipped = good;
  const size_t b_data = flipped.find("b.npy") + 5 + npy::format_header(Elem::f4, {2}).size();
  flipped[b_data] ^= 0x40;
  npz::Archive c(write_file(dir, "c.npz", flipped));
  expect_error([&] { c.read_f32("b", {2}); }, dir / "c.npz" + ": member b.npy: CRC-32 mismatch (the archive is corrupt)");

  // A member's .npy preamble is read as npy::Reader reads a file's, with the same messages.
  npz::Archive j(write_file(dir, "j.npz", npz_bytes({{"junk.npy", "hello, not an array"}, {"none.npy", ""}})));
  expect_error([&] { j.header("junk"); }, dir / "j.npz" + ": member junk.npy: not a .npy file (bad magic)");
  expect_error([&] { j.header("none"); }, dir / "j.npz" + ": member none.npy: empty input (not a .npy file)");

  // An integer array is not a weight.
  std::string ints = npy::format_header(Elem::i8, {2});
  ints.append(16, '\0');
  npz::Archive i(write_file(dir, "i.npz", npz_bytes({{"n.npy", ints}})));
  expect_error([&] { i.read_f32("n", {2}); }, dir / "i.npz" + ": member n.npy: dtype <i8, expected floating point (<f2, <f4 or <f8)");

  // A member whose .npy header claims more data than the member holds.
  std::string short_npy = npy::format_header(Elem::f4, {1000});
  short_npy.append(8, '\0');
  npz::Archive s(write_file(dir, "s.npz", npz_bytes({{"x.npy", short_npy}})));
  expect_error([&] { s.read_f32("x", {1000}); },
               dir / "s.npz" + ": member x.npy: truncated: shape (1000,) of <f4 needs 4000 bytes, the member holds 8");

  // Encrypted members (general-purpose flag bit 0 in the central directory) are refused.
  std::string enc = good;
  const size_t central = enc.find(std::string("\x50\x4b\x01\x02", 4));
  enc[central + 8] |= 1;
  expect_error([&] { npz::Archive x(write_file(dir, "e.npz", enc)); }, dir / "e.npz" + ": member W.npy is encrypted; not supported");

  // A method other than stored (0) or deflated (8).
  std::string bz = good;
  bz[central + 10] = 12;
  npz::Archive m(write_file(dir, "m.npz", bz));
  expect_error([&] { m.read_f32("W", {2, 3}); },
               dir / "m.npz" + ": member W.npy: compression method 12 is not supported (np.savez stores members, "
                               "np.savez_compressed deflates them)");

  // The archive cut before its central directory ends: the end record is gone.
  expect_error([&] { npz::Archive x(write_file(dir, "cut.npz", good.substr(0, good.size() - 30))); },
               dir / "cut.npz" + ": not a zip archive (no end-of-central-directory record), so not an .npz");

  // A deflated member whose directory entry claims the size its .npy header needs, while the
  // deflated data holds less: found when the data runs out, the array having grown only as far.
  {
    std::string lie = npy::format_header(Elem::f4, {1000});
    const size_t claimed = lie.size() + 4000;
    lie.append(8, '\0');
    NpzOptions od;
    od.deflate = true;
    std::string z = npz_bytes({{"x.npy", lie}}, od);
    const size_t cd = z.find(std::string("\x50\x4b\x01\x02", 4));
    for (int b = 0; b < 4; b++) z[cd + 24 + b] = char((claimed >> (8 * b)) & 0xFF);
    npz::Archive l(write_file(dir, "lie.npz", z));
    expect_error([&] { l.read_f32("x", {1000}); }, dir / "lie.npz" + ": member x.npy: the deflated data ends early (corrupt)");
  }

  // A deflated member claiming far more than deflate can produce is refused before any allocation.
  NpzOptions o;
  o.deflate = true;
  std::string bomb = npz_bytes(members(Elem::f4), o);
  const size_t c2 = bomb.find(std::string("\x50\x4b\x01\x02", 4));
  bomb[c2 + 24 + 3] = 0x7f;  // uncompressed size of W.npy: ~2 GB
  npz::Archive bb(write_file(dir, "bomb.npz", bomb));
  try {
    bb.read_f32("W", {2, 3});
    ADD_FAILURE() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(": member W.npy: claims "), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("more than deflate can expand (corrupt)"), std::string::npos) << e.what();
  }
}
