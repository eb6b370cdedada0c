#include "explain/miner.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "base/fork_join_pool.h"

namespace sae {

namespace {

// Streams of the run's seed, one per purpose, so that changing one sample never moves another.
enum : uint64_t { kStreamQuantiles = 0, kStreamPool = 1, kStreamCofire = 2, kStreamContrast = 3 };

// (activation desc, row asc): the order of the top lists and of brute force over the stream.
bool ranks_before(float a, int64_t row_a, float b, int64_t row_b) { return a > b || (a == b && row_a < row_b); }

}  // namespace

namespace {

// The lower edges of bins 1 .. kHistBins-1 as floats, computed once: binning is a binary search
// over them (no logarithm per firing), and hist_edge gives the same edges.
struct HistEdges {
  float lower[kHistBins - 1];
  HistEdges() {
    for (int b = 1; b < kHistBins; b++) lower[b - 1] = float(std::pow(10.0, kHistMinExp + double(b - 1) / kHistPerDecade));
  }
};
const HistEdges& hist_edges() {
  static const HistEdges e;
  return e;
}

}  // namespace

int hist_bin(float v) {
  const HistEdges& e = hist_edges();
  // The number of lower edges <= v: 0 below the first edge (v <= 0 included).
  return int(std::upper_bound(e.lower, e.lower + kHistBins - 1, v) - e.lower);
}

double hist_edge(int edge) {
  if (edge <= 0) return 0;
  if (edge >= kHistBins) return std::numeric_limits<double>::infinity();
  return double(hist_edges().lower[edge - 1]);
}

void LatentMiner::Reservoir::draw_skip() {
  // The gap to the next kept item is geometric with success probability w.
  const double gap = std::floor(std::log(rng.uniform_pos()) / std::log1p(-w));
  next += 1 + int64_t(std::min(gap, 1e18));
}

int64_t LatentMiner::Reservoir::offer() {
  seen++;
  if (capacity == 0) return -1;
  if (seen <= capacity) {
    if (seen == capacity) {
      w = std::exp(std::log(rng.uniform_pos()) / double(capacity));
      next = seen;
      draw_skip();
    }
    return seen - 1;
  }
  if (seen < next) return -1;
  const int64_t slot = int64_t(rng.below(uint64_t(capacity)));
  w *= std::exp(std::log(rng.uniform_pos()) / double(capacity));
  draw_skip();
  return slot;
}

LatentMiner::LatentMiner(int64_t d_sae, std::vector<int64_t> latents, MinerOptions opt)
    : d_sae_(d_sae), latents_(std::move(latents)), opt_(opt) {
  if (opt_.top < 0 || opt_.quantiles < 0 || opt_.per_quantile < 0 || opt_.contrast < 0 || opt_.before < 0 ||
      opt_.after < 0 || opt_.cofire_rows < 0 || opt_.chunk_rows < 1)
    throw std::logic_error("LatentMiner: negative option");
  slot_of_.assign(size_t(d_sae_), -1);
  for (size_t s = 0; s < latents_.size(); s++) {
    const int64_t l = latents_[s];
    if (l < 0 || l >= d_sae_ || slot_of_[size_t(l)] >= 0 || (s > 0 && l < latents_[s - 1]))
      throw std::logic_error("LatentMiner: latents must be ascending, distinct and below d_sae");
    slot_of_[size_t(l)] = int32_t(s);
  }
  const size_t L = latents_.size();
  ring_cap_ = std::max({opt_.before, opt_.after, 1});
  per_slot_ = opt_.top + opt_.quantiles * opt_.per_quantile;
  state_.resize(L);
  hist_.assign(L * kHistBins, 0);
  ring_.resize(L * size_t(ring_cap_));
  heap_.resize(L * size_t(opt_.top));
  examples_.resize(L * size_t(per_slot_));
  acts_.resize(examples_.size() * size_t(window()));
  const Rng base(opt_.seed);
  const Rng quantile_base = base.substream(kStreamQuantiles);
  for (size_t s = 0; s < L; s++) {
    state_[s].quantile.capacity = int64_t(opt_.quantiles) * opt_.per_quantile;
    state_[s].quantile.rng = quantile_base.substream(uint64_t(latents_[s]));
  }
  // The contrast pool: enough random windows that a latent firing on a few percent of tokens
  // still has `contrast` windows where it is silent.
  pool_res_.capacity = opt_.contrast > 0 ? 64 * int64_t(opt_.contrast) : 0;
  pool_res_.rng = base.substream(kStreamPool);
  pool_.resize(size_t(pool_res_.capacity));
  cofire_res_.capacity = opt_.cofire_rows;
  cofire_res_.rng = base.substream(kStreamCofire);
  recent_.resize(size_t(window()));
  open_.resize(L);
  const int threads = ForkJoinPool::threads_for(opt_.threads);
  if (threads > 1) pool_threads_ = std::make_unique<ForkJoinPool>(threads);
}

LatentMiner::~LatentMiner() = default;

void LatentMiner::start_row(int64_t doc) {
  if (rows_ == 0 || doc != doc_) {
    while (!pending_.empty()) {
      close_pool(pending_.front(), rows_ - 1);
      pending_.pop_front();
    }
    doc_ = doc;
    doc_start_ = rows_;
    documents_++;
    if (have_doc_) doc_starts_.push_back(rows_);
  } else {
    while (!pending_.empty() && pending_.front().row + opt_.after < rows_) {
      close_pool(pending_.front(), pending_.front().row + opt_.after);
      pending_.pop_front();
    }
  }
}

int64_t LatentMiner::doc_end(int64_t doc_start) const {
  if (!have_doc_) return doc_start;
  const auto next = std::upper_bound(doc_starts_.begin(), doc_starts_.end(), doc_start);
  return next == doc_starts_.end() ? rows_ - 1 : *next - 1;
}

void LatentMiner::close_pool(const Pending& p, int64_t last_row) {
  PoolWindow& w = pool_[size_t(p.pool)];
  if (w.gen != p.gen) return;  // replaced since: its new window has its own entry
  w.end = std::min(w.row + opt_.after, last_row);
  w.latents.clear();
  for (int64_t r = w.start; r <= w.end; r++) {
    const auto& row = recent_[size_t(r % window())];
    w.latents.insert(w.latents.end(), row.begin(), row.end());
  }
  std::sort(w.latents.begin(), w.latents.end());
  w.latents.erase(std::unique(w.latents.begin(), w.latents.end()), w.latents.end());
}

void LatentMiner::close_examples(size_t s, int64_t row, int64_t doc_start) {
  std::vector<int64_t>& open = open_[s];
  size_t keep = 0;
  for (int64_t id : open) {
    Example& e = examples_[size_t(id)];
    const bool other_doc = row < 0 || e.doc_start != doc_start;
    if (!other_doc && e.row + opt_.after >= row) {
      open[keep++] = id;
      continue;
    }
    e.end = e.row + opt_.after;
    if (other_doc) e.end = std::min(e.end, doc_end(e.doc_start));
    // The latent's firings after the peak are its newest ones, all still in its ring: the window
    // is closed at the latent's first firing past it, so at most `after` came in between.
    float* acts = acts_of(id);
    const Firing* ring = ring_.data() + s * size_t(ring_cap_);
    for (int i = 0, at = state_[s].ring_head; i < state_[s].ring_size; i++) {
      at = at == 0 ? ring_cap_ - 1 : at - 1;  // newest first
      const Firing& f = ring[at];
      if (f.row <= e.row) break;
      if (f.row <= e.end) acts[f.row - e.row + opt_.before] = f.value;
    }
  }
  open.resize(keep);
}

void LatentMiner::take_example(size_t slot, int64_t example, int64_t row, float value) {
  Example& e = examples_[size_t(example)];
  const bool was_open = e.row >= 0 && e.end < 0;  // a replaced example still on the open list
  e.row = row;
  e.doc = row_doc(row);
  e.doc_start = row_doc_start(row);
  e.act = value;
  e.start = std::max(row - opt_.before, e.doc_start);
  e.end = -1;
  float* acts = acts_of(example);
  std::fill(acts, acts + window(), 0.0f);
  acts[opt_.before] = value;
  // The rows before the peak: the latent's firings there are in its ring (it holds at least
  // `before` of them, and each row adds at most one).
  const Firing* ring = ring_.data() + slot * size_t(ring_cap_);
  for (int i = 0, at = state_[slot].ring_head; i < state_[slot].ring_size; i++) {
    at = at == 0 ? ring_cap_ - 1 : at - 1;  // newest first
    const Firing& f = ring[at];
    if (f.row < e.start) break;
    acts[f.row - row + opt_.before] = f.value;
  }
  if (!was_open) open_[slot].push_back(example);
}

void LatentMiner::offer(size_t s, int64_t row, float value) {
  if (!open_[s].empty()) close_examples(s, row, row_doc_start(row));
  LatentState& st = state_[s];
  st.fires++;
  st.sum += value;
  if (st.fires == 1 || value > st.max) st.max = value;
  hist_[s * kHistBins + size_t(hist_bin(value))]++;

  const int N = opt_.top;
  if (N > 0 && (st.top_size < N || value > st.worst)) {  // equal to the worst kept: the earlier row stays
    int64_t* heap = heap_.data() + s * size_t(N);
    // The root is the worst example kept: the lowest activation, the latest row among equals.
    auto worse_on_top = [&](int64_t a, int64_t b) {
      return ranks_before(examples_[size_t(a)].act, examples_[size_t(a)].row, examples_[size_t(b)].act,
                          examples_[size_t(b)].row);
    };
    if (st.top_size < N) {
      const int64_t id = int64_t(s) * per_slot_ + st.top_size;
      take_example(s, id, row, value);
      heap[st.top_size++] = id;
      std::push_heap(heap, heap + st.top_size, worse_on_top);
    } else {
      std::pop_heap(heap, heap + N, worse_on_top);
      take_example(s, heap[N - 1], row, value);
      std::push_heap(heap, heap + N, worse_on_top);
    }
    if (st.top_size == N) st.worst = examples_[size_t(heap[0])].act;
  }
  const int64_t q = st.quantile.offer();
  if (q >= 0) take_example(s, int64_t(s) * per_slot_ + N + q, row, value);

  Firing* ring = ring_.data() + s * size_t(ring_cap_);
  ring[st.ring_head] = {row, value};
  st.ring_head = st.ring_head + 1 == ring_cap_ ? 0 : st.ring_head + 1;
  st.ring_size = std::min(st.ring_size + 1, ring_cap_);
}

void LatentMiner::add(int64_t rows, const uint32_t* count, const uint32_t* index, const float* value,
                      const int32_t* token, const int64_t* doc) {
  if (finished_) throw std::logic_error("LatentMiner::add after finish");
  if (rows_ == 0) have_doc_ = doc != nullptr;
  if (chunk_row_.empty() && batch_doc_start_.empty()) {
    batch_first_ = rows_;
    bucket_start_.assign(latents_.size() + 1, 0);
  }

  // The rows in order: documents, token ids, the contrast pool and the co-firing sample; the
  // chosen latents' firings are kept for the chunk's latent-by-latent pass.
  size_t at = 0;
  for (int64_t r = 0; r < rows; r++) {
    // Without a doc column every row is its own document.
    start_row(doc ? doc[r] : rows_);
    recorded_doc_ = doc ? doc_ : -1;
    batch_doc_start_.push_back(doc_start_);
    batch_doc_.push_back(recorded_doc_);
    tokens_.push_back(token ? token[r] : -1);
    std::vector<uint32_t>& recent = recent_[size_t(rows_ % window())];
    recent.clear();
    const size_t n = count[r];
    const uint32_t row_in_chunk = uint32_t(rows_ - batch_first_);
    for (size_t j = at; j < at + n; j++) {
      if (value[j] == 0) continue;  // an explicit zero is not a firing
      recent.push_back(index[j]);
      const int32_t s = slot_of_[index[j]];
      if (s < 0) continue;
      bucket_start_[size_t(s) + 1]++;
      chunk_slot_.push_back(s);
      chunk_row_.push_back(row_in_chunk);
      chunk_value_.push_back(value[j]);
    }
    at += n;
    const int64_t p = pool_res_.offer();
    if (p >= 0) {
      PoolWindow& w = pool_[size_t(p)];
      w.gen++;
      w.row = rows_;
      w.doc = recorded_doc_;
      w.start = std::max(rows_ - opt_.before, doc_start_);
      w.end = -1;
      pending_.push_back({p, w.gen, rows_});
    }
    const int64_t c = cofire_res_.offer();
    if (c >= 0) {
      if (size_t(c) >= cofire_sample_.size()) cofire_sample_.resize(size_t(c) + 1);
      cofire_sample_[size_t(c)] = recent;
    }
    rows_++;
  }
  if (rows_ - batch_first_ >= opt_.chunk_rows || int64_t(chunk_row_.size()) >= kChunkFirings) flush_chunk();
}

void LatentMiner::flush_chunk() {
  const size_t L = latents_.size();
  if (batch_doc_start_.empty()) return;
  // The chunk's firings bucketed by latent, each bucket in row order (a stable counting sort).
  for (size_t s = 0; s < L; s++) bucket_start_[s + 1] += bucket_start_[s];
  const int64_t firings = bucket_start_[L];
  bucket_row_.resize(size_t(firings));
  bucket_value_.resize(size_t(firings));
  std::vector<int64_t>& fill = bucket_fill_;
  fill.assign(bucket_start_.begin(), bucket_start_.end() - 1);
  for (size_t i = 0; i < chunk_slot_.size(); i++) {
    const int64_t k = fill[size_t(chunk_slot_[i])]++;
    bucket_row_[size_t(k)] = batch_first_ + chunk_row_[i];
    bucket_value_[size_t(k)] = chunk_value_[i];
  }

  // Latent by latent, the threads taking contiguous ranges of about equal firings.
  auto run = [&](size_t s0, size_t s1) {
    for (size_t s = s0; s < s1; s++)
      for (int64_t k = bucket_start_[s]; k < bucket_start_[s + 1]; k++) offer(s, bucket_row_[size_t(k)], bucket_value_[size_t(k)]);
  };
  if (!pool_threads_ || firings < 4096) {
    run(0, L);
  } else {
    const int T = pool_threads_->size();
    pool_threads_->run(T, [&](int64_t t0, int64_t t1, int) {
      auto split = [&](int64_t t) {
        if (t >= T) return L;
        return size_t(std::lower_bound(bucket_start_.begin(), bucket_start_.end(), firings * t / T) - bucket_start_.begin());
      };
      run(std::min(split(t0), L), std::min(split(t1), L));
    });
  }
  chunk_slot_.clear();
  chunk_row_.clear();
  chunk_value_.clear();
  batch_doc_start_.clear();
  batch_doc_.clear();
  batch_first_ = rows_;
  bucket_start_.assign(L + 1, 0);
}

void LatentMiner::finish() {
  if (finished_) return;
  flush_chunk();
  while (!pending_.empty()) {
    close_pool(pending_.front(), rows_ - 1);
    pending_.pop_front();
  }
  for (size_t s = 0; s < latents_.size(); s++) close_examples(s, -1, 0);
  finished_ = true;
}

ContextExample LatentMiner::context(size_t slot, int64_t example) const {
  (void)slot;
  const Example& e = examples_[size_t(example)];
  ContextExample c;
  c.row = e.row;
  c.doc = e.doc;
  c.peak = int32_t(e.row - e.start);
  c.activation = e.act;
  const float* acts = acts_of(example);
  c.tokens.reserve(size_t(e.end - e.start + 1));
  c.acts.reserve(size_t(e.end - e.start + 1));
  for (int64_t r = e.start; r <= e.end; r++) {
    c.tokens.push_back(tokens_[size_t(r)]);
    c.acts.push_back(acts[r - e.row + opt_.before]);
  }
  return c;
}

LatentReport LatentMiner::report(size_t s) const {
  if (!finished_) throw std::logic_error("LatentMiner::report before finish");
  LatentReport r;
  r.latent = latents_[s];
  const LatentState& st = state_[s];
  r.fires = st.fires;
  r.rows = rows_;
  r.density = rows_ > 0 ? double(st.fires) / double(rows_) : 0;
  r.max_activation = st.fires > 0 ? st.max : 0;
  r.mean_activation = st.fires > 0 ? st.sum / double(st.fires) : 0;
  const int64_t* hist = hist_.data() + s * kHistBins;
  int first = 0, last = kHistBins - 1;
  while (first < kHistBins && hist[first] == 0) first++;
  while (last >= 0 && hist[last] == 0) last--;
  if (first <= last) {
    for (int b = first; b <= last; b++) {
      r.hist_edges.push_back(hist_edge(b));
      r.hist_counts.push_back(hist[b]);
    }
    // The open-ended top bin closes at the largest value seen.
    r.hist_edges.push_back(last == kHistBins - 1 ? double(st.max) : hist_edge(last + 1));
  }

  auto by_rank = [&](int64_t a, int64_t b) {
    return ranks_before(examples_[size_t(a)].act, examples_[size_t(a)].row, examples_[size_t(b)].act,
                        examples_[size_t(b)].row);
  };
  std::vector<int64_t> ids(heap_.begin() + int64_t(s) * opt_.top, heap_.begin() + int64_t(s) * opt_.top + st.top_size);
  std::sort(ids.begin(), ids.end(), by_rank);
  for (int64_t id : ids) r.top.push_back(context(s, id));

  // Quantile groups: the reservoir is a uniform sample of the firings; sorted by activation and
  // cut into equal rank groups, group g is a uniform sample of the g-th quantile band.
  const int64_t kept = std::min<int64_t>(st.fires, st.quantile.capacity);
  ids.clear();
  for (int64_t q = 0; q < kept; q++) ids.push_back(int64_t(s) * per_slot_ + opt_.top + q);
  std::sort(ids.begin(), ids.end(), [&](int64_t a, int64_t b) { return by_rank(b, a); });
  const int64_t groups = std::min<int64_t>(opt_.quantiles, kept);
  for (int64_t g = 0; g < groups; g++) {
    std::vector<ContextExample> group;
    for (int64_t i = g * kept / groups; i < (g + 1) * kept / groups; i++) group.push_back(context(s, ids[size_t(i)]));
    std::reverse(group.begin(), group.end());  // highest first within the group
    r.quantiles.push_back(std::move(group));
  }

  // Contrast: pool windows where this latent never fires, drawn with the latent's own stream.
  std::vector<size_t> silent;
  for (size_t w = 0; w < pool_.size(); w++)
    if (pool_[w].row >= 0 && !std::binary_search(pool_[w].latents.begin(), pool_[w].latents.end(), uint32_t(r.latent)))
      silent.push_back(w);
  Rng pick = Rng(opt_.seed).substream(kStreamContrast).substream(uint64_t(r.latent));
  const size_t take = std::min(silent.size(), size_t(opt_.contrast));
  for (size_t i = 0; i < take; i++) std::swap(silent[i], silent[i + size_t(pick.below(silent.size() - i))]);
  silent.resize(take);
  std::sort(silent.begin(), silent.end(), [&](size_t a, size_t b) { return pool_[a].row < pool_[b].row; });
  for (size_t w : silent) {
    const PoolWindow& pw = pool_[w];
    ContextExample c;
    c.row = pw.row;
    c.doc = pw.doc;
    c.peak = int32_t(pw.row - pw.start);
    for (int64_t row = pw.start; row <= pw.end; row++) c.tokens.push_back(tokens_[size_t(row)]);
    c.acts.assign(c.tokens.size(), 0.0f);
    r.contrast.push_back(std::move(c));
  }
  return r;
}

std::vector<std::vector<Neighbour>> LatentMiner::cofire_neighbours(int n) const {
  const size_t L = latents_.size();
  std::vector<std::vector<Neighbour>> out(L);
  std::vector<int64_t> fired(size_t(d_sae_), 0);  // firings of every latent within the sample
  std::vector<std::vector<uint32_t>> rows_of(L);  // sample rows where each chosen latent fires
  for (size_t r = 0; r < cofire_sample_.size(); r++)
    for (uint32_t l : cofire_sample_[r]) {
      fired[l]++;
      if (slot_of_[l] >= 0) rows_of[size_t(slot_of_[l])].push_back(uint32_t(r));
    }
  auto each = [&](int64_t begin, int64_t end, int) {
    std::vector<int32_t> both(size_t(d_sae_), 0);
    std::vector<uint32_t> touched;
    for (int64_t s = begin; s < end; s++) {
      const uint32_t self = uint32_t(latents_[size_t(s)]);
      touched.clear();
      for (uint32_t r : rows_of[size_t(s)])
        for (uint32_t l : cofire_sample_[r])
          if (l != self && both[l]++ == 0) touched.push_back(l);
      std::vector<Neighbour> cand;
      cand.reserve(touched.size());
      const double mine = double(rows_of[size_t(s)].size());
      for (uint32_t l : touched) {
        const double inter = both[l];
        cand.push_back({int64_t(l), float(inter / (mine + double(fired[l]) - inter))});
        both[l] = 0;
      }
      auto order = [](const Neighbour& a, const Neighbour& b) {
        return a.score > b.score || (a.score == b.score && a.latent < b.latent);
      };
      const size_t keep = std::min(cand.size(), size_t(std::max(n, 0)));
      std::partial_sort(cand.begin(), cand.begin() + int64_t(keep), cand.end(), order);
      cand.resize(keep);
      out[size_t(s)] = std::move(cand);
    }
  };
  if (pool_threads_) pool_threads_->run(int64_t(L), each);
  else each(0, int64_t(L), 0);
  return out;
}

size_t LatentMiner::example_bytes() const {
  size_t b = examples_.size() * sizeof(Example) + acts_.size() * sizeof(float) + heap_.size() * sizeof(int64_t);
  b += ring_.size() * sizeof(Firing) + hist_.size() * sizeof(int64_t);
  b += state_.size() * sizeof(LatentState);
  b += slot_of_.size() * sizeof(int32_t);
  return b;
}

size_t LatentMiner::row_bytes() const { return tokens_.capacity() * sizeof(int32_t); }

}  // namespace sae
