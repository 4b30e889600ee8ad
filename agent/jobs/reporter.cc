#include "agent/jobs/reporter.h"

#include <algorithm>

#include <spdlog/spdlog.h>

#include "agent/jobs/coordinator.h"   // Answer
#include "bootstrap/common/crypto.h"  // RandomSeed

namespace dlagent::jobs {

Reporter::Reporter(ReporterOptions o) : o_(std::move(o)), rng_(static_cast<uint32_t>(RandomSeed())) {
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
    for (pb::NodeJob& p : parts) {
      Pending& slot = pending_[p.spec().id()];
      slot = Pending{std::move(p), 0, MonoTime{}, ++serial_};
    }
  }
  cv_.notify_all();
}

Reporter::Counters Reporter::counters() {
  MutexLock lock(mu_);
  return counters_;
}

Duration Reporter::Backoff(int tries) {
  // Doubling from min_backoff up to max_backoff, each wait drawn from its upper half.
  Duration cap = o_.min_backoff;
  for (int i = 1; i < tries && cap < o_.max_backoff; ++i) cap *= 2;
  cap = std::min(cap, o_.max_backoff);
  const auto half = std::chrono::duration_cast<std::chrono::microseconds>(cap) / 2;
  std::uniform_int_distribution<int64_t> d(0, std::max<int64_t>(0, half.count()));
  return half + std::chrono::microseconds(d(rng_));
}

void Reporter::Loop() {
  for (;;) {
    std::string job;
    Pending p;
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
      p = pending_[job];
    }
    const pb::JobSpec& spec = p.part.spec();
    Status st = Status::Ok();
    const bool gone = o_.gone && o_.gone(spec.coordinator());
    if (!gone) {
      pb::NodeRequest req;
      req.set_from(o_.self);
      *req.mutable_report()->mutable_part() = p.part;
      Result<pb::NodeReply> r = Answer(o_.call(spec.coordinator(), spec.coordinator_addr(), req));
      st = r.ok() ? Status::Ok() : r.status();
    }
    MutexLock lock(mu_);
    auto it = pending_.find(job);
    const bool replaced = it == pending_.end() || it->second.serial != p.serial;
    // Delivered, or the coordinator does not know the job (it is another agent's now, or ended there): done.
    if (!gone && (st.ok() || st.code() == StatusCode::kNotFound || st.code() == StatusCode::kInvalidArgument)) {
      ++(st.ok() ? counters_.delivered : counters_.unknown);
      if (!replaced) pending_.erase(it);
      continue;
    }
    if (replaced) continue;  // a newer part goes instead
    if (gone || ++it->second.tries >= o_.max_tries) {
      ++counters_.dropped;
      spdlog::warn("job {}: this node's part was not delivered to its coordinator {} ({}); its slow round will ask", job, spec.coordinator(),
                   gone ? "gossip says it is gone" : std::to_string(it->second.tries) + " tries: " + st.ToString());
      pending_.erase(it);
      continue;
    }
    ++counters_.retried;
    it->second.next = std::chrono::steady_clock::now() + Backoff(it->second.tries);
  }
}

}  // namespace dlagent::jobs
