// The BPE merge loop and its word cache (tokenizer/internal.h).
#include <algorithm>
#include <climits>
#include <cstring>
#include <functional>
#include <queue>

#include "tokenizer/internal.h"

namespace sae::tok {

// ---- merge table ----

void BpeMerges::reserve(size_t n) {
  size_t cap = 16;
  while (cap < 2 * n) cap <<= 1;  // load factor <= 1/2 keeps probe sequences short
  if (cap <= keys_.size()) return;
  std::vector<uint64_t> old_keys = std::move(keys_);
  std::vector<Merge> old_vals = std::move(vals_);
  keys_.assign(cap, kEmpty);
  vals_.assign(cap, Merge{0, 0});
  mask_ = cap - 1;
  count_ = 0;
  for (size_t i = 0; i < old_keys.size(); ++i)
    if (old_keys[i] != kEmpty) {
      int32_t l = static_cast<int32_t>(old_keys[i] >> 32), r = static_cast<int32_t>(old_keys[i]);
      add(l, r, old_vals[i].rank, old_vals[i].id);
    }
}

void BpeMerges::grow() { reserve(keys_.empty() ? 16 : keys_.size()); }

static inline size_t mix(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdULL;
  k ^= k >> 33;
  return static_cast<size_t>(k);
}

void BpeMerges::add(int32_t left, int32_t right, int32_t rank, int32_t merged) {
  if (2 * (count_ + 1) > keys_.size()) grow();
  uint64_t k = key(left, right);
  for (size_t i = mix(k) & mask_;; i = (i + 1) & mask_) {
    if (keys_[i] == k) return;  // a repeated pair keeps its first (lowest) rank, as HF's does
    if (keys_[i] == kEmpty) {
      keys_[i] = k;
      vals_[i] = Merge{rank, merged};
      ++count_;
      return;
    }
  }
}

const BpeMerges::Merge* BpeMerges::find(int32_t left, int32_t right) const {
  if (keys_.empty()) return nullptr;
  uint64_t k = key(left, right);
  for (size_t i = mix(k) & mask_;; i = (i + 1) & mask_) {
    if (keys_[i] == k) return &vals_[i];
    if (keys_[i] == kEmpty) return nullptr;
  }
}

// ---- merge loops ----

void BpeMerges::merge(std::vector<int32_t>& syms) const {
  if (syms.size() <= 48)
    merge_scan(syms);
  else
    merge_heap(syms);
}

// Keeps the rank of every adjacent pair; each step merges the leftmost pair of lowest rank and
// updates the two ranks beside it.
void BpeMerges::merge_scan(std::vector<int32_t>& syms) const {
  size_t n = syms.size();
  if (n < 2) return;
  constexpr int32_t kNone = INT32_MAX;
  int32_t rank_buf[48];
  std::vector<int32_t> rank_vec;
  int32_t* rank = rank_buf;
  if (n - 1 > 48) {
    rank_vec.resize(n - 1);
    rank = rank_vec.data();
  }
  auto pair_rank = [&](size_t i) {
    const Merge* m = find(syms[i], syms[i + 1]);
    return m ? m->rank : kNone;
  };
  for (size_t i = 0; i + 1 < n; ++i) rank[i] = pair_rank(i);
  while (n >= 2) {
    size_t best = 0;
    int32_t best_rank = rank[0];
    for (size_t i = 1; i + 1 < n; ++i)
      if (rank[i] < best_rank) {
        best_rank = rank[i];
        best = i;
      }
    if (best_rank == kNone) break;
    syms[best] = find(syms[best], syms[best + 1])->id;
    // Close the gap left by syms[best + 1] and by the rank of the merged pair.
    for (size_t i = best + 1; i + 1 < n; ++i) syms[i] = syms[i + 1];
    for (size_t i = best; i + 2 < n; ++i) rank[i] = rank[i + 1];
    --n;
    if (best > 0) rank[best - 1] = pair_rank(best - 1);
    if (best + 1 < n) rank[best] = pair_rank(best);
  }
  syms.resize(n);
}

// HF's Word::merge_all: a min-heap of (rank, position) over a linked list of symbols; entries
// made stale by earlier merges are recognised and skipped when popped.
void BpeMerges::merge_heap(std::vector<int32_t>& syms) const {
  size_t n = syms.size();
  if (n < 2) return;
  struct Entry {
    int32_t rank;
    int32_t pos;
    int32_t id;
    bool operator>(const Entry& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::vector<int32_t> prev(n), next(n);
  std::vector<char> alive(n, 1);
  for (size_t i = 0; i < n; ++i) {
    prev[i] = static_cast<int32_t>(i) - 1;
    next[i] = i + 1 < n ? static_cast<int32_t>(i + 1) : -1;
  }
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> q;
  for (size_t i = 0; i + 1 < n; ++i)
    if (const Merge* m = find(syms[i], syms[i + 1]))
      q.push(Entry{m->rank, static_cast<int32_t>(i), m->id});
  while (!q.empty()) {
    Entry top = q.top();
    q.pop();
    int32_t p = top.pos;
    if (!alive[p] || next[p] < 0) continue;
    int32_t r = next[p];
    const Merge* m = find(syms[p], syms[r]);
    if (!m || m->id != top.id) continue;  // stale: this pair changed since it was queued
    syms[p] = top.id;
    alive[r] = 0;
    next[p] = next[r];
    if (next[r] >= 0) prev[next[r]] = p;
    if (prev[p] >= 0)
      if (const Merge* pm = find(syms[prev[p]], syms[p])) q.push(Entry{pm->rank, prev[p], pm->id});
    if (next[p] >= 0)
      if (const Merge* nm = find(syms[p], syms[next[p]])) q.push(Entry{nm->rank, p, nm->id});
  }
  size_t k = 0;
  for (size_t i = 0; i < n; ++i)
    if (alive[i]) syms[k++] = syms[i];
  syms.resize(k);
}

// ---- word cache ----

WordCache::WordCache(size_t slots) {
  size_t n = 1;
  while (n < slots) n <<= 1;
  slots_.resize(n);
  mask_ = n - 1;
}

// FNV-1a, then a final mix so that the low bits (the slot index) depend on every byte.
uint64_t WordCache::hash(std::string_view w) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : w) h = (h ^ c) * 0x100000001b3ULL;
  h ^= h >> 32;
  h *= 0xd6e8feb86659fd93ULL;
  return h ^ (h >> 32);
}

bool WordCache::get(std::string_view word, std::vector<int32_t>& out) const {
  if (!enabled_ || word.empty() || word.size() > kMaxWord) return false;
  uint64_t h = hash(word);
  size_t i = h & mask_;
  std::lock_guard<std::mutex> lock(stripes_[i % kStripes]);
  const Slot& s = slots_[i];
  if (s.hash != h || s.len != word.size() || memcmp(s.word, word.data(), word.size()) != 0)
    return false;
  out.insert(out.end(), s.ids, s.ids + s.n);
  return true;
}

void WordCache::put(std::string_view word, const std::vector<int32_t>& ids) const {
  if (!enabled_ || word.empty() || word.size() > kMaxWord || ids.size() > kMaxIds) return;
  uint64_t h = hash(word);
  size_t i = h & mask_;
  std::lock_guard<std::mutex> lock(stripes_[i % kStripes]);
  Slot& s = slots_[i];
  s.hash = h;
  s.len = static_cast<uint8_t>(word.size());
  s.n = static_cast<uint8_t>(ids.size());
  memcpy(s.word, word.data(), word.size());
  std::copy(ids.begin(), ids.end(), s.ids);
}

}  // namespace sae::tok
