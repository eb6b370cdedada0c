#include "sae/sparse_encode.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <stdexcept>

#include "base/errors.h"
#include "base/fork_join_pool.h"
#include "sae/kernels.h"
#if defined(SAE_HAVE_CUDA)
#include "sae/sparse_encode_cuda.h"
#endif

// OpenBLAS's thread count, when the BLAS is OpenBLAS (weak: absent elsewhere). The encoder's own
// threads each run a single-threaded product on their rows (as model/ops_cpu.cpp's project does).
extern "C" {
__attribute__((weak)) void openblas_set_num_threads(int);
__attribute__((weak)) int openblas_get_num_threads(void);
}

namespace sae {

namespace {

using kern::EncodeRule;

EncodeRule rule_of(const Sae& s) {
  if (s.arch == "standard") return EncodeRule::standard;
  if (s.arch == "jumprelu") return EncodeRule::jumprelu;
  if (s.arch == "gated") return EncodeRule::gated;
  if (s.arch == "topk") return EncodeRule::topk;
  throw InputError("SparseEncoder: unknown SAE architecture '" + s.arch + "'");
}

// Dense pre-activations held at once (per thread on the CPU): about 16 MiB of floats, a multiple
// of 16 rows from 16 to 1024 (256 at d_sae 16384). Each call of the product packs all of W_enc
// again, so fewer, larger calls cost less: 64-row blocks ran at 0.80 of the GEMM bound in
// bench_encode, 256-row blocks at 0.88.
int64_t cpu_block_rows(int64_t d_sae) {
  return std::clamp<int64_t>((int64_t(1) << 22) / std::max<int64_t>(d_sae, 1), 16, 1024) / 16 * 16;
}
// On the GPU: about 256 MiB of pre-activations, at most 65536 rows.
int64_t cuda_block_rows(int64_t d_sae) {
  return std::clamp<int64_t>((int64_t(1) << 26) / std::max<int64_t>(d_sae, 1), 1, 65536);
}

// One thread's output: rows one after another, as Batch::count/index/value.
struct Part {
  std::vector<uint32_t> count, index;
  std::vector<float> value;
  void clear() {
    count.clear();
    index.clear();
    value.clear();
  }
};

// The k largest of v[0..n) in the order kern::topk_before (larger first, ties to the lower index),
// those > 0 after relu appended to `out` in ascending index. One pass keeps a candidate buffer of
// at most 2k + 64 entries: an entry enters only when it comes before the current k-th candidate
// (which, scanning in index order, means a strictly larger value); when the buffer is full it is
// cut back to its best k. No entry that is dropped can be among the k best.
struct TopKSelector {
  std::vector<float> val, tv;
  std::vector<int32_t> idx, order, ti;

  uint32_t select(const float* v, int64_t n, int k, Part& out) {
    const size_t cap = size_t(2 * k + 64);
    val.resize(cap);
    idx.resize(cap);
    size_t m = 0;
    float kth = -INFINITY;
    bool have_kth = false;
    auto cut = [&] {
      order.resize(m);
      for (size_t i = 0; i < m; i++) order[i] = int32_t(i);
      std::nth_element(order.begin(), order.begin() + (k - 1), order.end(), [&](int32_t a, int32_t b) {
        return kern::topk_before(val[size_t(a)], idx[size_t(a)], val[size_t(b)], idx[size_t(b)]);
      });
      // Keep the first k of `order` (the k best; order[k-1] is the k-th, the last of them).
      tv.resize(size_t(k));
      ti.resize(size_t(k));
      for (int i = 0; i < k; i++) {
        tv[size_t(i)] = val[size_t(order[size_t(i)])];
        ti[size_t(i)] = idx[size_t(order[size_t(i)])];
      }
      kth = tv[size_t(k - 1)];
      std::copy(tv.begin(), tv.end(), val.begin());
      std::copy(ti.begin(), ti.end(), idx.begin());
      m = size_t(k);
      have_kth = true;
    };
    for (int64_t l = 0; l < n; l++) {
      const float x = v[l];
      // Later indices than every candidate: x comes before the k-th only when strictly larger.
      if (have_kth && !(x > kth)) continue;
      val[m] = x;
      idx[m] = int32_t(l);
      if (++m == cap) cut();
    }
    if (m > size_t(k)) cut();
    // The selected latents, by index, relu applied; only the positive ones are active.
    order.resize(m);
    for (size_t i = 0; i < m; i++) order[i] = int32_t(i);
    std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return idx[size_t(a)] < idx[size_t(b)]; });
    uint32_t c = 0;
    for (size_t i = 0; i < m; i++) {
      const float a = kern::encode_relu(val[size_t(order[i])]);
      if (a > 0.0f) {
        out.index.push_back(uint32_t(idx[size_t(order[i])]));
        out.value.push_back(a);
        c++;
      }
    }
    return c;
  }
};

}  // namespace

struct SparseEncoder::Impl {
  const Sae& sae;
  Device device;
  EncodeRule rule;
  std::vector<float> bias;       // b_enc, or zeros for gated (as Sae::encode)
  std::vector<float> mag_scale;  // gated: exp(r_mag)
  int64_t block = 0;

  // CPU
  std::unique_ptr<ForkJoinPool> own_pool;
  ForkJoinPool* pool = nullptr;
  struct Scratch {
    std::vector<float> xin, pre;
    TopKSelector topk;
    Part part;
  };
  std::vector<Scratch> scratch;

  // CUDA
  std::unique_ptr<Backend> be;
  Buffer<float> d_W, d_bias, d_thr, d_gate, d_mag_scale, d_mag_bias, d_xin, d_pre, d_slot_val, d_val;
  Buffer<uint32_t> d_slot_idx, d_count, d_idx;
  Buffer<uint64_t> d_offset;
  std::vector<float> h_xin;
  std::vector<uint32_t> h_count;
  std::vector<uint64_t> h_offset;

  Impl(const Sae& s, Device dev, int threads) : sae(s), device(dev), rule(rule_of(s)) {
    if (s.d_in <= 0 || s.d_sae <= 0 || s.W_enc.size() != size_t(s.d_in * s.d_sae))
      throw std::logic_error("SparseEncoder: SAE with inconsistent shapes");
    if (rule == EncodeRule::topk && (s.k < 1 || s.k > s.d_sae))
      throw std::logic_error("SparseEncoder: topk SAE with k outside 1..d_sae");
    if (threads < 0) throw std::logic_error("SparseEncoder: negative thread count");
    bias = rule == EncodeRule::gated ? std::vector<float>(size_t(s.d_sae), 0.0f) : s.b_enc;
    if (rule == EncodeRule::gated) {
      mag_scale.resize(size_t(s.d_sae));
      for (int64_t j = 0; j < s.d_sae; j++) mag_scale[size_t(j)] = std::exp(s.r_mag[size_t(j)]);
    }
    if (dev == Device::cpu) {
      block = cpu_block_rows(s.d_sae);
      if (threads > 0) {
        own_pool = std::make_unique<ForkJoinPool>(threads);
        pool = own_pool.get();
      } else {
        pool = &ForkJoinPool::global();
      }
      scratch.resize(size_t(pool->size()));
      return;
    }
#if defined(SAE_HAVE_CUDA)
    block = cuda_block_rows(s.d_sae);
    be = make_backend(Device::cuda);
    d_W = Buffer<float>(*be, s.W_enc.size());
    d_W.upload(s.W_enc);
    d_bias = Buffer<float>(*be, bias.size());
    d_bias.upload(bias);
    if (rule == EncodeRule::jumprelu) {
      d_thr = Buffer<float>(*be, size_t(s.d_sae));
      d_thr.upload(s.threshold);
    }
    if (rule == EncodeRule::gated) {
      d_gate = Buffer<float>(*be, size_t(s.d_sae));
      d_gate.upload(s.b_gate);
      d_mag_scale = Buffer<float>(*be, size_t(s.d_sae));
      d_mag_scale.upload(mag_scale);
      d_mag_bias = Buffer<float>(*be, size_t(s.d_sae));
      d_mag_bias.upload(s.b_mag);
    }
#else
    throw InputError("SparseEncoder: this build has no CUDA backend");
#endif
  }

  int64_t slot() const { return rule == EncodeRule::topk ? sae.k : sae.d_sae; }

  // CPU: one block of n <= block rows of x, starting at row r0, into the thread's part: the input,
  // the bias, one single-threaded sgemm, the selection of each row.
  void cpu_block(const float* x, int64_t r0, int64_t n, Scratch& sc) {
    const int64_t d_in = sae.d_in, d_sae = sae.d_sae;
    sc.xin.resize(size_t(block * d_in));
    sc.pre.resize(size_t(block * d_sae));
    sae.encoder_input(x + r0 * d_in, n, sc.xin.data());
    for (int64_t r = 0; r < n; r++) std::memcpy(sc.pre.data() + r * d_sae, bias.data(), size_t(d_sae) * sizeof(float));
    host_sgemm(false, false, n, d_sae, d_in, 1.0f, sc.xin.data(), d_in, sae.W_enc.data(), d_sae, 1.0f, sc.pre.data(),
               d_sae);
    const float* thr = sae.threshold.empty() ? nullptr : sae.threshold.data();
    const float* gate = sae.b_gate.empty() ? nullptr : sae.b_gate.data();
    const float* ms = mag_scale.empty() ? nullptr : mag_scale.data();
    const float* mb = sae.b_mag.empty() ? nullptr : sae.b_mag.data();
    for (int64_t r = 0; r < n; r++) {
      const float* p = sc.pre.data() + r * d_sae;
      uint32_t c = 0;
      if (rule == EncodeRule::topk) {
        c = sc.topk.select(p, d_sae, sae.k, sc.part);
      } else {
        for (int64_t l = 0; l < d_sae; l++) {
          const float a = kern::encode_rule(rule, p[l], l, thr, gate, ms, mb);
          if (a > 0.0f) {
            sc.part.index.push_back(uint32_t(l));
            sc.part.value.push_back(a);
            c++;
          }
        }
      }
      sc.part.count.push_back(c);
    }
  }

  void encode_cpu(const float* x, int64_t rows, std::vector<uint32_t>& count, std::vector<uint32_t>& index,
                  std::vector<float>& value) {
    // The pool's threads share the blocks, each running its products on one OpenBLAS thread (one
    // set of threads for products and selections, as model/ops_cpu.cpp's project does). The blocks
    // are the same whatever the thread count, and so are the products' roundings: the result does
    // not depend on the number of threads.
    const int64_t nblocks = (rows + block - 1) / block;
    const bool set_blas = openblas_set_num_threads && openblas_get_num_threads;
    const int blas_threads = set_blas ? openblas_get_num_threads() : 0;
    if (set_blas) openblas_set_num_threads(1);
    for (Scratch& sc : scratch) sc.part.clear();  // a thread given no blocks leaves its part empty
    std::exception_ptr error;
    std::mutex error_mutex;
    pool->run(nblocks, [&](int64_t b0, int64_t b1, int t) {
      try {
        for (int64_t b = b0; b < b1; b++) cpu_block(x, b * block, std::min(block, rows - b * block), scratch[size_t(t)]);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        error = std::current_exception();
      }
    });
    if (set_blas) openblas_set_num_threads(blas_threads);
    if (error) std::rethrow_exception(error);
    // The pool's chunks are contiguous and in thread order: the parts concatenate in row order.
    size_t nnz = 0;
    for (const Scratch& sc : scratch) nnz += sc.part.index.size();
    count.resize(size_t(rows));
    index.resize(nnz);
    value.resize(nnz);
    size_t rc = 0, o = 0;
    for (const Scratch& sc : scratch) {
      const Part& p = sc.part;
      std::copy(p.count.begin(), p.count.end(), count.begin() + std::ptrdiff_t(rc));
      std::copy(p.index.begin(), p.index.end(), index.begin() + std::ptrdiff_t(o));
      std::copy(p.value.begin(), p.value.end(), value.begin() + std::ptrdiff_t(o));
      rc += p.count.size();
      o += p.index.size();
    }
    if (rc != size_t(rows) || o != nnz) throw std::logic_error("SparseEncoder: rows lost between threads");
  }

#if defined(SAE_HAVE_CUDA)
  void encode_gpu(const float* x, int64_t rows, std::vector<uint32_t>& count, std::vector<uint32_t>& index,
                   std::vector<float>& value) {
    const int64_t d_in = sae.d_in, d_sae = sae.d_sae, w = slot();
    count.clear();
    index.clear();
    value.clear();
    count.reserve(size_t(rows));
    const int64_t cap = std::min(block, std::max<int64_t>(rows, 1));
    if (d_xin.size() < size_t(cap * d_in)) {
      d_xin = Buffer<float>(*be, size_t(cap * d_in));
      d_pre = Buffer<float>(*be, size_t(cap * d_sae));
      d_slot_idx = Buffer<uint32_t>(*be, size_t(cap * w));
      d_slot_val = Buffer<float>(*be, size_t(cap * w));
      d_count = Buffer<uint32_t>(*be, size_t(cap));
      d_offset = Buffer<uint64_t>(*be, size_t(cap));
    }
    for (int64_t b0 = 0; b0 < rows; b0 += block) {
      const int64_t n = std::min(block, rows - b0);
      h_xin.resize(size_t(n * d_in));
      sae.encoder_input(x + b0 * d_in, n, h_xin.data());
      d_xin.upload(h_xin.data(), h_xin.size());
      encode_cuda::fill_rows(d_pre.data(), d_bias.data(), n, d_sae);
      be->gemm(false, false, n, d_sae, d_in, 1.0f, d_xin.data(), d_in, d_W.data(), d_sae, 1.0f, d_pre.data(), d_sae);
      encode_cuda::select_rows(rule, sae.k, d_pre.data(), n, d_sae, d_thr.data(), d_gate.data(), d_mag_scale.data(),
                               d_mag_bias.data(), w, d_slot_idx.data(), d_slot_val.data(), d_count.data());
      h_count.resize(size_t(n));
      d_count.download(h_count.data(), size_t(n));
      h_offset.resize(size_t(n));
      uint64_t nnz = 0;
      for (int64_t r = 0; r < n; r++) {
        h_offset[size_t(r)] = nnz;
        nnz += h_count[size_t(r)];
      }
      count.insert(count.end(), h_count.begin(), h_count.end());
      if (nnz == 0) continue;
      d_offset.upload(h_offset.data(), size_t(n));
      if (d_idx.size() < nnz) {
        d_idx = Buffer<uint32_t>(*be, size_t(nnz));
        d_val = Buffer<float>(*be, size_t(nnz));
      }
      encode_cuda::gather_rows(d_slot_idx.data(), d_slot_val.data(), w, d_count.data(), d_offset.data(), n,
                               d_idx.data(), d_val.data());
      const size_t o = index.size();
      index.resize(o + nnz);
      value.resize(o + nnz);
      d_idx.download(index.data() + o, size_t(nnz));
      d_val.download(value.data() + o, size_t(nnz));
    }
  }
#endif
};

SparseEncoder::SparseEncoder(const Sae& sae, Device device, int threads)
    : impl_(std::make_unique<Impl>(sae, device, threads)) {}

SparseEncoder::~SparseEncoder() = default;

int64_t SparseEncoder::block_rows() const { return impl_->block; }

void SparseEncoder::encode(const float* x, int64_t rows, std::vector<uint32_t>& count, std::vector<uint32_t>& index,
                           std::vector<float>& value) {
  if (rows < 0) throw std::logic_error("SparseEncoder::encode: negative row count");
  if (impl_->device == Device::cpu) {
    if (rows == 0) {
      count.clear();
      index.clear();
      value.clear();
      return;
    }
    impl_->encode_cpu(x, rows, count, index, value);
    return;
  }
#if defined(SAE_HAVE_CUDA)
  impl_->encode_gpu(x, rows, count, index, value);
#endif
}

}  // namespace sae
