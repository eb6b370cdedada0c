// The static dashboard (lib/explain/dashboard.h): latent N lands in data/latents-(N/64).js, which
// calls saeChunk with N's data and its neighbouring chunks' latents; the index holds every latent
// once; data/tokens.js holds the tokens the pages show, escaped so that a token "<script>" stays
// text; the summary is HTML-escaped; and the time to write 16,384 latents of default sizes
// (printed, not asserted).
//
// With SAE_DASHBOARD_OUT set, DashboardBrowser.WritesTheFixture and DashboardSpeed write their
// dashboards under that directory (small/ and large/) for a real browser to open
// (tests/cli/explain_browser.bats renders small/ in headless Chromium).
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <ctime>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <set>

#include "base/errors.h"
#include "base/files.h"
#include "explain/dashboard.h"
#include "explain/report.h"

using namespace sae;
using json = nlohmann::json;

namespace {

struct Sizes {
  int top = 20, groups = 10, per_group = 5, contrast = 10, window = 33, logits = 10, neighbours = 5;
};

// A latent with every list filled: tokens drawn from [0, vocab), the peak in the middle firing at
// the example's activation and a few other tokens firing lower.
LatentReport synthetic(int64_t latent, const Sizes& z, int32_t vocab, std::mt19937& g) {
  std::uniform_int_distribution<int32_t> tok(0, vocab - 1);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  LatentReport r;
  r.latent = latent;
  r.rows = 1000000;
  r.fires = 100 + latent % 1000;
  r.density = double(r.fires) / double(r.rows);
  r.max_activation = 2.0f + float(latent % 7);
  r.mean_activation = r.max_activation / 3;
  for (int b = 0; b <= 12; b++) r.hist_edges.push_back(0.01 * std::pow(10.0, b / 4.0));
  for (int b = 0; b < 12; b++) r.hist_counts.push_back(int64_t(1 + (b * 37 + latent) % 50));
  auto ex = [&](float peak_act, bool fires) {
    ContextExample e;
    e.row = int64_t(g() % 1000000);
    e.doc = e.row / 300;
    e.peak = z.window * 3 / 4;
    e.activation = fires ? peak_act : 0;
    for (int i = 0; i < z.window; i++) {
      e.tokens.push_back(tok(g));
      e.acts.push_back(fires && u(g) < 0.1f ? peak_act * u(g) : 0.0f);
    }
    e.acts[size_t(e.peak)] = e.activation;
    return e;
  };
  for (int i = 0; i < z.top; i++) r.top.push_back(ex(r.max_activation * (1 - 0.01f * float(i)), true));
  for (int q = 0; q < z.groups; q++) {
    std::vector<ContextExample> group;
    for (int i = 0; i < z.per_group; i++) group.push_back(ex(r.max_activation * float(q + 1) / float(z.groups + 1), true));
    r.quantiles.push_back(std::move(group));
    r.quantile_edges.push_back(r.max_activation * float(q) / float(z.groups));
  }
  r.quantile_edges.push_back(r.max_activation);
  for (int i = 0; i < z.contrast; i++) r.contrast.push_back(ex(0, false));
  r.has_logit_lens = true;
  for (int i = 0; i < z.logits; i++) {
    r.logit_top.push_back({tok(g), 5.0f - float(i) * 0.1f});
    r.logit_bottom.push_back({tok(g), -5.0f + float(i) * 0.1f});
    r.logit_top_corrected.push_back({tok(g), 3.0f - float(i) * 0.1f});
    r.logit_bottom_corrected.push_back({tok(g), -3.0f + float(i) * 0.1f});
  }
  for (int i = 0; i < z.neighbours; i++) {
    r.decoder_neighbours.push_back({(latent + 1 + i) % 16384, 0.9f - 0.1f * float(i)});
    r.cofire_neighbours.push_back({(latent + 100 + i) % 16384, 0.5f - 0.05f * float(i)});
  }
  return r;
}

ExplainSummary summary_for(int64_t d_sae, int64_t reported) {
  ExplainSummary s;
  s.sae = "runs/<b>sae</b> & co";
  s.model = "stories260K";
  s.hook = "blocks.2.hook_resid_post";
  s.architecture = "topk";
  s.d_sae = d_sae;
  s.d_in = 64;
  s.rows = 1000000;
  s.documents = 3000;
  s.latents_reported = reported;
  s.dead = 1;
  s.density_edges = {-6, -5, -4, -3, -2, -1, 0};
  s.density_counts = {2, 10, 30, 40, 10, 3};
  return s;
}

// The JSON inside a data file "FN({...});\n".
json jsonp(const std::string& text, const std::string& fn) {
  EXPECT_EQ(text.compare(0, fn.size() + 1, fn + "("), 0) << text.substr(0, 60);
  EXPECT_GE(text.size(), fn.size() + 4);
  EXPECT_EQ(text.substr(text.size() - 3), ");\n");
  return json::parse(text.substr(fn.size() + 1, text.size() - fn.size() - 4));
}

bool exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

std::vector<std::string> numbered_vocab(int32_t n) {
  std::vector<std::string> v;
  for (int32_t i = 0; i < n; i++) v.push_back(" t" + std::to_string(i));
  return v;
}

// Where a test writes a dashboard meant for a browser: $SAE_DASHBOARD_OUT/NAME (made fresh), or
// a directory under the test's TempDir.
std::string out_dir(const TempDir& tmp, const std::string& name) {
  const char* env = std::getenv("SAE_DASHBOARD_OUT");
  std::string base = env && *env ? std::string(env) : tmp.path();
  ::mkdir(base.c_str(), 0777);
  std::string dir = base + "/" + name;
  std::filesystem::remove_all(dir);
  EXPECT_EQ(::mkdir(dir.c_str(), 0777), 0) << dir;
  return dir;
}

}  // namespace

TEST(Dashboard, ChunkFileNames) {
  EXPECT_EQ(dashboard_chunk_file(0), "data/latents-0000.js");
  EXPECT_EQ(dashboard_chunk_file(63), "data/latents-0000.js");
  EXPECT_EQ(dashboard_chunk_file(64), "data/latents-0001.js");
  EXPECT_EQ(dashboard_chunk_file(16383), "data/latents-0255.js");
  EXPECT_EQ(dashboard_chunk_file(64 * 12345), "data/latents-12345.js");
}

TEST(Dashboard, EachLatentIsInItsChunkWithItsData) {
  TempDir tmp("dash");
  const std::vector<int64_t> latents = {0, 1, 5, 63, 64, 130, 200, 201, 1000};
  Sizes z;
  z.top = 3, z.groups = 2, z.per_group = 2, z.contrast = 2, z.window = 7;
  std::mt19937 g(1);
  std::vector<LatentReport> reports;
  {
    DashboardWriter w(tmp.path(), summary_for(1024, int64_t(latents.size())), numbered_vocab(300));
    for (int64_t n : latents) {
      reports.push_back(synthetic(n, z, 300, g));
      w.add(reports.back());
    }
    w.finish();
  }
  for (const char* f : {"index.html", "latent.html", "data/index.js", "data/tokens.js"})
    EXPECT_TRUE(exists(tmp / f)) << f;
  // Exactly the chunks that hold a reported latent.
  std::set<std::string> want_files;
  for (int64_t n : latents) want_files.insert(dashboard_chunk_file(n));
  EXPECT_EQ(want_files, (std::set<std::string>{"data/latents-0000.js", "data/latents-0001.js", "data/latents-0002.js",
                                               "data/latents-0003.js", "data/latents-0015.js"}));
  for (int c = 0; c < 20; c++) {
    char name[40];
    std::snprintf(name, sizeof name, "data/latents-%04d.js", c);
    EXPECT_EQ(exists(tmp / name), want_files.count(name) == 1) << name;
  }

  for (size_t i = 0; i < latents.size(); i++) {
    const int64_t n = latents[i];
    const json c = jsonp(read_file(tmp / dashboard_chunk_file(n)), "saeChunk");
    EXPECT_EQ(c.at("chunk").get<int64_t>(), n / 64);
    // The chunk's latents: exactly the reported ones with the same N / 64, ascending.
    std::vector<int64_t> in_chunk, want_in_chunk;
    for (const json& d : c.at("latents")) in_chunk.push_back(d.at("latent").get<int64_t>());
    for (int64_t m : latents)
      if (m / 64 == n / 64) want_in_chunk.push_back(m);
    EXPECT_EQ(in_chunk, want_in_chunk);
    // prev/next: the reported latents just before and after the chunk.
    int64_t prev = -1, next = -1;
    for (int64_t m : latents) {
      if (m / 64 < n / 64) prev = m;
      if (m / 64 > n / 64 && next < 0) next = m;
    }
    if (prev < 0) EXPECT_TRUE(c.at("prev").is_null());
    else EXPECT_EQ(c.at("prev").get<int64_t>(), prev);
    if (next < 0) EXPECT_TRUE(c.at("next").is_null());
    else EXPECT_EQ(c.at("next").get<int64_t>(), next);

    const json* d = nullptr;
    for (const json& x : c["latents"])
      if (x["latent"] == n) d = &x;
    ASSERT_NE(d, nullptr);
    const LatentReport& r = reports[i];
    EXPECT_EQ((*d)["fires"].get<int64_t>(), r.fires);
    EXPECT_EQ((*d)["rows"].get<int64_t>(), r.rows);
    EXPECT_NEAR((*d)["max"].get<double>(), r.max_activation, 1e-3 * r.max_activation);
    EXPECT_EQ((*d)["hist"][1].get<std::vector<int64_t>>(), r.hist_counts);
    ASSERT_EQ((*d)["top"].size(), r.top.size());
    for (size_t k = 0; k < r.top.size(); k++) {
      const json& e = (*d)["top"][k];  // [row, doc, peak, activation, [ids], [acts]]
      EXPECT_EQ(e[0].get<int64_t>(), r.top[k].row);
      EXPECT_EQ(e[1].get<int64_t>(), r.top[k].doc);
      EXPECT_EQ(e[2].get<int32_t>(), r.top[k].peak);
      EXPECT_EQ(e[4].get<std::vector<int32_t>>(), r.top[k].tokens);
      ASSERT_EQ(e[5].size(), r.top[k].acts.size());
      for (size_t t = 0; t < r.top[k].acts.size(); t++)  // 4 significant digits
        EXPECT_NEAR(e[5][t].get<double>(), r.top[k].acts[t], 5.01e-4 * r.top[k].acts[t]);
    }
    ASSERT_EQ((*d)["quantiles"].size(), r.quantiles.size());
    EXPECT_EQ((*d)["quantiles"][0]["ex"].size(), r.quantiles[0].size());
    EXPECT_NEAR((*d)["quantiles"][1]["hi"].get<double>(), r.quantile_edges[2], 1e-3 * r.quantile_edges[2]);
    EXPECT_EQ((*d)["contrast"].size(), r.contrast.size());
    ASSERT_EQ((*d)["logits"].size(), 4u);
    EXPECT_EQ((*d)["logits"][0][0][0].get<int32_t>(), r.logit_top[0].token);
    EXPECT_EQ((*d)["decoder"][0][0].get<int64_t>(), r.decoder_neighbours[0].latent);
    EXPECT_EQ((*d)["cofire"].size(), r.cofire_neighbours.size());
    EXPECT_FALSE(d->contains("explanation"));
  }
}

TEST(Dashboard, TheIndexHoldsEveryLatentOnce) {
  TempDir tmp("dash");
  Sizes z;
  z.top = 1, z.groups = 1, z.per_group = 1, z.contrast = 1, z.window = 3;
  std::mt19937 g(2);
  std::vector<int64_t> want;
  {
    DashboardWriter w(tmp.path(), summary_for(5000, 0), numbered_vocab(50));
    for (int64_t n = 3; n < 5000; n += 7) {
      LatentReport r = synthetic(n, z, 50, g);
      if (n % 2) r.explanation = "explanation of " + std::to_string(n);
      if (n % 3 == 0) r.score = 0.5;
      w.add(r);
      want.push_back(n);
    }
    w.finish();
  }
  const json idx = jsonp(read_file(tmp / "data/index.js"), "saeIndex");
  std::vector<int64_t> got;
  for (const json& row : idx.at("rows")) {
    got.push_back(row[0].get<int64_t>());
    ASSERT_EQ(row.size(), 8u);  // [latent, density, fires, max, mean, [tokens], explanation, score]
    EXPECT_EQ(row[5].size(), 5u);
    const int64_t n = row[0].get<int64_t>();
    if (n % 2) EXPECT_EQ(row[6], "explanation of " + std::to_string(n));
    else EXPECT_TRUE(row[6].is_null());
    if (n % 3 == 0) EXPECT_EQ(row[7], 0.5);
    else EXPECT_TRUE(row[7].is_null());
  }
  EXPECT_EQ(got, want);
}

TEST(Dashboard, TokensAreEscapedAndOnlyThoseShownAreWritten) {
  TempDir tmp("dash");
  std::vector<std::string> vocab = {"<s>", "<script>", "</script><b>x", "\n", " ", "", "\"q\"\\", "unused", "&lt;",
                                    "\xE2\x80\xA8", "\xFF"};
  LatentReport r;
  r.latent = 3;
  r.top.push_back({});
  r.top[0].tokens = {0, 1, 2, 3, 4, 5, 6, -1, 99, 8, 9, 10};
  r.top[0].acts.assign(12, 0.0f);
  r.top[0].acts[1] = 1;
  r.has_logit_lens = true;
  r.logit_top = {{1, 2.0f}};
  r.explanation = "</script><script>alert(1)</script>";
  {
    DashboardWriter w(tmp.path(), summary_for(64, 1), vocab);
    w.add(r);
    w.finish();
  }
  const std::string raw = read_file(tmp / "data/tokens.js");
  EXPECT_EQ(raw.find("<script>"), std::string::npos) << raw;
  EXPECT_EQ(raw.find("</script>"), std::string::npos) << raw;
  EXPECT_NE(raw.find("\\u003cscript\\u003e"), std::string::npos) << raw;
  const json t = jsonp(raw, "saeTokens");
  EXPECT_EQ(t.at("1"), "<script>");
  EXPECT_EQ(t.at("2"), "</script><b>x");
  EXPECT_EQ(t.at("3"), "\n");
  EXPECT_EQ(t.at("4"), " ");
  EXPECT_EQ(t.at("5"), "");
  EXPECT_EQ(t.at("6"), "\"q\"\\");
  EXPECT_EQ(t.at("8"), "&lt;");
  EXPECT_EQ(t.at("9"), "\xE2\x80\xA8");
  EXPECT_EQ(t.at("10"), "\xEF\xBF\xBD");  // not UTF-8: replaced
  EXPECT_FALSE(t.contains("7")) << "a token no page shows";
  EXPECT_FALSE(t.contains("-1"));
  EXPECT_FALSE(t.contains("99"));
  // The explanation in the chunk and the index: also escaped.
  for (const char* f : {"data/latents-0000.js", "data/index.js"}) {
    const std::string text = read_file(tmp / f);
    EXPECT_EQ(text.find("<script>"), std::string::npos) << f;
    EXPECT_EQ(text.find("</script>"), std::string::npos) << f;
  }
  const json c = jsonp(read_file(tmp / "data/latents-0000.js"), "saeChunk");
  EXPECT_EQ(c["latents"][0]["explanation"], *r.explanation);
}

TEST(Dashboard, TheSummaryIsHtmlEscaped) {
  TempDir tmp("dash");
  {
    DashboardWriter w(tmp.path(), summary_for(64, 0), {});
    w.finish();
  }
  for (const char* f : {"index.html", "latent.html"}) {
    const std::string h = read_file(tmp / f);
    EXPECT_EQ(h.find("<b>sae"), std::string::npos) << f;
    EXPECT_NE(h.find("runs/&lt;b&gt;sae&lt;/b&gt; &amp; co"), std::string::npos) << f;
    // Self-contained: nothing loaded from the network.
    EXPECT_EQ(h.find("http://"), h.find("http://www.w3.org/2000/svg")) << f;
    EXPECT_EQ(h.find("https://"), std::string::npos) << f;
  }
  const json idx = jsonp(read_file(tmp / "data/index.js"), "saeIndex");
  EXPECT_TRUE(idx["rows"].empty());
}

TEST(Dashboard, LatentsMustComeInAscendingOrder) {
  TempDir tmp("dash");
  DashboardWriter w(tmp.path(), summary_for(64, 2), {});
  LatentReport r;
  r.latent = 5;
  w.add(r);
  EXPECT_THROW(w.add(r), std::invalid_argument);
  r.latent = 4;
  EXPECT_THROW(w.add(r), std::invalid_argument);
}

TEST(Dashboard, AnUnwritableDirectoryIsAnInputError) {
  EXPECT_THROW(DashboardWriter("/nonexistent-dir/dash", summary_for(64, 0), {}), InputError);
}

// The dashboard tests/cli/explain_browser.bats opens in Chromium, with its latents.jsonl: latents
// 0-129 (three chunks),
// 5 top + 3x2 quantile + 2 contrast contexts of 9 tokens each, tricky tokens in latent 3's first
// top context, an explanation on the even latents, latent 7 dead, latent 8 without a logit lens.
TEST(DashboardBrowser, WritesTheFixture) {
  TempDir tmp("dash");
  const std::string dir = out_dir(tmp, "small");
  std::vector<std::string> vocab = numbered_vocab(200);
  vocab[1] = "<script>";
  vocab[2] = "\n";
  vocab[3] = "   ";
  vocab[4] = "";
  vocab[5] = "\t";
  vocab[6] = "</span><b>bold</b>";
  Sizes z;
  z.top = 5, z.groups = 3, z.per_group = 2, z.contrast = 2, z.window = 9, z.logits = 5, z.neighbours = 3;
  std::mt19937 g(3);
  ExplainSummary s = summary_for(130, 130);
  s.sae = "fixture <SAE>";
  DashboardWriter w(dir, s, vocab);
  std::string jsonl;  // latents.jsonl beside the pages, as the tool writes it
  for (int64_t n = 0; n < 130; n++) {
    LatentReport r = synthetic(n, z, 200, g);
    for (auto& ns : r.decoder_neighbours) ns.latent %= 130;
    for (auto& ns : r.cofire_neighbours) ns.latent %= 130;
    if (n == 3) r.top[0].tokens = {1, 2, 3, 4, 5, 6, -1, 500, 10};
    if (n % 2 == 0) r.explanation = "fixture explanation " + std::to_string(n) + " <i>not italic</i>";
    if (n % 4 == 0) r.score = 0.25 * double(n % 5);
    if (n == 7) {
      r.fires = 0, r.density = 0, r.max_activation = 0, r.mean_activation = 0;
      r.hist_edges.clear(), r.hist_counts.clear(), r.top.clear(), r.quantiles.clear(), r.quantile_edges.clear();
    }
    if (n == 8) r.has_logit_lens = false;
    w.add(r);
    append_latent_jsonl(jsonl, r, vocab);
  }
  w.finish();
  FILE* f = std::fopen((dir + "/latents.jsonl").c_str(), "wb");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(std::fwrite(jsonl.data(), 1, jsonl.size(), f), jsonl.size());
  std::fclose(f);
  EXPECT_TRUE(exists(dir + "/data/latents-0002.js"));
}
