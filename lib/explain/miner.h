// The one streaming pass of sae-explain (docs/explain.md): sparse latent rows in, for each chosen
// latent its statistics, its top contexts, quantile samples, contrast contexts and co-firing
// partners out, in memory bounded by the number of examples kept, never by the number of rows.
//
// How a batch is processed: one serial pass over its rows does the row-level work (token ids,
// documents, the contrast pool, the co-firing sample) and buckets the firings by latent; then the
// latents are processed one after another, each over its own firings in row order, split among
// the threads. A latent's state stays in cache for all its firings in the batch, and no latent
// shares anything with another, so the result does not depend on the thread count.
//
// What is kept, and why it is enough:
// - Per latent: firing count, sum, max, a log-binned histogram; a min-heap of the N best rows
//   (ties: the earlier row wins, so the result equals a brute-force sort by (activation desc,
//   row asc)); a reservoir of Q*S firing rows (Li's Algorithm L, seeded per latent), split by rank
//   into the Q quantile groups at the end; a ring of its last max(before, after) firings.
// - Every example keeps this latent's activation on each row of its window: the rows before the
//   peak come from the latent's ring at once, the rows after it are filled in from the ring when
//   the window closes (`after` rows later, or at the end of the document). So windows need no
//   second pass and no [rows x latents] array.
// - All rows' token ids (4 bytes per row), to rebuild every window's tokens at the end.
// - A pool of random windows (a reservoir over rows) with the set of latents firing in each: the
//   contrast contexts of a latent are drawn from the pool windows where it never fires.
// - A reservoir of rows' active-latent lists, on which co-firing (Jaccard) is counted exactly.
//
// Windows stay inside one document: they stop where the doc id changes. A stream without a doc
// column gives windows of one row. The input must be in document order (not shuffled) for windows
// to mean anything; a shuffled stream gives one-row windows, since neighbours differ in doc.
#pragma once
#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "base/fork_join_pool.h"
#include "base/rng.h"
#include "explain/report.h"

namespace sae {

struct MinerOptions {
  int top = 20;           // N: max-activating contexts per latent
  int quantiles = 10;     // Q: quantile groups
  int per_quantile = 5;   // S: contexts per group
  int contrast = 10;      // R: contexts where the latent does not fire
  int before = 24;        // tokens of context before the peak
  int after = 8;          // and after it
  int64_t cofire_rows = 65536;  // rows sampled to count co-firing on
  uint64_t seed = 0;
  int threads = 0;        // for the per-latent work (0: all cores); the result does not depend on it
  // Rows gathered before their firings are processed latent by latent (a tuning knob: the result
  // does not depend on it).
  int64_t chunk_rows = 32768;
};

// Activations are binned on a fixed log grid: kHistPerDecade bins per decade from 10^kHistMinExp
// to 10^kHistMaxExp, with one bin below (everything smaller, including values <= 0) and one above.
constexpr int kHistPerDecade = 8, kHistMinExp = -6, kHistMaxExp = 6;
constexpr int kHistBins = (kHistMaxExp - kHistMinExp) * kHistPerDecade + 2;
int hist_bin(float v);
double hist_edge(int edge);  // lower edge of bin `edge` (edge 0 is 0, the last is +inf)

class LatentMiner {
 public:
  // Mines `latents` (ascending, distinct, each < d_sae) of a d_sae-wide stream.
  LatentMiner(int64_t d_sae, std::vector<int64_t> latents, MinerOptions opt);
  ~LatentMiner();

  // The next `rows` rows: row r holds count[r] (index, value) pairs (Batch's layout). token and doc
  // may be null (token ids then show as -1; without doc every row is its own document).
  void add(int64_t rows, const uint32_t* count, const uint32_t* index, const float* value, const int32_t* token,
           const int64_t* doc);
  // Closes the windows still open. Call once, after the last add().
  void finish();

  int64_t rows() const { return rows_; }
  int64_t documents() const { return documents_; }
  const std::vector<int64_t>& latents() const { return latents_; }
  int64_t fires(size_t k) const { return state_[k].fires; }  // of the k-th chosen latent
  // The k-th chosen latent's statistics and examples (logit lens and neighbours are left empty).
  LatentReport report(size_t k) const;
  // For every chosen latent, the n latents with the highest Jaccard index of firing sets over the
  // sampled rows (only those that co-fire at least once), highest first, ties by latent index; on
  // the miner's threads (MinerOptions::threads).
  std::vector<std::vector<Neighbour>> cofire_neighbours(int n) const;
  int64_t cofire_rows() const { return int64_t(cofire_sample_.size()); }
  // Bytes held by the per-latent state and examples (the formula of docs/explain.md), and by the
  // row-proportional parts (token ids) and the samples, for reporting.
  size_t example_bytes() const;
  size_t row_bytes() const;

 private:
  struct Example {
    int64_t row = -1, start = 0, end = -1;  // peak row and window [start, end] (end set when it closes)
    int64_t doc = -1;
    int64_t doc_start = 0;  // the first row of its document
    float act = 0;
  };
  struct Firing {
    int64_t row;
    float value;
  };
  struct PoolWindow {
    int64_t row = -1, start = 0, end = -1, doc = -1;
    uint32_t gen = 0;
    std::vector<uint32_t> latents;  // every latent firing in the window (sorted, unique once closed)
  };
  struct Pending {  // a contrast-pool window still open
    int64_t pool;
    uint32_t gen;
    int64_t row;
  };

  int window() const { return opt_.before + 1 + opt_.after; }
  float* acts_of(int64_t example) { return acts_.data() + size_t(example) * size_t(window()); }
  const float* acts_of(int64_t example) const { return acts_.data() + size_t(example) * size_t(window()); }
  void start_row(int64_t doc);
  void close_pool(const Pending& p, int64_t last_row);
  // The last row of the document that starts at doc_start (rows seen so far).
  int64_t doc_end(int64_t doc_start) const;
  // Closes the open windows of latent `slot` that end before `row` (whose first document row is
  // row_doc_start), or all of them (row < 0).
  void close_examples(size_t slot, int64_t row, int64_t row_doc_start);
  void take_example(size_t slot, int64_t example, int64_t row, float value);
  void offer(size_t slot, int64_t row, float value);
  // The first row of row's document, and its recorded doc id (-1 without a doc column): for rows
  // of the current chunk.
  int64_t row_doc_start(int64_t row) const { return batch_doc_start_[size_t(row - batch_first_)]; }
  int64_t row_doc(int64_t row) const { return batch_doc_[size_t(row - batch_first_)]; }
  ContextExample context(size_t slot, int64_t example) const;

  int64_t d_sae_;
  std::vector<int64_t> latents_;
  std::vector<int32_t> slot_of_;  // latent -> slot, -1 when not chosen
  MinerOptions opt_;
  int ring_cap_;
  int per_slot_;  // example slots per latent: N top + Q*S reservoir

  // A uniform sample of fixed size from a stream of unknown length (Li 1994, Algorithm L: a
  // random skip to the next kept item, so the draws cost O(capacity * log(seen / capacity))).
  struct Reservoir {
    int64_t capacity = 0, seen = 0, next = 0;
    double w = 0;
    Rng rng;
    // Offers the next item: the slot it goes to (overwriting what was there), or -1 when it is not kept.
    int64_t offer();
    void draw_skip();
  };
  // What every firing of a chosen latent touches, in one place: a firing costs a few cache misses
  // (this, its histogram bin, its ring slot), not one per array.
  struct LatentState {
    int64_t fires = 0;
    double sum = 0;
    float max = 0;
    float worst = 0;  // the activation at the top heap's root, once the heap is full
    int32_t top_size = 0, ring_head = 0, ring_size = 0;
    Reservoir quantile;  // over its firings
  };

  // Per chosen latent.
  std::vector<LatentState> state_;
  std::vector<int64_t> hist_;    // [slot][kHistBins]
  std::vector<Firing> ring_;     // [slot][ring_cap_], circular
  std::vector<int64_t> heap_;    // [slot][N] example ids in heap order (root: the worst kept)

  std::vector<Example> examples_;  // [slot][per_slot_]
  std::vector<float> acts_;        // [example][window()]
  std::vector<std::vector<int64_t>> open_;  // per latent: its examples whose window is still open
  std::deque<Pending> pending_;             // contrast-pool windows still open

  // The chunk: rows gathered over several add() calls (up to MinerOptions::chunk_rows rows or
  // kChunkFirings firings), whose firings are then processed latent by latent. A larger chunk gives
  // each latent more firings per visit, so its state is fetched once for many of them.
  static constexpr int64_t kChunkFirings = int64_t(1) << 20;
  void flush_chunk();
  std::vector<int32_t> chunk_slot_;   // the chosen latents' firings in row order: slot,
  std::vector<uint32_t> chunk_row_;   // row within the chunk,
  std::vector<float> chunk_value_;    // activation
  std::vector<int64_t> bucket_start_, bucket_fill_;  // the same bucketed by latent (a counting sort)
  std::vector<int64_t> bucket_row_;
  std::vector<float> bucket_value_;
  std::vector<int64_t> batch_doc_start_, batch_doc_;  // per row of the chunk
  int64_t batch_first_ = 0;                           // the chunk's first row
  std::unique_ptr<ForkJoinPool> pool_threads_;

  // The input.
  std::vector<int32_t> tokens_;
  int64_t rows_ = 0, documents_ = 0;
  int64_t doc_ = 0, doc_start_ = 0;
  int64_t recorded_doc_ = -1;  // doc_ when the input has a doc column, else -1
  // First row of every document after the first (8 bytes per document; none without a doc column,
  // where every row is its own document): where a window closed late learns its document's end.
  std::vector<int64_t> doc_starts_;
  bool have_doc_ = true;
  // The last window() rows' active latents (all latents), by row % window(): what the contrast
  // pool's windows are built from when they close.
  std::vector<std::vector<uint32_t>> recent_;

  Reservoir pool_res_, cofire_res_;  // over rows
  std::vector<PoolWindow> pool_;
  std::vector<std::vector<uint32_t>> cofire_sample_;
  bool finished_ = false;
};

}  // namespace sae
