// libFuzzer target: the SQS answer parsers and the message body check on arbitrary bytes.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "bootstrap/aws/sqs_parse.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  // The first line, if any, plays the x-amzn-query-error header.
  size_t nl = text.find('\n');
  std::string_view header = nl == std::string_view::npos ? std::string_view() : text.substr(0, nl);
  std::string_view body = nl == std::string_view::npos ? text : text.substr(nl + 1);
  dlagent::SqsError e = dlagent::ParseSqsError(size ? 400 + data[0] % 200 : 500, header, body);
  (void)dlagent::SqsErrorToStatus(e, "Fuzz");
  (void)dlagent::ParseReceiveMessage(text);
  (void)dlagent::ValidateSqsMessageBody(text);
  return 0;
}
