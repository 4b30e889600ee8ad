// libFuzzer target: every IMDS answer parser on arbitrary bytes. They must return errors, never crash,
// hang or read out of bounds.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "bootstrap/aws/aws_json.h"
#include "bootstrap/aws/imds_parse.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  (void)dlagent::ParseIdentityDocument(text);
  (void)dlagent::ParseImdsCredentials(text, "role");
  (void)dlagent::ParseSpotNotice(text);
  (void)dlagent::ParseScheduledEvents(text);
  (void)dlagent::ParseIso8601(text);
  return 0;
}
