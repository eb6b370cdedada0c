// Inspecting a stream: its header, counts and summary statistics, as JSON and as a table (the
// logic behind sae-info; the fields are documented in docs/stream-tools.md).
#pragma once
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "stream/stream.h"

namespace sae {

struct InfoOptions {
  bool stats = true;    // compute statistics (off: only count rows, for --verify)
  bool verify = false;  // also treat columns present in some batches but not others as a defect
};

// The header as JSON: format, version, kind, d, dtype, provenance, extra.
json header_json(const StreamHeader& h);

// Reads every batch of `r` and returns the report: files, header, rows, batches, streams,
// compressed_bytes, bytes_per_value, columns, stats.
json inspect_stream(StreamReader& r, const std::vector<std::string>& files, const InfoOptions& o);

// The report (or a {"files", "header"} object) as an aligned two-column table for people.
std::string info_table(const json& report);

// Prints the first n rows as tab-separated text: a '#' line naming the columns, then one line per
// row (row number, token/doc/pos when present, then the d values; latents as index:value pairs).
void print_rows(StreamReader& r, int64_t n, FILE* out);

}  // namespace sae

namespace sae {

// Walks the zstd frames of a stream file ("-": stdin) without interpreting the stream: for each
// frame calls `each` with {frame, offset, bytes, content, type, rows} (rows only for batches and
// footers). For locating damage: the first frame that does not decompress ends the walk with an
// InputError naming its number and offset.
void list_frames(const std::string& path, const std::function<void(const json&)>& each);

}  // namespace sae
