// sae-collect: write a stream of activations from a source. Sources: --toy (synthetic activations
// with known ground-truth features, lib/data/toy.h) and --model (a Hugging Face model's activations at
// hook points over text, lib/data/collect_model.h). Each source is its own option group and branch
// below; the output options are shared.
#include <string>

#include "base/cli.h"
#include "base/manual.h"
#include "data/collect_model.h"
#include "data/toy.h"
#include "stream/stream.h"

namespace po = sae::cli::po;

namespace {

// Stream output options shared by every source.
po::options_description output_options() {
  const sae::toy::ToyOutput def;
  const sae::WriterOptions w;
  po::options_description g("Output");
  g.add_options()
    ("output,o", po::value<std::string>()->default_value("-"), "output stream (- = stdout; never a terminal)")
    ("dtype", sae::cli::choice({"f32", "f16", "bf16"})->default_value("f32"), "storage dtype of the activations: f32, f16 or bf16")
    ("batch-rows", po::value<int64_t>()->default_value(def.batch_rows), "rows per stream batch")
    ("level", po::value<int>()->default_value(w.level), "zstd compression level (negative = faster, larger)")
    ("byte-shuffle", po::bool_switch(), "store payload bytes plane by plane (compresses 16-bit dtypes better)")
    ("threads", po::value<int>()->default_value(0), "--toy: threads for generation and compression (0 = all cores); --model: compression threads "
     "beside the forward pass (0 = none: batches are compressed between forward passes)");
  return g;
}

// The model source's options. --context is shared with the toy source (one option, two meanings);
// for --model its toy default of 0 stands for kModelContext.
constexpr int64_t kModelContext = 128;

po::options_description model_options() {
  const sae::CollectModelOptions d;
  po::options_description g(
      "Model source (--model): a Hugging Face model's activations over text. --context N (shared with\n"
      "the toy source) is the tokens per sequence with BOS included, default " +
      std::to_string(kModelContext) + " here");
  g.add_options()
    ("model", po::value<std::string>(), "Hugging Face model directory (config.json, model.safetensors or "
     "model.safetensors.index.json, tokenizer files); GPT-2, the Llama family, Gemma 2/3, GPT-NeoX")
    ("hook", po::value<std::vector<std::string>>()->multitoken(),
     "hook points, comma-separated or repeated: blocks.L.hook_{resid_pre,attn_out,resid_mid,mlp_out,"
     "resid_post} or blocks.L.attn.hook_z (n_heads x head_dim wide); one stream each (several hooks need -o "
     "with {hook})")
    ("text", po::value<std::vector<std::string>>()->multitoken(), "input text files (default: stdin)")
    ("jsonl-field", po::value<std::string>()->default_value(""),
     "read JSONL, one object per line, the text in this field (default: plain text)")
    ("lines", po::bool_switch(), "plain text: one document per line (default: documents separated by blank lines)")
    ("batch", po::value<int64_t>()->default_value(d.batch), "sequences per forward pass")
    ("exclude-bos", po::value<bool>()->default_value(d.exclude_bos, "true")->implicit_value(true, "true"),
     "leave out the rows of the BOS token that starts each sequence (--exclude-bos false keeps them)")
    ("invalid-utf8", sae::cli::choice({"error", "replace"})->default_value("error"),
     "text that is not valid UTF-8: error (refuse it, naming file, line and byte offset) or replace "
     "(read each invalid sequence as U+FFFD)")
    ("compute", sae::cli::choice({"f32", "bf16"})->default_value("f32"),
     "arithmetic of the forward pass: f32, or bf16 (GPU only: weight matrices held in bf16, products of "
     "bf16-rounded activations accumulated in f32; docs/models.md)");
  sae::cli::add_device_option(g);
  return g;
}

// Options of `group` given on the command line (not left at their defaults), except `except`.
std::vector<std::string> given(const po::variables_map& vm, const po::options_description& group,
                               const std::string& except = "") {
  std::vector<std::string> v;
  for (const auto& opt : group.options()) {
    const std::string& n = opt->long_name();
    if (n != except && vm.count(n) && !vm[n].defaulted()) v.push_back(n);
  }
  return v;
}

int run_model(const po::variables_map& vm) {
  sae::CollectModelOptions o;
  o.model_dir = vm["model"].as<std::string>();
  if (!vm.count("hook")) throw sae::UsageError("--model needs --hook (e.g. --hook blocks.0.hook_resid_post)");
  for (const auto& arg : vm["hook"].as<std::vector<std::string>>()) {
    size_t start = 0;
    for (;;) {
      size_t comma = arg.find(',', start);
      std::string h = arg.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
      if (h.empty()) throw sae::UsageError("--hook: empty hook name in '" + arg + "'");
      o.hooks.push_back(h);
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  }
  if (vm.count("text")) o.inputs = vm["text"].as<std::vector<std::string>>();
  o.jsonl_field = vm["jsonl-field"].as<std::string>();
  o.lines = vm["lines"].as<bool>();
  if (o.lines && !o.jsonl_field.empty()) throw sae::UsageError("--lines is for plain text; JSONL is always one document per line");
  const std::string inv = vm["invalid-utf8"].as<std::string>();
  if (inv != "error" && inv != "replace") throw sae::UsageError("--invalid-utf8 must be error or replace, not '" + inv + "'");
  o.replace_invalid_utf8 = inv == "replace";
  o.context = vm["context"].defaulted() ? kModelContext : vm["context"].as<int64_t>();
  o.batch = vm["batch"].as<int64_t>();
  o.exclude_bos = vm["exclude-bos"].as<bool>();
  o.device = sae::cli::device_option(vm);
  o.compute = sae::parse_compute_option(vm["compute"].as<std::string>());
  o.output = vm["output"].as<std::string>();
  try {
    o.dtype = sae::parse_dtype(vm["dtype"].as<std::string>());
  } catch (const sae::UsageError& e) {
    throw sae::UsageError(std::string("--dtype: ") + e.what());
  }
  o.batch_rows = vm["batch-rows"].as<int64_t>();
  o.writer.level = vm["level"].as<int>();
  o.writer.byte_shuffle = vm["byte-shuffle"].as<bool>();
  const int threads = vm["threads"].as<int>();
  if (threads < 0) throw sae::UsageError("--threads must be non-negative, got " + std::to_string(threads));
  o.writer.threads = threads;
  const sae::CollectModelStats st = sae::collect_model(o);
  if (st.empty_documents)
    sae::cli::say("skipped " + std::to_string(st.empty_documents) + " empty document" +
                  (st.empty_documents == 1 ? "" : "s") + " (no tokens)");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return sae::cli::run("sae-collect", argc, argv, [](int argc, char** argv) {
    po::options_description source("Source (choose one)");
    source.add_options()("toy", po::bool_switch(), "synthetic activations with known features (options below)");
    po::options_description toy = sae::toy::toy_options();
    po::options_description model = model_options();
    po::options_description all;
    all.add(source).add(output_options()).add(model).add(toy);
    auto vm = sae::cli::parse(
        argc, argv, all, "--toy [options] | --model DIR --hook NAME[,NAME...] [--text FILE...] [options]",
        "Write a stream of activations (kind activations) to stdout or -o FILE.\n"
        "--model: runs a Hugging Face model (GPT-2, Llama family, Gemma 2/3, GPT-NeoX) over text and\n"
        "writes its activations at each hook, one stream per hook, rows carrying token, document and\n"
        "position (docs/models.md).\n"
        "--toy: rows are sparse non-negative combinations of known unit feature directions plus\n"
        "Gaussian noise; the same options and seed give byte-identical output (docs/toy.md).");

    const bool is_toy = vm["toy"].as<bool>(), is_model = vm.count("model") > 0;
    if (is_toy && is_model) throw sae::UsageError("--toy and --model are two sources: choose one");
    if (is_model) {
      for (const auto& n : given(vm, toy, "context"))
        throw sae::UsageError("--" + n + " is an option of the toy source, not of --model");
      return run_model(vm);
    }
    for (const auto& n : given(vm, model, "device"))
      throw sae::UsageError("--" + n + " is an option of the model source: add --model DIR");
    if (!is_toy) {
      for (const auto& n : given(vm, toy))
        throw sae::UsageError("--" + n + " is an option of the toy source: add --toy");
      throw sae::UsageError("no source given: use --toy (synthetic activations) or --model DIR (a model over text)");
    }

    sae::toy::ToyOutput out;
    out.path = vm["output"].as<std::string>();
    try {
      out.dtype = sae::parse_dtype(vm["dtype"].as<std::string>());
    } catch (const sae::UsageError& e) {
      throw sae::UsageError(std::string("--dtype: ") + e.what());
    }
    out.batch_rows = vm["batch-rows"].as<int64_t>();
    out.writer.level = vm["level"].as<int>();
    out.writer.byte_shuffle = vm["byte-shuffle"].as<bool>();
    out.threads = vm["threads"].as<int>();
    if (out.threads < 0) throw sae::UsageError("--threads must be non-negative, got " + std::to_string(out.threads));
    sae::toy::toy_output_paths(vm, out);
    sae::toy::write_toy(sae::toy::toy_config(vm), out);
    return 0;
  });
}
