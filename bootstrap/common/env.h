#pragma once
// Env: the one seam through which the agent touches the OS (clock, sleep, files, processes, mounts).
//
// Thread safety: implementations are safe to call from many threads at once.
// The real implementation comes from NewPosixEnv(); FakeEnv (fake_env.h) keeps files in memory and runs a
// virtual clock; EnvWrapper forwards every call so that a test can override one of them to inject a fault.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bootstrap/common/status.h"

namespace dlagent {

using MonoTime = std::chrono::steady_clock::time_point;
using WallTime = std::chrono::system_clock::time_point;
using Duration = std::chrono::nanoseconds;

// A file being written. Not thread-safe: one writer at a time.
class WritableFile {
 public:
  virtual ~WritableFile() = default;
  virtual Status Append(std::string_view data) = 0;
  // Flushes the data to stable storage (fsync).
  virtual Status Sync() = 0;
  // Closes the file. REQUIRES: called once; the destructor closes without reporting errors.
  virtual Status Close() = 0;
};

struct ExecRequest {
  std::vector<std::string> argv;                // argv[0] is looked up in PATH when it has no '/'.
  std::vector<std::string> extra_env;           // "NAME=value" added to the inherited environment.
  Duration timeout = std::chrono::seconds(30);  // Default: 30 s. The process group is killed after it.
  size_t max_output_bytes = 1 << 20;            // Default: 1 MiB of combined stdout and stderr is kept.
};

struct ExecResult {
  int exit_code = -1;   // the exit status, or -1 when killed by a signal
  int term_signal = 0;  // the signal that ended it, 0 if it exited
  bool timed_out = false;
  std::string output;  // stdout and stderr interleaved, cut at max_output_bytes
  bool succeeded() const { return exit_code == 0 && !timed_out; }
};

struct MountRequest {
  std::string source;  // "fs-1.efs.us-east-1.amazonaws.com:/", or a directory for "bind"
  std::string target;
  std::string fstype;                           // "nfs4", "bind", ...
  std::string options;                          // comma-separated mount options
  Duration timeout = std::chrono::seconds(60);  // Default: 60 s.
};

class Env {
 public:
  virtual ~Env() = default;

  // Clock. NowMono never goes back; NowWall is the wall clock (may jump).
  virtual MonoTime NowMono() = 0;
  virtual WallTime NowWall() = 0;
  virtual void SleepFor(Duration d) = 0;

  // Files. ReadFile reads a regular file only: a FIFO, a device or a socket is FailedPrecondition, at once (a
  // FIFO with no writer cannot block it). ResourceExhausted past max_bytes (checked before reading when the
  // file says its size), NotFound when absent.
  virtual Result<std::string> ReadFile(const std::string& path, size_t max_bytes) = 0;
  // Creates path, which must not exist yet, with exactly this mode (not masked by the umask). Never follows a
  // symbolic link: a name that someone else planted (a link, a file) is AlreadyExists, not a file overwritten.
  virtual Result<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path, uint32_t mode) = 0;
  virtual Status RenameFile(const std::string& from, const std::string& to) = 0;
  virtual Status RemoveFile(const std::string& path) = 0;
  // fsync of a directory, so that a rename inside it is durable.
  virtual Status SyncDir(const std::string& dir) = 0;
  // Creates dir and missing parents (like mkdir -p); OK if it exists.
  virtual Status CreateDirs(const std::string& dir, uint32_t mode) = 0;
  virtual bool FileExists(const std::string& path) = 0;

  // Runs a process to completion or until its timeout. An error Status means it could not be started;
  // a non-zero exit is reported in the ExecResult.
  virtual Result<ExecResult> Exec(const ExecRequest& req) = 0;

  // Mounts (bind mounts by mount(2), others through mount(8) with the request's timeout) and unmounts.
  virtual Status Mount(const MountRequest& req) = 0;
  virtual Status Unmount(const std::string& target) = 0;
};

// The real Env. Each call returns a new instance (there is no global).
std::unique_ptr<Env> NewPosixEnv();

// Forwards every call to a target Env, which must outlive the wrapper.
class EnvWrapper : public Env {
 public:
  explicit EnvWrapper(Env* target) : target_(target) {}
  Env* target() const { return target_; }

  MonoTime NowMono() override { return target_->NowMono(); }
  WallTime NowWall() override { return target_->NowWall(); }
  void SleepFor(Duration d) override { target_->SleepFor(d); }
  Result<std::string> ReadFile(const std::string& p, size_t max) override { return target_->ReadFile(p, max); }
  Result<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& p, uint32_t mode) override { return target_->NewWritableFile(p, mode); }
  Status RenameFile(const std::string& f, const std::string& t) override { return target_->RenameFile(f, t); }
  Status RemoveFile(const std::string& p) override { return target_->RemoveFile(p); }
  Status SyncDir(const std::string& d) override { return target_->SyncDir(d); }
  Status CreateDirs(const std::string& d, uint32_t mode) override { return target_->CreateDirs(d, mode); }
  bool FileExists(const std::string& p) override { return target_->FileExists(p); }
  Result<ExecResult> Exec(const ExecRequest& r) override { return target_->Exec(r); }
  Status Mount(const MountRequest& r) override { return target_->Mount(r); }
  Status Unmount(const std::string& t) override { return target_->Unmount(t); }

 private:
  Env* target_;
};

// "a/b/c" -> "a/b"; "c" -> "."; "/c" -> "/".
std::string DirName(std::string_view path);

}  // namespace dlagent
