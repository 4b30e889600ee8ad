#include "agent/jobs/reporter.h"

#include <algorithm>

#include <spdlog/spdlog.h>

#include "agent/jobs/coordinator.h"   // Answer
#include "bootstrap/common/crypto.h"  // RandomSeed

namespace dlagent::jobs {

Reporter::Reporter(ReporterOptions o) : o_(std::move(o)) {
  thread_ = std::thread([this] { Loop(); });
}

Reporter::~Reporter() { Stop(); }

void Reporter::Stop() {
  {
    MutexLock lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Reporter::Add(std::vector<pb::NodeJob> parts) {
  if (parts.empty()) return;
  {
    MutexLock lock(mu_);
    if (stopping_) return;
    BackoffPolicy policy;
    policy.initial = o_.min_backoff;
    policy.max_delay = o_.max_backoff;
    policy.max_attempts = o_.max_tries;
    policy.max_elapsed = Duration::zero();
    for (pb::NodeJob& p : parts) {
      std::string id = p.spec().id();
      pending_.insert_or_assign(std::move(id), Pending{std::move(p), dlagent::Backoff(policy, RandomSeed()), MonoTime{}, ++serial_});
    }
  }
  cv_.notify_all();
}

Reporter::Counters Reporter::counters() {
  MutexLock lock(mu_);
  return counters_;
}

void Reporter::Loop() {
  for (;;) {
    std::string job;
    pb::NodeJob part;  // the one sent this turn
    uint64_t serial = 0;
    {
      MutexLock lock(mu_);
      for (;;) {
        if (stopping_) return;
        MonoTime soonest = MonoTime::max();
        const MonoTime now = std::chrono::steady_clock::now();
        for (const auto& [id, q] : pending_) {
          if (q.next <= now) {
            job = id;
            break;
          }
          soonest = std::min(soonest, q.next);
        }
        if (!job.empty()) break;
        if (soonest == MonoTime::max())
          cv_.wait(lock.native());
        else
          cv_.wait_until(lock.native(), soonest);
      }
      const Pending& p = pending_.at(job);
      part = p.part;
      serial = p.serial;
    }
    const pb::JobSpec& spec = part.spec();
    Status st = Status::Ok();
    const bool gone = o_.gone && o_.gone(spec.coordinator());
    if (!gone) {
      pb::NodeRequest req;
      req.set_from(o_.self);
      *req.mutable_report()->mutable_part() = part;
      Result<pb::NodeReply> r = Answer(o_.call(spec.coordinator(), spec.coordinator_addr(), req));
      st = r.ok() ? Status::Ok() : r.status();
    }
    MutexLock lock(mu_);
    auto it = pending_.find(job);
    const bool replaced = it == pending_.end() || it->second.serial != serial;
    // Delivered, or the coordinator does not know the job (it is another agent's now, or ended there): done.
    if (!gone && (st.ok() || st.code() == StatusCode::kNotFound || st.code() == StatusCode::kInvalidArgument)) {
      ++(st.ok() ? counters_.delivered : counters_.unknown);
      if (!replaced) pending_.erase(it);
      continue;
    }
    if (replaced) continue;  // a newer part goes instead
    const std::optional<Duration> delay = gone ? std::nullopt : it->second.backoff.NextDelay();
    if (!delay) {
      ++counters_.dropped;
      spdlog::warn("job {}: this node's part was not delivered to its coordinator {} ({}); its slow round will ask", job, spec.coordinator(),
                   gone ? "gossip says it is gone" : std::to_string(it->second.backoff.attempts()) + " tries: " + st.ToString());
      pending_.erase(it);
      continue;
    }
    ++counters_.retried;
    it->second.next = std::chrono::steady_clock::now() + *delay;
  }
}

}  // namespace dlagent::jobs
