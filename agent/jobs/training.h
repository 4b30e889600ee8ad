#pragma once
// Training metrics from ranks (docs/jobs.md, "Training metrics"). A rank reports with one datagram of text
// to the abstract Unix socket its agent names in DLAGENT_METRICS_SOCKET:
//
//   job=j-0123456789ab step=120 loss=0.5312 samples_per_second=1200.5
//
// name=value pairs separated by spaces or newlines: `job` (DLAGENT_JOB) is required, `step` is an integer,
// every other name is a scalar (a float, nan and inf included). The agent keeps, per job and node, the last
// step, when it came, and the last value of each name; /metrics, agentctl jobs and agentctl health read them.
// This file holds the pure part: the parser and how a report changes what is kept.
//
// Thread safety: functions only.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bootstrap/common/status.h"
#include "proto/jobs.pb.h"

namespace dlagent::jobs {

inline constexpr size_t kMaxReportBytes = 1024;  // a longer datagram is refused
inline constexpr size_t kMaxTrainingNames = 16;  // names kept per job and node; more are refused
inline constexpr size_t kMaxTrainingNameBytes = 64;

struct TrainingReport {
  std::string job;
  std::optional<uint64_t> step;
  std::vector<std::pair<std::string, double>> values;
};

// InvalidArgument names what is wrong: no job, a pair without '=', a name that is not [a-zA-Z_][a-zA-Z0-9_]*
// (at most 64 bytes), a value that is not a number, a step that is not an integer, a name given twice,
// a datagram over kMaxReportBytes.
Result<TrainingReport> ParseTrainingReport(std::string_view datagram);

// Takes a report into what is kept for its job on this node. A name beyond kMaxTrainingNames is not taken
// (ResourceExhausted, naming it); the rest of the report is.
Status ApplyTrainingReport(const TrainingReport& report, int64_t now_unix_ms, v1::Training* kept);

// The most recent of several nodes' (the latest step; values from the node that reported it).
v1::Training LatestTraining(const std::vector<const v1::Training*>& nodes);

}  // namespace dlagent::jobs
