// sae-collect's model source: whole collections of the reference texts of ../shared/models checked
// row by row against reference.safetensors (tokens exactly, every hook within kTol of the tensor's
// scale, as in test_model_reference.cpp), through the library and through the built sae-collect
// binary. (The document reader it uses is tested in tokenizer/test_documents.cpp.)
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>

#include "data/collect_model.h"
#include "stream/stream.h"
#include "support/model_util.h"

using namespace sae;
using namespace model_test;

namespace {

constexpr double kTol = 1e-4;

std::vector<Batch> read_stream(const std::string& path, StreamHeader* h = nullptr) {
  StreamReader r({path});
  if (h) *h = r.header();
  std::vector<Batch> v;
  Batch b;
  while (r.next(b)) v.push_back(b);
  return v;
}

// All rows of a stream, concatenated.
Batch concat(const std::vector<Batch>& bs) {
  Batch all;
  for (const auto& b : bs) {
    all.rows += b.rows;
    all.x.insert(all.x.end(), b.x.begin(), b.x.end());
    all.token.insert(all.token.end(), b.token.begin(), b.token.end());
    all.doc.insert(all.doc.end(), b.doc.begin(), b.doc.end());
    all.pos.insert(all.pos.end(), b.pos.begin(), b.pos.end());
  }
  return all;
}

// The reference texts of a shared model as JSONL ({"text": ...} per line, one per case).
std::string write_cases_jsonl(const std::string& model, const std::string& path) {
  std::ifstream in(shared_model(model) + "/reference.json");
  json ref = json::parse(in);
  std::ofstream out(path);
  for (const auto& c : ref["cases"]) out << json{{"text", c["text"]}}.dump() << "\n";
  return path;
}

// Every hook of the model that its reference holds (the older references lack attn.hook_z).
std::vector<std::string> every_hook(const std::string& model) {
  SafeTensors ref(shared_model(model) + "/reference.safetensors");
  std::vector<std::string> v;
  for (const HookPoint& h : model_hooks(load_model_config(shared_model(model))))
    if (ref.has("case0." + h.name())) v.push_back(h.name());
  return v;
}

// Checks a collected stream of the reference texts (each text one window) against the
// reference: tokens exactly, doc = case, pos = position, activations within kTol.
void check_against_reference(const std::string& model, const std::string& stream, const std::string& hook,
                             bool with_bos) {
  SafeTensors ref(shared_model(model) + "/reference.safetensors");
  StreamHeader h;
  Batch all = concat(read_stream(stream, &h));
  EXPECT_EQ(h.hook(), hook);
  EXPECT_EQ(h.provenance["model"], shared_model(model));
  EXPECT_EQ(h.provenance["exclude_bos"], !with_bos);
  EXPECT_EQ(h.provenance["tokenizer"].get<std::string>().find(":sha256:") != std::string::npos, true);
  const int64_t D = h.d;
  int64_t row = 0;
  for (int c = 0; ref.has("case" + std::to_string(c) + ".tokens"); c++) {
    const std::string p = "case" + std::to_string(c) + ".";
    std::vector<int32_t> tok = ref.read_i32(p + "tokens");
    std::vector<float> acts = ref.read_f32(p + hook);
    const int64_t first = with_bos ? 0 : 1, n = int64_t(tok.size()) - first;
    ASSERT_LE(row + n, all.rows) << stream;
    std::vector<float> got(all.x.begin() + row * D, all.x.begin() + (row + n) * D);
    std::vector<float> want(acts.begin() + first * D, acts.end());
    EXPECT_LE(scaled_err(got, want), kTol) << stream << " " << p;
    for (int64_t i = 0; i < n; i++) {
      EXPECT_EQ(all.token[size_t(row + i)], tok[size_t(first + i)]) << p << "token " << first + i;
      EXPECT_EQ(all.doc[size_t(row + i)], c);
      EXPECT_EQ(all.pos[size_t(row + i)], first + i);
    }
    row += n;
  }
  EXPECT_EQ(row, all.rows);
}

}  // namespace

TEST(ModelCollect, OutputPathPattern) {
  EXPECT_EQ(collect_output_path("acts.{hook}.sae", "blocks.1.hook_mlp_out"), "acts.blocks.1.hook_mlp_out.sae");
  EXPECT_EQ(collect_output_path("{hook}/{hook}", "h"), "h/h");
  EXPECT_EQ(collect_output_path("-", "h"), "-");
}

// Every hook of every reference case, collected in one run (one stream per hook), for every
// shared model: tokenizers of both kinds (sentencepiece BPE; GPT-2 byte-level BPE from
// tokenizer.json), a real save_pretrained artifact, and every family.
TEST(ModelCollect, EveryHookOfEverySharedModelMatchesReference) {
  NEED_SHARED();
  for (std::string model : {"stories260K", "gpt2-random", "tiny-gpt2", "qwen3-random", "gemma2-random", "gemma3-random",
                            "pythia-random"}) {
    TempDir d;
    CollectModelOptions o;
    o.model_dir = shared_model(model);
    o.inputs = {write_cases_jsonl(model, d / "cases.jsonl")};
    o.jsonl_field = "text";
    o.context = 128;  // every case fits in one window
    o.batch = 3;      // batches of unequal lengths, one partial
    o.device = "cpu";
    o.hooks = every_hook(model);
    ASSERT_GE(o.hooks.size(), size_t(4 * load_model_config(o.model_dir).n_layers)) << model;
    o.output = d / "{hook}.sae";
    o.batch_rows = 50;
    CollectModelStats st = collect_model(o);
    EXPECT_EQ(st.documents, 4);
    EXPECT_EQ(st.sequences, 4);
    for (const auto& h : o.hooks) check_against_reference(model, d / (h + ".sae"), h, false);
  }
}

// With --exclude-bos false the BOS rows are kept; with a short context, documents are cut into
// windows that each start with BOS, and the tokens of a document's windows are its tokens.
TEST(ModelCollect, BosRowsWindowsAndEmptyDocuments) {
  NEED_SHARED();
  TempDir d;
  CollectModelOptions o;
  o.model_dir = shared_model("stories260K");
  o.inputs = {write_cases_jsonl("stories260K", d / "cases.jsonl")};
  o.jsonl_field = "text";
  o.device = "cpu";
  o.hooks = {"blocks.4.hook_resid_post"};
  o.output = d / "bos.sae";
  o.exclude_bos = false;
  collect_model(o);
  check_against_reference("stories260K", d / "bos.sae", o.hooks[0], true);

  // Case 1 has 89 text tokens: windows of context 16 hold 15 each (6 windows, the last of 14).
  write_text(d / "docs.jsonl", "{\"text\": \"\"}\n" + json{{"text", json::parse(std::ifstream(shared_model("stories260K") + "/reference.json"))["cases"][1]["text"]}}.dump() + "\n");
  o.inputs = {d / "docs.jsonl"};
  o.context = 16;
  o.exclude_bos = true;
  o.output = d / "win.sae";
  CollectModelStats st = collect_model(o);
  EXPECT_EQ(st.documents, 2);
  EXPECT_EQ(st.empty_documents, 1);
  EXPECT_EQ(st.sequences, 6);
  EXPECT_EQ(st.rows, 89);
  Batch all = concat(read_stream(d / "win.sae"));
  SafeTensors ref(shared_model("stories260K") + "/reference.safetensors");
  std::vector<int32_t> tok = ref.read_i32("case1.tokens");
  ASSERT_EQ(all.rows, 89);
  for (int64_t i = 0; i < 89; i++) {
    EXPECT_EQ(all.token[size_t(i)], tok[size_t(i + 1)]);
    EXPECT_EQ(all.doc[size_t(i)], 1);  // the empty document 0 still counts
    EXPECT_EQ(all.pos[size_t(i)], 1 + i % 15);
  }
  // The first window is the first 16 tokens of the reference case: same activations.
  std::vector<float> want = ref.read_f32("case1.blocks.4.hook_resid_post");
  EXPECT_LE(scaled_err(std::vector<float>(all.x.begin(), all.x.begin() + 15 * 64),
                       std::vector<float>(want.begin() + 64, want.begin() + 16 * 64)),
            kTol);
}

TEST(ModelCollect, BadOptionsAreRefusedBeforeAnyOutput) {
  NEED_SHARED();
  TempDir d;
  write_text(d / "t.txt", "hello\n");
  CollectModelOptions o;
  o.model_dir = shared_model("stories260K");
  o.inputs = {d / "t.txt"};
  o.device = "cpu";
  o.output = d / "out.sae";
  auto usage = [&](CollectModelOptions c) {
    try {
      collect_model(c);
    } catch (const UsageError& e) {
      return std::string(e.what());
    }
    ADD_FAILURE() << "no UsageError";
    return std::string();
  };
  o.hooks = {"blocks.5.hook_resid_post"};
  EXPECT_EQ(usage(o), "--hook: hook 'blocks.5.hook_resid_post': layer 5 is out of range (the model has 5 layers, 0-4)");
  o.hooks = {"blocks.0.hook_z"};
  EXPECT_EQ(usage(o), "--hook: hook 'blocks.0.hook_z': unknown hook name (expected blocks.L.hook_{resid_pre,attn_out,resid_mid,mlp_out,resid_post} or blocks.L.attn.hook_z)");
  o.hooks = {"blocks.0.hook_mlp_out", "blocks.1.hook_mlp_out"};
  EXPECT_EQ(usage(o), "--hook: 2 hooks need one output each: give -o a pattern with {hook}, e.g. -o acts.{hook}.sae");
  o.hooks = {"blocks.0.hook_mlp_out"};
  o.context = 513;
  EXPECT_EQ(usage(o), "--context 513 is longer than the model's 512 positions (max_position_embeddings in " +
                          shared_model("stories260K") + "/config.json)");
  o.context = 1;
  EXPECT_EQ(usage(o), "--context must be at least 2 (the BOS token and one token of text), got 1");
  EXPECT_FALSE(fs::exists(d / "out.sae"));
}

// The built binary, end to end: the stream it writes for the reference texts matches the
// reference (this is the CLI path: option parsing, output file, stream writing).
TEST(ModelCollect, BinaryWritesTheReferenceRows) {
  NEED_SHARED();
  std::string bin;
  if (const char* e = std::getenv("SAE_BIN")) bin = std::string(e) + "/sae-collect";
  if (bin.empty() || !fs::exists(bin)) {
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) bin = (fs::path(std::string(self, size_t(n))).parent_path() / "bin" / "sae-collect").string();
  }
  if (!fs::exists(bin)) GTEST_SKIP() << "sae-collect is not built beside the tests (" << bin << ")";
  TempDir d;
  write_cases_jsonl("gpt2-random", d / "cases.jsonl");
  const std::string cmd = bin + " --model " + shared_model("gpt2-random") +
                          " --hook blocks.3.hook_resid_post,blocks.1.hook_attn_out --jsonl-field text --device cpu"
                          " --context 64 --batch 2 --text " + d / "cases.jsonl" + " -o " + d / "{hook}.sae";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  check_against_reference("gpt2-random", d / "blocks.3.hook_resid_post.sae", "blocks.3.hook_resid_post", false);
  check_against_reference("gpt2-random", d / "blocks.1.hook_attn_out.sae", "blocks.1.hook_attn_out", false);
}
