// The shared rules for outputs and temporary files (lib/base): the one directory-output check,
// which inputs can be read twice, unnamed temporary files and their errors, and the line log.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>

#include "base/cli.h"
#include "base/files.h"

using namespace sae;

namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

}  // namespace

TEST(OutputDirRule, OnlyAbsentPathsAndDirectoriesPass) {
  TempDir tmp;
  const std::string d = tmp.path();
  auto check = [](const std::string& p) { return error_of([&] { cli::check_output_dir(p, "output"); }); };
  EXPECT_EQ(check(d + "/new"), "");
  ASSERT_EQ(mkdir((d + "/dir").c_str(), 0755), 0);
  EXPECT_EQ(check(d + "/dir"), "");
  EXPECT_EQ(check(d + "/dir/"), "");
  ASSERT_EQ(mkfifo((d + "/fifo").c_str(), 0644), 0);
  std::ofstream(d + "/file") << "x";
  ASSERT_EQ(symlink("/dev/null", (d + "/devlink").c_str()), 0);
  ASSERT_EQ(symlink("dir", (d + "/dirlink").c_str()), 0);
  ASSERT_EQ(symlink("nowhere", (d + "/dangling").c_str()), 0);
  for (const char* n : {"fifo", "file", "devlink", "dangling"})
    EXPECT_EQ(check(d + "/" + n), d + "/" + n + ": cannot write the output: exists and is not a directory") << n;
  EXPECT_EQ(check(d + "/dirlink"), "");  // replaced as a link; the directory it names is not touched
  EXPECT_EQ(check(d + "/missing/x"), d + "/missing/x: cannot write the output: directory " + d + "/missing does not exist");
  EXPECT_EQ(error_of([&] { cli::check_output_dir(d + "/file", "plots"); }),
            d + "/file: cannot write the plots: exists and is not a directory");
}

// OutputDir applies the rule when made and again at commit, so a node that appears during the
// run is not replaced either; the temporary directory is gone after the refusal.
TEST(OutputDirRule, OutputDirChecksAtCommitToo) {
  TempDir tmp;
  const std::string d = tmp.path(), out = d + "/out";
  {
    cli::OutputDir o(out, "checkpoint");
    std::ofstream(o.tmp_path() + "/a") << "a";
    ASSERT_EQ(mkfifo(out.c_str(), 0644), 0);  // appears while the run writes
    EXPECT_EQ(error_of([&] { o.commit(); }), out + ": cannot write the checkpoint: exists and is not a directory");
  }
  struct stat st;
  ASSERT_EQ(lstat(out.c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
  for (const auto& e : std::filesystem::directory_iterator(d)) EXPECT_EQ(e.path().filename(), "out");
}

TEST(Rereadable, RegularFilesOnly) {
  TempDir tmp;
  const std::string d = tmp.path();
  std::ofstream(d + "/f") << "x";
  ASSERT_EQ(mkfifo((d + "/p").c_str(), 0644), 0);
  EXPECT_EQ(cli::not_rereadable(d + "/f"), "");
  EXPECT_EQ(cli::not_rereadable(d + "/missing"), "");  // fails later, when opened
  EXPECT_EQ(cli::not_rereadable("-"), "stdin cannot be read twice");
  EXPECT_EQ(cli::not_rereadable(d + "/p"), d + "/p is a named pipe, which cannot be read twice");
  EXPECT_EQ(cli::not_rereadable("/dev/null"), "/dev/null is a character device, which cannot be read twice");
}

TEST(TempFiles, UnnamedFilesAndTheirErrors) {
  TempDir tmp;
  const std::string d = tmp.path();
  int fd = create_unnamed_temp_file(d);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, "abc", 3), 3);
  close(fd);
  EXPECT_TRUE(std::filesystem::is_empty(d));  // nothing with a name, ever
  EXPECT_EQ(error_of([&] { create_unnamed_temp_file(d + "/missing"); }),
            d + "/missing: cannot create temporary files: No such file or directory");
  EXPECT_EQ(error_of([&] { TempDir t("x", d + "/missing"); }),
            d + "/missing: cannot create a temporary directory: No such file or directory");
}

TEST(TempFiles, TempDirectoryIsTmpdirElseTmp) {
  const char* old = getenv("TMPDIR");
  const std::string saved = old ? old : "";
  setenv("TMPDIR", "/some/where", 1);
  EXPECT_EQ(temp_directory(), "/some/where");
  setenv("TMPDIR", "", 1);
  EXPECT_EQ(temp_directory(), "/tmp");
  unsetenv("TMPDIR");
  EXPECT_EQ(temp_directory(), "/tmp");
  if (old) setenv("TMPDIR", saved.c_str(), 1);
}

TEST(LineLog, WholeLinesAppendedOrStartedAfresh) {
  TempDir tmp;
  const std::string p = tmp / "log.jsonl";
  std::ofstream(p) << "old\n";
  {
    cli::LineLog log(p, false);
    log.write_line("{\"step\":1}");
    EXPECT_EQ(slurp(p), "{\"step\":1}\n");  // unbuffered: on disk before the log is closed
  }
  {
    cli::LineLog log(p, true);
    log.write_line("{\"step\":2}");
  }
  EXPECT_EQ(slurp(p), "{\"step\":1}\n{\"step\":2}\n");
  EXPECT_EQ(error_of([&] { cli::LineLog l(tmp.path(), false); }), tmp.path() + ": cannot open the log: is a directory");
  EXPECT_EQ(error_of([&] { cli::LineLog l(tmp / "no/log", false); }),
            tmp / "no/log" + ": cannot open the log: No such file or directory");
  cli::LineLog full("/dev/full", true);
  EXPECT_EQ(error_of([&] { full.write_line("x"); }), "/dev/full: write failed: No space left on device");
}
