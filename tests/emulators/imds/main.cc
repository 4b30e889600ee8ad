// imds-emulator: serves one instance's metadata, IMDSv2, for tests and the local cluster.
#include <signal.h>

#include <fstream>
#include <iostream>
#include <sstream>

#include <CLI/CLI.hpp>

#include "tests/emulators/imds/imds_emulator.h"

int main(int argc, char** argv) {
  std::string metadata, listen = "127.0.0.1", fault = "none";
  int port = 0, fault_count = -1, delay_ms = 2000;
  CLI::App app{"imds-emulator: an EC2 instance metadata service (IMDSv2) for tests"};
  app.add_option("-m,--metadata", metadata, "JSON file describing the instance")->required()->check(CLI::ExistingFile);
  app.add_option("--listen", listen, "Address to listen on")->capture_default_str();
  app.add_option("-p,--port", port, "Port (0: any free port)")->capture_default_str();
  app.add_option("--fault", fault, "Start with a fault: error500, slow, throttle, token-refused, none")->capture_default_str();
  app.add_option("--fault-count", fault_count, "Requests the fault applies to (-1: all)")->capture_default_str();
  app.add_option("--delay-ms", delay_ms, "Delay of the slow fault")->capture_default_str();
  app.footer(
      "Prints \"listening on http://ADDRESS:PORT\" once it serves. Control: POST /_emulator/fault, /_emulator/spot,\n"
      "/_emulator/events, /_emulator/expire-tokens; GET /_emulator/stats.");
  CLI11_PARSE(app, argc, argv);

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::ifstream in(metadata);
  std::stringstream text;
  text << in.rdbuf();
  auto f = dlagent::testing::ParseImdsFault(fault);
  if (!f.ok()) {
    std::cerr << f.status().ToString() << "\n";
    return 2;
  }
  auto emulator = dlagent::testing::ImdsEmulator::Start(text.str(), listen, port);
  if (!emulator.ok()) {
    std::cerr << emulator.status().ToString() << "\n";
    return 1;
  }
  (*emulator)->SetFault(*f, fault_count, delay_ms);
  std::cout << "listening on " << (*emulator)->endpoint() << std::endl;
  int sig = 0;
  sigwait(&signals, &sig);
  return 0;
}
