// libFuzzer target: the operator's files: agentd.toml (a typo must be an error naming it, never a crash) and
// the cluster key file's text (also what Secrets Manager or SSM returns).
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "agent/daemon/config.h"
#include "agent/daemon/key_source.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto no_env = [](const char*) -> std::optional<std::string> { return std::nullopt; };
  dlagent::Result<dlagent::Config> config = dlagent::ParseConfig(text, "/etc/dlagent/agentd.toml", no_env);
  if (config.ok()) {
    // What the agent does next with a valid file: its key source, read again from the parsed text.
    (void)dlagent::KeySourceOf(config->gossip).Describe();
  } else if (config.status().message().empty()) {
    __builtin_trap();  // a refusal must say why
  }
  (void)dlagent::ParseClusterKeys(text, "fuzz key file");
  (void)dlagent::ParseKeySource(text);
  return 0;
}
