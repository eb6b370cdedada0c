// tokenizer.json pipelines on small fixtures built here: Llama-3-style (Split regex + ByteLevel,
// merges as [a, b] pairs, ignore_merges, template BOS), Qwen2-style (NFC, single digits),
// Llama-2-style (Prepend/Replace or Metaspace, byte fallback), added-token options, BOS rules,
// and the BPE merge loop against a plain reference.
//
// The expected ids were worked out by hand from the fixture's merges, and cross-checked once
// against Hugging Face `tokenizers` 0.23.3 (Tokenizer.from_file(...).encode(text,
// add_special_tokens=False)) on the same fixtures.
#include <gtest/gtest.h>

#include <climits>
#include <map>
#include <random>

#include "support/tokenizer_util.h"
#include "tokenizer/tokenizer.h"

using namespace tokenizer_test;
using sae::InputError;
using sae::Tokenizer;
using V = std::vector<int32_t>;

namespace {

const char* kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// Byte-level fixture: the 256 byte tokens (id = byte), these merges in rank order, and "hello"
// as a token that no merge builds.
json byte_level_model(bool pairs, bool ignore_merges) {
  json vocab = byte_vocab();
  std::vector<std::pair<std::string, std::string>> merges = {
      {"3", "4"},          // 257 "34"   rank 0
      {"1", "2"},          // 256 "12"   rank 1
      {"12", "3"},         // 258 "123"  rank 2
      {"'", "M"},          // 259 "'M"   rank 3
      {"(", "w"},          // 260 "(w"   rank 4
      {"h", "e"},          // 261 "he"   rank 5
      {"l", "l"},          // 262 "ll"   rank 6
      {bl(" "), "w"},      // 264 "Ġw"   rank 7
      {bl(" w"), "o"},     // 265 "Ġwo"  rank 8
      {bl("\xC3"), bl("\xA9")},  // 266 "é" rank 9
  };
  vocab["12"] = 256;
  vocab["34"] = 257;
  vocab["123"] = 258;
  vocab["'M"] = 259;
  vocab["(w"] = 260;
  vocab["he"] = 261;
  vocab["ll"] = 262;
  vocab["hello"] = 263;
  vocab[bl(" w")] = 264;
  vocab[bl(" wo")] = 265;
  vocab[bl("é")] = 266;
  json m = json::array();
  for (auto& [a, b] : merges) {
    if (pairs)
      m.push_back(json::array({a, b}));
    else
      m.push_back(a + " " + b);
  }
  return {{"type", "BPE"},          {"dropout", nullptr},        {"unk_token", nullptr},
          {"fuse_unk", false},      {"byte_fallback", false},    {"ignore_merges", ignore_merges},
          {"vocab", vocab},         {"merges", m}};
}

json special(int id, const std::string& content, bool special_ = true, bool normalized = false) {
  return {{"id", id},           {"content", content}, {"single_word", false}, {"lstrip", false},
          {"rstrip", false},    {"normalized", normalized}, {"special", special_}};
}

// Llama 3's layout: Split(regex, Isolated) then ByteLevel without its own regex; BOS through a
// TemplateProcessing post-processor.
json llama3_style(bool pairs = true, bool ignore_merges = true) {
  return {
      {"version", "1.0"},
      {"added_tokens", {special(267, "<|begin_of_text|>"), special(268, "<|end_of_text|>")}},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"},
           {"pattern", {{"Regex", kLlama3Pattern}}},
           {"behavior", "Isolated"},
           {"invert", false}},
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}}}}},
      {"post_processor",
       {{"type", "Sequence"},
        {"processors",
         {{{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}},
          {{"type", "TemplateProcessing"},
           {"single",
            {{{"SpecialToken", {{"id", "<|begin_of_text|>"}, {"type_id", 0}}}},
             {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
           {"special_tokens",
            {{"<|begin_of_text|>",
              {{"id", "<|begin_of_text|>"}, {"ids", {267}}, {"tokens", {"<|begin_of_text|>"}}}}}}}}}}},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model", byte_level_model(pairs, ignore_merges)}};
}

// A model directory holding `tokenizer` (and tokenizer_config.json / config.json when given).
std::unique_ptr<Tokenizer> load_fixture(const TempDir& d, const json& tokenizer,
                                        const json& cfg = json(), const json& model_cfg = json()) {
  d.write_json("tokenizer.json", tokenizer);
  if (!cfg.is_null()) d.write_json("tokenizer_config.json", cfg);
  if (!model_cfg.is_null()) d.write_json("config.json", model_cfg);
  return Tokenizer::load(d.path());
}

}  // namespace

TEST(TokenizerBpe, Llama3PatternDecidesThePieces) {
  TempDir d;
  auto t = load_fixture(d, llama3_style(), {{"bos_token", "<|begin_of_text|>"}, {"eos_token", "<|end_of_text|>"}});
  // \p{N}{1,3}: "1234" is "123" + "4", so the rank-0 merge (3, 4) never sees its pair.
  EXPECT_EQ(t->encode("1234"), (V{258, '4'}));
  // Contractions are case-insensitive: "'M" is a piece of its own and merges.
  EXPECT_EQ(t->encode("I'M"), (V{'I', 259}));
  // One non-letter sticks to the letters after it: "(wo" is one piece.
  EXPECT_EQ(t->encode("(wo"), (V{260, 'o'}));
  EXPECT_EQ(t->encode(" wow"), (V{265, 'w'}));
  // ignore_merges: a piece that is itself a token is taken whole.
  EXPECT_EQ(t->encode("hello"), (V{263}));
  EXPECT_EQ(t->encode("hello wow"), (V{263, 265, 'w'}));
}

TEST(TokenizerBpe, Gpt2PatternOnTheSameVocabSplitsDifferently) {
  // The same vocab behind ByteLevel's own GPT-2 regex: "1234" is one piece, so (3, 4) merges
  // first; "I'M" keeps "'" and "M" apart (GPT-2's contractions are lower-case only).
  json j = llama3_style(true, false);
  j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  TempDir d;
  auto t = load_fixture(d, j);
  EXPECT_EQ(t->encode("1234"), (V{256, 257}));
  EXPECT_EQ(t->encode("I'M"), (V{'I', '\'', 'M'}));
  EXPECT_EQ(t->encode("(wo"), (V{'(', 'w', 'o'}));
  EXPECT_EQ(t->encode("hello"), (V{261, 262, 'o'}));  // no ignore_merges here
}

TEST(TokenizerBpe, MergesAsStringsOrPairsGiveTheSameTokenizer) {
  TempDir a, b;
  auto pairs = load_fixture(a, llama3_style(true));
  auto strings = load_fixture(b, llama3_style(false));
  for (const char* text : {"1234", "I'M hello (wow) 12345 '''", "x\ny\r\n\n  z\t", ""})
    EXPECT_EQ(pairs->encode(text), strings->encode(text)) << text;
  EXPECT_EQ(pairs->identity().substr(0, 14), "hf-bpe:sha256:");
  EXPECT_NE(pairs->identity(), strings->identity());  // different files, different identities
}

TEST(TokenizerBpe, SpecialTokensInTextFollowHf) {
  TempDir d;
  auto t = load_fixture(d, llama3_style(), {{"bos_token", "<|begin_of_text|>"}, {"eos_token", "<|end_of_text|>"}});
  EXPECT_EQ(t->encode("<|begin_of_text|>hello<|end_of_text|>"), (V{267, 263, 268}));
  EXPECT_EQ(t->encode("hello<|end_of_text|><|end_of_text|>"), (V{263, 268, 268}));
  // parse_special = false (HF's split_special_tokens): the same characters as plain text.
  EXPECT_EQ(t->encode("<|end_of_text|>", false), ids_of("<|end_of_text|>"));
  // A token cut short is text.
  EXPECT_EQ(t->encode("<|end_of_text"), ids_of("<|end_of_text"));
  EXPECT_EQ(t->decode({267, 263, 268}), "<|begin_of_text|>hello<|end_of_text|>");
  EXPECT_EQ(t->token_text(267), "<|begin_of_text|>");
}

TEST(TokenizerBpe, TemplateBosAndTokenizerConfig) {
  {
    TempDir d;  // no tokenizer_config.json: the template decides
    auto t = load_fixture(d, llama3_style());
    EXPECT_TRUE(t->add_bos());
    EXPECT_FALSE(t->add_eos());
    EXPECT_EQ(t->bos_id(), 267);
    EXPECT_EQ(t->encode_with_special("hello"), (V{267, 263}));
    EXPECT_EQ(t->vocab_size(), 269);
  }
  {
    TempDir d;  // tokenizer_config.json overrides the template
    auto t = load_fixture(d, llama3_style(),
                          {{"bos_token", "<|begin_of_text|>"}, {"add_bos_token", false},
                           {"eos_token", "<|end_of_text|>"}, {"add_eos_token", true}});
    EXPECT_FALSE(t->add_bos());
    EXPECT_EQ(t->bos_id(), 267);
    EXPECT_EQ(t->eos_id(), 268);
    EXPECT_EQ(t->encode_with_special("hello"), (V{263, 268}));
  }
  {
    TempDir d;  // no template, no names: config.json's ids
    json j = llama3_style();
    j["post_processor"] = nullptr;
    auto t = load_fixture(d, j, json(), {{"bos_token_id", 268}, {"eos_token_id", 268}});
    EXPECT_FALSE(t->add_bos());
    EXPECT_EQ(t->bos_id(), 268);
    EXPECT_EQ(t->encode_with_special("hello"), (V{263}));
  }
  {
    TempDir d;
    json j = llama3_style();
    j["post_processor"] = nullptr;
    EXPECT_EQ(load_fixture(d, j)->bos_id(), -1);  // nothing names a BOS
  }
}

TEST(TokenizerBpe, BadBosSettingsAreRefused) {
  TempDir d;
  try {
    load_fixture(d, llama3_style(), {{"bos_token", "<s>"}});
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()), d.file("tokenizer_config.json") + ": bos_token \"<s>\" is not in the vocabulary of " +
                                         d.file("tokenizer.json"));
  }
  TempDir d2;
  json j = llama3_style();
  j["post_processor"] = nullptr;
  try {
    load_fixture(d2, j, {{"add_bos_token", true}});
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()),
              d2.file("tokenizer_config.json") + ": add_bos_token is true but no BOS token is named");
  }
}

TEST(TokenizerBpe, DecodeRoundTripsAndRejectsUnknownIds) {
  TempDir d;
  auto t = load_fixture(d, llama3_style());
  for (const char* text : {"hello (wow) I'M 1234 é", "  \n\t x ", "日本 😀", ""})
    EXPECT_EQ(t->decode(t->encode(text)), text);
  // Ids run 0..268: 269 is one past the end.
  try {
    t->decode({263, 269});
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()), "token id 269 is not in the vocabulary (size 269)");
  }
  EXPECT_THROW(t->decode({-1}), InputError);
  EXPECT_THROW(t->decode({269}), InputError);
  // token_text: spaces shown as spaces; a lone byte of a character as <0xNN>.
  EXPECT_EQ(t->token_text(265), " wo");
  EXPECT_EQ(t->token_text(0xC3), "<0xC3>");
  EXPECT_EQ(t->token_text(266), "é");
  EXPECT_EQ(t->token_id(bl(" wo")), 265);
  EXPECT_EQ(t->token_id("<|end_of_text|>"), 268);
  EXPECT_EQ(t->token_id("nope"), -1);
}

TEST(TokenizerBpe, Qwen2StyleNfcAndSingleDigits) {
  json j = llama3_style(true, false);
  j["normalizer"] = {{"type", "NFC"}};
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = kQwen2Pattern;
  j["post_processor"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}};
  j["added_tokens"].push_back({{"id", 269}, {"content", "café"}, {"single_word", true}, {"lstrip", true},
                               {"rstrip", true}, {"normalized", true}, {"special", false}});
  TempDir d;
  auto t = load_fixture(d, j, {{"bos_token", nullptr}, {"eos_token", "<|end_of_text|>"}});
  EXPECT_FALSE(t->add_bos());
  EXPECT_EQ(t->encode("1234"), (V{'1', '2', '3', '4'}));  // \p{N}: one digit per piece
  EXPECT_EQ(t->encode("é"), (V{266}));
  EXPECT_EQ(t->encode("e\xCC\x81"), (V{266}));  // e + U+0301 composes to é under NFC
  // A normalized added token matches the normalized text, swallowing the spaces around it
  // (lstrip/rstrip), but only as a whole word (single_word).
  EXPECT_EQ(t->encode("a cafe\xCC\x81 b"), (V{'a', 269, 'b'}));
  EXPECT_EQ(t->encode("cafés"), cat({ids_of("caf"), {266}, ids_of("s")}));
  // Special tokens are matched before normalization (normalized: false).
  EXPECT_EQ(t->encode("<|end_of_text|>1"), (V{268, '1'}));
}

TEST(TokenizerBpe, ByteLevelAddPrefixSpacePerPiece) {
  // ByteLevel with add_prefix_space: every piece between added tokens gets a leading space.
  json j = llama3_style(true, false);
  j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}};
  j["post_processor"] = nullptr;
  TempDir d;
  auto t = load_fixture(d, j);
  EXPECT_EQ(t->encode("wo"), (V{265}));
  EXPECT_EQ(t->encode("wo<|end_of_text|>wo"), (V{265, 268, 265}));
  EXPECT_EQ(t->encode(" wo"), (V{265}));  // already starts with a space: none added
}

namespace {
// Llama 2's tokenizer.json layout: sentencepiece-style BPE with byte fallback.
json llama2_style(bool byte_fallback = true) {
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    snprintf(name, sizeof name, "<0x%02X>", b);
    vocab[name] = 3 + b;
  }
  vocab["\xE2\x96\x81"] = 259;  // ▁
  vocab["a"] = 260;
  vocab["b"] = 261;
  vocab["\xE2\x96\x81" "a"] = 262;
  vocab["ab"] = 263;
  vocab["\xE2\x96\x81" "ab"] = 264;
  json merges = json::array({json::array({"\xE2\x96\x81", "a"}), json::array({"\xE2\x96\x81" "a", "b"}),
                             json::array({"a", "b"})});
  return {{"added_tokens", {special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")}},
          {"normalizer",
           {{"type", "Sequence"},
            {"normalizers",
             {{{"type", "Prepend"}, {"prepend", "\xE2\x96\x81"}},
              {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\xE2\x96\x81"}}}}}},
          {"pre_tokenizer", nullptr},
          {"post_processor",
           {{"type", "TemplateProcessing"},
            {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
            {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
          {"decoder",
           {{"type", "Sequence"},
            {"decoders",
             {{{"type", "Replace"}, {"pattern", {{"String", "\xE2\x96\x81"}}}, {"content", " "}},
              {{"type", "ByteFallback"}},
              {{"type", "Fuse"}},
              {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
          {"model",
           {{"type", "BPE"},
            {"unk_token", "<unk>"},
            {"fuse_unk", true},
            {"byte_fallback", byte_fallback},
            {"vocab", vocab},
            {"merges", merges}}}};
}
}  // namespace

TEST(TokenizerBpe, Llama2StylePrependReplaceByteFallback) {
  TempDir d;
  auto t = load_fixture(d, llama2_style(), {{"bos_token", "<s>"}, {"eos_token", "</s>"}, {"unk_token", "<unk>"}});
  EXPECT_TRUE(t->add_bos());
  EXPECT_EQ(t->encode_with_special("ab ab"), (V{1, 264, 264}));
  // é is not in the vocab: its two UTF-8 bytes as <0xC3> <0xA9>.
  EXPECT_EQ(t->encode("aé"), (V{262, 3 + 0xC3, 3 + 0xA9}));
  EXPECT_EQ(t->decode({262, 3 + 0xC3, 3 + 0xA9}), "aé");
  EXPECT_EQ(t->decode(t->encode("ab ab")), "ab ab");
  // Text after a special token gets its own "▁" (the Prepend normalizer runs per piece).
  EXPECT_EQ(t->encode("<s>ab"), (V{1, 264}));
  EXPECT_EQ(t->token_text(264), " ab");
  EXPECT_EQ(t->token_text(3 + 'A'), "A");
  EXPECT_EQ(t->token_text(3 + 0xC3), "<0xC3>");
}

TEST(TokenizerBpe, UnknownCharactersFuseIntoOneUnk) {
  TempDir d;
  auto t = load_fixture(d, llama2_style(false));
  EXPECT_EQ(t->encode("ééa"), (V{259, 0, 260}));  // ▁, one <unk> for both é, a
}

TEST(TokenizerBpe, MetaspacePrependFirst) {
  json j = llama2_style();
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\xE2\x96\x81"}, {"prepend_scheme", "first"}, {"split", false}};
  j["decoder"] = {{"type", "Sequence"},
                  {"decoders",
                   {{{"type", "Metaspace"}, {"replacement", "\xE2\x96\x81"}, {"prepend_scheme", "first"}, {"split", false}},
                    {{"type", "ByteFallback"}},
                    {{"type", "Fuse"}}}}};
  TempDir d;
  auto t = load_fixture(d, j);
  EXPECT_EQ(t->encode("ab ab"), (V{264, 264}));
  // Only the piece at the start of the text gets the "▁".
  EXPECT_EQ(t->encode("ab<s>ab"), (V{264, 1, 263}));
  EXPECT_EQ(t->encode("<s>ab"), (V{1, 263}));
  EXPECT_EQ(t->decode({264, 264}), "ab ab");
}

TEST(TokenizerBpe, AddedTokenOptionsFollowHf) {
  // HF's own example (added_vocabulary.rs, options_use_cases): "my" with lstrip and rstrip,
  // "ony" single_word, [CLS]/[SEP] special, under a Lowercase normalizer.
  json vocab = json::object();
  int id = 0;
  for (int c = 32; c < 127; ++c) vocab[std::string(1, static_cast<char>(c))] = id++;  // 0..94
  json added = {
      {{"id", 95}, {"content", "my"}, {"single_word", false}, {"lstrip", true}, {"rstrip", true}, {"normalized", true}, {"special", false}},
      {{"id", 96}, {"content", "name"}, {"single_word", false}, {"lstrip", false}, {"rstrip", false}, {"normalized", true}, {"special", false}},
      {{"id", 97}, {"content", "ony"}, {"single_word", true}, {"lstrip", false}, {"rstrip", false}, {"normalized", true}, {"special", false}},
      special(98, "[CLS]"), special(99, "[SEP]")};
  json j = {{"added_tokens", added},
            {"normalizer", {{"type", "Lowercase"}}},
            {"pre_tokenizer", nullptr},
            {"decoder", {{"type", "Fuse"}}},
            {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array()}}}};
  TempDir d;
  auto t = load_fixture(d, j);
  auto chars = [](const std::string& s) {
    V out;
    for (char c : s) out.push_back(c - 32);
    return out;
  };
  // "[CLS]", " my " (spaces swallowed), "name", " is anthony " (ony not a whole word), "[SEP]"
  EXPECT_EQ(t->encode("[CLS] My name is Anthony [SEP]"),
            cat({{98, 95, 96}, chars(" is anthony "), {99}}));
  EXPECT_EQ(t->encode("ony, ony"), (V{97, ',' - 32, ' ' - 32, 97}));
  EXPECT_EQ(t->encode("[CLS]", false), chars("[cls]"));  // special tokens as text: normalized too
}

TEST(TokenizerBpe, UnsupportedComponentsAreRefusedByName) {
  auto expect_refused = [](json j, const std::string& what) {
    TempDir d;
    try {
      load_fixture(d, j);
      FAIL() << "expected InputError for " << what;
    } catch (const InputError& e) {
      EXPECT_EQ(std::string(e.what()), d.file("tokenizer.json") + ": " + what +
                                           " is not supported (see docs/tokenizers.md)");
    }
  };
  json j = llama3_style();
  j["model"]["type"] = "WordPiece";
  expect_refused(j, "model \"WordPiece\"");
  j = llama3_style();
  j["normalizer"] = {{"type", "BertNormalizer"}};
  expect_refused(j, "normalizer \"BertNormalizer\"");
  j = llama3_style();
  j["pre_tokenizer"] = {{"type", "UnicodeScripts"}};
  expect_refused(j, "pre_tokenizer \"UnicodeScripts\"");
  j = llama3_style();
  j["decoder"] = {{"type", "CTC"}};
  expect_refused(j, "decoder \"CTC\"");
  j = llama3_style();
  j["model"]["dropout"] = 0.1;
  TempDir d;
  EXPECT_THROW(load_fixture(d, j), InputError);
}

TEST(TokenizerBpe, MalformedFilesNameTheProblem) {
  TempDir d;
  d.write("tokenizer.json", "{\"model\": ");
  try {
    Tokenizer::load(d.path());
    FAIL();
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()).rfind(d.file("tokenizer.json") + ": invalid JSON (", 0), 0u) << e.what();
  }
  json j = llama3_style();
  j["model"]["merges"].push_back(json::array({"h", "zz"}));
  TempDir d2;
  try {
    load_fixture(d2, j);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()), d2.file("tokenizer.json") +
                                         " model: merge 10 (\"h\", \"zz\") uses a token that is not in the vocab");
  }
  TempDir empty;
  try {
    Tokenizer::load(empty.path());
    FAIL();
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()), empty.path() +
                                         ": no tokenizer found (tokenizer.json, tokenizer.model, or vocab.json "
                                         "with merges.txt)");
  }
  EXPECT_THROW(Tokenizer::load(empty.file("missing")), InputError);
}

TEST(TokenizerBpe, OnigurumaWhitespaceInPatterns) {
  using sae::tok::Regex;
  // U+180E is not White_Space (Unicode >= 6.3) and Oniguruma's \s agrees; PCRE2's \s would
  // take it, so \s is rewritten.
  Regex ws(R"(^\s$)", "test");
  EXPECT_TRUE(ws.search(" "));
  EXPECT_TRUE(ws.search("\xC2\x85"));      // U+0085
  EXPECT_TRUE(ws.search("\xE3\x80\x80"));  // U+3000
  EXPECT_FALSE(ws.search("\xE1\xA0\x8E")); // U+180E
  Regex cls(R"(^[^\s\p{L}]$)", "test");
  EXPECT_TRUE(cls.search("\xE1\xA0\x8E"));
  EXPECT_FALSE(cls.search("\xE2\x80\x89"));  // U+2009 thin space
  EXPECT_EQ(Regex::translate_oniguruma(R"(a\\s[]\s])"),
            std::string(R"(a\\s[]\t\n\x0B\f\r\x{20}\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}])"));
  EXPECT_THROW(Regex("(", "f.json"), InputError);
}

// ---- the merge loop against a plain reference ----

namespace {
// GPT-2's encoder.py bpe() on ids: find the lowest-ranked adjacent pair, merge every occurrence
// of it left to right, repeat.
V reference_bpe(V syms, const std::map<std::pair<int32_t, int32_t>, std::pair<int32_t, int32_t>>& m) {
  while (syms.size() > 1) {
    int32_t best = INT32_MAX;
    std::pair<int32_t, int32_t> bp;
    for (size_t i = 0; i + 1 < syms.size(); ++i) {
      auto it = m.find({syms[i], syms[i + 1]});
      if (it != m.end() && it->second.first < best) {
        best = it->second.first;
        bp = it->first;
      }
    }
    if (best == INT32_MAX) break;
    V next;
    for (size_t i = 0; i < syms.size();) {
      if (i + 1 < syms.size() && syms[i] == bp.first && syms[i + 1] == bp.second) {
        next.push_back(m.at(bp).second);
        i += 2;
      } else {
        next.push_back(syms[i++]);
      }
    }
    syms.swap(next);
  }
  return syms;
}
}  // namespace

TEST(TokenizerBpe, MergeLoopsAgreeWithReference) {
  // Random merge tables in training order (a merge only uses symbols that exist before it), as
  // every real merges list is; random words over a 4-symbol alphabet so that merges fire often.
  std::mt19937 rng(1234);
  for (int table = 0; table < 40; ++table) {
    sae::tok::BpeMerges merges;
    std::map<std::pair<int32_t, int32_t>, std::pair<int32_t, int32_t>> ref;
    std::vector<int32_t> symbols = {0, 1, 2, 3};
    int32_t next_id = 4;
    int n_merges = 3 + rng() % 30;
    for (int r = 0; r < n_merges; ++r) {
      int32_t a = symbols[rng() % symbols.size()], b = symbols[rng() % symbols.size()];
      if (ref.count({a, b})) continue;
      ref[{a, b}] = {r, next_id};
      merges.add(a, b, r, next_id);
      symbols.push_back(next_id++);
    }
    for (int w = 0; w < 200; ++w) {
      size_t len = w < 150 ? 1 + rng() % 20 : 49 + rng() % 300;  // long ones take the heap path
      V word(len);
      for (auto& s : word) s = rng() % 4;
      V expected = reference_bpe(word, ref);
      V scan = word, heap = word, any = word;
      merges.merge_scan(scan);
      merges.merge_heap(heap);
      merges.merge(any);
      ASSERT_EQ(scan, expected) << "table " << table << " word " << w;
      ASSERT_EQ(heap, expected) << "table " << table << " word " << w;
      ASSERT_EQ(any, expected);
    }
  }
}
