#pragma once
// Exposition: writes Prometheus's text format 0.0.4 (what /metrics serves). A family is begun with its name,
// type and help; its samples follow. Names and label names are the caller's constants and must follow
// Prometheus's rules ([a-zA-Z_:][a-zA-Z0-9_:]*; checked in debug builds); label values and help text may be
// anything and are escaped here.
//
// Thread safety: a value; one thread writes it.

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dlagent::metrics {

enum class MetricType { kCounter, kGauge, kHistogram };

using Label = std::pair<std::string_view, std::string_view>;
using Labels = std::initializer_list<Label>;

// Bucket counts of a histogram, cumulative or not (Histogram below makes them).
struct HistogramData {
  std::vector<double> bounds;    // upper bounds, ascending, without +Inf
  std::vector<uint64_t> counts;  // per bucket (not cumulative), bounds.size() + 1 of them: the last is above every bound
  double sum = 0;
};

class Exposition {
 public:
  // Starts a family. Each name is begun once per exposition (Prometheus refuses a family split in two).
  void Family(std::string_view name, MetricType type, std::string_view help);
  // One sample of the current family (a counter's or gauge's). A counter's name gets no "_total" here: the
  // family's name carries it.
  void Sample(double value, Labels labels = {});
  void Sample(double value, const std::vector<Label>& labels);
  // A histogram's samples (_bucket with le, _sum, _count) of the current family.
  void Histogram(const HistogramData& h, Labels labels = {});

  const std::string& text() const { return out_; }
  std::string Take() { return std::move(out_); }

  // The text format's content type, for the HTTP reply.
  static constexpr std::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";

 private:
  void Line(std::string_view suffix, const Label* labels, size_t n, const Label* extra, double value);

  std::string out_;
  std::string family_;
  MetricType type_ = MetricType::kGauge;
};

// A number as the text format writes it: integers without exponent or point, NaN, +Inf, -Inf.
std::string FormatValue(double v);

}  // namespace dlagent::metrics
