#pragma once
// Heartbeats: how the daemon knows its loops still turn, so that it tells systemd WATCHDOG=1 only while they
// do (a hung loop then gets the agent restarted, instead of a main thread that pings regardless). Each loop
// that matters registers once and calls Beat() every time round, at least once a second even when idle.
//
// Thread safety: every method may be called from any thread; Beat() is one relaxed atomic store.

#include <atomic>
#include <memory>

#include <string>
#include <vector>

#include "bootstrap/common/env.h"
#include "bootstrap/common/mutex.h"

namespace dlagent {

class Heartbeat {
 public:
  Heartbeat(std::string name, Env& env, bool hang) : name_(std::move(name)), env_(env) {
    Store();
    hang_ = hang;
  }
  void Beat() {
    while (hang_) env_.SleepFor(std::chrono::seconds(1));  // a test's stand-in for a hung loop
    Store();
  }
  const std::string& name() const { return name_; }
  MonoTime last() const { return MonoTime(MonoTime::duration(last_ns_.load(std::memory_order_relaxed))); }

 private:
  void Store() { last_ns_.store(env_.NowMono().time_since_epoch().count(), std::memory_order_relaxed); }

  const std::string name_;
  Env& env_;
  bool hang_ = false;
  std::atomic<MonoTime::rep> last_ns_{0};
};

class Heartbeats {
 public:
  // hang: the name of a loop to hang at its first beat (tests of the watchdog: DLAGENT_TEST_HANG); "" for none.
  explicit Heartbeats(Env& env, std::string hang = "") : env_(env), hang_(std::move(hang)) {}
  // A loop to watch from now on; it beats once on registering. The registry keeps it alive.
  std::shared_ptr<Heartbeat> Register(const std::string& name);
  // The loops that have not beaten within `within`, by name; empty when every one has.
  std::vector<std::string> Stale(Duration within) const;

 private:
  Env& env_;
  const std::string hang_;
  mutable Mutex mu_;
  std::vector<std::shared_ptr<Heartbeat>> beats_ GUARDED_BY(mu_);
};

}  // namespace dlagent
