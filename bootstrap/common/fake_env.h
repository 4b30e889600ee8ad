#pragma once
// FakeEnv: an Env for tests. Files live in memory, the clock is virtual (SleepFor advances it at once),
// Exec and Mount call handlers the test sets, and any operation can be made to fail.
//
// Thread safety: every method may be called from many threads.

#include <functional>
#include <map>
#include <mutex>

#include "bootstrap/common/env.h"

namespace dlagent {

// The operations a fault hook sees, by name: "read", "create", "append", "sync", "close", "rename",
// "remove", "syncdir", "mkdir", "exec", "mount", "unmount".
using FaultHook = std::function<Status(std::string_view op, const std::string& path)>;

class FakeEnv : public Env {
 public:
  FakeEnv();

  // Moves the virtual clocks forward.
  void Advance(Duration d);
  // Called before every file, exec and mount operation; a non-OK result fails that operation.
  void SetFaultHook(FaultHook hook);
  void SetExecHandler(std::function<Result<ExecResult>(const ExecRequest&)> handler);
  void SetMountHandler(std::function<Status(const MountRequest&)> handler);

  // Direct access to the in-memory file system, bypassing faults.
  void PutFile(const std::string& path, std::string contents, uint32_t mode = 0644);
  std::optional<std::string> GetFile(const std::string& path) const;
  std::optional<uint32_t> GetMode(const std::string& path) const;
  std::vector<std::string> ListFiles() const;
  std::vector<MountRequest> mounts() const;
  int syncs() const;

  MonoTime NowMono() override;
  WallTime NowWall() override;
  void SleepFor(Duration d) override;
  Result<std::string> ReadFile(const std::string& path, size_t max_bytes) override;
  Result<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path, uint32_t mode) override;
  Status RenameFile(const std::string& from, const std::string& to) override;
  Status RemoveFile(const std::string& path) override;
  Status SyncDir(const std::string& dir) override;
  Status CreateDirs(const std::string& dir, uint32_t mode) override;
  bool FileExists(const std::string& path) override;
  Result<ExecResult> Exec(const ExecRequest& req) override;
  Status Mount(const MountRequest& req) override;
  Status Unmount(const std::string& target) override;

 private:
  friend class FakeWritableFile;
  struct File {
    std::string data;
    uint32_t mode = 0644;
  };
  Status Fault(std::string_view op, const std::string& path);

  mutable std::mutex mu_;
  // State below is protected by mu_.
  Duration elapsed_{0};
  std::map<std::string, File> files_;
  std::vector<MountRequest> mounts_;
  int syncs_ = 0;
  FaultHook fault_hook_;
  std::function<Result<ExecResult>(const ExecRequest&)> exec_handler_;
  std::function<Status(const MountRequest&)> mount_handler_;
};

}  // namespace dlagent
