// agentctl: talks to the local agentd over its control socket.
#include <iostream>

#include <CLI/CLI.hpp>

#include "agent/ctl/commands.h"
#include "build_info.h"

int main(int argc, char** argv) {
  dlagent::CtlOptions opts;
  CLI::App app{"agentctl: query and control the dlagent agent (agentd) on this node."};
  app.set_version_flag("--client-version", std::string("agentctl ") + dlagent::kVersion);
  app.add_option("-s,--socket", opts.socket, "agentd's control socket")->envname("DLAGENT_SOCKET")->capture_default_str();
  app.add_option("--timeout", opts.timeout, "Deadline for each call to agentd, e.g. 5s, 500ms")->capture_default_str();
  app.require_subcommand(1);
  app.footer("Exit codes: 0 success, 1 agentd unreachable or failed, 2 bad usage or (members) no member matched;\n"
             "wait: 3 timed out, 4 the cluster failed to form, 5 the agent forms no cluster.");

  auto* status = app.add_subcommand("status", "Show the agent's phase, identity, uptime, version and config");
  status->add_flag("--json", opts.json, "Print one JSON object instead of text");
  auto* version = app.add_subcommand("version", "Show agentctl's and agentd's versions");
  version->add_flag("--json", opts.json, "Print one JSON object instead of text");

  auto* members = app.add_subcommand("members", "List the cluster's members as this agent sees them (exit 2: none match)");
  members->add_flag("--json", opts.json, "Print a JSON array instead of a table");
  members->add_option("--status", opts.status_filter, "Only members whose status matches this regular expression (alive, suspect, dead, left)");
  members->add_option("--role", opts.role_filter, "Only members with this role (master, worker)");

  auto* wait = app.add_subcommand("wait", "Block until the cluster is READY (roster sealed, every node prepared), showing progress");
  wait->add_option("--timeout", opts.wait_timeout, "Give up after this long (exit 3), e.g. 10m, 90s")->capture_default_str();
  wait->add_flag("-q,--quiet", opts.quiet, "No progress lines");
  wait->add_flag("--json", opts.json, "When ready, print the status as JSON");
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;
  }
  if (*status) return dlagent::RunStatus(opts, std::cout, std::cerr);
  if (*version) return dlagent::RunVersion(opts, std::cout, std::cerr);
  if (*members) return dlagent::RunMembers(opts, std::cout, std::cerr);
  if (*wait) return dlagent::RunWait(opts, std::cout, std::cerr);
  return 2;
}
