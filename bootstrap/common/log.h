#pragma once
// Logging: spdlog's default logger, writing to the systemd journal with structured fields when run by
// systemd, else to stderr. Code logs with spdlog::info(...) and friends; fields ride along:
//
//   SetLogField("PHASE", "discover");          // every later record carries DLAGENT_PHASE=discover
//   { ScopedLogFields f({{"PEER", id}}); spdlog::warn("peer {} suspect", id); }  // this record only
//
// In the journal each field is DLAGENT_<KEY>; on stderr it is appended as key=value.
// Thread safety: all functions are thread-safe. ScopedLogFields affect only the calling thread.

#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

#include "bootstrap/common/status.h"

namespace dlagent {

enum class LogTarget { kStderr, kJournal };

// kJournal when systemd started us (INVOCATION_ID or JOURNAL_STREAM is set), else kStderr.
LogTarget DetectLogTarget();

// Installs the default logger. Safe to call again (tests); the last call wins.
void InitLogging(LogTarget target, spdlog::level::level_enum level, const std::string& identifier = "agentd");

// "trace", "debug", "info", "warn", "error".
Result<spdlog::level::level_enum> ParseLogLevel(std::string_view name);

// Sets (or with an empty value, clears) a field carried by every later record of the process.
// REQUIRES: key is upper case letters, digits and '_'.
void SetLogField(const std::string& key, const std::string& value);

class ScopedLogFields {
 public:
  explicit ScopedLogFields(std::initializer_list<std::pair<std::string, std::string>> fields);
  ~ScopedLogFields();
  ScopedLogFields(const ScopedLogFields&) = delete;
  ScopedLogFields& operator=(const ScopedLogFields&) = delete;

 private:
  size_t added_;
};

}  // namespace dlagent
