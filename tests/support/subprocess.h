#pragma once
// A child process for integration tests: started in its own process group with stdout and stderr sent to
// a file, killed (the whole group) when the object goes away, so that a failing test leaves nothing behind.
// The child is also killed when the thread that made it ends (PR_SET_PDEATHSIG), so a test process killed
// outright leaves no agent running: make it on a thread that outlives it.

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace dlagent::testing {

// CPU time (user + system) a process has used so far, in seconds; 0 when it cannot be read.
double CpuSeconds(int pid);

class Subprocess {
 public:
  // env entries "NAME=value" are added to (or replace in) the inherited environment.
  Subprocess(std::vector<std::string> argv, std::vector<std::string> env, std::string output_path);
  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  int pid() const { return pid_; }
  void Signal(int sig);
  // The raw wait status once the process ended within timeout, else nullopt.
  std::optional<int> Wait(std::chrono::milliseconds timeout);
  std::string Output() const;
  // The first word after "listening on " in the output (how our servers and emulators announce their
  // address), once written; empty if the process exits first or nothing comes within timeout.
  std::string WaitListening(std::chrono::milliseconds timeout);

 private:
  int pid_ = -1;
  bool reaped_ = false;
  std::string output_path_;
};

// Runs a command to completion (at most timeout) and returns its exit code and combined output.
struct RunResult {
  int exit_code = -1;
  std::string output;
};
RunResult RunCommand(const std::vector<std::string>& argv, std::chrono::milliseconds timeout = std::chrono::seconds(10));

}  // namespace dlagent::testing
