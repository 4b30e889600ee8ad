#include "bootstrap/common/heartbeat.h"

namespace dlagent {

std::shared_ptr<Heartbeat> Heartbeats::Register(const std::string& name) {
  auto beat = std::make_shared<Heartbeat>(name, env_, !hang_.empty() && name == hang_);
  MutexLock lock(mu_);
  beats_.push_back(beat);
  return beat;
}

std::vector<std::string> Heartbeats::Stale(Duration within) const {
  const MonoTime now = env_.NowMono();
  std::vector<std::string> stale;
  MutexLock lock(mu_);
  for (const auto& b : beats_) {
    if (now - b->last() > within) stale.push_back(b->name());
  }
  return stale;
}

}  // namespace dlagent
