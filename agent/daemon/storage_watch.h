#pragma once
// StorageWatch: whether the shared storage is mounted, and how long a write and read back on it took, checked
// every 30 s (every 2 s while it is not mounted) by a thread of its own (/metrics: dlagent_storage_*). A hung NFS server shows as a probe that
// failed after its timeout, never as a hung scrape.
//
// Thread safety: snapshot() from any thread; the constructor and destructor from one.

#include <condition_variable>
#include <cstdint>
#include <string>
#include <thread>

#include "bootstrap/common/env.h"
#include "bootstrap/common/mutex.h"
#include "bootstrap/node/mount_manager.h"

namespace dlagent {

class StorageWatch {
 public:
  struct Snapshot {
    bool checked = false;      // false until the first check
    bool mounted = false;      // the mount point is in /proc/self/mountinfo
    bool probe_ok = false;     // the last write-and-read-back succeeded (false when not mounted)
    double probe_seconds = 0;  // how long it took (up to the timeout when it failed)
    int64_t checked_unix_ms = 0;
  };
  static constexpr Duration kInterval = std::chrono::seconds(30);
  static constexpr Duration kUnmountedInterval = std::chrono::seconds(2);  // while not mounted (mountinfo only)
  static constexpr Duration kProbeTimeout = std::chrono::seconds(10);

  // mounts must outlive the watch. Starts the thread; the first check is at once.
  StorageWatch(Env& env, MountManager& mounts, std::string mount_point);
  ~StorageWatch();  // stops the thread (waits for a probe in flight, at most kProbeTimeout)
  StorageWatch(const StorageWatch&) = delete;
  StorageWatch& operator=(const StorageWatch&) = delete;

  Snapshot snapshot() const;
  // Checks again now (the formation has just mounted it), not at the next turn.
  void CheckNow();

 private:
  void Loop();

  Env& env_;
  MountManager& mounts_;
  const std::string mount_point_;
  mutable Mutex mu_;
  std::condition_variable cv_;
  bool stop_ GUARDED_BY(mu_) = false;
  bool poked_ GUARDED_BY(mu_) = false;
  Snapshot last_ GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace dlagent
