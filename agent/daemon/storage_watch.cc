#include "agent/daemon/storage_watch.h"

#include <chrono>
#include <utility>

namespace dlagent {

StorageWatch::StorageWatch(Env& env, MountManager& mounts, std::string mount_point)
    : env_(env), mounts_(mounts), mount_point_(std::move(mount_point)) {
  thread_ = std::thread([this] { Loop(); });
}

StorageWatch::~StorageWatch() {
  {
    MutexLock lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void StorageWatch::CheckNow() {
  {
    MutexLock lock(mu_);
    poked_ = true;
  }
  cv_.notify_all();
}

StorageWatch::Snapshot StorageWatch::snapshot() const {
  MutexLock lock(mu_);
  return last_;
}

void StorageWatch::Loop() {
  MutexLock lock(mu_);
  while (!stop_) {
    lock.Unlock();
    Snapshot s;
    s.checked = true;
    Result<std::string> mountinfo = env_.ReadFile("/proc/self/mountinfo", 16 << 20);
    s.mounted = mountinfo.ok() && FindMount(*mountinfo, mount_point_).has_value();
    if (s.mounted) {
      const MonoTime t0 = env_.NowMono();
      s.probe_ok = mounts_.Probe(kProbeTimeout).ok();
      s.probe_seconds = std::chrono::duration<double>(env_.NowMono() - t0).count();
    }
    s.checked_unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(env_.NowWall().time_since_epoch()).count();
    lock.Lock();
    last_ = s;
    // Until the formation has mounted it, look again soon.
    cv_.wait_for(lock.native(), s.mounted ? kInterval : kUnmountedInterval, [&]() NO_THREAD_SAFETY_ANALYSIS { return stop_ || poked_; });
    poked_ = false;
  }
}

}  // namespace dlagent
