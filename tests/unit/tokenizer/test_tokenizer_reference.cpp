// The real tokenizers in ../shared/models: the reference token ids, round trips on the sample
// corpora, special tokens in text, empty and long text, invalid UTF-8, threads. Skipped (with a
// message) when ../shared is absent.
#include <gtest/gtest.h>

#include <algorithm>
#include <thread>

#include "base/sha256.h"
#include "support/tokenizer_util.h"
#include "tokenizer/tokenizer.h"

using namespace tokenizer_test;
using sae::InputError;
using sae::Tokenizer;
using V = std::vector<int32_t>;

namespace {

std::unique_ptr<Tokenizer> load_model(const std::string& shared, const std::string& name) {
  return Tokenizer::load(shared + "/models/" + name);
}

// sentencepiece's remove_extra_whitespaces (on in stories260K's model): no leading or trailing
// spaces, runs of spaces collapsed to one. Only U+0020 is concerned.
std::string collapse_spaces(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == ' ' && (out.empty() || out.back() == ' ')) continue;
    out += c;
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

}  // namespace

TEST(TokenizerReference, ReferenceIdsAreReproducedExactly) {
  NEED_SHARED(shared);
  NEED_SENTENCEPIECE();
  int cases = 0;
  for (const char* name : {"stories260K", "gpt2-random", "tiny-gpt2"}) {
    auto tok = load_model(shared, name);
    json ref = json::parse(slurp(shared + "/models/" + name + "/reference.json"));
    for (const auto& c : ref["cases"]) {
      std::string text = c["text"].get<std::string>();
      V expected = c["tokens"].get<V>();
      ASSERT_FALSE(expected.empty());
      // The references put BOS first for every model (TransformerLens' prepend_bos).
      EXPECT_EQ(expected[0], tok->bos_id()) << name;
      V got = {tok->bos_id()};
      V body = tok->encode(text);
      got.insert(got.end(), body.begin(), body.end());
      EXPECT_EQ(got, expected) << name << " " << c["name"];
      // What HF's tokenizer(text) gives: BOS only where the model's config asks for it.
      V hf = tok->encode_with_special(text);
      if (tok->add_bos())
        EXPECT_EQ(hf, expected) << name;
      else
        EXPECT_EQ(hf, V(expected.begin() + 1, expected.end())) << name;
      ++cases;
    }
  }
  EXPECT_EQ(cases, 12);
}

TEST(TokenizerReference, BosFactsFromTheConfigs) {
  NEED_SHARED(shared);
  NEED_SENTENCEPIECE();
  auto sp = load_model(shared, "stories260K");
  EXPECT_EQ(sp->kind(), "sentencepiece");
  EXPECT_EQ(sp->vocab_size(), 512);
  EXPECT_EQ(sp->bos_id(), 1);
  EXPECT_EQ(sp->eos_id(), 2);
  EXPECT_TRUE(sp->add_bos());
  EXPECT_FALSE(sp->add_eos());
  auto gpt2 = load_model(shared, "tiny-gpt2");
  EXPECT_EQ(gpt2->kind(), "hf-bpe");
  EXPECT_EQ(gpt2->vocab_size(), 50257);
  EXPECT_EQ(gpt2->bos_id(), 50256);
  EXPECT_EQ(gpt2->eos_id(), 50256);
  EXPECT_FALSE(gpt2->add_bos());  // tokenizer_config.json: add_bos_token false
}

TEST(TokenizerReference, IdentityIsTheSha256OfTheTokenizerFile) {
  NEED_SHARED(shared);
  NEED_SENTENCEPIECE();
  // The digest SOURCE.txt records for tiny-gpt2/tokenizer.json.
  EXPECT_EQ(load_model(shared, "tiny-gpt2")->identity(),
            "hf-bpe:sha256:1fe93b6152957cf9cfd6d89002467f789ce8b3f3e000b3a2edf27c808ddd0b9e");
  EXPECT_EQ(load_model(shared, "stories260K")->identity(),
            "sentencepiece:sha256:" +
                sae::sha256_hex(slurp(shared + "/models/stories260K/tokenizer.model")));
}

TEST(TokenizerReference, Gpt2VocabAndMergesFilesMatchTokenizerJson) {
  NEED_SHARED(shared);
  const std::string m = shared + "/models/gpt2-random";
  TempDir d;  // the older layout: vocab.json + merges.txt, no tokenizer.json
  d.write("vocab.json", slurp(m + "/vocab.json"));
  d.write("merges.txt", slurp(m + "/merges.txt"));
  d.write("tokenizer_config.json", slurp(m + "/tokenizer_config.json"));
  auto files = Tokenizer::load(d.path());
  auto json_tok = Tokenizer::load(m);
  EXPECT_EQ(files->kind(), "gpt2-bpe");
  EXPECT_EQ(files->vocab_size(), json_tok->vocab_size());
  EXPECT_EQ(files->bos_id(), 50256);
  std::string sample = slurp(shared + "/data/tinystories-sample.txt");
  EXPECT_EQ(files->encode(sample), json_tok->encode(sample));
  for (const char* text : {"a<|endoftext|>b", "  x\n\n y\t'S'll 123456 日本 😀", ""})
    EXPECT_EQ(files->encode(text), json_tok->encode(text)) << text;
}

TEST(TokenizerReference, RoundTripsOnTheSampleCorpora) {
  NEED_SHARED(shared);
  NEED_SENTENCEPIECE();
  auto gpt2 = load_model(shared, "gpt2-random");
  auto sp = load_model(shared, "stories260K");
  for (const char* file : {"tinystories-sample.txt", "tinyshakespeare.txt"}) {
    std::string text = slurp(shared + "/data/" + file);
    ASSERT_GT(text.size(), 100000u);
    // Byte-level BPE loses nothing.
    EXPECT_TRUE(gpt2->decode(gpt2->encode(text)) == text) << file;
    // sentencepiece normalizes spaces (remove_extra_whitespaces); otherwise it loses nothing.
    EXPECT_TRUE(sp->decode(sp->encode(text)) == collapse_spaces(text)) << file;
  }
}

TEST(TokenizerReference, SpecialTokensInText) {
  NEED_SHARED(shared);
  NEED_SENTENCEPIECE();
  auto gpt2 = load_model(shared, "gpt2-random");
  // <|endoftext|> is an added special token: written in text it is that token, as in HF.
  EXPECT_EQ(gpt2->encode("a<|endoftext|>b"), (V{64, 50256, 65}));
  EXPECT_EQ(gpt2->encode("<|endoftext|><|endoftext|>"), (V{50256, 50256}));
  // parse_special = false: the characters "<", "|", "end", "of", "text", "|", ">".
  EXPECT_EQ(gpt2->encode("a<|endoftext|>b", false), (V{64, 27, 91, 437, 1659, 5239, 91, 29, 65}));
  EXPECT_EQ(gpt2->encode("<|endoftext"), (V{27, 91, 437, 1659, 5239}));
  EXPECT_EQ(gpt2->token_text(50256), "<|endoftext|>");
  EXPECT_EQ(gpt2->token_id("<|endoftext|>"), 50256);

  auto sp = load_model(shared, "stories260K");
  // HF's LlamaTokenizer splits its special tokens (<s>, </s>, <unk>) out of the text and
  // encodes the text between them on its own (legacy mode, the default).
  V hi = sp->encode("Hi"), there = sp->encode("there");
  V expected = hi;
  expected.push_back(1);
  expected.insert(expected.end(), there.begin(), there.end());
  EXPECT_EQ(sp->encode("Hi<s>there"), expected);
  V plain = sp->encode("Hi<s>there", false);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 1), 0);
  EXPECT_EQ(sp->decode(plain), "Hi<s>there");
  EXPECT_EQ(sp->token_text(1), "<s>");
  EXPECT_EQ(sp->token_id("<s>"), 1);
  EXPECT_EQ(sp->token_id("no such piece"), -1);
}

TEST(TokenizerReference, SentencepieceNonLegacyMode) {
  NEED_SHARED(shared);
  NEED_SENTENCEPIECE();
  const std::string m = shared + "/models/stories260K";
  TempDir legacy_dir, modern_dir;
  for (const TempDir* d : {&legacy_dir, &modern_dir}) d->write("tokenizer.model", slurp(m + "/tokenizer.model"));
  json cfg = json::parse(slurp(m + "/tokenizer_config.json"));
  legacy_dir.write_json("tokenizer_config.json", cfg);
  cfg["legacy"] = false;
  modern_dir.write_json("tokenizer_config.json", cfg);
  auto legacy = Tokenizer::load(legacy_dir.path());
  auto modern = Tokenizer::load(modern_dir.path());
  // Without special tokens both read the text the same way.
  std::string story = "Once upon a time, there was a little girl named Lily.";
  EXPECT_EQ(modern->encode(story), legacy->encode(story));
  // After a special token, legacy mode puts a dummy space in front of the text; non-legacy does
  // not, and keeps a real space as a space.
  EXPECT_EQ(legacy->decode(legacy->encode("<s>Hello")), "<s> Hello");
  EXPECT_EQ(modern->decode(modern->encode("<s>Hello")), "<s>Hello");
  EXPECT_EQ(modern->encode("<s> Hello"), legacy->encode("<s>Hello"));
  EXPECT_EQ(modern->encode("<s>Hello").front(), 1);
}

TEST(TokenizerReference, EmptyText) {
  NEED_SHARED(shared);
  NEED_SENTENCEPIECE();
  for (const char* name : {"stories260K", "gpt2-random"}) {
    auto tok = load_model(shared, name);
    EXPECT_TRUE(tok->encode("").empty()) << name;
    EXPECT_EQ(tok->decode({}), "") << name;
  }
  EXPECT_EQ(load_model(shared, "stories260K")->encode_with_special(""), (V{1}));
  EXPECT_TRUE(load_model(shared, "gpt2-random")->encode_with_special("").empty());
}

TEST(TokenizerReference, LongTextAndLongWords) {
  NEED_SHARED(shared);
  auto gpt2 = load_model(shared, "gpt2-random");
  // One 100,000-digit piece (GPT-2's " ?\p{N}+") and one 100,000-letter piece: the merge loop
  // takes its O(n log n) path; the result must still decode to the input.
  std::string digits, letters;
  for (int i = 0; i < 10000; ++i) digits += "1234567890";
  for (int i = 0; i < 25000; ++i) letters += "abcd";
  for (const std::string& w : {digits, letters}) {
    V ids = gpt2->encode(w);
    EXPECT_LT(ids.size(), w.size());
    EXPECT_TRUE(gpt2->decode(ids) == w);
  }
  // A long text is the concatenation of its pieces: splitting it where the pre-tokenizer splits
  // anyway (before " " + letter) does not change the ids.
  std::string text = slurp(shared + "/data/tinyshakespeare.txt");
  size_t cut = text.find(" the ", text.size() / 2);
  ASSERT_NE(cut, std::string::npos);
  V whole = gpt2->encode(text), a = gpt2->encode(text.substr(0, cut)), b = gpt2->encode(text.substr(cut));
  a.insert(a.end(), b.begin(), b.end());
  EXPECT_TRUE(whole == a);
}

TEST(TokenizerReference, InvalidUtf8IsRefusedWithItsOffset) {
  NEED_SHARED(shared);
  NEED_SENTENCEPIECE();
  for (const char* name : {"stories260K", "gpt2-random"}) {
    auto tok = load_model(shared, name);
    try {
      tok->encode("ok \xFF then");
      FAIL() << "expected Utf8Error";
    } catch (const sae::Utf8Error& e) {
      EXPECT_EQ(e.offset, 3u);
      EXPECT_EQ(std::string(e.what()), "invalid UTF-8 at byte offset 3 (byte 0xFF)");
    }
    EXPECT_THROW(tok->encode("caf\xC3"), InputError);  // truncated at the end
    // The lossy reading: each bad sequence becomes U+FFFD, which then tokenizes normally.
    std::string fixed = sae::utf8_replace_invalid("ok \xFF then");
    EXPECT_EQ(fixed, "ok \xEF\xBF\xBD then");
    EXPECT_EQ(tok->decode(tok->encode(fixed)), fixed) << name;
  }
}

TEST(TokenizerReference, ThreadsGetTheSameIds) {
  NEED_SHARED(shared);
  NEED_SENTENCEPIECE();
  auto gpt2 = load_model(shared, "gpt2-random");
  auto sp = load_model(shared, "stories260K");
  std::string text = slurp(shared + "/data/tinystories-sample.txt");
  std::vector<std::string> docs;
  for (size_t pos = 0; pos < text.size();) {
    size_t end = text.find("\n\n", pos);
    if (end == std::string::npos) end = text.size();
    docs.push_back(text.substr(pos, end - pos));
    pos = end + 2;
  }
  for (const Tokenizer* tok : {gpt2.get(), sp.get()}) {
    std::vector<V> serial;
    for (auto& d : docs) serial.push_back(tok->encode(d));
    std::vector<V> par[2];
    auto work = [&](int k) {
      for (auto& d : docs) par[k].push_back(tok->encode(d));
    };
    std::thread t0(work, 0), t1(work, 1);
    t0.join();
    t1.join();
    EXPECT_TRUE(par[0] == serial);
    EXPECT_TRUE(par[1] == serial);
  }
}
