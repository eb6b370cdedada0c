// libFuzzer target for the .npz reader (lib/stream/npz.h), the path a Gemma Scope params.npz
// takes. Every input must either read or throw InputError: never crash, leak, hang, read out of
// bounds, or allocate more than the input can back (the Makefile runs it with -malloc_limit_mb,
// so an allocation sized from a claim in the archive is a finding).
//
// Each input is written to a memfd and opened as an archive; every array it names is read with
// the shape its own header gives. An array that reads has exactly that many values, and reading
// it again gives the same bits.
//
// SAE_FUZZ_SEEDS=DIR: at start-up, write small valid archives (stored, deflated, zip64, f2/f4/f8,
// with a comment) into DIR.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "base/errors.h"
#include "stream/npz.h"
#include "support/npz_writer.h"

using namespace sae;

namespace {

void read_everything(const std::string& path) {
  npz::Archive a(path);
  for (const std::string& name : a.names()) {
    npy::Header h;
    try {
      h = a.header(name);
    } catch (const InputError&) {
      continue;
    }
    std::vector<float> v;
    try {
      v = a.read_f32(name, h.shape);
    } catch (const InputError&) {
      continue;
    }
    if (v.size() != h.count()) abort();
    const std::vector<float> again = a.read_f32(name, h.shape);  // read once: must read again
    if (again.size() != v.size() || (!v.empty() && memcmp(again.data(), v.data(), v.size() * sizeof(float)) != 0))
      abort();
  }
}

void write_seeds(const std::string& dir) {
  int n = 0;
  auto put = [&](const std::string& s) { std::ofstream(dir + "/builtin-npz-" + std::to_string(n++) + ".npz", std::ios::binary) << s; };
  for (npy::Elem e : {npy::Elem::f2, npy::Elem::f4, npy::Elem::f8})
    for (bool deflate : {false, true})
      for (bool zip64 : {false, true}) {
        fixtures::NpzOptions o;
        o.deflate = deflate;
        o.zip64 = zip64;
        o.comment = zip64 ? "c" : "";
        put(fixtures::npz_bytes({{"W_enc.npy", fixtures::npy_bytes(e, {2, 3}, {1, -2, 3, 0.5, 0, 7})},
                                 {"b.npy", fixtures::npy_bytes(e, {3}, {1, 2, 3})}},
                                o));
      }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* dir = getenv("SAE_FUZZ_SEEDS")) write_seeds(dir);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  int fd = memfd_create("fuzz-npz", MFD_CLOEXEC);
  if (fd < 0 || write(fd, data, size) != ssize_t(size)) abort();
  try {
    read_everything("/proc/self/fd/" + std::to_string(fd));
  } catch (const InputError&) {
  }
  close(fd);
  return 0;
}
