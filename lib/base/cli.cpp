#include "base/cli.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "base/build_info.h"
#include "base/manual.h"

namespace sae::cli {

namespace fs = std::filesystem;

namespace {
std::string g_tool = "saetools";
std::mutex g_temp_mu;
std::set<std::string> g_temps;
std::atomic<bool> g_graceful{false};
std::atomic<bool> g_interrupted{false};
std::atomic<int> g_signal{0};  // the signal that set g_interrupted

void cleanup_temps() {
  std::lock_guard<std::mutex> lk(g_temp_mu);
  for (const auto& p : g_temps) {
    std::error_code ec;
    fs::remove_all(p, ec);
  }
  g_temps.clear();
}

// SIGINT/SIGTERM are handled by this thread, so the cleanup runs as ordinary code (removing
// directories is not async-signal-safe). The handler only writes the signal number to a pipe that
// this thread reads. (Blocking the signals in run() and sigwait-ing here did not work: threads that
// libraries start before main(), like OpenBLAS's pool, do not block them, the kernel delivered the
// signal there, and the default action killed the process without the cleanup.)
int g_signal_pipe[2] = {-1, -1};

void on_signal(int sig) {
  const int saved = errno;
  const unsigned char c = (unsigned char)sig;
  (void)!write(g_signal_pipe[1], &c, 1);
  errno = saved;
}

void signal_thread() {
  for (;;) {
    unsigned char c = 0;
    const ssize_t n = read(g_signal_pipe[0], &c, 1);
    if (n != 1) {
      if (n < 0 && errno == EINTR) continue;
      return;
    }
    const int sig = c;
    if (g_graceful.load() && !g_interrupted.load()) {
      g_signal = sig;
      g_interrupted = true;
      std::string m = g_tool + ": interrupted; finishing the current step and writing a checkpoint "
                               "(signal again to stop at once)\n";
      (void)!write(2, m.data(), m.size());
      continue;
    }
    cleanup_temps();
    std::string m = g_tool + ": interrupted\n";
    (void)!write(2, m.data(), m.size());
    _exit(128 + sig);
  }
}

void install_signals() {
  if (pipe(g_signal_pipe) != 0) return;
  std::thread(signal_thread).detach();
  for (int sig : {SIGINT, SIGTERM}) {
    struct sigaction old = {}, sa = {};
    sigaction(sig, nullptr, &old);
    if (old.sa_handler == SIG_IGN) continue;  // ignored on entry (a shell's background job): stays so
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;  // interrupted reads and writes in other threads carry on
    sigaction(sig, &sa, nullptr);
  }
  signal(SIGPIPE, SIG_IGN);  // writes then fail with EPIPE, which we end quietly on
}
}  // namespace

const std::string& tool() { return g_tool; }

void say(const std::string& msg) {
  std::string line = g_tool + ": " + msg + "\n";
  fwrite(line.data(), 1, line.size(), stderr);
}

int run(const char* tool, int argc, char** argv, const std::function<int(int, char**)>& body) {
  g_tool = tool;
  install_signals();
  int rc;
  try {
    rc = body(argc, argv);
  } catch (const BrokenPipe&) {
    rc = kExitOk;
  } catch (const Interrupted&) {
    say("interrupted");
    rc = 128 + g_signal.load();
  } catch (const UsageError& e) {
    say(e.what());
    say("try '" + g_tool + " --help'");
    rc = kExitInput;
  } catch (const InputError& e) {
    say(e.what());
    rc = kExitInput;
  } catch (const po::error& e) {
    say(e.what());
    say("try '" + g_tool + " --help'");
    rc = kExitInput;
  } catch (const std::bad_alloc&) {
    say("out of memory");
    rc = kExitInternal;
  } catch (const std::exception& e) {
    say(std::string("internal error: ") + e.what());
    rc = kExitInternal;
  }
  cleanup_temps();
  // Text reports go through stdio: a failed final flush (a full disk) must not pass as success.
  if (fflush(stdout) != 0 && errno != EPIPE && rc == kExitOk) {
    say(std::string("<stdout>: write failed: ") + std::strerror(errno));
    rc = kExitInput;
  }
  return rc;
}

namespace {
// The options every tool has; cli::parse acts on them before anything else.
void add_common_options(po::options_description& desc) {
  const std::string man = "print this manual page (roff) and exit: " + g_tool + " --man | man -l -";
  const std::string completion =
      "print a bash completion script for this tool and exit: source <(" + g_tool + " --completion)";
  desc.add_options()
    ("help,h", "show this help and exit")
    ("version", "show the version and the build (compiler, CUDA, MPI, optional parts, OpenBLAS kernels) and exit")
    ("man", man.c_str())
    ("completion", completion.c_str());
}
}  // namespace

po::variables_map parse(int argc, char** argv, po::options_description& desc,
                        const std::string& usage, const std::string& about,
                        const po::positional_options_description* positional,
                        const po::options_description* visible) {
  add_common_options(desc);
  po::options_description shown;
  if (visible) {
    shown.add(*visible);
    add_common_options(shown);
  }
  const ToolHelp help{g_tool, usage, about, visible ? shown : desc, desc, positional};
  po::variables_map vm;
  try {
    po::command_line_parser p(argc, argv);
    p.options(desc);
    if (positional) p.positional(*positional);
    po::store(p.run(), vm);
    std::ostringstream text;
    if (vm.count("help")) text << "Usage: " << g_tool << " " << usage << "\n\n" << about << "\n\n" << help.shown << "\n";
    else if (vm.count("version")) text << build_info::report(g_tool);
    else if (vm.count("man")) write_man_page(text, help);
    else if (vm.count("completion")) write_bash_completion(text, help);
    if (!text.str().empty()) {
      // As run() treats stdout: a reader that went away is a quiet success (--help | head), any
      // other failed write (a full disk) an error, so a build never installs a cut-off page.
      const std::string out = text.str();
      std::cout.flush();
      errno = 0;
      if ((fwrite(out.data(), 1, out.size(), stdout) != out.size() || fflush(stdout) != 0) && errno != EPIPE) {
        say(std::string("<stdout>: write failed: ") + std::strerror(errno));
        std::exit(kExitInput);
      }
      std::exit(kExitOk);
    }
    po::notify(vm);
  } catch (const po::error& e) {
    throw UsageError(e.what());
  }
  return vm;
}

std::vector<std::string> input_files(const po::variables_map& vm, const char* key) {
  std::vector<std::string> files;
  if (vm.count(key)) files = vm[key].as<std::vector<std::string>>();
  if (files.empty()) files.push_back("-");
  for (const auto& f : files) {
    if (f == "-") continue;
    struct stat st;
    if (stat(f.c_str(), &st) != 0) throw InputError(f + ": " + std::strerror(errno));
    if (S_ISDIR(st.st_mode)) throw InputError(f + ": is a directory");
    if (access(f.c_str(), R_OK) != 0) throw InputError(f + ": " + std::strerror(errno));
  }
  return files;
}

FILE* open_input(const std::string& path) {
  if (path == "-" || path.empty()) return stdin;
  FILE* f = fopen(path.c_str(), "rb");
  if (!f) throw InputError(path + ": " + std::strerror(errno));
  return f;
}

static std::string temp_name_beside(const std::string& path) {
  fs::path p(path);
  std::string base = p.filename().string();
  fs::path dir = p.parent_path();
  std::string tmp = "." + base + ".tmp." + std::to_string(getpid());
  return (dir.empty() ? fs::path(tmp) : dir / tmp).string();
}

static void check_parent_dir(const std::string& path) {
  fs::path dir = fs::path(path).parent_path();
  if (dir.empty()) return;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw InputError(path + ": output directory " + dir.string() + " does not exist");
}

Output::Output(const std::string& path, bool binary) : path_(path) {
  if (path.empty() || path == "-") {
    stdout_ = true;
    display_ = "<stdout>";
    if (binary && isatty(1))
      throw UsageError("refusing to write a binary stream to a terminal (use -o FILE or a pipe)");
    f_ = stdout;
    return;
  }
  display_ = path;
  struct stat st;
  if (stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) throw InputError(path + ": is a directory");
  if (stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    // A device, FIFO or socket (-o /dev/null, a named pipe) is written in place: renaming a
    // temporary over it would replace the device node itself (as root, /dev/null became a file).
    direct_ = true;
    f_ = fopen(path.c_str(), "wb");
    if (!f_) throw InputError(path + ": cannot open: " + std::strerror(errno));
    if (binary && isatty(fileno(f_))) {
      fclose(f_);
      f_ = nullptr;
      throw UsageError("refusing to write a binary stream to a terminal (" + path + ")");
    }
    return;
  }
  check_parent_dir(path);
  tmp_ = temp_name_beside(path);
  register_temp(tmp_);
  f_ = fopen(tmp_.c_str(), "wb");
  if (!f_) {
    unregister_temp(tmp_);
    throw InputError(path + ": cannot create: " + std::strerror(errno));
  }
}

Output::~Output() {
  if (stdout_ || committed_) return;
  if (f_) fclose(f_);
  if (direct_) return;
  std::error_code ec;
  fs::remove(tmp_, ec);
  unregister_temp(tmp_);
}

void Output::write(const void* p, size_t n) {
  if (n == 0) return;
  if (fwrite(p, 1, n, f_) != n) {
    if (errno == EPIPE) throw BrokenPipe();
    throw InputError(display_ + ": write failed: " + std::strerror(errno));
  }
}

void Output::commit() {
  if (committed_) return;
  if (fflush(f_) != 0) {
    if (errno == EPIPE) throw BrokenPipe();
    throw InputError(display_ + ": write failed: " + std::strerror(errno));
  }
  if (stdout_) {
    committed_ = true;
    return;
  }
  if (fclose(f_) != 0) {
    f_ = nullptr;
    throw InputError(display_ + ": write failed: " + std::strerror(errno));
  }
  f_ = nullptr;
  if (direct_) {
    committed_ = true;
    return;
  }
  if (rename(tmp_.c_str(), path_.c_str()) != 0)
    throw InputError(display_ + ": cannot rename into place: " + std::strerror(errno));
  unregister_temp(tmp_);
  committed_ = true;
}

void check_output_dir(const std::string& path, const std::string& what) {
  fs::path p(path);
  while (!p.has_filename() && p.has_parent_path() && p != p.parent_path()) p = p.parent_path();
  fs::path parent = p.parent_path();
  if (parent.empty()) parent = ".";
  std::error_code ec;
  if (!fs::is_directory(parent, ec))
    throw InputError(path + ": cannot write the " + what + ": directory " + parent.string() + " does not exist");
  // access() says yes to root everywhere: try to create (and remove) a directory there instead,
  // so a run of hours does not end on a directory it cannot write.
  std::string probe = (parent / (".saetools-probe." + std::to_string(getpid()))).string();
  if (mkdir(probe.c_str(), 0700) != 0)
    throw InputError(path + ": cannot write the " + what + ": cannot create files in " + parent.string() + " (" +
                     std::strerror(errno) + ")");
  rmdir(probe.c_str());
  // lstat: a symlink to a directory is replaced as a link (the directory it points to is left
  // alone), but a symlink to a device is refused like the device.
  struct stat st;
  if (lstat(p.c_str(), &st) == 0 && !S_ISDIR(st.st_mode) &&
      !(S_ISLNK(st.st_mode) && stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode)))
    throw InputError(path + ": cannot write the " + what + ": exists and is not a directory");
}

OutputDir::OutputDir(const std::string& path, const std::string& what) : path_(path), what_(what) {
  while (path_.size() > 1 && path_.back() == '/') path_.pop_back();
  check_output_dir(path_, what_);
  tmp_ = temp_name_beside(path_);
  std::error_code ec;
  fs::remove_all(tmp_, ec);
  register_temp(tmp_);
  if (!fs::create_directory(tmp_, ec) || ec) {
    unregister_temp(tmp_);
    throw InputError(path_ + ": cannot create directory: " + ec.message());
  }
}

OutputDir::~OutputDir() {
  if (committed_) return;
  std::error_code ec;
  fs::remove_all(tmp_, ec);
  unregister_temp(tmp_);
}

void OutputDir::commit() {
  if (committed_) return;
  check_output_dir(path_, what_);  // again: something may have appeared there during the run
  std::error_code ec;
  if (fs::exists(fs::symlink_status(path_, ec))) {
    // Move the old one aside first so the final name never holds a mix of old and new files.
    std::string old = temp_name_beside(path_) + ".old";
    register_temp(old);
    fs::rename(path_, old, ec);
    if (ec) throw InputError(path_ + ": cannot replace existing output: " + ec.message());
    fs::rename(tmp_, path_, ec);
    if (ec) throw InputError(path_ + ": cannot rename into place: " + ec.message());
    fs::remove_all(old, ec);
    unregister_temp(old);
  } else {
    fs::rename(tmp_, path_, ec);
    if (ec) throw InputError(path_ + ": cannot rename into place: " + ec.message());
  }
  unregister_temp(tmp_);
  committed_ = true;
}

LineLog::LineLog(const std::string& path, bool append) : path_(path) {
  struct stat st;
  if (stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) throw InputError(path + ": cannot open the log: is a directory");
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (append ? 0 : O_TRUNC), 0644);
  if (fd_ < 0) throw InputError(path + ": cannot open the log: " + std::strerror(errno));
}

LineLog::~LineLog() {
  if (fd_ >= 0) ::close(fd_);
}

void LineLog::write_line(const std::string& line) {
  const std::string text = line + "\n";
  const off_t before = lseek(fd_, 0, SEEK_END);  // -1 on a pipe or device: nothing to cut back
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t w = ::write(fd_, text.data() + done, text.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      const int e = w < 0 ? errno : ENOSPC;
      if (before >= 0 && done > 0 && ftruncate(fd_, before) != 0) {
        // Cannot cut it back either: the message says the last line is partial.
        throw InputError(path_ + ": write failed: " + std::strerror(e) + " (the last line is partial)");
      }
      if (e == EPIPE) throw BrokenPipe();
      throw InputError(path_ + ": write failed: " + std::strerror(e));
    }
    done += size_t(w);
  }
}

void write_file_atomic(const std::string& path, const std::string& contents) {
  Output out(path, false);
  out.write(contents.data(), contents.size());
  out.commit();
}

void register_temp(const std::string& path) {
  std::lock_guard<std::mutex> lk(g_temp_mu);
  g_temps.insert(path);
}
void unregister_temp(const std::string& path) {
  std::lock_guard<std::mutex> lk(g_temp_mu);
  g_temps.erase(path);
}
void remove_tree(const std::string& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
}

void set_graceful_interrupt(bool on) { g_graceful = on; }
bool interrupted() { return g_interrupted.load(); }
void throw_if_interrupted() {
  if (g_interrupted.load()) throw Interrupted();
}

std::string not_rereadable(const std::string& path) {
  if (path == "-" || path.empty()) return "stdin cannot be read twice";
  struct stat st;
  // A missing file fails when it is opened; block devices can be read again like files.
  if (stat(path.c_str(), &st) != 0 || S_ISREG(st.st_mode) || S_ISBLK(st.st_mode)) return "";
  const char* what = S_ISFIFO(st.st_mode) ? "a named pipe" : S_ISCHR(st.st_mode) ? "a character device" : "a socket";
  return path + " is " + what + ", which cannot be read twice";
}

void add_device_option(po::options_description& desc) {
  const char* env = getenv("SAE_DEVICE");
  desc.add_options()("device", choice({"cpu", "cuda", "auto"})->default_value(env && *env ? env : "auto"),
                     "compute device: cpu, cuda or auto (default from $SAE_DEVICE, else auto: "
                     "cuda when a GPU is present)");
}

std::string device_option(const po::variables_map& vm) {
  std::string d = vm["device"].as<std::string>();
  if (d != "cpu" && d != "cuda" && d != "auto")
    throw UsageError("--device: unknown device '" + d + "' (expected cpu, cuda or auto)");
  return d;
}

Progress::Progress() : enabled_(isatty(2)) {}

void Progress::update(const std::string& line, bool force) {
  if (!enabled_) return;
  auto now = std::chrono::steady_clock::now();
  if (!force && drawn_ && now - last_ < std::chrono::milliseconds(250)) return;
  last_ = now;
  drawn_ = true;
  std::string s = "\r\033[K" + g_tool + ": " + line;
  fwrite(s.data(), 1, s.size(), stderr);
}

void Progress::done() {
  if (enabled_ && drawn_) fwrite("\n", 1, 1, stderr);
  drawn_ = false;
}

std::string human_count(double v) {
  char buf[32];
  const char* units[] = {"", "k", "M", "G", "T"};
  int u = 0;
  while (std::fabs(v) >= 1000 && u < 4) {
    v /= 1000;
    u++;
  }
  snprintf(buf, sizeof buf, u ? "%.1f%s" : "%.0f%s", v, units[u]);
  return buf;
}

std::string human_duration(double s) {
  char buf[32];
  if (!std::isfinite(s) || s < 0) return "?";
  long t = long(s + 0.5);
  if (t >= 3600)
    snprintf(buf, sizeof buf, "%ldh%02ldm", t / 3600, (t / 60) % 60);
  else if (t >= 60)
    snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
  else
    snprintf(buf, sizeof buf, "%lds", t);
  return buf;
}

}  // namespace sae::cli
