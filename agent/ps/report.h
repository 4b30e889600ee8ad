#pragma once
// Training metrics to this node's agent (docs/jobs.md, "Training metrics"): one datagram "job=J step=N
// name=value ..." to the abstract socket DLAGENT_METRICS_SOCKET names, J being DLAGENT_JOB. It never blocks:
// outside an agentctl job, or when the agent cannot take it now, the report is dropped.
//
// Thread safety: Report may be called from any thread (one sendto each).

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dlagent::ps {

class TrainingReporter {
 public:
  // Reads DLAGENT_METRICS_SOCKET and DLAGENT_JOB from the process environment.
  TrainingReporter();
  ~TrainingReporter();
  TrainingReporter(const TrainingReporter&) = delete;
  TrainingReporter& operator=(const TrainingReporter&) = delete;

  // Whether reports go anywhere (the process runs as a rank of an agentctl job).
  bool enabled() const { return fd_ >= 0; }
  // Names are [a-zA-Z_][a-zA-Z0-9_]* (the agent refuses others). Returns whether the datagram was sent.
  bool Report(uint64_t step, const std::vector<std::pair<std::string_view, double>>& values) const;

 private:
  int fd_ = -1;
  std::string address_;  // sockaddr_un's sun_path, the leading 0 of an abstract name included
  std::string job_;
};

}  // namespace dlagent::ps
