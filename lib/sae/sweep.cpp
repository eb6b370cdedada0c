// Sweeps: see sae/sweep.h.
#include "sae/sweep.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <stdexcept>

#include "base/errors.h"
#include "base/strings.h"

namespace sae {

namespace {

double sweep_number(const std::string& key, const std::string& v) {
  try {
    size_t used = 0;
    double x = std::stod(v, &used);
    if (used != v.size()) throw std::invalid_argument(v);
    return x;
  } catch (const std::exception&) {
    throw UsageError("--sweep: " + key + "=" + v + " is not a number");
  }
}

void apply_sweep_key(RunSpec& r, const std::string& key, const std::string& v) {
  auto integer = [&]() {
    double x = sweep_number(key, v);
    if (x != std::floor(x)) throw UsageError("--sweep: " + key + "=" + v + " is not an integer");
    return int64_t(x);
  };
  if (key == "arch") r.arch.arch = v;
  else if (key == "k") r.arch.k = int(integer());
  else if (key == "k-aux") r.arch.k_aux = int(integer());
  else if (key == "aux-coef") r.arch.aux_coef = float(sweep_number(key, v));
  else if (key == "lambda") r.arch.lambda = float(sweep_number(key, v));
  else if (key == "latents") r.arch.d_sae = integer();
  else if (key == "seed") r.arch.seed = uint64_t(integer());
  else if (key == "lr") r.lr = float(sweep_number(key, v));
  else if (key == "bandwidth") r.arch.bandwidth = float(sweep_number(key, v));
  else if (key == "freq-scale") r.arch.freq_scale = float(sweep_number(key, v));
  else
    throw UsageError("--sweep: unknown key '" + key +
                     "' (expected arch, k, k-aux, aux-coef, lambda, latents, seed, lr, bandwidth, freq-scale)");
}

}  // namespace

std::vector<RunSpec> parse_sweep(const std::string& spec, const RunSpec& base) {
  std::vector<std::vector<std::pair<std::string, std::string>>> runs;
  if (!spec.empty() && spec[0] == '@') {
    // One run per line: "key=value key=value" (also ';' or ',' between pairs); '#' comments.
    std::string path = spec.substr(1);
    std::ifstream in(path);
    if (!in) throw InputError(path + ": cannot open the sweep file");
    std::string line;
    int lineno = 0;
    while (std::getline(in, line)) {
      lineno++;
      line = trim(line.substr(0, line.find('#')));
      if (line.empty()) continue;
      std::vector<std::pair<std::string, std::string>> kv;
      for (std::string item : split(line, " \t;,")) {
        item = trim(item);
        if (item.empty()) continue;
        size_t eq = item.find('=');
        if (eq == std::string::npos || eq == 0 || eq + 1 == item.size())
          throw UsageError("--sweep: " + path + " line " + std::to_string(lineno) + ": expected key=value, got '" +
                           item + "'");
        kv.push_back({trim(item.substr(0, eq)), trim(item.substr(eq + 1))});
      }
      runs.push_back(kv);
    }
    if (runs.empty()) throw UsageError("--sweep: " + path + " holds no runs");
  } else {
    // "k=16,32;seed=1,2": the Cartesian product, the first key varying slowest.
    runs.push_back({});
    for (std::string part : split(spec, ";")) {
      part = trim(part);
      if (part.empty()) continue;
      size_t eq = part.find('=');
      if (eq == std::string::npos || eq == 0) throw UsageError("--sweep: expected key=v1,v2,... got '" + part + "'");
      std::string key = trim(part.substr(0, eq));
      std::vector<std::string> vals;
      for (std::string v : split(part.substr(eq + 1), ",")) {
        v = trim(v);
        if (v.empty()) throw UsageError("--sweep: empty value for '" + key + "'");
        vals.push_back(v);
      }
      std::vector<std::vector<std::pair<std::string, std::string>>> next;
      for (const auto& r : runs)
        for (const auto& v : vals) {
          auto c = r;
          c.push_back({key, v});
          next.push_back(c);
        }
      runs = next;
    }
    if (runs.size() == 1 && runs[0].empty()) throw UsageError("--sweep: no key=values given");
  }
  std::vector<RunSpec> out;
  std::vector<std::string> labels;
  for (const auto& kv : runs) {
    RunSpec r = base;
    std::string label;
    for (const auto& [k, v] : kv) {
      apply_sweep_key(r, k, v);
      label += (label.empty() ? "" : "_") + k + "-" + v;
    }
    for (char& c : label)
      if (c == '/' || c == ' ') c = '_';
    if (std::find(labels.begin(), labels.end(), label) != labels.end())
      throw UsageError("--sweep: run '" + label + "' appears twice");
    labels.push_back(label);
    r.label = label;
    out.push_back(r);
  }
  return out;
}

}  // namespace sae
