// Out-of-core shuffling of activation streams (sae-shuffle; user documentation in docs/shuffle.md).
//
// Two passes. Pass 1 reads the input rows into a fixed arena; when the arena is full its rows are
// scattered into temporary bucket files, each row to a bucket drawn at random. Pass 2 loads one
// bucket at a time, permutes it in memory and writes it out. A row's bucket is drawn independently
// and uniformly, and each bucket is permuted uniformly, so the concatenation of the buckets is a
// uniformly random permutation of all rows (Rao 1961; the argument is in docs/shuffle.md). A
// bucket that comes out larger than memory is scattered again, one level down, the same way.
#pragma once
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "stream/stream.h"

namespace sae {

struct ShuffleOptions {
  uint64_t seed = 0;
  int64_t memory = int64_t(1) << 30;  // bound on the memory the shuffle allocates, in bytes
  std::string tmp_dir = "/tmp";       // where the (anonymous) bucket files live
  int64_t batch_rows = 1024;          // rows per output batch
  int threads = 0;                    // compression threads for the outputs; 0 = all cores
  int level = 3;                      // zstd level of the outputs
  std::string split_name;             // non-empty: rows go to a held-out output with this name...
  double split_fraction = 0;          // ...each with this probability
  // Optional: called with a short status line now and then (progress on a terminal).
  std::function<void(const std::string&)> progress;
  // Optional: called once with the plan (arena, buckets) and once with the summary (--verbose).
  std::function<void(const std::string&)> note;
};

struct ShuffleReport {
  int64_t rows = 0;            // rows read
  int64_t rows_main = 0;       // rows written to the main output
  int64_t rows_split = 0;      // rows written to the held-out output
  int64_t buckets = 0;         // first-level buckets; 0 when everything fit in memory
  int64_t resplit = 0;         // buckets that outgrew memory and were scattered again
  int64_t temp_bytes = 0;      // bytes written to bucket files, over all levels
  int64_t arena_bytes = 0;     // memory given to rows
  int64_t record_bytes = 0;    // bytes per row in the arena and in bucket files
  int reader_threads = 0, writer_threads = 0;
};

// How the memory bound is shared out, given the shape of the data. Everything that decides which
// row lands where (the arena size, hence the bucket counts) is a function of the memory bound and
// the data's shape only, never of the thread count, so the output does not depend on threads.
struct ShuffleBudget {
  int64_t record_bytes = 0;  // one row in the arena / in a bucket file
  int64_t reserve = 0;       // memory kept for reading and writing batches
  int64_t arena_bytes = 0;   // memory for rows (records plus per-row index entries)
  int64_t arena_rows = 0;    // rows the arena holds
  int max_buckets = 0;       // fan-out limit of one scatter (write size and open files)
  int writer_threads = 1;    // compression threads that fit in `reserve`
};

// Bytes one row takes in the arena and the bucket files: d values in the stream's dtype plus the
// token (4), doc (8) and pos (4) columns that are present.
int64_t shuffle_record_bytes(int64_t d, DType dtype, bool token, bool doc, bool pos);

// Shares out `memory`. `in_batch_rows` is the row count of the input's batches, `out_batch_rows`
// the output's, `level` its zstd level. Throws UsageError when the bound is too small for these batches.
ShuffleBudget plan_shuffle_budget(int64_t memory, int64_t d, DType dtype, bool token, bool doc, bool pos,
                                  int64_t in_batch_rows, int64_t out_batch_rows, int level, int threads);

// Number of buckets for `bytes` of records when a bucket may hold at most `arena_rows` rows:
// enough that a bucket is expected to fill at most 7/8 of the arena, at least 1, at most
// `max_buckets` (a bucket that still overflows is scattered again).
int64_t shuffle_bucket_count(int64_t bytes, int64_t record_bytes, int64_t arena_rows, int max_buckets);

// "64M", "4G", "512K", "1.5G", "1000000": binary units (K = 1024). Throws UsageError naming `what`.
int64_t parse_memory_size(const std::string& s, const std::string& what = "--memory");

// The output's header: the input's, provenance kept, plus a note of this shuffle (seed, and the
// split part when there is one). `part` is "" without a split, else "heldout" or "rest".
StreamHeader shuffled_header(const StreamHeader& in, const ShuffleOptions& opt, const std::string& part);

// Shuffles the rows of `inputs` (read as one stream; "-" is stdin) into `out`, and when
// opt.split_name is set, each row with probability opt.split_fraction into `split_out` instead.
// Outputs are complete streams; the caller commits or removes the files. Temporary files are
// anonymous (unlinked at once), so they vanish however the process ends. Throws InputError for bad
// input and for a full temporary directory (naming it).
ShuffleReport shuffle_streams(const std::vector<std::string>& inputs, FILE* out, const std::string& out_name,
                              FILE* split_out, const std::string& split_out_name, const ShuffleOptions& opt);

}  // namespace sae
