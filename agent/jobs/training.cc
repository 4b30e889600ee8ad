#include "agent/jobs/training.h"

#include <charconv>
#include <cmath>
#include <set>

namespace dlagent::jobs {
namespace {

constexpr std::string_view kComponent = "training";

bool ValidName(std::string_view name) {
  if (name.empty() || name.size() > kMaxTrainingNameBytes) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (!letter && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

std::string Shown(std::string_view s) {
  std::string out;
  for (const char c : s.substr(0, 40)) out += (c >= 0x20 && c < 0x7f) ? c : '?';
  return s.size() > 40 ? out + "..." : out;
}

std::optional<double> Number(std::string_view v) {
  double d = 0;
  const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), d);
  if (ec != std::errc() || end != v.data() + v.size() || v.empty()) return std::nullopt;
  return d;
}

}  // namespace

Result<TrainingReport> ParseTrainingReport(std::string_view datagram) {
  if (datagram.size() > kMaxReportBytes) {
    return Status::InvalidArgument(kComponent,
                                   "a report of " + std::to_string(datagram.size()) + " bytes; at most " + std::to_string(kMaxReportBytes));
  }
  TrainingReport r;
  std::set<std::string_view> seen;
  size_t pos = 0;
  while (pos < datagram.size()) {
    const size_t start = datagram.find_first_not_of(" \t\r\n", pos);
    if (start == std::string_view::npos) break;
    size_t end = datagram.find_first_of(" \t\r\n", start);
    if (end == std::string_view::npos) end = datagram.size();
    pos = end;
    const std::string_view pair = datagram.substr(start, end - start);
    const size_t eq = pair.find('=');
    if (eq == std::string_view::npos) return Status::InvalidArgument(kComponent, "\"" + Shown(pair) + "\" is not name=value");
    const std::string_view name = pair.substr(0, eq), value = pair.substr(eq + 1);
    if (!ValidName(name))
      return Status::InvalidArgument(kComponent, "name \"" + Shown(name) + "\" is not [a-zA-Z_][a-zA-Z0-9_]* of at most 64 bytes");
    if (!seen.insert(name).second) return Status::InvalidArgument(kComponent, "name " + std::string(name) + " is given twice");
    if (name == "job") {
      if (value.empty() || value.size() > 64) return Status::InvalidArgument(kComponent, "job \"" + Shown(value) + "\" is not a job id");
      r.job = value;
    } else if (name == "step") {
      uint64_t step = 0;
      const auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), step);
      if (ec != std::errc() || p != value.data() + value.size() || value.empty()) {
        return Status::InvalidArgument(kComponent, "step \"" + Shown(value) + "\" is not a whole number");
      }
      r.step = step;
    } else {
      const std::optional<double> d = Number(value);
      if (!d) return Status::InvalidArgument(kComponent, std::string(name) + " = \"" + Shown(value) + "\" is not a number");
      r.values.emplace_back(name, *d);
    }
  }
  if (r.job.empty()) return Status::InvalidArgument(kComponent, "a report without job=ID (DLAGENT_JOB)");
  return r;
}

Status ApplyTrainingReport(const TrainingReport& report, int64_t now_unix_ms, v1::Training* kept) {
  kept->set_reports(kept->reports() + 1);
  if (report.step) {
    kept->set_step(*report.step);
    kept->set_step_unix_ms(now_unix_ms);
  }
  std::string refused;
  auto& values = *kept->mutable_values();
  for (const auto& [name, value] : report.values) {
    if (values.count(name) == 0 && values.size() >= kMaxTrainingNames) {
      refused += (refused.empty() ? "" : ", ") + name;
      continue;
    }
    values[name] = value;
  }
  if (!refused.empty()) {
    return Status::ResourceExhausted(
        kComponent, "job " + report.job + " reports more than " + std::to_string(kMaxTrainingNames) + " names; not kept: " + refused);
  }
  return Status::Ok();
}

v1::Training LatestTraining(const std::vector<const v1::Training*>& nodes) {
  const v1::Training* latest = nullptr;
  uint64_t reports = 0;
  for (const v1::Training* t : nodes) {
    reports += t->reports();
    if (t->reports() == 0) continue;
    if (latest == nullptr || std::make_pair(t->step_unix_ms(), t->step()) > std::make_pair(latest->step_unix_ms(), latest->step())) latest = t;
  }
  v1::Training out;
  if (latest != nullptr) out = *latest;
  out.set_reports(reports);
  return out;
}

}  // namespace dlagent::jobs
