// Conventions every tool shares (DESIGN.md §6): option parsing with --help/--version, messages on
// stderr prefixed with the tool name, exit codes, atomic outputs that never leave a half-written
// file under the final name, signal handling, broken pipes, and progress lines on a terminal.
#pragma once
#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "base/errors.h"

namespace sae::cli {

namespace po = boost::program_options;

// The running tool's name ("sae-info"); set by run().
const std::string& tool();

// "tool: msg" on stderr.
void say(const std::string& msg);

// Thrown when a write to stdout finds the reader gone; run() ends the tool quietly with exit 0.
struct BrokenPipe : std::runtime_error {
  BrokenPipe() : std::runtime_error("broken pipe") {}
};

// Runs a tool's body: installs signal handling, maps exceptions to messages and exit codes
// (UsageError/InputError -> 1, anything else -> 2, BrokenPipe -> 0).
int run(const char* tool, int argc, char** argv, const std::function<int(int, char**)>& body);

// Parses options. Adds --help, --version, --man and --completion to `desc`; on --help prints
// usage, the description and every option with its default, on --version the build report
// (base/build_info.h), on --man the manual page and on --completion the bash completion script
// (base/manual.h), then exits 0. Unknown options and bad values throw UsageError.
// `visible`, when given, is what --help lists instead of `desc` (leaving out options that only
// carry positional arguments).
po::variables_map parse(int argc, char** argv, po::options_description& desc,
                        const std::string& usage, const std::string& about,
                        const po::positional_options_description* positional = nullptr,
                        const po::options_description* visible = nullptr);

// Input file list: no files (or "-") means stdin. Missing/unreadable files are an InputError
// naming the file.
std::vector<std::string> input_files(const po::variables_map& vm, const char* key = "input");
FILE* open_input(const std::string& path);  // "-" -> stdin

// A file output: "-" or "" is stdout (binary output to a terminal is refused). A named file is
// written to a temporary name beside it and renamed over the target only by commit(); if the
// object dies uncommitted (error, exception) or the process gets SIGINT/SIGTERM, the temporary
// file is removed and nothing appears under the final name.
class Output {
 public:
  Output(const std::string& path, bool binary);
  ~Output();
  Output(const Output&) = delete;
  Output& operator=(const Output&) = delete;
  FILE* file() { return f_; }
  const std::string& name() const { return display_; }
  bool is_stdout() const { return stdout_; }
  void write(const void* p, size_t n);  // throws BrokenPipe / InputError (disk full) naming the file
  void commit();

 private:
  std::string path_, tmp_, display_;
  FILE* f_ = nullptr;
  bool stdout_ = false, committed_ = false;
  bool direct_ = false;  // a device or FIFO (-o /dev/null): written in place, never renamed over
};

// The one rule for every directory output (SAE directories, checkpoints, plots, sweeps), checked
// before any work is done: the parent directory exists and new files can be made in it, and the
// path is either absent or a directory. Anything else there (a file, a device node, a FIFO, a
// socket) is never replaced: InputError "PATH: cannot write the WHAT: exists and is not a
// directory" (exit 1). OutputDir checks it at construction and again at commit.
void check_output_dir(const std::string& path, const std::string& what);

// A directory output (an SAE directory, plots): files are written inside tmp_path(), which is
// renamed to the final path by commit(). An existing directory at the final path is replaced only
// at commit. Removed on failure and on SIGINT/SIGTERM. `what` names it in messages ("output",
// "checkpoint", "plots").
class OutputDir {
 public:
  explicit OutputDir(const std::string& path, const std::string& what = "output");
  ~OutputDir();
  OutputDir(const OutputDir&) = delete;
  OutputDir& operator=(const OutputDir&) = delete;
  const std::string& tmp_path() const { return tmp_; }
  const std::string& path() const { return path_; }
  void commit();

 private:
  std::string path_, what_, tmp_;
  bool committed_ = false;
};

// A log of lines (sae-train --log): appended to, each line handed to the file whole with one
// write(2) and no buffering, so `tail -f` sees it at once and a run killed at any moment leaves
// complete lines. A write that fails part-way (a full disk) is cut back off before the error is
// thrown, so the file is always a valid prefix of the log: every line before the failure, whole.
// Logs are not atomic outputs: they exist to be watched while the run goes on.
class LineLog {
 public:
  // `append`: keep what the file holds (a resumed run); otherwise it is emptied first.
  LineLog(const std::string& path, bool append);
  ~LineLog();
  LineLog(const LineLog&) = delete;
  LineLog& operator=(const LineLog&) = delete;
  void write_line(const std::string& line);  // adds the '\n'; InputError "PATH: write failed: ..."

 private:
  std::string path_;
  int fd_ = -1;
};

// Writes a whole small file atomically (temp + rename).
void write_file_atomic(const std::string& path, const std::string& contents);

// Temporary paths (files or directories) removed if the process is interrupted.
void register_temp(const std::string& path);
void unregister_temp(const std::string& path);
void remove_tree(const std::string& path);

// Long jobs that checkpoint on a signal call this: the first SIGINT/SIGTERM then only sets
// interrupted(); a second one ends the process (after removing temporaries).
void set_graceful_interrupt(bool on);
bool interrupted();

// Thrown by a wait for input (the stream reader on an idle pipe or FIFO) that sees interrupted(),
// so that a tool in graceful mode is never held by a blocked read: it can checkpoint what it has
// and end within a fraction of a second. run() ends the tool with 128 + the signal's number.
struct Interrupted : std::runtime_error {
  Interrupted() : std::runtime_error("interrupted") {}
};
// Throws Interrupted if interrupted() (for loops that wait in slices).
void throw_if_interrupted();

// Why `path` ("-" is stdin) cannot be read a second time ("stdin cannot be read twice",
// "PATH is a named pipe, which cannot be read twice"), or "" when it can (a regular file).
std::string not_rereadable(const std::string& path);

// Device selection shared by all tools: "--device cpu|cuda|auto", default from $SAE_DEVICE.
void add_device_option(po::options_description& desc);
std::string device_option(const po::variables_map& vm);

// A progress line on stderr, redrawn at most a few times a second, only when stderr is a terminal.
class Progress {
 public:
  Progress();
  bool enabled() const { return enabled_; }
  void update(const std::string& line, bool force = false);
  void done();

 private:
  bool enabled_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point last_;
};

// Human-friendly number formatting for tables and progress.
std::string human_count(double v);
std::string human_duration(double seconds);

}  // namespace sae::cli
