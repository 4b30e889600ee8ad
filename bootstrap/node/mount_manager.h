#pragma once
// MountManager: the node's shared storage. Kinds:
//   efs   mount -t nfs4 -o nfsvers=4.1,rsize=1048576,wsize=1048576,hard,timeo=600,retrans=2,noresvport
//         <fs-id>.efs.<region>.amazonaws.com:/ <mount_point>; waits for the name to resolve (VPC DNS can lag
//         at boot), then falls back to the configured mount-target IPs;
//   nfs4  the same options against any server ("host:/export");
//   bind  a local directory (tests and the local cluster);
//   none  nothing to mount.
// Ensure() is idempotent (it reads /proc/self/mountinfo) and bounded (retries with jittered backoff within
// a budget). Probe() checks the mount with a write and read on a thread of its own, so that a hung hard NFS
// mount can never block the caller.
//
// Thread safety: Ensure and Probe may be called from any thread, not concurrently with each other.

#include <atomic>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bootstrap/common/backoff.h"
#include "bootstrap/common/env.h"

namespace dlagent {

enum class StorageKind { kNone, kEfs, kNfs4, kBind };
std::string_view StorageKindName(StorageKind k);  // "none", "efs", "nfs4", "bind": as the config writes them

struct StorageOptions {
  StorageKind kind = StorageKind::kNone;  // Default: none
  std::string source;                     // efs: fs-0123abcd; nfs4: host:/export; bind: a directory
  std::string mount_point = "/mnt/efs";
  std::string region;                                 // efs: the file system's region
  std::vector<std::string> mount_target_ips;          // efs: used when the DNS name does not resolve in time
  Duration dns_wait = std::chrono::seconds(120);      // Default: 2 min for the EFS name to resolve.
  Duration mount_budget = std::chrono::minutes(5);    // Default: 5 min of mount attempts in all.
  Duration mount_timeout = std::chrono::seconds(60);  // Default: 60 s for one mount(8) run.
  const std::atomic<bool>* cancel = nullptr;          // Default: none. When it turns true, Ensure stops retrying.
};

// One line of /proc/self/mountinfo that matters here.
struct MountEntry {
  std::string mount_point;
  std::string root;  // the directory of its file system that is mounted (a bind mount's source, relative)
  std::string fstype;
  std::string source;  // the device or server:/export
};
// The mount at mount_point, if any (the last one wins, as the kernel stacks them). Octal escapes (\040)
// are decoded.
std::optional<MountEntry> FindMount(std::string_view mountinfo, const std::string& mount_point);

// Resolves a host name to addresses; NotFound while it does not resolve.
using Resolver = std::function<Result<std::vector<std::string>>(const std::string& host)>;
Resolver SystemResolver();

class MountManager {
 public:
  // env must outlive the manager.
  MountManager(Env& env, Resolver resolver, StorageOptions options);

  // Mounts unless already mounted from the same source. FailedPrecondition when something else is
  // mounted there; the last error (naming the source and what to check) when the budget runs out.
  Status Ensure();
  // Writes, syncs, reads back and removes a small file under the mount point within `timeout`.
  Status Probe(Duration timeout);
  // "server:/export" as it will be or was mounted (after DNS or IP fallback for efs).
  const std::string& effective_source() const { return effective_source_; }

 private:
  Result<std::string> ResolveSource();
  // Whether the mount already there is the one this node would make.
  bool IsOurs(const MountEntry& m, std::string_view mountinfo) const;

  Env& env_;
  Resolver resolver_;
  StorageOptions options_;
  std::string effective_source_;
};

// Free bytes for unprivileged users on the file system holding `path` (statvfs), within `timeout`: on a hung
// hard mount statvfs blocks forever, so it runs on a thread of its own that is left behind on a timeout
// (DeadlineExceeded, naming the path).
Result<uint64_t> FreeBytesWithin(const std::string& path, Duration timeout);

}  // namespace dlagent
