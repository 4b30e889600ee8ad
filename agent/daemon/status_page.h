#pragma once
// The status page (docs/operations.md, "Status page"): `/` on the metrics listener, one self-contained page
// (its script and style are served from here; nothing from elsewhere) that asks /api/status every 2 s and
// shows the members, the roster and its generations, this node's boot timeline, the cluster's jobs with their
// ranks per node, and charts of what each job's ranks report. With the page token (`agentctl page`), it
// also shows a live tail of a job's output (/api/logs).
//
// What the HTTP thread asks is answered from memory: a thread of the page's own asks the cluster for its jobs
// (every 2 s while someone looked in the last 30 s) and for the output of jobs someone follows, and samples
// the jobs' training reports into a bounded history, so a chart has a past when it is opened.
//
// Thread safety: Serve from the HTTP thread; the constructor and destructor from one thread.

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "agent/jobs/jobs.h"
#include "agent/metrics/http_request.h"
#include "agent/rpc/control_handler.h"
#include "bootstrap/common/env.h"
#include "bootstrap/common/mutex.h"

namespace dlagent {

// One sample of a job's training reports.
struct TrainingPoint {
  int64_t unix_ms = 0;
  uint64_t step = 0;
  std::map<std::string, double> values;
};

// A job's samples, the oldest first: at most kMaxPoints; when full, every other one is dropped, so the whole
// run stays in view at half the resolution.
class TrainingHistory {
 public:
  static constexpr size_t kMaxPoints = 512;
  static constexpr int64_t kMinGapMs = 1000;  // a new step is taken at most once a second
  // Takes the job's latest report when its step is new and the last point is kMinGapMs old.
  void Add(const jobs::v1::Training& latest);
  const std::vector<TrainingPoint>& points() const { return points_; }

 private:
  std::vector<TrainingPoint> points_;
};

// The dlps shard's running totals at one moment (the page charts their rates).
struct DlpsPoint {
  int64_t unix_ms = 0;
  uint64_t bytes_in = 0, bytes_out = 0, rounds = 0;
};

// What /api/status says, built from what the page has gathered (a pure function, tested alone).
struct StatusPageInput {
  StatusSnapshot status;
  MemberListSnapshot members;
  std::optional<jobs::v1::JobList> jobs;  // absent: not asked yet, or this agent runs no jobs
  int64_t jobs_unix_ms = 0;               // when they were asked
  std::string jobs_error;                 // why the last ask failed ("" : it did not)
  std::map<std::string, const TrainingHistory*> history;
  struct Generation {
    uint64_t generation = 0;
    int64_t first_seen_unix_ms = 0;
    size_t members = 0;
  };
  std::vector<Generation> generations;         // the roster's generations this agent saw, the first first
  bool logs_allowed = false;                   // the request carried the page token
  std::optional<std::vector<DlpsPoint>> dlps;  // absent: this agent serves no dlps shard
};
std::string StatusPageJson(const StatusPageInput& in);

struct StatusPageSources {
  std::function<StatusSnapshot()> status;             // REQUIRED: from memory
  std::function<MemberListSnapshot()> members;        // REQUIRED: from memory
  std::function<std::shared_ptr<jobs::Jobs>()> jobs;  // REQUIRED: null while no jobs are served
  std::function<std::optional<DlpsPoint>()> dlps;     // Default: none (no dlps shard). From memory
};

class StatusPage {
 public:
  // token: what /api/logs needs, as "Authorization: Bearer TOKEN" (hex; `agentctl page` reads it from the
  // file beside the control socket). Starts the thread.
  StatusPage(Env& env, StatusPageSources sources, std::string token);
  ~StatusPage();  // stops the thread (waits for a call to other agents in flight: each has a deadline)
  StatusPage(const StatusPage&) = delete;
  StatusPage& operator=(const StatusPage&) = delete;

  // Answers "/", "/page.js", "/page.css", "/api/status" and "/api/logs?job=ID[&after=N]"; nullopt for any
  // other path. 401 for /api/logs without the token.
  std::optional<metrics::HttpReply> Serve(const metrics::HttpRequest& req);

  static constexpr Duration kRefresh = std::chrono::seconds(2);
  static constexpr Duration kViewed = std::chrono::seconds(30);  // asks the cluster this long after a look
  static constexpr size_t kMaxFollowed = 8;                      // jobs whose output is followed at once
  static constexpr size_t kMaxTailLines = 500;                   // kept per followed job
  static constexpr int kMaxJobs = 200;                           // listed: every running job, then the latest ended
  static constexpr size_t kMaxDlpsPoints = 300;                  // 10 minutes at kRefresh

 private:
  struct Tail {
    std::deque<jobs::v1::OutputLine> lines;
    uint64_t first_seq = 1;                 // the number of lines[0] (the page asks after a number)
    std::map<std::string, uint64_t> after;  // the cursor per node
    bool started = false;
    MonoTime wanted_until;
    std::string error;
  };
  void Loop();
  void Refresh();
  metrics::HttpReply Logs(const metrics::HttpRequest& req, bool authorized);

  Env& env_;
  const StatusPageSources src_;
  const std::string token_;
  Mutex mu_;
  std::condition_variable cv_;
  bool stop_ GUARDED_BY(mu_) = false;
  MonoTime viewed_until_ GUARDED_BY(mu_);
  std::optional<jobs::v1::JobList> jobs_ GUARDED_BY(mu_);
  int64_t jobs_unix_ms_ GUARDED_BY(mu_) = 0;
  std::string jobs_error_ GUARDED_BY(mu_);
  std::map<std::string, TrainingHistory> history_ GUARDED_BY(mu_);
  std::vector<StatusPageInput::Generation> generations_ GUARDED_BY(mu_);
  std::map<std::string, Tail> tails_ GUARDED_BY(mu_);
  std::deque<DlpsPoint> dlps_ GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace dlagent
