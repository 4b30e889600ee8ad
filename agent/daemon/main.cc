// agentd: the dlagent node agent. See docs/operations.md.
#include <malloc.h>
#include <signal.h>

#include <iostream>

#include <CLI/CLI.hpp>

#include "agent/daemon/daemon.h"
#include "bootstrap/common/log.h"
#include "build_info.h"

int main(int argc, char** argv) {
  using namespace dlagent;
  std::string config_path = kDefaultConfigPath;
  std::string log_level;
  bool check_only = false;
  CLI::App app{"agentd: turns this instance into a node of a deep-learning cluster and serves agentctl."};
  app.set_version_flag("--version", std::string("agentd ") + kVersion);
  auto* config_opt = app.add_option("-c,--config", config_path, "Configuration file (TOML)")->capture_default_str();
  app.add_flag("--check-config", check_only, "Validate the configuration, print the result and exit 0 (valid) or 1");
  app.add_option("--log-level", log_level, "Override agent.log_level: trace, debug, info, warn, error");
  app.footer("Signals: SIGHUP reloads the configuration, SIGTERM stops. Docs: docs/configuration.md");
  CLI11_PARSE(app, argc, argv);

  // Two malloc arenas, not glibc's eight per core. The agent's threads are many and short-lived (a job's fan-outs
  // start one per node per call) but allocate little; spread over many arenas, the chunks a job keeps pinned
  // pages in each, and the coordinator's RSS crept with every job (docs/reliability.md, Soak). dlps allocates
  // nothing per message, so its throughput does not depend on this.
  mallopt(M_ARENA_MAX, 2);

  // Before any thread exists, so that only the main loop receives these.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  std::optional<spdlog::level::level_enum> level_override;
  if (!log_level.empty()) {
    Result<spdlog::level::level_enum> level = ParseLogLevel(log_level);
    if (!level.ok()) {
      std::cerr << "agentd: --log-level: " << level.status().message() << "\n";
      return 1;
    }
    level_override = *level;
  }

  std::unique_ptr<Env> env = NewPosixEnv();
  const bool required = config_opt->count() > 0;
  Result<Config> config = LoadConfig(*env, config_path, required, ProcessGetEnv);
  if (check_only) {
    if (!config.ok()) {
      std::cerr << config.status().message() << "\n";
      return 1;
    }
    std::cout << (config->path.empty() ? config_path + ": not found, built-in defaults are valid" : config->path + ": valid") << "\n";
    return 0;
  }
  InitLogging(DetectLogTarget(), level_override.value_or(ParseLogLevel(config.ok() ? config->agent.log_level : "info").value()));
  if (!config.ok()) {
    spdlog::critical("{}", config.status().ToString());
    return 1;
  }
  Daemon daemon(*env, {config_path, required, level_override}, std::move(*config));
  return daemon.Run();
}
