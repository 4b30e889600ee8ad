#include "bootstrap/aws/imds_event_poller.h"

#include <spdlog/spdlog.h>

namespace dlagent {

ImdsEventPoller::ImdsEventPoller(ImdsClient& imds, ImdsEventCallbacks callbacks, Duration interval)
    : imds_(imds), callbacks_(std::move(callbacks)), interval_(interval) {}

ImdsEventPoller::~ImdsEventPoller() { Stop(); }

void ImdsEventPoller::Start() {
  thread_ = std::thread([this] {
    MutexLock lock(mu_);
    while (!stop_) {
      lock.Unlock();
      PollOnce();
      lock.Lock();
      const auto until = std::chrono::steady_clock::now() + interval_;
      while (!stop_ && cv_.wait_until(lock.native(), until) == std::cv_status::no_timeout) {
      }
    }
  });
}

void ImdsEventPoller::Stop() {
  {
    MutexLock lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void ImdsEventPoller::PollOnce() {
  if (!spot_reported_) {
    Result<std::optional<SpotNotice>> notice = imds_.SpotInterruption();
    if (!notice.ok()) {
      spdlog::debug("imds: spot notice poll failed: {}", notice.status().ToString());
    } else if (notice->has_value()) {
      spot_reported_ = true;
      if (callbacks_.on_spot_notice) callbacks_.on_spot_notice(**notice);
    }
  }
  Result<std::vector<ScheduledEvent>> events = imds_.ScheduledEvents();
  if (!events.ok()) {
    spdlog::debug("imds: scheduled events poll failed: {}", events.status().ToString());
    return;
  }
  std::vector<ScheduledEvent> active;
  for (const ScheduledEvent& e : *events) {
    if (e.state == "completed" || e.state == "canceled") continue;
    active.push_back(e);
    const std::string key = e.event_id.empty() ? e.code + "@" + e.not_before : e.event_id;
    if (seen_events_.insert(key).second && callbacks_.on_scheduled_event) callbacks_.on_scheduled_event(e);
  }
  if (callbacks_.on_active_events) callbacks_.on_active_events(active);
}

}  // namespace dlagent
