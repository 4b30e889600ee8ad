#pragma once
// agentctl's commands, apart from argument parsing so that tests can run them. Each returns the exit code
// (0 ok, 1 agentd unreachable or failed) and writes results to out, errors (one line) to err.

#include <ostream>
#include <string>
#include <string_view>

#include "agent/rpc/control_handler.h"
#include "build_info.h"

namespace dlagent {

struct CtlOptions {
  std::string socket = kDefaultSocketPath;
  std::string timeout = "5s";
  bool json = false;
  std::string status_filter;         // members: a regular expression over the status
  std::string role_filter;           // members: an exact role
  std::string wait_timeout = "30m";  // wait: how long to wait for READY
  bool quiet = false;                // wait: no progress lines (a failure is still named)
  bool fail_fast = false;            // wait: end at the first failed formation instead of waiting for it to heal
};

int RunStatus(const CtlOptions& opts, std::ostream& out, std::ostream& err);
int RunVersion(const CtlOptions& opts, std::ostream& out, std::ostream& err);
// Exit code 2 when no member matches the filters (as `consul members` does).
int RunMembers(const CtlOptions& opts, std::ostream& out, std::ostream& err);

// Blocks until the agent is READY, printing each new phase line on err. A failed formation does not end the
// wait (it heals when members return), unless opts.fail_fast. Exit codes: 0 ready, 1 agentd unreachable or
// stopping, 2 bad usage, 3 timed out, 4 the cluster failed to form (with fail_fast at once; else failed still
// at the timeout), 5 the agent forms no cluster.
int RunWait(const CtlOptions& opts, std::ostream& out, std::ostream& err);
// Text a user or a job chose, safe to print on a terminal: control characters (C0 but tab, DEL, and C1 in UTF-8)
// become \xHH, so an escape sequence shows instead of acting. Other UTF-8 is kept.
std::string ForTerminal(std::string_view text);

// The status page's URL (docs/operations.md, "Status page"), with the page token in its fragment when the
// caller can read the token file beside the socket (root): the page then shows the output of jobs. Exit 1 when
// the agent serves no page.
int RunPage(const CtlOptions& opts, std::ostream& out, std::ostream& err);

// The human form of `agentctl status`.
std::string FormatStatus(const StatusSnapshot& s);

}  // namespace dlagent
