#include "agent/jobs/spawn.h"

#include "agent/jobs/rank_env.h"
#include "bootstrap/common/duration.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>
#include <thread>

namespace dlagent::jobs {
namespace {

// What the child reports through its close-on-exec pipe when it cannot exec: the step and its errno.
struct ChildError {
  int step;
  int err;
};
enum Step { kGroups = 1, kGid, kUid, kChdir, kExec, kStdio };

const char* StepName(int step) {
  switch (step) {
    case kGroups: return "set the supplementary groups";
    case kGid: return "set the group id";
    case kUid: return "set the user id";
    case kChdir: return "enter the working directory";
    case kExec: return "run the program";
    default: return "prepare standard input and output";
  }
}

void CloseAll(std::initializer_list<int> fds) {
  for (int fd : fds) {
    if (fd >= 0) ::close(fd);
  }
}

}  // namespace

Result<Spawned> Spawn(const SpawnRequest& req) {
  if (req.argv.empty() || req.argv[0].empty()) return Status::InvalidArgument("jobs", "no command to run");
  if (req.workdir.empty() || req.workdir[0] != '/') {
    return Status::InvalidArgument("jobs", "working directory \"" + req.workdir + "\" is not an absolute path");
  }
  // Everything the child needs is made before fork: it may not allocate.
  const std::vector<std::string> files = ProgramCandidates(req.argv[0], req.env);
  std::vector<char*> argv, envp;
  for (const std::string& a : req.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const std::string& e : req.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  const bool as_self = req.uid == ::geteuid();

  int out[2] = {-1, -1}, err[2] = {-1, -1}, report[2] = {-1, -1}, go[2] = {-1, -1};
  const int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull < 0 || ::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0 || ::pipe2(report, O_CLOEXEC) != 0 || ::pipe2(go, O_CLOEXEC) != 0) {
    const int e = errno;
    CloseAll({devnull, out[0], out[1], err[0], err[1], report[0], report[1], go[0], go[1]});
    return Status::FromErrno("jobs", "pipes for a rank", e);
  }
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int e = errno;
    CloseAll({devnull, out[0], out[1], err[0], err[1], report[0], report[1], go[0], go[1]});
    if (e == EAGAIN) {
      return Status::ResourceExhausted("jobs",
                                       "cannot start a process: agentd's task limit is reached (its cgroup's pids.max, TasksMax= "
                                       "under systemd, or RLIMIT_NPROC)");
    }
    return Status::FromErrno("jobs", "fork", e);
  }
  if (pid == 0) {
    // The child: async-signal-safe calls only.
    auto die = [&](int step) {
      ChildError ce{step, errno};
      (void)!::write(report[1], &ce, sizeof ce);
      ::_exit(127);
    };
    ::setpgid(0, 0);
    // Wait for the parent to place this process: it writes a byte then. Not the pipe's end: a child another
    // thread forks meanwhile holds a copy of the write end until it execs, and may itself be waiting for this
    // child to exec and drop its copy of that child's pipe (a deadlock, seen with three nodes' Spawns at once).
    char byte;
    while (::read(go[0], &byte, 1) < 0 && errno == EINTR) {
    }
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);                   // agentd blocks the signals it reads from a signalfd
    for (int sig = 1; sig < NSIG; ++sig) ::signal(sig, SIG_DFL);  // ignored ones (SIGPIPE) would survive exec
    if (::dup2(devnull, 0) < 0 || ::dup2(out[1], 1) < 0 || ::dup2(err[1], 2) < 0) die(kStdio);
    // Nothing else of agentd's (sockets, the control socket, keys read into files) reaches the job.
    ::syscall(SYS_close_range, 3U, ~0U, 4U /* CLOSE_RANGE_CLOEXEC */);
    if (!as_self || ::geteuid() == 0) {
      if (::setgroups(req.groups.size(), req.groups.data()) != 0) die(kGroups);
      if (::setgid(req.gid) != 0) die(kGid);
      if (::setuid(req.uid) != 0) die(kUid);
    }
    if (::chdir(req.workdir.c_str()) != 0) die(kChdir);
    int exec_errno = ENOENT;
    for (const std::string& f : files) {
      ::execve(f.c_str(), argv.data(), envp.data());
      // Keep the most telling error: permission denied beats not found in a later PATH entry.
      if (errno != ENOENT && errno != ENOTDIR) exec_errno = errno;
    }
    errno = exec_errno;
    die(kExec);
  }
  CloseAll({devnull, out[1], err[1], report[1], go[0]});
  if (req.place) req.place(pid);
  const char byte = 1;
  (void)!::write(go[1], &byte, 1);  // a pipe's first byte always fits
  ::close(go[1]);
  ChildError ce{};
  ssize_t n;
  do n = ::read(report[0], &ce, sizeof ce);
  while (n < 0 && errno == EINTR);
  ::close(report[0]);
  if (n == static_cast<ssize_t>(sizeof ce)) {
    int status;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    CloseAll({out[0], err[0]});
    std::string what = std::string("cannot ") + StepName(ce.step);
    if (ce.step == kExec) what += " " + req.argv[0];
    if (ce.step == kChdir) what += " " + req.workdir;
    if (ce.step == kUid || ce.step == kGid || ce.step == kGroups) what += " for uid " + std::to_string(req.uid);
    return Status(ce.err == ENOENT                      ? StatusCode::kNotFound
                  : ce.err == EACCES || ce.err == EPERM ? StatusCode::kPermissionDenied
                                                        : StatusCode::kFailedPrecondition,
                  "jobs", what + ": " + std::strerror(ce.err));
  }
  Spawned s;
  s.pid = pid;
  s.out_fd = out[0];
  s.err_fd = err[0];
  ::fcntl(s.out_fd, F_SETFL, O_NONBLOCK);
  ::fcntl(s.err_fd, F_SETFL, O_NONBLOCK);
  s.pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (s.pidfd < 0) {
    const int e = errno;
    ::kill(-pid, SIGKILL);
    int status;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    CloseAll({s.out_fd, s.err_fd});
    return Status::FromErrno("jobs", "pidfd_open (Linux 5.3 or later is needed)", e);
  }
  return s;
}

Result<int> WaitChild(pid_t pid, Duration wait) {
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  pollfd p{pidfd, POLLIN, 0};
  const int ms = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(wait).count());
  const bool ended = pidfd >= 0 && ::poll(&p, 1, ms) == 1;
  if (pidfd >= 0) ::close(pidfd);
  if (!ended) {
    ::kill(pid, SIGKILL);
    try {
      std::thread([pid] {
        int st;
        while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
        }
      }).detach();
    } catch (const std::system_error&) {
      // No thread: it stays a zombie; a bounded cost of an unusual failure.
    }
    return Status::DeadlineExceeded("jobs", "a child process took over " + FormatDuration(wait));
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

Result<UserLook> LookAsUser(uid_t uid, gid_t gid, const std::vector<gid_t>& groups, const std::string& workdir,
                            const std::vector<std::string>& programs, Duration wait) {
  // Every path is made before the fork: between fork and _exit only system calls run.
  std::vector<std::string> paths;
  for (const std::string& p : programs) paths.push_back(!p.empty() && p[0] == '/' ? p : workdir + "/" + p);
  std::vector<const char*> raw;
  for (const std::string& p : paths) raw.push_back(p.c_str());
  const pid_t pid = ::fork();
  if (pid < 0) return Status::FromErrno("jobs", "fork to look as uid " + std::to_string(uid), errno);
  if (pid == 0) {
    // The agent's own identity needs no change (and an agent that is not root could not make one).
    const bool same = ::geteuid() == uid && ::getegid() == gid;
    if (!same && (::setgroups(groups.size(), groups.data()) != 0 || ::setgid(gid) != 0 || ::setuid(uid) != 0)) ::_exit(100);
    int bits = 0;
    if (::chdir(workdir.c_str()) == 0) bits |= 1;
    for (const char* p : raw) {
      if (::access(p, X_OK) == 0) {
        bits |= 2;
        break;
      }
    }
    ::_exit(bits);
  }
  Result<int> waited = WaitChild(pid, wait);
  if (!waited.ok())
    return Status::DeadlineExceeded("jobs", "looking at " + workdir + " as uid " + std::to_string(uid) + " took over " + FormatDuration(wait));
  const int status = *waited;
  if (!WIFEXITED(status) || WEXITSTATUS(status) > 3)
    return Status::Internal("jobs", "could not look at " + workdir + " as uid " + std::to_string(uid));
  return UserLook{(WEXITSTATUS(status) & 1) != 0, (WEXITSTATUS(status) & 2) != 0};
}

}  // namespace dlagent::jobs
