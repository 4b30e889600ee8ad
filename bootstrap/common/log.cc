#include "bootstrap/common/log.h"

#include <sys/uio.h>
#include <systemd/sd-journal.h>

#include <cstdlib>
#include <map>
#include <mutex>

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/base_sink.h>

namespace dlagent {
namespace {

using Fields = std::vector<std::pair<std::string, std::string>>;

std::mutex g_fields_mu;
std::map<std::string, std::string> g_fields;  // protected by g_fields_mu
thread_local Fields t_fields;

// The fields of a record: the process-wide ones, then this thread's (later ones win in the journal).
Fields CurrentFields() {
  Fields out;
  {
    std::lock_guard<std::mutex> lock(g_fields_mu);
    out.assign(g_fields.begin(), g_fields.end());
  }
  out.insert(out.end(), t_fields.begin(), t_fields.end());
  return out;
}

int SyslogPriority(spdlog::level::level_enum level) {
  switch (level) {
    case spdlog::level::trace:
    case spdlog::level::debug: return 7;
    case spdlog::level::info: return 6;
    case spdlog::level::warn: return 4;
    case spdlog::level::err: return 3;
    case spdlog::level::critical: return 2;
    default: return 6;
  }
}

class JournalSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit JournalSink(std::string identifier) : identifier_(std::move(identifier)) {}

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    std::vector<std::string> parts;
    parts.push_back("MESSAGE=" + std::string(msg.payload.data(), msg.payload.size()));
    parts.push_back("PRIORITY=" + std::to_string(SyslogPriority(msg.level)));
    parts.push_back("SYSLOG_IDENTIFIER=" + identifier_);
    if (!msg.source.empty()) {
      parts.push_back(std::string("CODE_FILE=") + msg.source.filename);
      parts.push_back("CODE_LINE=" + std::to_string(msg.source.line));
    }
    for (const auto& [k, v] : CurrentFields()) parts.push_back("DLAGENT_" + k + "=" + v);
    std::vector<iovec> iov;
    for (auto& p : parts) iov.push_back({p.data(), p.size()});
    sd_journal_sendv(iov.data(), static_cast<int>(iov.size()));
  }
  void flush_() override {}

 private:
  std::string identifier_;
};

class StderrSink final : public spdlog::sinks::base_sink<std::mutex> {
 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t buf;
    formatter_->format(msg, buf);
    std::string line(buf.data(), buf.size());
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
    for (const auto& [k, v] : CurrentFields()) {
      line += ' ';
      for (char c : k) line += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      line += '=';
      line += v;
    }
    line += '\n';
    std::fwrite(line.data(), 1, line.size(), stderr);
  }
  void flush_() override { std::fflush(stderr); }
};

}  // namespace

LogTarget DetectLogTarget() {
  if (std::getenv("INVOCATION_ID") || std::getenv("JOURNAL_STREAM")) return LogTarget::kJournal;
  return LogTarget::kStderr;
}

void InitLogging(LogTarget target, spdlog::level::level_enum level, const std::string& identifier) {
  spdlog::sink_ptr sink;
  if (target == LogTarget::kJournal) {
    sink = std::make_shared<JournalSink>(identifier);
  } else {
    sink = std::make_shared<StderrSink>();
    sink->set_pattern("%Y-%m-%dT%H:%M:%S.%e %L %v");
  }
  auto logger = std::make_shared<spdlog::logger>(identifier, sink);
  logger->set_level(level);
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(logger);
}

Result<spdlog::level::level_enum> ParseLogLevel(std::string_view name) {
  if (name == "trace") return spdlog::level::trace;
  if (name == "debug") return spdlog::level::debug;
  if (name == "info") return spdlog::level::info;
  if (name == "warn") return spdlog::level::warn;
  if (name == "error") return spdlog::level::err;
  return Status::InvalidArgument("log", "unknown log level \"" + std::string(name) + "\"; use trace, debug, info, warn or error");
}

void SetLogField(const std::string& key, const std::string& value) {
  std::lock_guard<std::mutex> lock(g_fields_mu);
  if (value.empty())
    g_fields.erase(key);
  else
    g_fields[key] = value;
}

ScopedLogFields::ScopedLogFields(std::initializer_list<std::pair<std::string, std::string>> fields) : added_(fields.size()) {
  t_fields.insert(t_fields.end(), fields.begin(), fields.end());
}

ScopedLogFields::~ScopedLogFields() { t_fields.resize(t_fields.size() - added_); }

}  // namespace dlagent
