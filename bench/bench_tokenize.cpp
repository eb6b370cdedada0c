// Tokenization speed on ../shared/data/tinystories-sample.txt: tokens/s and MB/s of text for the
// HF byte-level BPE (GPT-2's tokenizer.json) and sentencepiece (stories260K), with and without
// the word cache, per document as sae-collect will call it, and where the time goes
// (pre-tokenizer regex vs merges). The merge loop is also timed against a plain reference BPE
// (GPT-2's encoder.py algorithm on strings) in the same run: on this shared machine only such
// ratios mean much. Not a test; run with `make bench` or build/bench/bench_tokenize.
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "base/files.h"
#include "tokenizer/internal.h"

using Clock = std::chrono::steady_clock;

namespace {

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Best of `reps` runs of f, in seconds (the minimum is the least disturbed by other load).
double best_of(int reps, const std::function<void()>& f) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    auto t0 = Clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return best;
}

void report(const char* what, double seconds, size_t bytes, size_t tokens) {
  printf("  %-44s %8.1f ms %9.2f MB/s %10.0f tokens/s\n", what, seconds * 1e3,
         bytes / seconds / 1e6, tokens / seconds);
}

// GPT-2's encoder.py bpe(): strings, a map of pair ranks, merge the best pair everywhere, repeat.
std::vector<std::string> reference_bpe(const std::vector<std::string>& chars,
                                       const std::map<std::pair<std::string, std::string>, int>& ranks) {
  std::vector<std::string> w = chars;
  while (w.size() > 1) {
    int best = INT_MAX;
    std::pair<std::string, std::string> bp;
    for (size_t i = 0; i + 1 < w.size(); ++i) {
      auto it = ranks.find({w[i], w[i + 1]});
      if (it != ranks.end() && it->second < best) {
        best = it->second;
        bp = it->first;
      }
    }
    if (best == INT_MAX) break;
    std::vector<std::string> next;
    for (size_t i = 0; i < w.size();) {
      if (i + 1 < w.size() && w[i] == bp.first && w[i + 1] == bp.second) {
        next.push_back(w[i] + w[i + 1]);
        i += 2;
      } else {
        next.push_back(w[i++]);
      }
    }
    w.swap(next);
  }
  return w;
}

}  // namespace

int main() {
  const char* env = std::getenv("SAE_SHARED");
  std::string shared = env && *env ? env : "../shared";
  std::string sample_path = shared + "/data/tinystories-sample.txt";
  if (!std::filesystem::exists(sample_path)) {
    printf("bench_tokenize: skipped: %s is absent (set SAE_SHARED)\n", sample_path.c_str());
    return 0;
  }
  std::string text = slurp(sample_path);
  std::vector<std::string> docs;  // stories, separated by blank lines
  for (size_t pos = 0; pos < text.size();) {
    size_t end = text.find("\n\n", pos);
    if (end == std::string::npos) end = text.size();
    docs.push_back(text.substr(pos, end - pos));
    pos = end + 2;
  }
  printf("bench_tokenize: %s, %.1f KB, %zu documents (best of 5 runs each)\n", sample_path.c_str(),
         text.size() / 1e3, docs.size());

  struct Model {
    const char* name;
    std::string dir;
  };
  for (const Model& m : {Model{"gpt2 (tokenizer.json, byte-level BPE)", shared + "/models/gpt2-random"},
                         Model{"stories260K (tokenizer.model, sentencepiece)", shared + "/models/stories260K"}}) {
    std::unique_ptr<sae::Tokenizer> tok;
    double load = best_of(3, [&] { tok = sae::Tokenizer::load(m.dir); });
    auto* base = dynamic_cast<sae::tok::TokenizerBase*>(tok.get());
    size_t n = tok->encode(text).size();
    printf("%s: %zu tokens, %.2f bytes/token, load %.0f ms\n", m.name, n, double(text.size()) / n,
           load * 1e3);
    if (tok->kind() == "hf-bpe") {
      base->set_cache(false);
      report("whole text, no word cache", best_of(5, [&] { tok->encode(text); }), text.size(), n);
      base->set_cache(true);
    }
    tok->encode(text);  // fill the cache
    report("whole text", best_of(5, [&] { tok->encode(text); }), text.size(), n);
    report("per document", best_of(5, [&] {
             for (auto& d : docs) tok->encode(d);
           }),
           text.size(), n);
    double dec = best_of(5, [&] { tok->decode(tok->encode(text)); });
    printf("  %-44s %8.1f ms (encode + decode)\n", "decode(encode(text))", dec * 1e3);
  }

  // Where the time of byte-level BPE goes, and the merge loop against the plain reference.
  auto gpt2 = sae::Tokenizer::load(shared + "/models/gpt2-random");
  sae::tok::Regex re(sae::tok::kGpt2Pattern, "bench");
  std::vector<std::pair<size_t, size_t>> words;
  double split = best_of(5, [&] {
    words.clear();
    re.for_each_match(text, [&](size_t b, size_t e) { words.emplace_back(b, e); });
  });
  printf("gpt2 stages:\n");
  report("pre-tokenizer regex only (PCRE2 JIT)", split, text.size(), 0);

  // The merge tables, both ways, from tokenizer.json.
  sae::tok::json j = sae::read_json_file(shared + "/models/gpt2-random/tokenizer.json");
  const auto& vocab = j["model"]["vocab"];
  sae::tok::BpeMerges merges;
  std::map<std::pair<std::string, std::string>, int> ranks;
  int r = 0;
  for (const auto& mg : j["model"]["merges"]) {
    std::string a = mg[0].get<std::string>(), b = mg[1].get<std::string>();
    merges.add(vocab[a].get<int32_t>(), vocab[b].get<int32_t>(), r, vocab[a + b].get<int32_t>());
    ranks[{a, b}] = r++;
  }
  const auto& bm = sae::tok::ByteLevelMap::get();
  std::vector<std::vector<int32_t>> sym_words;
  std::vector<std::vector<std::string>> str_words;
  for (auto [b, e] : words) {
    std::vector<int32_t> s;
    std::vector<std::string> c;
    for (size_t i = b; i < e; ++i) {
      std::string ch;
      sae::utf8_append(ch, bm.byte_to_cp[static_cast<unsigned char>(text[i])]);
      s.push_back(vocab[ch].get<int32_t>());
      c.push_back(ch);
    }
    sym_words.push_back(std::move(s));
    str_words.push_back(std::move(c));
  }
  size_t tokens = 0;
  std::vector<int32_t> w;  // reused, so that the loops time merging rather than allocation
  double scan = best_of(5, [&] {
    tokens = 0;
    for (const auto& s : sym_words) {
      w.assign(s.begin(), s.end());
      merges.merge_scan(w);
      tokens += w.size();
    }
  });
  double heap = best_of(5, [&] {
    for (const auto& s : sym_words) {
      w.assign(s.begin(), s.end());
      merges.merge_heap(w);
    }
  });
  double ref = best_of(2, [&] {
    for (auto& w : str_words) reference_bpe(w, ranks);
  });
  report("merges, scan (short words)", scan, text.size(), tokens);
  report("merges, heap (long words)", heap, text.size(), tokens);
  report("merges, plain reference (encoder.py on strings)", ref, text.size(), tokens);
  printf("  merge loop speed-up over the plain reference: scan %.1fx, heap %.1fx\n", ref / scan,
         ref / heap);
  return 0;
}
