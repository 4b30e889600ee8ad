#include "bootstrap/common/fake_env.h"

namespace dlagent {

// Writes land in the in-memory file as they are appended, as on a real file system.
class FakeWritableFile final : public WritableFile {
 public:
  FakeWritableFile(FakeEnv* env, std::string path) : env_(env), path_(std::move(path)) {}
  Status Append(std::string_view data) override {
    RETURN_IF_ERROR(env_->Fault("append", path_));
    std::lock_guard<std::mutex> lock(env_->mu_);
    env_->files_[path_].data.append(data);
    return Status::Ok();
  }
  Status Sync() override {
    RETURN_IF_ERROR(env_->Fault("sync", path_));
    std::lock_guard<std::mutex> lock(env_->mu_);
    ++env_->syncs_;
    return Status::Ok();
  }
  Status Close() override { return env_->Fault("close", path_); }

 private:
  FakeEnv* env_;
  std::string path_;
};

FakeEnv::FakeEnv() = default;

void FakeEnv::Advance(Duration d) {
  std::lock_guard<std::mutex> lock(mu_);
  elapsed_ += d;
}

void FakeEnv::SetFaultHook(FaultHook hook) {
  std::lock_guard<std::mutex> lock(mu_);
  fault_hook_ = std::move(hook);
}

void FakeEnv::SetExecHandler(std::function<Result<ExecResult>(const ExecRequest&)> handler) {
  std::lock_guard<std::mutex> lock(mu_);
  exec_handler_ = std::move(handler);
}

void FakeEnv::SetMountHandler(std::function<Status(const MountRequest&)> handler) {
  std::lock_guard<std::mutex> lock(mu_);
  mount_handler_ = std::move(handler);
}

void FakeEnv::PutFile(const std::string& path, std::string contents, uint32_t mode) {
  std::lock_guard<std::mutex> lock(mu_);
  files_[path] = File{std::move(contents), mode};
}

std::optional<std::string> FakeEnv::GetFile(const std::string& path) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = files_.find(path);
  if (it == files_.end()) return std::nullopt;
  return it->second.data;
}

std::optional<uint32_t> FakeEnv::GetMode(const std::string& path) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = files_.find(path);
  if (it == files_.end()) return std::nullopt;
  return it->second.mode;
}

std::vector<std::string> FakeEnv::ListFiles() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  for (const auto& [path, file] : files_) out.push_back(path);
  return out;
}

std::vector<MountRequest> FakeEnv::mounts() const {
  std::lock_guard<std::mutex> lock(mu_);
  return mounts_;
}

int FakeEnv::syncs() const {
  std::lock_guard<std::mutex> lock(mu_);
  return syncs_;
}

Status FakeEnv::Fault(std::string_view op, const std::string& path) {
  FaultHook hook;
  {
    std::lock_guard<std::mutex> lock(mu_);
    hook = fault_hook_;
  }
  return hook ? hook(op, path) : Status::Ok();
}

MonoTime FakeEnv::NowMono() {
  std::lock_guard<std::mutex> lock(mu_);
  return MonoTime(std::chrono::hours(1000) + elapsed_);
}

WallTime FakeEnv::NowWall() {
  std::lock_guard<std::mutex> lock(mu_);
  // 2026-01-01T00:00:00Z plus the virtual time.
  return WallTime(std::chrono::seconds(1767225600)) + std::chrono::duration_cast<WallTime::duration>(elapsed_);
}

void FakeEnv::SleepFor(Duration d) { Advance(d); }

Result<std::string> FakeEnv::ReadFile(const std::string& path, size_t max_bytes) {
  RETURN_IF_ERROR(Fault("read", path));
  std::lock_guard<std::mutex> lock(mu_);
  auto it = files_.find(path);
  if (it == files_.end()) return Status::NotFound("env", "open " + path + ": No such file or directory");
  if (it->second.data.size() > max_bytes) {
    return Status::ResourceExhausted("env", path + " is larger than " + std::to_string(max_bytes) + " bytes");
  }
  return it->second.data;
}

Result<std::unique_ptr<WritableFile>> FakeEnv::NewWritableFile(const std::string& path, uint32_t mode) {
  RETURN_IF_ERROR(Fault("create", path));
  std::lock_guard<std::mutex> lock(mu_);
  if (files_.contains(path)) return Status::AlreadyExists("env", "create " + path + ": something is already there");
  files_[path] = File{"", mode};
  return std::unique_ptr<WritableFile>(std::make_unique<FakeWritableFile>(this, path));
}

Status FakeEnv::RenameFile(const std::string& from, const std::string& to) {
  RETURN_IF_ERROR(Fault("rename", from));
  std::lock_guard<std::mutex> lock(mu_);
  auto it = files_.find(from);
  if (it == files_.end()) return Status::NotFound("env", "rename " + from + ": No such file or directory");
  File f = std::move(it->second);
  files_.erase(it);
  files_[to] = std::move(f);
  return Status::Ok();
}

Status FakeEnv::RemoveFile(const std::string& path) {
  RETURN_IF_ERROR(Fault("remove", path));
  std::lock_guard<std::mutex> lock(mu_);
  if (files_.erase(path) == 0) return Status::NotFound("env", "remove " + path + ": No such file or directory");
  return Status::Ok();
}

Status FakeEnv::SyncDir(const std::string& dir) { return Fault("syncdir", dir); }

Status FakeEnv::CreateDirs(const std::string& dir, uint32_t) { return Fault("mkdir", dir); }

bool FakeEnv::FileExists(const std::string& path) {
  std::lock_guard<std::mutex> lock(mu_);
  return files_.count(path) > 0;
}

Result<ExecResult> FakeEnv::Exec(const ExecRequest& req) {
  RETURN_IF_ERROR(Fault("exec", req.argv.empty() ? "" : req.argv[0]));
  std::function<Result<ExecResult>(const ExecRequest&)> handler;
  {
    std::lock_guard<std::mutex> lock(mu_);
    handler = exec_handler_;
  }
  if (!handler) return Status::FailedPrecondition("env", "FakeEnv has no exec handler");
  return handler(req);
}

Status FakeEnv::Mount(const MountRequest& req) {
  RETURN_IF_ERROR(Fault("mount", req.target));
  std::function<Status(const MountRequest&)> handler;
  {
    std::lock_guard<std::mutex> lock(mu_);
    handler = mount_handler_;
  }
  if (handler) RETURN_IF_ERROR(handler(req));
  std::lock_guard<std::mutex> lock(mu_);
  mounts_.push_back(req);
  return Status::Ok();
}

Status FakeEnv::Unmount(const std::string& target) {
  RETURN_IF_ERROR(Fault("unmount", target));
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = mounts_.begin(); it != mounts_.end(); ++it) {
    if (it->target == target) {
      mounts_.erase(it);
      return Status::Ok();
    }
  }
  return Status::NotFound("mount", target + " is not mounted");
}

}  // namespace dlagent
