#pragma once
// Reporter: pushes this node's part of each job to the job's coordinator when it changes (a rank started or
// ended, a failure, the job's end here), so that the coordinator learns of it at once instead of asking every
// node in turn (docs/jobs.md, "How the coordinator learns").
//
// NodeJobs hands it the parts that changed (Add); a newer part of a job replaces one not yet delivered. A part
// that could not be delivered is tried again after a jittered backoff, at most max_tries times, and never once
// gossip says the coordinator is gone (the job's nodes then go on as node_jobs_orphans.cc says). The
// coordinator's slow round catches what was dropped.
//
// Threading: a thread of its own delivers, one part at a time, each call with the transport's deadline. Add
// and Stop may be called from any thread; Add never blocks on the network.

#include <condition_variable>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "agent/jobs/summary.h"
#include "bootstrap/common/backoff.h"
#include "bootstrap/common/env.h"
#include "bootstrap/common/mutex.h"

namespace dlagent::jobs {

struct ReporterOptions {
  std::string self;  // REQUIRED: this node's instance id (the reports' `from`)
  // REQUIRED: calls a node (its instance id and cluster service address), as JobNodes::Call.
  std::function<Result<pb::NodeReply>(const std::string& node, const std::string& addr, const pb::NodeRequest& req)> call;
  std::function<bool(const std::string& instance_id)> gone;  // gossip says dead or left (null: never)
  Duration min_backoff = std::chrono::milliseconds(100);
  Duration max_backoff = std::chrono::seconds(2);
  int max_tries = 30;  // about a minute at the largest backoff
};

class Reporter {
 public:
  explicit Reporter(ReporterOptions o);
  ~Reporter();  // Stop()
  Reporter(const Reporter&) = delete;
  Reporter& operator=(const Reporter&) = delete;

  // Parts that changed (NodeJobs::TakeChanged's shape: states only, the spec briefed).
  void Add(std::vector<pb::NodeJob> parts);
  // Stops the thread; parts added later are dropped. Idempotent; from one thread (the owner's).
  void Stop();

  struct Counters {
    uint64_t delivered = 0;  // parts the coordinator took
    uint64_t retried = 0;    // calls that failed and were tried again
    uint64_t dropped = 0;    // parts given up: tries used up, or the coordinator gone
    uint64_t unknown = 0;    // parts the coordinator did not take: it does not know the job (another's now, or gone)
  };
  Counters counters();

 private:
  struct Pending {
    pb::NodeJob part;
    dlagent::Backoff backoff;  // the delays between its tries, and their count
    MonoTime next{};           // not before
    uint64_t serial = 0;
  };
  void Loop();

  const ReporterOptions o_;
  Mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, Pending> pending_ GUARDED_BY(mu_);  // by job id
  uint64_t serial_ GUARDED_BY(mu_) = 0;
  bool stopping_ GUARDED_BY(mu_) = false;
  Counters counters_ GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace dlagent::jobs
