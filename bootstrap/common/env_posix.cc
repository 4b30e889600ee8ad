// The real Env over POSIX system calls.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "bootstrap/common/env.h"

extern char** environ;

namespace dlagent {
namespace {

constexpr std::string_view kComponent = "env";

class PosixWritableFile final : public WritableFile {
 public:
  PosixWritableFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  ~PosixWritableFile() override {
    if (fd_ >= 0) ::close(fd_);
  }
  Status Append(std::string_view data) override {
    while (!data.empty()) {
      ssize_t n = ::write(fd_, data.data(), data.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        return Status::FromErrno(kComponent, "write " + path_, errno);
      }
      data.remove_prefix(static_cast<size_t>(n));
    }
    return Status::Ok();
  }
  Status Sync() override {
    if (::fsync(fd_) != 0) return Status::FromErrno(kComponent, "fsync " + path_, errno);
    return Status::Ok();
  }
  Status Close() override {
    int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) return Status::FromErrno(kComponent, "close " + path_, errno);
    return Status::Ok();
  }

 private:
  std::string path_;
  int fd_;
};

class PosixEnv final : public Env {
 public:
  MonoTime NowMono() override { return std::chrono::steady_clock::now(); }
  WallTime NowWall() override { return std::chrono::system_clock::now(); }
  void SleepFor(Duration d) override { std::this_thread::sleep_for(d); }

  Result<std::string> ReadFile(const std::string& path, size_t max_bytes) override {
    // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below, as is anything not a file.
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) return Status::FromErrno(kComponent, "open " + path, errno);
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      return Status::FailedPrecondition(kComponent, path + " is not a regular file");
    }
    if (static_cast<uint64_t>(st.st_size) > max_bytes) {
      ::close(fd);
      return Status::ResourceExhausted(kComponent, path + " is larger than " + std::to_string(max_bytes) + " bytes");
    }
    std::string out;
    char buf[16384];
    for (;;) {
      ssize_t n = ::read(fd, buf, sizeof buf);
      if (n < 0) {
        if (errno == EINTR) continue;
        int err = errno;
        ::close(fd);
        return Status::FromErrno(kComponent, "read " + path, err);
      }
      if (n == 0) break;
      if (out.size() + static_cast<size_t>(n) > max_bytes) {
        ::close(fd);
        return Status::ResourceExhausted(kComponent, path + " is larger than " + std::to_string(max_bytes) + " bytes");
      }
      out.append(buf, static_cast<size_t>(n));
    }
    ::close(fd);
    return out;
  }

  Result<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path, uint32_t mode) override {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0 && errno == EEXIST) return Status::AlreadyExists(kComponent, "create " + path + ": something is already there");
    if (fd < 0) return Status::FromErrno(kComponent, "create " + path, errno);
    // open() applies the umask; the caller asked for this exact mode.
    if (::fchmod(fd, mode) != 0) {
      int err = errno;
      ::close(fd);
      return Status::FromErrno(kComponent, "chmod " + path, err);
    }
    return std::unique_ptr<WritableFile>(std::make_unique<PosixWritableFile>(path, fd));
  }

  Status RenameFile(const std::string& from, const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0) {
      return Status::FromErrno(kComponent, "rename " + from + " to " + to, errno);
    }
    return Status::Ok();
  }

  Status RemoveFile(const std::string& path) override {
    if (::unlink(path.c_str()) != 0) return Status::FromErrno(kComponent, "remove " + path, errno);
    return Status::Ok();
  }

  Status SyncDir(const std::string& dir) override {
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return Status::FromErrno(kComponent, "open directory " + dir, errno);
    int rc = ::fsync(fd);
    int err = errno;
    ::close(fd);
    if (rc != 0) return Status::FromErrno(kComponent, "fsync directory " + dir, err);
    return Status::Ok();
  }

  Status CreateDirs(const std::string& dir, uint32_t mode) override {
    if (dir.empty()) return Status::Ok();
    struct stat st;
    if (::stat(dir.c_str(), &st) == 0) {
      if (S_ISDIR(st.st_mode)) return Status::Ok();
      return Status::AlreadyExists(kComponent, dir + " exists and is not a directory");
    }
    std::string parent = DirName(dir);
    if (parent != dir) RETURN_IF_ERROR(CreateDirs(parent, mode));
    if (::mkdir(dir.c_str(), mode) != 0 && errno != EEXIST) {
      return Status::FromErrno(kComponent, "mkdir " + dir, errno);
    }
    return Status::Ok();
  }

  bool FileExists(const std::string& path) override { return ::access(path.c_str(), F_OK) == 0; }

  Result<ExecResult> Exec(const ExecRequest& req) override;

  Status Mount(const MountRequest& req) override {
    if (req.fstype == "bind") {
      if (::mount(req.source.c_str(), req.target.c_str(), nullptr, MS_BIND, nullptr) != 0) {
        return Status::FromErrno("mount", "bind " + req.source + " on " + req.target, errno);
      }
      return Status::Ok();
    }
    ExecRequest exec;
    exec.argv = {"mount", "-t", req.fstype};
    if (!req.options.empty()) {
      exec.argv.push_back("-o");
      exec.argv.push_back(req.options);
    }
    exec.argv.push_back(req.source);
    exec.argv.push_back(req.target);
    exec.timeout = req.timeout;
    ASSIGN_OR_RETURN(ExecResult r, Exec(exec));
    if (r.timed_out) {
      return Status::DeadlineExceeded("mount", req.source + " on " + req.target + " did not finish within the timeout");
    }
    if (r.exit_code != 0) {
      return Status::Unavailable("mount", req.source + " on " + req.target + " failed (exit " + std::to_string(r.exit_code) + "): " + r.output);
    }
    return Status::Ok();
  }

  Status Unmount(const std::string& target) override {
    if (::umount2(target.c_str(), 0) != 0) return Status::FromErrno("mount", "unmount " + target, errno);
    return Status::Ok();
  }
};

void KillGroup(pid_t pid) { ::kill(-pid, SIGKILL); }

Result<ExecResult> PosixEnv::Exec(const ExecRequest& req) {
  if (req.argv.empty()) return Status::InvalidArgument("exec", "empty command line");
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return Status::FromErrno("exec", "pipe", errno);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, pipefd[1], 1);
  posix_spawn_file_actions_adddup2(&actions, pipefd[1], 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  // Own process group, so that a timeout kills the children too; default signal mask and dispositions,
  // whatever the agent blocks.
  sigset_t empty, all;
  sigemptyset(&empty);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &empty);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  std::vector<std::string> env_strings;
  for (char** e = environ; *e; ++e) env_strings.emplace_back(*e);
  for (const auto& e : req.extra_env) env_strings.push_back(e);
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<char*> argv;
  std::vector<std::string> args = req.argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  pid_t pid;
  int rc = ::posix_spawnp(&pid, argv[0], &actions, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  ::close(pipefd[1]);
  if (rc != 0) {
    ::close(pipefd[0]);
    return Status::FromErrno("exec", "start " + req.argv[0], rc);
  }

  ExecResult result;
  const MonoTime deadline = NowMono() + req.timeout;
  char buf[8192];
  bool open = true;
  while (open) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - NowMono()).count();
    if (left <= 0) {
      result.timed_out = true;
      KillGroup(pid);
      break;
    }
    struct pollfd pfd = {pipefd[0], POLLIN, 0};
    int n = ::poll(&pfd, 1, static_cast<int>(std::min<long>(left, 1000)));
    if (n < 0 && errno != EINTR) break;
    if (n <= 0) continue;
    ssize_t got = ::read(pipefd[0], buf, sizeof buf);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      open = false;
      break;
    }
    size_t room = req.max_output_bytes - std::min(req.max_output_bytes, result.output.size());
    result.output.append(buf, std::min(room, static_cast<size_t>(got)));
  }
  ::close(pipefd[0]);
  // The pipe closed (or we killed it): the child is exiting. Bound the wait for a child that closed its
  // output but keeps running.
  int wstatus = 0;
  for (;;) {
    pid_t w = ::waitpid(pid, &wstatus, WNOHANG);
    if (w == pid) break;
    if (w < 0 && errno != EINTR) return Status::FromErrno("exec", "waitpid", errno);
    if (NowMono() >= deadline && !result.timed_out) {
      result.timed_out = true;
      KillGroup(pid);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (WIFEXITED(wstatus)) result.exit_code = WEXITSTATUS(wstatus);
  if (WIFSIGNALED(wstatus)) result.term_signal = WTERMSIG(wstatus);
  return result;
}

}  // namespace

std::unique_ptr<Env> NewPosixEnv() { return std::make_unique<PosixEnv>(); }

std::string DirName(std::string_view path) {
  while (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  size_t slash = path.rfind('/');
  if (slash == std::string_view::npos) return ".";
  if (slash == 0) return "/";
  return std::string(path.substr(0, slash));
}

}  // namespace dlagent
