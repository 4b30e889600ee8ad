// libFuzzer target: what the metrics listener makes of a client's bytes (the head's end, the request parser),
// what the agent makes of a rank's training report (a datagram any local process may send), and the text
// format's escaping of a value taken from anywhere (a job's or a member's name). Errors only: never a crash, a
// hang or a read out of bounds; a label value never breaks its sample out of one line, and a job never keeps
// more than kMaxTrainingNames names.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "agent/jobs/training.h"
#include "agent/metrics/exposition.h"
#include "agent/metrics/http_request.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const size_t end = dlagent::metrics::RequestHeadEnd(text);
  if (end > text.size()) __builtin_trap();
  auto req = dlagent::metrics::ParseRequestHead(end > 0 ? text.substr(0, end) : text);
  if (req.ok()) {
    if (req->path.empty() || req->path[0] != '/') __builtin_trap();
    (void)dlagent::metrics::FormatReply({404, "text/plain", "not found: " + req->path, ""}, req->method == "HEAD");
  }
  auto report = dlagent::jobs::ParseTrainingReport(text);
  if (report.ok()) {
    dlagent::jobs::v1::Training kept;
    for (int i = 0; i < 3; ++i) (void)dlagent::jobs::ApplyTrainingReport(*report, i, &kept);
    if (kept.values_size() > static_cast<int>(dlagent::jobs::kMaxTrainingNames)) __builtin_trap();
  }
  dlagent::metrics::Exposition e;
  e.Family("dlagent_fuzz", dlagent::metrics::MetricType::kGauge, text);
  e.Sample(1, {{"value", text}});
  size_t lines = 0;
  for (const char c : e.text()) lines += c == '\n';
  if (lines != 3) __builtin_trap();  // HELP, TYPE and the sample
  return 0;
}
