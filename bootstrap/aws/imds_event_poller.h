#pragma once
// ImdsEventPoller: watches IMDS for a spot interruption notice and scheduled maintenance events, every
// `interval` (AWS advises 5 s: a spot notice comes two minutes before the instance is taken), on a thread
// of its own, and reports each new notice or event once.
//
// Thread safety: Start/Stop from one thread. Callbacks run on the poller's thread and must not block long.

#include <condition_variable>
#include <functional>

#include <set>
#include <thread>

#include "bootstrap/aws/imds_client.h"

namespace dlagent {

struct ImdsEventCallbacks {
  std::function<void(const SpotNotice&)> on_spot_notice;          // once per notice
  std::function<void(const ScheduledEvent&)> on_scheduled_event;  // once per active event id
  // Every poll that reads them: the events not completed or canceled (empty when there are none).
  std::function<void(const std::vector<ScheduledEvent>&)> on_active_events;
};

class ImdsEventPoller {
 public:
  // imds must outlive the poller.
  ImdsEventPoller(ImdsClient& imds, ImdsEventCallbacks callbacks, Duration interval = std::chrono::seconds(5));
  ~ImdsEventPoller();  // stops

  void Start();
  // Returns within one IMDS call's deadline.
  void Stop();
  // One round of polling, on the caller's thread (Start() runs this every interval).
  void PollOnce();

 private:
  ImdsClient& imds_;
  const ImdsEventCallbacks callbacks_;
  const Duration interval_;
  std::thread thread_;
  Mutex mu_;
  std::condition_variable cv_;
  bool stop_ GUARDED_BY(mu_) = false;
  bool spot_reported_ = false;         // poller thread only
  std::set<std::string> seen_events_;  // poller thread only
};

}  // namespace dlagent
