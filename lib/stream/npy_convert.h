// Conversion between streams and .npy arrays, both ways (the logic behind sae-npy).
#pragma once
#include <cstdio>
#include <string>

#include "stream/stream.h"

namespace sae::npy {

struct ExportOptions {
  std::string column = "x";    // x (the activations), token, doc or pos
  std::string dtype = "auto";  // for x: auto (f16 for f16 streams, else f32), f32 or f16
};

// Writes every row of `r` as one C-order array: x as (rows, d), a column as (rows,) of <i4 (token,
// pos) or <i8 (doc). `out` must be seekable: the header is rewritten with the row count at the end.
// Returns the rows written.
int64_t export_npy(StreamReader& r, FILE* out, const std::string& out_name, const ExportOptions& o);

struct ImportOptions {
  std::string dtype = "auto";  // stream dtype: auto (f16 for <f2 arrays, else f32), f32, f16, bf16
  int64_t batch_rows = 1024;
  WriterOptions writer;
  json provenance = json::object();  // merged into the header's provenance
  std::string token, doc, pos;       // optional .npy files holding one integer per row
};

// Reads the array at `path` ("-" = stdin), of shape (..., d): every dimension but the last counts
// rows. Writes it as an activations stream to `out`. Returns the rows written.
int64_t import_npy(const std::string& path, FILE* out, const std::string& out_name, const ImportOptions& o);

}  // namespace sae::npy
