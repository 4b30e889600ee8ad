#include "bootstrap/aws/sqs_parse.h"

#include "bootstrap/aws/aws_json.h"
#include "bootstrap/common/crypto.h"

namespace dlagent {
namespace {

constexpr std::string_view kSqs = "sqs";
constexpr size_t kMaxMessageBytes = 1 << 20;

struct CodeName {
  const char* name;
  SqsErrorCode code;
};

constexpr CodeName kCodes[] = {
    {"QueueDoesNotExist", SqsErrorCode::kQueueDoesNotExist},
    {"AWS.SimpleQueueService.NonExistentQueue", SqsErrorCode::kQueueDoesNotExist},
    {"QueueNameExists", SqsErrorCode::kQueueNameExists},
    {"QueueAlreadyExists", SqsErrorCode::kQueueNameExists},
    {"InvalidParameterValue", SqsErrorCode::kInvalidParameterValue},
    {"InvalidAttributeName", SqsErrorCode::kInvalidParameterValue},
    {"InvalidAttributeValue", SqsErrorCode::kInvalidParameterValue},
    {"InvalidAddress", SqsErrorCode::kInvalidParameterValue},
    {"MissingParameter", SqsErrorCode::kMissingParameter},
    {"MissingRequiredParameterException", SqsErrorCode::kMissingParameter},
    {"InvalidMessageContents", SqsErrorCode::kInvalidMessageContents},
    {"ReceiptHandleIsInvalid", SqsErrorCode::kReceiptHandleIsInvalid},
    {"InvalidIdFormat", SqsErrorCode::kReceiptHandleIsInvalid},
    {"MessageNotInflight", SqsErrorCode::kMessageNotInflight},
    {"AWS.SimpleQueueService.MessageNotInflight", SqsErrorCode::kMessageNotInflight},
    {"OverLimit", SqsErrorCode::kOverLimit},
    {"AccessDenied", SqsErrorCode::kAccessDenied},
    {"AccessDeniedException", SqsErrorCode::kAccessDenied},
    {"SignatureDoesNotMatch", SqsErrorCode::kInvalidSignature},
    {"InvalidClientTokenId", SqsErrorCode::kInvalidSignature},
    {"InvalidSecurity", SqsErrorCode::kInvalidSignature},
    {"ExpiredToken", SqsErrorCode::kInvalidSignature},
    {"IncompleteSignature", SqsErrorCode::kInvalidSignature},
    // Throttling codes that botocore's standard retry mode retries.
    {"Throttling", SqsErrorCode::kThrottling},
    {"ThrottlingException", SqsErrorCode::kThrottling},
    {"ThrottledException", SqsErrorCode::kThrottling},
    {"RequestThrottledException", SqsErrorCode::kThrottling},
    {"TooManyRequestsException", SqsErrorCode::kThrottling},
    {"ProvisionedThroughputExceededException", SqsErrorCode::kThrottling},
    {"TransactionInProgressException", SqsErrorCode::kThrottling},
    {"RequestLimitExceeded", SqsErrorCode::kThrottling},
    {"BandwidthLimitExceeded", SqsErrorCode::kThrottling},
    {"LimitExceededException", SqsErrorCode::kThrottling},
    {"RequestThrottled", SqsErrorCode::kThrottling},
    {"SlowDown", SqsErrorCode::kThrottling},
    {"PriorRequestNotComplete", SqsErrorCode::kThrottling},
    {"EC2ThrottledException", SqsErrorCode::kThrottling},
    {"KmsThrottled", SqsErrorCode::kThrottling},
    {"ServiceUnavailable", SqsErrorCode::kServiceUnavailable},
    {"AWS.SimpleQueueService.ServiceUnavailable", SqsErrorCode::kServiceUnavailable},
    {"RequestTimeout", SqsErrorCode::kServiceUnavailable},
    {"RequestTimeoutException", SqsErrorCode::kServiceUnavailable},
    {"InternalError", SqsErrorCode::kInternalError},
    {"InternalFailure", SqsErrorCode::kInternalError},
};

SqsErrorCode Classify(std::string_view name) {
  for (const auto& c : kCodes) {
    if (name == c.name) return c.code;
  }
  return SqsErrorCode::kUnknown;
}

}  // namespace

SqsError ParseSqsError(int http_status, std::string_view query_error_header, std::string_view body) {
  SqsError e;
  e.http_status = http_status;
  Result<nlohmann::json> j = ParseJsonObject(body, kSqs, "error", 64 << 10);
  if (j.ok()) {
    Result<std::string> type = JsonString(*j, "__type", false, kSqs, "error");
    if (type.ok()) e.name = type->substr(type->rfind('#') == std::string::npos ? 0 : type->rfind('#') + 1, 128);
    for (const char* key : {"message", "Message"}) {
      Result<std::string> m = JsonString(*j, key, false, kSqs, "error");
      if (m.ok() && !m->empty()) e.message = m->substr(0, 1024);
    }
  }
  // The query-compatible code in the header is the one the SDKs report, when present.
  const std::string_view header = query_error_header.substr(0, std::min<size_t>(128, query_error_header.find(';')));
  if (!header.empty()) e.name = std::string(header);
  e.code = Classify(e.name);
  if (e.code == SqsErrorCode::kUnknown) {
    if (http_status == 429)
      e.code = SqsErrorCode::kThrottling;
    else if (http_status == 502 || http_status == 503 || http_status == 504)
      e.code = SqsErrorCode::kServiceUnavailable;
    else if (http_status >= 500)
      e.code = SqsErrorCode::kInternalError;
  }
  if (e.name.empty()) e.name = "HTTP " + std::to_string(http_status);
  return e;
}

Status SqsErrorToStatus(const SqsError& e, std::string_view action) {
  std::string what = std::string(action) + ": " + e.name + (e.message.empty() ? "" : ": " + e.message);
  switch (e.code) {
    case SqsErrorCode::kQueueDoesNotExist: return Status::NotFound(kSqs, what + " (check the queue name and region)");
    case SqsErrorCode::kQueueNameExists: return Status::AlreadyExists(kSqs, what);
    case SqsErrorCode::kInvalidParameterValue:
    case SqsErrorCode::kMissingParameter:
    case SqsErrorCode::kInvalidMessageContents:
    case SqsErrorCode::kReceiptHandleIsInvalid:
    case SqsErrorCode::kMessageNotInflight: return Status::InvalidArgument(kSqs, what);
    case SqsErrorCode::kOverLimit: return Status::ResourceExhausted(kSqs, what);
    case SqsErrorCode::kAccessDenied:
    case SqsErrorCode::kInvalidSignature:
      return Status::PermissionDenied(kSqs, what + " (check the instance role's sqs:* permissions and the clock)");
    case SqsErrorCode::kThrottling: return Status::ResourceExhausted(kSqs, what);
    case SqsErrorCode::kServiceUnavailable:
    case SqsErrorCode::kInternalError: return Status::Unavailable(kSqs, what);
    case SqsErrorCode::kUnknown: break;
  }
  if (e.http_status >= 500) return Status::Unavailable(kSqs, what);
  return Status::Internal(kSqs, what);
}

Result<std::vector<SqsMessage>> ParseReceiveMessage(std::string_view body) {
  constexpr std::string_view what = "ReceiveMessage answer";
  // Ten messages of up to 1 MiB each, plus JSON escaping.
  ASSIGN_OR_RETURN(nlohmann::json j, ParseJsonObject(body, kSqs, what, 24 << 20));
  std::vector<SqsMessage> out;
  auto it = j.find("Messages");
  if (it == j.end() || it->is_null()) return out;
  if (!it->is_array()) return Status::InvalidArgument(kSqs, std::string(what) + ": Messages is not an array");
  if (it->size() > 10) return Status::InvalidArgument(kSqs, std::string(what) + ": more than 10 messages");
  for (const auto& m : *it) {
    if (!m.is_object()) return Status::InvalidArgument(kSqs, std::string(what) + ": a message is not an object");
    SqsMessage msg;
    ASSIGN_OR_RETURN(msg.message_id, JsonString(m, "MessageId", true, kSqs, what));
    ASSIGN_OR_RETURN(msg.receipt_handle, JsonString(m, "ReceiptHandle", true, kSqs, what));
    ASSIGN_OR_RETURN(msg.body, JsonString(m, "Body", true, kSqs, what));
    ASSIGN_OR_RETURN(std::string md5, JsonString(m, "MD5OfBody", false, kSqs, what));
    msg.md5_ok = md5 == HexEncode(Md5(msg.body));
    if (auto attrs = m.find("MessageAttributes"); attrs != m.end() && attrs->is_object()) {
      for (const auto& [name, value] : attrs->items()) {
        // String and Number attributes carry StringValue; Binary ones are not used by the agent.
        if (!value.is_object() || !value.contains("StringValue") || !value["StringValue"].is_string()) continue;
        msg.attributes[name] = value["StringValue"].get<std::string>();
      }
    }
    out.push_back(std::move(msg));
  }
  return out;
}

Status ValidateSqsMessageBody(std::string_view body) {
  if (body.empty()) return Status::InvalidArgument(kSqs, "message body is empty");
  if (body.size() > kMaxMessageBytes) {
    return Status::InvalidArgument(kSqs, "message body of " + std::to_string(body.size()) + " bytes is over the SQS limit of 1 MiB");
  }
  const auto* s = reinterpret_cast<const unsigned char*>(body.data());
  size_t i = 0;
  auto bad = [&](const char* why) {
    return Status::InvalidArgument(kSqs, "message body has " + std::string(why) + " at byte " + std::to_string(i) +
                                             "; SQS accepts UTF-8 text without control characters other than tab, LF and CR");
  };
  while (i < body.size()) {
    unsigned char c = s[i];
    uint32_t cp;
    size_t len;
    if (c < 0x80)
      cp = c, len = 1;
    else if ((c & 0xE0) == 0xC0)
      cp = c & 0x1F, len = 2;
    else if ((c & 0xF0) == 0xE0)
      cp = c & 0x0F, len = 3;
    else if ((c & 0xF8) == 0xF0)
      cp = c & 0x07, len = 4;
    else
      return bad("invalid UTF-8");
    if (i + len > body.size()) return bad("truncated UTF-8");
    for (size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return bad("invalid UTF-8");
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    // Overlong forms and surrogates are not valid UTF-8.
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000)) return bad("invalid UTF-8");
    const bool allowed =
        cp == 0x9 || cp == 0xA || cp == 0xD || (cp >= 0x20 && cp <= 0xD7FF) || (cp >= 0xE000 && cp <= 0xFFFD) || (cp >= 0x10000 && cp <= 0x10FFFF);
    if (!allowed) return bad("a character SQS does not allow");
    i += len;
  }
  return Status::Ok();
}

}  // namespace dlagent
