#include "agent/ctl/commands.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <iomanip>
#include <regex>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "agent/ctl/control_client.h"
#include "bootstrap/common/duration.h"

namespace dlagent {
namespace {

Result<std::unique_ptr<ControlClient>> Dial(const CtlOptions& opts) {
  ASSIGN_OR_RETURN(Duration timeout, ParseDuration(opts.timeout));
  return ControlClient::Connect(opts.socket, timeout);
}

int Fail(std::ostream& err, const Status& st) {
  err << "agentctl: " << st.message() << "\n";
  return 1;
}

nlohmann::json ClusterJson(const ClusterSnapshot& c) {
  nlohmann::json roster = nlohmann::json::array();
  for (const RosterMemberSnapshot& m : c.roster) {
    roster.push_back({{"rank", m.rank}, {"instance_id", m.instance_id}, {"ip", m.ip}, {"gpus", m.gpus}, {"role", m.role}, {"prepared", m.prepared}});
  }
  return {{"leader", c.leader},
          {"generation", c.generation},
          {"sealed_by", c.sealed_by},
          {"rank", c.rank},
          {"roster", roster},
          {"failure", c.failure},
          {"alive", c.alive},
          {"expected", c.expected},
          {"deadline_in_ms", c.deadline_in_ms},
          {"sqs_requests", c.sqs_requests},
          {"hellos_sent", c.hellos_sent},
          {"hellos_accepted", c.hellos_accepted},
          {"hellos_refused", c.hellos_refused},
          {"dead", c.dead},
          {"reseal_in_ms", c.reseal_in_ms},
          {"maintenance", c.maintenance}};
}

nlohmann::json ToJson(const StatusSnapshot& s) {
  return {
      {"phase", AgentPhaseName(s.phase)},
      {"phase_detail", s.phase_detail},
      {"identity",
       {{"instance_id", s.identity.instance_id},
        {"instance_type", s.identity.instance_type},
        {"local_ipv4", s.identity.local_ipv4},
        {"region", s.identity.region},
        {"availability_zone", s.identity.availability_zone},
        {"gpu_count", s.identity.gpu_count}}},
      {"uptime_ms", s.uptime_ms},
      {"version", s.version},
      {"config_path", s.config_path},
      {"config_generation", s.config_generation},
      {"cluster_name", s.cluster_name},
      {"pid", s.pid},
      {"started_unix_ms", s.started_unix_ms},
      {"log_level", s.log_level},
      {"socket_path", s.socket_path},
      {"rss_bytes", s.rss_bytes},
      {"heap_in_use_bytes", s.heap_in_use_bytes},
      {"metrics_url", s.metrics_url},
      {"cluster", s.cluster ? ClusterJson(*s.cluster) : nlohmann::json(nullptr)},
  };
}

}  // namespace

std::string FormatStatus(const StatusSnapshot& s) {
  std::string out =
      "agentd " + s.version + " (pid " + std::to_string(s.pid) + "), up " + FormatDuration(std::chrono::milliseconds(s.uptime_ms)) + "\n";
  auto row = [&](const char* name, const std::string& value) { out += "  " + std::string(name) + value + "\n"; };
  const std::string phase(AgentPhaseName(s.phase));
  row("phase:     ", phase + (s.phase_detail.empty() || s.phase_detail == phase ? "" : " (" + s.phase_detail + ")"));
  row("cluster:   ", s.cluster_name);
  if (s.identity.instance_id.empty()) {
    row("instance:  ", "not identified yet");
  } else {
    row("instance:  ", s.identity.instance_id + " " + s.identity.instance_type + " " + s.identity.local_ipv4 + " " + s.identity.availability_zone +
                           ", " + std::to_string(s.identity.gpu_count) + " GPUs");
  }
  row("config:    ",
      (s.config_path.empty() ? std::string("built-in defaults") : s.config_path) + " (generation " + std::to_string(s.config_generation) + ")");
  row("log level: ", s.log_level);
  row("socket:    ", s.socket_path);
  char memory[96];
  std::snprintf(memory, sizeof memory, "%.1f MiB resident, %.1f MiB of heap in use", static_cast<double>(s.rss_bytes) / (1 << 20),
                static_cast<double>(s.heap_in_use_bytes) / (1 << 20));
  row("memory:    ", memory);
  row("metrics:   ", s.metrics_url.empty() ? std::string("not served") : s.metrics_url);
  if (s.cluster) {
    const ClusterSnapshot& c = *s.cluster;
    row("members:   ", std::to_string(c.alive) + " alive of " + std::to_string(c.expected) + " expected; leader " +
                           (c.leader.empty() ? std::string("none") : c.leader));
    row("discovery: ", std::to_string(c.hellos_sent) + " HELLOs sent, " + std::to_string(c.hellos_accepted) + " accepted, " +
                           std::to_string(c.hellos_refused) + " refused; " + std::to_string(c.sqs_requests) + " SQS requests");
    if (!c.failure.empty()) row("failure:   ", c.failure);
    for (const std::string& m : c.maintenance) row("maintenance: ", m);
    if (!c.dead.empty()) {
      std::string dead;
      for (const std::string& d : c.dead) dead += (dead.empty() ? "" : ", ") + d;
      row("degraded:  ", dead + " dead" + (c.reseal_in_ms >= 0 ? "; resealing in " + FormatDuration(std::chrono::milliseconds(c.reseal_in_ms)) : ""));
    }
    if (c.generation > 0) {
      row("roster:    ", "generation " + std::to_string(c.generation) + " (sealed by " + c.sealed_by + "), " + std::to_string(c.roster.size()) +
                             " nodes" + (c.rank >= 0 ? ", this node is rank " + std::to_string(c.rank) : ", this node is not in it"));
      for (const RosterMemberSnapshot& m : c.roster) {
        std::ostringstream line;
        line << "    " << std::left << std::setw(24) << ("deeplearning-worker" + std::to_string(m.rank + 1)) << std::setw(22) << m.instance_id
             << std::setw(17) << m.ip << std::setw(8) << (std::to_string(m.gpus) + " GPUs") << std::setw(8) << m.role
             << (std::find(c.dead.begin(), c.dead.end(), m.instance_id) != c.dead.end() ? "dead"
                 : m.prepared                                                           ? "prepared"
                                                                                        : "preparing");
        out += line.str() + "\n";
      }
    }
  }
  return out;
}

std::string ForTerminal(std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(text.size());
  auto escape = [&](unsigned char c) { out += {'\\', 'x', kHex[c >> 4], kHex[c & 15]}; };
  for (size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if ((c < 0x20 && c != '\t') || c == 0x7f) {
      escape(c);
    } else if (c == 0xc2 && i + 1 < text.size() && static_cast<unsigned char>(text[i + 1]) >= 0x80 &&
               static_cast<unsigned char>(text[i + 1]) <= 0x9f) {
      escape(c);  // U+0080..U+009F: C1 controls (0x9b is CSI) as UTF-8
      escape(static_cast<unsigned char>(text[++i]));
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

int RunWait(const CtlOptions& opts, std::ostream& out, std::ostream& err) {
  Result<Duration> limit = ParseDuration(opts.wait_timeout);
  if (!limit.ok()) {
    err << "agentctl: --timeout: " << limit.status().message() << "\n";
    return 2;
  }
  Result<std::unique_ptr<ControlClient>> client = Dial(opts);
  if (!client.ok()) return Fail(err, client.status());
  const auto deadline = std::chrono::steady_clock::now() + *limit;
  std::string last;
  for (;;) {
    Result<StatusSnapshot> s = (*client)->GetStatus();
    if (!s.ok()) return Fail(err, s.status());
    if (s->phase_detail != last) {
      last = s->phase_detail;
      if (!opts.quiet || s->phase == AgentPhase::kFailed) err << s->phase_detail << "\n";
    }
    if (!s->cluster && s->phase == AgentPhase::kServing) {
      err << "agentctl: this agent forms no cluster (cluster.expected_nodes is 0): nothing to wait for\n";
      return 5;
    }
    if (s->phase == AgentPhase::kReady) {
      if (opts.json) out << ToJson(*s).dump(2) << "\n";
      return 0;
    }
    // failed is not final: the formation heals (a member returns, a replacement joins), so the wait goes on,
    // having printed the reason above, unless asked to end at the first failure.
    const bool failed = s->phase == AgentPhase::kFailed;
    if (failed && opts.fail_fast) {
      err << "agentctl: " << s->phase_detail << "\n";
      return 4;
    }
    if (s->phase == AgentPhase::kStopping) {
      err << "agentctl: agentd is stopping\n";
      return 1;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      err << "agentctl: not ready after " << opts.wait_timeout << (failed ? "; the cluster failed to form: " : " (") << s->phase_detail
          << (failed ? "\n" : ")\n");
      return failed ? 4 : 3;
    }
    std::this_thread::sleep_for(
        std::min<std::chrono::steady_clock::duration>(std::chrono::milliseconds(200), deadline - std::chrono::steady_clock::now()));
  }
}

int RunStatus(const CtlOptions& opts, std::ostream& out, std::ostream& err) {
  Result<std::unique_ptr<ControlClient>> client = Dial(opts);
  if (!client.ok()) return Fail(err, client.status());
  Result<StatusSnapshot> status = (*client)->GetStatus();
  if (!status.ok()) return Fail(err, status.status());
  if (opts.json)
    out << ToJson(*status).dump(2) << "\n";
  else
    out << FormatStatus(*status);
  return 0;
}

int RunPage(const CtlOptions& opts, std::ostream& out, std::ostream& err) {
  Result<std::unique_ptr<ControlClient>> client = Dial(opts);
  if (!client.ok()) return Fail(err, client.status());
  Result<StatusSnapshot> status = (*client)->GetStatus();
  if (!status.ok()) return Fail(err, status.status());
  constexpr std::string_view kSuffix = "/metrics";
  const std::string& m = status->metrics_url;
  if (m.size() <= kSuffix.size() || m.compare(m.size() - kSuffix.size(), kSuffix.size(), kSuffix) != 0) {
    err << "agentctl: the agent serves no status page yet (metrics.enabled = false, or metrics.bind = \"node\" before the node's "
           "address is known; agentctl status says metrics: ...)\n";
    return 1;
  }
  const std::string url = m.substr(0, m.size() - kSuffix.size()) + "/";
  const std::string token_file = PageTokenPath(opts.socket);
  std::ifstream in(token_file);
  std::string token;
  if (in && std::getline(in, token) && !token.empty() &&
      std::all_of(token.begin(), token.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; })) {
    out << url << "#token=" << token << "\n";
  } else {
    out << url << "\n";
    err << "agentctl: without the page token (" << token_file << ", readable by root) the page shows no job output\n";
  }
  return 0;
}

int RunVersion(const CtlOptions& opts, std::ostream& out, std::ostream& err) {
  Result<std::unique_ptr<ControlClient>> client = Dial(opts);
  Result<std::string> agent = client.ok() ? (*client)->GetVersion() : Result<std::string>(client.status());
  if (opts.json) {
    nlohmann::json j = {{"agentctl", kVersion}};
    if (agent.ok()) j["agentd"] = *agent;
    out << j.dump(2) << "\n";
  } else {
    out << "agentctl " << kVersion << "\n";
    if (agent.ok()) out << "agentd " << *agent << "\n";
  }
  return agent.ok() ? 0 : Fail(err, agent.status());
}

}  // namespace dlagent

namespace dlagent {

int RunMembers(const CtlOptions& opts, std::ostream& out, std::ostream& err) {
  std::regex status_re;
  try {
    status_re = std::regex(opts.status_filter.empty() ? ".*" : opts.status_filter, std::regex::extended);
  } catch (const std::regex_error& e) {
    err << "agentctl: --status: \"" << opts.status_filter << "\" is not a regular expression: " << e.what() << "\n";
    return 2;
  }
  Result<std::unique_ptr<ControlClient>> client = Dial(opts);
  if (!client.ok()) return Fail(err, client.status());
  Result<MemberListSnapshot> list = (*client)->ListMembers();
  if (!list.ok()) return Fail(err, list.status());
  if (!list->enabled) {
    err << "agentctl: membership is off on this agent: set gossip.key_file in agentd.toml (see docs/configuration.md)\n";
    return 1;
  }
  std::vector<MemberSnapshot> shown;
  for (const MemberSnapshot& m : list->members) {
    if (!std::regex_match(m.status, status_re)) continue;
    if (!opts.role_filter.empty() && m.role != opts.role_filter) continue;
    shown.push_back(m);
  }
  if (opts.json) {
    nlohmann::json j = nlohmann::json::array();
    for (const MemberSnapshot& m : shown) {
      j.push_back({{"name", m.name},
                   {"address", m.address},
                   {"status", m.status},
                   {"role", m.role},
                   {"gpus", m.gpus},
                   {"availability_zone", m.availability_zone},
                   {"incarnation", m.incarnation},
                   {"last_change_ms_ago", m.last_change_ms_ago},
                   {"flaps", m.flaps},
                   {"version", m.version}});
    }
    out << j.dump(2) << "\n";
  } else {
    std::ostringstream table;
    auto row = [&](const std::string& a, const std::string& b, const std::string& c, const std::string& d, const std::string& e, const std::string& f,
                   const std::string& g, const std::string& h, const std::string& i) {
      table << std::left << std::setw(24) << a << std::setw(22) << b << std::setw(9) << c << std::setw(8) << d << std::setw(6) << e << std::setw(12)
            << f << std::setw(6) << g << std::setw(9) << h << i << "\n";
    };
    row("NAME", "ADDRESS", "STATUS", "ROLE", "GPUS", "AZ", "INC", "CHANGED", "FLAPS");
    for (const MemberSnapshot& m : shown) {
      row(m.name, m.address, m.status, m.role, std::to_string(m.gpus), m.availability_zone.empty() ? "-" : m.availability_zone,
          std::to_string(m.incarnation), FormatDuration(std::chrono::milliseconds(m.last_change_ms_ago)), std::to_string(m.flaps));
    }
    const GossipCounters& c = list->counters;
    table << "gossip: " << c.packets_in << " packets in, " << c.packets_out << " out; dropped unread: " << c.auth_failures
          << " failed authentication, " << c.replays << " replayed or stale, " << c.malformed << " malformed; push-pulls: " << c.push_pulls << " ("
          << c.push_pull_failures << " failed, " << c.push_pulls_refused << " refused)\n";
    out << table.str();
  }
  return shown.empty() ? 2 : 0;
}

}  // namespace dlagent
