#include "bootstrap/aws/aws_json.h"

#include <cctype>
#include <ctime>

namespace dlagent {
namespace {

constexpr int kMaxDepth = 32;

// Deepest nesting of arrays and objects outside strings; stops counting past the limit.
int NestingDepth(std::string_view text) {
  int depth = 0, max_depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (in_string) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"')
      in_string = true;
    else if (c == '[' || c == '{')
      max_depth = std::max(max_depth, ++depth);
    else if (c == ']' || c == '}')
      --depth;
    if (max_depth > kMaxDepth) break;
  }
  return max_depth;
}

}  // namespace

Result<nlohmann::json> ParseJsonObject(std::string_view text, std::string_view component, std::string_view what, size_t max_bytes) {
  auto bad = [&](const std::string& why) { return Status::InvalidArgument(component, std::string(what) + ": " + why); };
  if (text.size() > max_bytes) return bad("answer of " + std::to_string(text.size()) + " bytes is over the limit of " + std::to_string(max_bytes));
  if (NestingDepth(text) > kMaxDepth) return bad("JSON nested deeper than " + std::to_string(kMaxDepth) + " levels");
  nlohmann::json j = nlohmann::json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return bad("not valid JSON (or not UTF-8)");
  if (!j.is_object()) return bad("expected a JSON object");
  return j;
}

Result<std::string> JsonString(const nlohmann::json& obj, const char* key, bool required, std::string_view component, std::string_view what) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) {
    if (required) return Status::InvalidArgument(component, std::string(what) + ": missing \"" + key + "\"");
    return std::string();
  }
  if (!it->is_string()) return Status::InvalidArgument(component, std::string(what) + ": \"" + key + "\" is not a string");
  return it->get<std::string>();
}

Result<WallTime> ParseIso8601(std::string_view text) {
  auto bad = [&] {
    return Status::InvalidArgument("time", "\"" + std::string(text.substr(0, 64)) + "\" is not an ISO 8601 UTC time like 2026-11-22T10:00:00Z");
  };
  // YYYY-MM-DDTHH:MM:SS
  if (text.size() < 19) return bad();
  const char* pattern = "dddd-dd-ddTdd:dd:dd";
  for (size_t i = 0; i < 19; ++i) {
    if (pattern[i] == 'd' ? !std::isdigit(static_cast<unsigned char>(text[i])) : text[i] != pattern[i]) return bad();
  }
  auto num = [&](size_t pos, size_t len) {
    int v = 0;
    for (size_t i = pos; i < pos + len; ++i) v = v * 10 + (text[i] - '0');
    return v;
  };
  std::tm tm{};
  tm.tm_year = num(0, 4) - 1900;
  tm.tm_mon = num(5, 2) - 1;
  tm.tm_mday = num(8, 2);
  tm.tm_hour = num(11, 2);
  tm.tm_min = num(14, 2);
  tm.tm_sec = num(17, 2);
  if (tm.tm_mon > 11 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60) return bad();
  size_t i = 19;
  if (i < text.size() && text[i] == '.') {
    ++i;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
  }
  long offset = 0;
  if (i < text.size() && text[i] == 'Z') {
    ++i;
  } else if (i + 6 == text.size() && (text[i] == '+' || text[i] == '-') && text[i + 3] == ':' &&
             std::isdigit(static_cast<unsigned char>(text[i + 1])) && std::isdigit(static_cast<unsigned char>(text[i + 2])) &&
             std::isdigit(static_cast<unsigned char>(text[i + 4])) && std::isdigit(static_cast<unsigned char>(text[i + 5]))) {
    offset = (num(i + 1, 2) * 3600L + num(i + 4, 2) * 60L) * (text[i] == '+' ? 1 : -1);
    i += 6;
  } else {
    return bad();
  }
  if (i != text.size()) return bad();
  std::time_t t = timegm(&tm);
  return std::chrono::system_clock::from_time_t(t - offset);
}

std::string FormatUtc(WallTime t, const char* strftime_format) {
  std::time_t secs = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, strftime_format, &tm);
  return buf;
}

std::string FormatIso8601(WallTime t) { return FormatUtc(t, "%Y-%m-%dT%H:%M:%SZ"); }

}  // namespace dlagent
