#include "agent/metrics/exposition.h"

#include <cassert>
#include <charconv>
#include <cmath>

namespace dlagent::metrics {
namespace {

[[maybe_unused]] bool ValidName(std::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

// Help text escapes backslash and newline; label values also the double quote.
void Escape(std::string& out, std::string_view s, bool quote) {
  for (const char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (quote && c == '"') {
      out += "\\\"";
    } else {
      out += c;
    }
  }
}

std::string_view TypeName(MetricType t) {
  switch (t) {
    case MetricType::kCounter: return "counter";
    case MetricType::kGauge: return "gauge";
    case MetricType::kHistogram: return "histogram";
  }
  return "untyped";
}

}  // namespace

std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[32];
  // Integers up to 2^53 exactly, without an exponent; others in the shortest form that reads back the same.
  if (v == std::floor(v) && std::fabs(v) < 9007199254740992.0) {
    auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), static_cast<int64_t>(v));
    return {buf, end};
  }
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  return {buf, end};
}

void Exposition::Family(std::string_view name, MetricType type, std::string_view help) {
  assert(ValidName(name));
  family_ = name;
  type_ = type;
  out_ += "# HELP ";
  out_ += name;
  out_ += ' ';
  Escape(out_, help, false);
  out_ += "\n# TYPE ";
  out_ += name;
  out_ += ' ';
  out_ += TypeName(type);
  out_ += '\n';
}

void Exposition::Line(std::string_view suffix, const Label* labels, size_t n, const Label* extra, double value) {
  out_ += family_;
  out_ += suffix;
  if (n > 0 || extra != nullptr) {
    out_ += '{';
    bool first = true;
    auto add = [&](const Label& l) {
      assert(ValidName(l.first));
      if (!first) out_ += ',';
      first = false;
      out_ += l.first;
      out_ += "=\"";
      Escape(out_, l.second, true);
      out_ += '"';
    };
    for (size_t i = 0; i < n; ++i) add(labels[i]);
    if (extra != nullptr) add(*extra);
    out_ += '}';
  }
  out_ += ' ';
  out_ += FormatValue(value);
  out_ += '\n';
}

void Exposition::Sample(double value, Labels labels) {
  assert(type_ != MetricType::kHistogram);
  Line({}, labels.begin(), labels.size(), nullptr, value);
}

void Exposition::Sample(double value, const std::vector<Label>& labels) {
  assert(type_ != MetricType::kHistogram);
  Line({}, labels.data(), labels.size(), nullptr, value);
}

void Exposition::Histogram(const HistogramData& h, Labels labels) {
  assert(type_ == MetricType::kHistogram && h.counts.size() == h.bounds.size() + 1);
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= h.bounds.size(); ++i) {
    cumulative += i < h.counts.size() ? h.counts[i] : 0;
    const std::string le = i < h.bounds.size() ? FormatValue(h.bounds[i]) : "+Inf";
    const Label bound{"le", le};
    Line("_bucket", labels.begin(), labels.size(), &bound, static_cast<double>(cumulative));
  }
  Line("_sum", labels.begin(), labels.size(), nullptr, h.sum);
  Line("_count", labels.begin(), labels.size(), nullptr, static_cast<double>(cumulative));
}

}  // namespace dlagent::metrics
