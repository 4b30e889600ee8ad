#include "tests/support/subprocess.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "bootstrap/common/env.h"

extern char** environ;

namespace dlagent::testing {

Subprocess::Subprocess(std::vector<std::string> argv, std::vector<std::string> env, std::string output_path) : output_path_(std::move(output_path)) {
  std::vector<std::string> envs;
  for (char** e = environ; *e; ++e) {
    std::string kv(*e);
    bool replaced = false;
    for (const auto& x : env) replaced |= kv.substr(0, kv.find('=') + 1) == x.substr(0, x.find('=') + 1);
    if (!replaced) envs.push_back(kv);
  }
  envs.insert(envs.end(), env.begin(), env.end());
  // Everything the child needs is prepared before fork: the test process has threads, so the child may
  // only make async-signal-safe calls.
  std::vector<char*> a, e;
  for (auto& s : argv) a.push_back(s.data());
  a.push_back(nullptr);
  for (auto& s : envs) e.push_back(s.data());
  e.push_back(nullptr);
  int fd = ::open(output_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("cannot create " + output_path_);
  sigset_t none;
  sigemptyset(&none);
  const pid_t parent = ::getpid();
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);     // a test killed outright leaves no process behind
    if (::getppid() != parent) _exit(127);  // ... including one whose parent died before the line above
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::execve(a[0], a.data(), e.data());
    _exit(127);
  }
  ::close(fd);
}

Subprocess::~Subprocess() {
  if (!reaped_) {
    ::kill(-pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
}

void Subprocess::Signal(int sig) { ::kill(pid_, sig); }

std::optional<int> Subprocess::Wait(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int st = 0;
    if (::waitpid(pid_, &st, WNOHANG) == pid_) {
      reaped_ = true;
      return st;
    }
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

std::string Subprocess::Output() const {
  std::ifstream in(output_path_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string Subprocess::WaitListening(std::chrono::milliseconds timeout) {
  const std::string marker = "listening on ";
  const auto until = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const std::string out = Output();
    const size_t at = out.find(marker);
    if (at != std::string::npos) {
      const size_t end = out.find_first_of(" \n", at + marker.size());
      if (end != std::string::npos) return out.substr(at + marker.size(), end - at - marker.size());
    }
    if (std::chrono::steady_clock::now() >= until || Wait(std::chrono::milliseconds(0))) return "";
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

RunResult RunCommand(const std::vector<std::string>& argv, std::chrono::milliseconds timeout) {
  std::unique_ptr<Env> env = NewPosixEnv();
  ExecRequest req;
  req.argv = argv;
  req.timeout = timeout;
  Result<ExecResult> r = env->Exec(req);
  if (!r.ok()) return {-1, r.status().ToString()};
  return {r->timed_out ? -2 : r->exit_code, r->output};
}

double CpuSeconds(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return 0;
  std::istringstream rest(stat.substr(paren + 2));
  std::string field;
  unsigned long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {  // fields 14 and 15 of proc(5)
    if (i == 14) utime = std::stoul(field);
    if (i == 15) stime = std::stoul(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

}  // namespace dlagent::testing
