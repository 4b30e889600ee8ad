#include "tests/support/sqs_emulator.h"

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string_view>
#include <thread>

namespace dlagent::testing {

std::unique_ptr<SqsEmulator> SqsEmulator::Start(const std::string& work_dir, std::string* error, const std::string& host) {
  const std::string dir = std::string(DLAGENT_SOURCE_DIR) + "/tests/emulators/sqs";
  std::string node;
  const char* path = std::getenv("PATH");
  for (std::string_view rest = path ? path : "/usr/local/bin:/usr/bin"; node.empty() && !rest.empty();) {
    const size_t colon = rest.find(':');
    const std::string candidate = std::string(rest.substr(0, colon)) + "/node";
    if (::access(candidate.c_str(), X_OK) == 0) node = candidate;
    rest = colon == std::string_view::npos ? std::string_view() : rest.substr(colon + 1);
  }
  if (node.empty()) {
    *error = "node is not installed (scripts/test installs it)";
    return nullptr;
  }
  if (!std::filesystem::exists(dir + "/node_modules/fauxqs")) {
    *error = "fauxqs is not installed: run npm ci --prefix tests/emulators/sqs (scripts/test does)";
    return nullptr;
  }
  auto emulator = std::unique_ptr<SqsEmulator>(new SqsEmulator());  // NOLINT(modernize-make-unique): the constructor is private
  const std::string log = work_dir + "/fauxqs.log";
  emulator->process_ = std::make_unique<Subprocess>(std::vector<std::string>{node, dir + "/serve.mjs", "0", host}, std::vector<std::string>{}, log);
  // node starts in about a second; allow 15 s on a loaded machine
  emulator->endpoint_ = emulator->process_->WaitListening(std::chrono::seconds(15));
  if (!emulator->endpoint_.empty()) return emulator;
  if (emulator->process_->Wait(std::chrono::milliseconds(0))) {
    *error = "fauxqs exited: " + emulator->process_->Output();
    return nullptr;
  }
  *error = "fauxqs did not start within 15 s: " + emulator->process_->Output();
  return nullptr;
}

}  // namespace dlagent::testing
