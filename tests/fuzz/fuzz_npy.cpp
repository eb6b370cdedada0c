// libFuzzer target for the .npy reader, through import_npy (lib/stream/npy_convert.h), the path
// sae-npy import takes. Every input must either convert or throw InputError: never crash, leak,
// hang, read out of bounds, or allocate more than the input can back (the Makefile runs it with
// -malloc_limit_mb, so one allocation sized from a header's claim is a finding).
//
// Each input is read two ways, as the tool reads them:
//  - from a regular file (a memfd), whose size is known, so a short file is refused up front;
//  - from a pipe (the whole input fits in a pipe's 64 KiB buffer), whose size is not, so the
//    reader must grow its buffers as the data arrives.
// Both must give the same outcome (the same stream bytes, or the same message with the file name
// removed). A converted input must also read back as a stream of shape[-1] columns and
// product(shape) / shape[-1] rows, and the array data must account for every byte of the input.
//
// SAE_FUZZ_SEEDS=DIR: at start-up, write small valid arrays of every element type and version
// into DIR.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "base/errors.h"
#include "stream/npy.h"
#include "stream/npy_convert.h"
#include "stream/stream.h"

using namespace sae;

namespace {

struct Outcome {
  std::string error;   // with the input's name replaced by "IN"
  std::string stream;  // the stream written, when it converted
};

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) s.replace(at, from.size(), to);
  return s;
}

Outcome convert(const std::string& path) {
  Outcome out;
  char* buf = nullptr;
  size_t len = 0;
  FILE* f = open_memstream(&buf, &len);
  try {
    npy::ImportOptions o;
    o.batch_rows = 7;  // several batches from small inputs
    o.writer.threads = 0;
    npy::import_npy(path, f, "<memory>", o);
    fflush(f);
    out.stream.assign(buf, len);
  } catch (const InputError& e) {
    out.error = replace_all(e.what(), path, "IN");
  }
  fclose(f);
  free(buf);
  return out;
}

Outcome from_file(const uint8_t* data, size_t size) {
  int fd = memfd_create("fuzz-npy", MFD_CLOEXEC);
  if (fd < 0 || write(fd, data, size) != ssize_t(size)) abort();
  Outcome o = convert("/proc/self/fd/" + std::to_string(fd));
  close(fd);
  return o;
}

Outcome from_pipe(const uint8_t* data, size_t size) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) abort();
  if (fcntl(p[1], F_GETPIPE_SZ) < int(size) && fcntl(p[1], F_SETPIPE_SZ, int(size)) < int(size)) abort();
  if (size && write(p[1], data, size) != ssize_t(size)) abort();
  close(p[1]);
  Outcome o = convert("/proc/self/fd/" + std::to_string(p[0]));
  close(p[0]);
  return o;
}

// A converted input reads back with the shape its header gave, and the preamble plus the array
// data are exactly the input.
void check_converted(const std::string& stream, const uint8_t* data, size_t size) {
  StreamHeader h;
  std::vector<Batch> batches = read_stream_bytes(stream, &h);  // InputError escapes: a crash
  int64_t rows = 0;
  for (const Batch& b : batches) rows += b.rows;
  std::string preamble = "\x93NUMPY";
  if (size < 10 || memcmp(data, preamble.data(), 6) != 0) abort();
  const size_t lenbytes = data[6] == 1 ? 2 : 4;
  uint64_t hlen = 0;
  for (size_t i = 0; i < lenbytes; i++) hlen |= uint64_t(data[8 + i]) << (8 * i);
  const uint64_t pre = 8 + lenbytes + hlen;
  npy::Header nh = npy::parse_dict(std::string(reinterpret_cast<const char*>(data) + 8 + lenbytes, size_t(hlen)));
  const uint64_t count = nh.count(), d = nh.shape.back();
  if (uint64_t(h.d) != d || uint64_t(rows) * d != count) abort();
  if (pre + count * npy::elem_size(nh.elem) != size) abort();
}

void write_seeds(const std::string& dir) {
  int n = 0;
  auto put = [&](const std::string& s) { std::ofstream(dir + "/builtin-npy-" + std::to_string(n++) + ".npy", std::ios::binary) << s; };
  const std::vector<std::vector<uint64_t>> shapes = {{3, 4}, {2, 2, 3}, {0, 5}, {1, 1}, {9, 2}};
  for (npy::Elem e : {npy::Elem::f2, npy::Elem::f4, npy::Elem::f8})
    for (const auto& shape : shapes) {
      uint64_t count = 1;
      for (uint64_t s : shape) count *= s;
      std::string data(size_t(count * npy::elem_size(e)), '\0');
      for (size_t i = 0; i < data.size(); i++) data[i] = char(i * 37 + 11);
      put(npy::format_header(e, shape) + data);
    }
  // Format versions 2.0 and 3.0: the same array with a 4-byte header length.
  std::string v1 = npy::format_header(npy::Elem::f4, {2, 3});
  std::string v2 = "\x93NUMPY";
  v2 += '\x02';
  v2 += '\x00';
  const uint32_t hlen = uint32_t(v1.size() - 10);
  for (int i = 0; i < 4; i++) v2 += char((hlen >> (8 * i)) & 0xff);
  v2 += v1.substr(10);
  put(v2 + std::string(24, '\x01'));
  v2[6] = '\x03';
  put(v2 + std::string(24, '\x02'));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* dir = getenv("SAE_FUZZ_SEEDS")) write_seeds(dir);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 65536) return 0;  // the pipe holds no more (the Makefile caps -max_len here)
  Outcome file = from_file(data, size), piped = from_pipe(data, size);
  // The file is refused up front when short, the pipe when its data runs out: the messages agree,
  // "the file holds N" counting the same N bytes either way.
  if (file.error != piped.error || file.stream != piped.stream) {
    fprintf(stderr, "file and pipe disagree: '%s' vs '%s' (%zu vs %zu stream bytes)\n", file.error.c_str(),
            piped.error.c_str(), file.stream.size(), piped.stream.size());
    abort();
  }
  if (file.error.empty()) check_converted(file.stream, data, size);
  return 0;
}
