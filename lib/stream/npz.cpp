#include "stream/npz.h"

#include <sys/stat.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "base/dtype.h"
#include "base/errors.h"

namespace sae::npz {

namespace {

uint16_t le16(const uint8_t* p) { return uint16_t(p[0] | p[1] << 8); }
uint32_t le32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}
uint64_t le64(const uint8_t* p) { return uint64_t(le32(p)) | uint64_t(le32(p + 4)) << 32; }

constexpr uint32_t kEndOfDirectory = 0x06054b50, kZip64Locator = 0x07064b50, kZip64End = 0x06064b50,
                   kCentralHeader = 0x02014b50, kLocalHeader = 0x04034b50;
constexpr uint64_t kMaxDirectory = 64ull << 20;  // a central directory past 64 MiB is not an .npz
// Deflate expands at most 1032:1; a member claiming more than that is corrupt (checked before
// anything is sized from the claim).
constexpr uint64_t kMaxDeflateRatio = 1032;

}  // namespace

// One member's bytes, in order, stored or inflated, with their CRC-32 checked at finish().
class Archive::MemberStream {
 public:
  MemberStream(const Archive& a, const Member& m) : a_(a), m_(m) {
    auto fail = [&](const std::string& msg) { throw InputError(a_.path_ + ": member " + m_.zip_name + ": " + msg); };
    if (m_.method != 0 && m_.method != 8)
      fail("compression method " + std::to_string(m_.method) +
           " is not supported (np.savez stores members, np.savez_compressed deflates them)");
    if (m_.method == 0 && m_.compressed != m_.size)
      fail("stored with " + std::to_string(m_.compressed) + " bytes for a size of " + std::to_string(m_.size));
    if (m_.method == 8 && m_.size > m_.compressed * kMaxDeflateRatio + 1024)
      fail("claims " + std::to_string(m_.size) + " bytes from " + std::to_string(m_.compressed) +
           " deflated ones, more than deflate can expand (corrupt)");
    uint8_t h[30];
    a_.read_at(m_.local_offset, h, sizeof h, "member " + m_.zip_name + " header");
    if (le32(h) != kLocalHeader) fail("no local header at offset " + std::to_string(m_.local_offset) + " (corrupt)");
    pos_ = m_.local_offset + 30 + le16(h + 26) + le16(h + 28);
    if (pos_ > a_.file_size_ || m_.compressed > a_.file_size_ - pos_)
      fail("truncated: its " + std::to_string(m_.compressed) + " bytes run past the end of the file");
    end_ = pos_ + m_.compressed;
    if (m_.method == 8) {
      if (inflateInit2(&z_, -MAX_WBITS) != Z_OK) throw std::runtime_error("zlib: inflateInit2 failed");
      inflating_ = true;
    }
  }
  ~MemberStream() {
    if (inflating_) inflateEnd(&z_);
  }
  MemberStream(const MemberStream&) = delete;
  MemberStream& operator=(const MemberStream&) = delete;

  // The next n bytes of the member; throws if it has fewer left.
  void read(void* dst, size_t n) {
    if (n > m_.size - done_)
      throw InputError(a_.path_ + ": member " + m_.zip_name + ": ends after " + std::to_string(m_.size) +
                       " bytes, but its .npy content needs more");
    if (!inflating_) {
      a_.read_at(pos_, dst, n, "member " + m_.zip_name);
      pos_ += n;
    } else {
      inflate_into(static_cast<uint8_t*>(dst), n);
    }
    crc_ = crc32_z(crc_, static_cast<const Bytef*>(dst), n);
    done_ += n;
  }
  uint64_t left() const { return m_.size - done_; }
  // After the last byte: the CRC-32 the directory records must match what was read.
  void finish() {
    if (done_ != m_.size)
      throw InputError(a_.path_ + ": member " + m_.zip_name + ": " + std::to_string(m_.size - done_) +
                       " bytes follow the array data");
    if (crc_ != m_.crc)
      throw InputError(a_.path_ + ": member " + m_.zip_name + ": CRC-32 mismatch (the archive is corrupt)");
  }

 private:
  void inflate_into(uint8_t* dst, size_t n) {
    const std::string where = a_.path_ + ": member " + m_.zip_name;
    for (size_t done = 0; done < n;) {
      const uInt chunk = uInt(std::min<size_t>(n - done, 1u << 30));
      z_.next_out = dst + done;
      z_.avail_out = chunk;
      while (z_.avail_out > 0) {
        if (z_.avail_in == 0 && pos_ < end_) {
          const size_t take = size_t(std::min<uint64_t>(in_.size(), end_ - pos_));
          a_.read_at(pos_, in_.data(), take, "member " + m_.zip_name);
          pos_ += take;
          z_.next_in = in_.data();
          z_.avail_in = uInt(take);
        }
        const int rc = inflate(&z_, Z_NO_FLUSH);
        if (rc == Z_STREAM_END) {
          if (z_.avail_out > 0) throw InputError(where + ": the deflated data ends early (corrupt)");
        } else if (rc == Z_BUF_ERROR) {
          // No progress: only possible when the input is used up.
          if (z_.avail_in > 0 || pos_ >= end_) throw InputError(where + ": the deflated data is cut short (corrupt)");
        } else if (rc != Z_OK) {
          throw InputError(where + ": corrupt deflated data (" + (z_.msg ? z_.msg : "zlib error " + std::to_string(rc)) +
                           ")");
        }
      }
      done += chunk;
    }
  }

  const Archive& a_;
  const Member& m_;
  uint64_t pos_ = 0, end_ = 0, done_ = 0;
  uLong crc_ = crc32_z(0, nullptr, 0);
  z_stream z_{};
  bool inflating_ = false;
  std::vector<uint8_t> in_ = std::vector<uint8_t>(256 << 10);
};

Archive::Archive(const std::string& path) : path_(path) {
  f_ = fopen(path.c_str(), "rb");
  if (!f_) throw InputError(path + ": " + std::strerror(errno));
  try {
    read_directory();
  } catch (...) {
    fclose(f_);
    throw;
  }
}

Archive::~Archive() {
  if (f_) fclose(f_);
}

void Archive::read_at(uint64_t offset, void* dst, size_t n, const std::string& what) const {
  if (offset > file_size_ || n > file_size_ - offset)
    throw InputError(path_ + ": truncated: " + what + " runs past the end of the file");
  if (fseeko(f_, off_t(offset), SEEK_SET) != 0 || fread(dst, 1, n, f_) != n)
    throw InputError(path_ + ": cannot read " + what + ": " + (ferror(f_) ? std::strerror(errno) : "file shrank"));
}

void Archive::read_directory() {
  auto fail = [&](const std::string& m) { throw InputError(path_ + ": " + m); };
  struct stat st;
  if (fstat(fileno(f_), &st) != 0 || !S_ISREG(st.st_mode)) fail("not a regular file");
  file_size_ = uint64_t(st.st_size);

  // The end-of-central-directory record: the last 22 bytes, or earlier by a comment of up to 64 KiB.
  const uint64_t tail = std::min<uint64_t>(file_size_, 22 + 65535);
  std::vector<uint8_t> buf(tail);
  read_at(file_size_ - tail, buf.data(), buf.size(), "the end of the archive");
  int64_t at = -1;
  for (int64_t i = int64_t(tail) - 22; i >= 0; i--)
    if (le32(&buf[size_t(i)]) == kEndOfDirectory && uint64_t(i) + 22 + le16(&buf[size_t(i) + 20]) == tail) {
      at = i;
      break;
    }
  if (at < 0) fail("not a zip archive (no end-of-central-directory record), so not an .npz");
  const uint8_t* e = &buf[size_t(at)];
  uint64_t entries = le16(e + 10), dir_size = le32(e + 12), dir_offset = le32(e + 16);
  const bool zip64 = entries == 0xFFFF || dir_size == 0xFFFFFFFF || dir_offset == 0xFFFFFFFF;
  if (!zip64 && (le16(e + 4) != 0 || le16(e + 6) != 0)) fail("a multi-part zip archive; not supported");
  if (zip64) {
    // The zip64 locator sits right before the record and points at the zip64 end record.
    const uint64_t record_at = file_size_ - tail + uint64_t(at);
    if (record_at < 20) fail("zip64 archive without its zip64 locator (corrupt)");
    uint8_t loc[20], z[56];
    read_at(record_at - 20, loc, sizeof loc, "the zip64 locator");
    if (le32(loc) != kZip64Locator) fail("zip64 archive without its zip64 locator (corrupt)");
    read_at(le64(loc + 8), z, sizeof z, "the zip64 end record");
    if (le32(z) != kZip64End) fail("bad zip64 end-of-central-directory record (corrupt)");
    if (le32(z + 16) != 0 || le32(z + 20) != 0) fail("a multi-part zip archive; not supported");
    entries = le64(z + 32);
    dir_size = le64(z + 40);
    dir_offset = le64(z + 48);
  }
  if (dir_size > kMaxDirectory) fail("a central directory of " + std::to_string(dir_size) + " bytes (corrupt?)");
  if (dir_offset > file_size_ || dir_size > file_size_ - dir_offset)
    fail("truncated: the central directory runs past the end of the file");
  std::vector<uint8_t> dir(size_t(dir_size) + 1);
  read_at(dir_offset, dir.data(), size_t(dir_size), "the central directory");

  size_t p = 0;
  for (uint64_t i = 0; i < entries; i++) {
    if (p + 46 > dir_size || le32(&dir[p]) != kCentralHeader) fail("corrupt central directory (entry " + std::to_string(i) + ")");
    const uint8_t* h = &dir[p];
    const size_t name_len = le16(h + 28), extra_len = le16(h + 30), comment_len = le16(h + 32);
    if (p + 46 + name_len + extra_len + comment_len > dir_size) fail("corrupt central directory (entry " + std::to_string(i) + ")");
    Member m;
    m.zip_name.assign(reinterpret_cast<const char*>(h + 46), name_len);
    const uint16_t flags = le16(h + 8);
    m.method = le16(h + 10);
    m.crc = le32(h + 16);
    m.compressed = le32(h + 20);
    m.size = le32(h + 24);
    m.local_offset = le32(h + 42);
    // Zip64 extra field: the 64-bit values of those fields that read 0xFFFFFFFF, in this order.
    const uint8_t* x = h + 46 + name_len;
    for (size_t q = 0; q + 4 <= extra_len;) {
      const uint16_t id = le16(x + q), len = le16(x + q + 2);
      if (q + 4 + len > extra_len) break;
      if (id == 0x0001) {
        size_t r = q + 4;
        auto take = [&](uint64_t& field) {
          if (field != 0xFFFFFFFF) return;
          if (r + 8 > q + 4 + len) fail("member " + m.zip_name + ": short zip64 extra field (corrupt)");
          field = le64(x + r);
          r += 8;
        };
        take(m.size);
        take(m.compressed);
        take(m.local_offset);
      }
      q += 4 + len;
    }
    p += 46 + name_len + extra_len + comment_len;
    if (flags & 1) fail("member " + m.zip_name + " is encrypted; not supported");
    if (m.zip_name.empty() || m.zip_name.back() == '/') continue;  // directories
    std::string name = m.zip_name;
    if (name.size() > 4 && name.compare(name.size() - 4, 4, ".npy") == 0) name.resize(name.size() - 4);
    if (!members_.emplace(name, m).second) fail("two members named " + m.zip_name);
  }
}

std::vector<std::string> Archive::names() const {
  std::vector<std::string> n;
  for (const auto& [name, m] : members_) n.push_back(name);
  return n;
}

const Archive::Member& Archive::member(const std::string& name) const {
  auto it = members_.find(name);
  if (it == members_.end()) throw InputError(path_ + ": no array '" + name + "'");
  return it->second;
}

namespace {

// The .npy preamble at the start of a member, read as npy::Reader reads a file's.
template <class Stream>
npy::Header read_npy_header(Stream& s, const std::string& where) {
  try {
    return npy::read_preamble([&s](void* p, size_t n) {
      n = size_t(std::min<uint64_t>(n, s.left()));
      s.read(p, n);
      return n;
    });
  } catch (const InputError& e) {
    throw InputError(where + ": " + e.what());
  }
}

}  // namespace

npy::Header Archive::header(const std::string& name) {
  const Member& m = member(name);
  MemberStream s(*this, m);
  return read_npy_header(s, path_ + ": member " + m.zip_name);
}

std::vector<float> Archive::read_f32(const std::string& name, const std::vector<uint64_t>& shape) {
  const Member& m = member(name);
  const std::string where = path_ + ": member " + m.zip_name;
  MemberStream s(*this, m);
  const npy::Header h = read_npy_header(s, where);
  if (!npy::is_float(h.elem))
    throw InputError(where + ": dtype " + npy::descr(h.elem) + ", expected floating point (<f2, <f4 or <f8)");
  if (h.shape != shape)
    throw InputError(where + ": shape " + npy::shape_str(h.shape) + ", expected " + npy::shape_str(shape));
  // The member's size, bounded by the file, bounds the array before anything is sized from it.
  const uint64_t count = h.count(), elem = npy::elem_size(h.elem);
  if (count > s.left() / elem)
    throw InputError(where + ": truncated: shape " + npy::shape_str(h.shape) + " of " + npy::descr(h.elem) + " needs " +
                     std::to_string(count * elem) + " bytes, the member holds " + std::to_string(s.left()));
  // A stored member's bytes are in the file, so its array is allocated at once. A deflated one
  // may claim up to 1032 times its compressed size; its array grows as the data inflates, so a
  // false claim fails on the data before it costs memory.
  std::vector<float> out;
  const size_t total = static_cast<size_t>(count);
  if (m.method == 0) out.reserve(total);
  std::vector<uint8_t> chunk(h.elem == npy::Elem::f4 ? 0 : size_t(1) << 20);
  const size_t step = h.elem == npy::Elem::f4 ? size_t(1) << 22 : chunk.size() / elem;
  for (size_t done = 0; done < total;) {
    const size_t n = std::min(total - done, step);
    out.resize(done + n);
    if (h.elem == npy::Elem::f4) {
      s.read(out.data() + done, n * sizeof(float));
    } else {
      s.read(chunk.data(), n * elem);
      for (size_t i = 0; i < n; i++) {
        if (h.elem == npy::Elem::f2) {
          uint16_t v;
          memcpy(&v, &chunk[i * 2], 2);
          out[done + i] = f16_to_f32(v);
        } else {
          double v;
          memcpy(&v, &chunk[i * 8], 8);
          out[done + i] = float(v);
        }
      }
    }
    done += n;
  }
  s.finish();
  return out;
}

}  // namespace sae::npz
