#pragma once
// SQS (AWS JSON 1.0) answers: errors and received messages. Pure functions, bounded, never throw.

#include <map>
#include <string>
#include <vector>

#include "bootstrap/common/status.h"

namespace dlagent {

enum class SqsErrorCode {
  kUnknown,
  kQueueDoesNotExist,
  kQueueNameExists,
  kInvalidParameterValue,
  kMissingParameter,
  kInvalidMessageContents,
  kReceiptHandleIsInvalid,
  kMessageNotInflight,
  kOverLimit,
  kAccessDenied,
  kInvalidSignature,  // SignatureDoesNotMatch, InvalidClientTokenId, ExpiredToken, ...
  kThrottling,        // every throttling code botocore retries
  kServiceUnavailable,
  kInternalError,
};

struct SqsError {
  SqsErrorCode code = SqsErrorCode::kUnknown;
  std::string name;  // as the service sent it: "QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue"
  std::string message;
  int http_status = 0;
};

// From the HTTP status, the x-amzn-query-error header ("AWS.SimpleQueueService.NonExistentQueue;Sender")
// and the body's "__type" ("com.amazonaws.sqs#QueueDoesNotExist") and "message".
SqsError ParseSqsError(int http_status, std::string_view query_error_header, std::string_view body);
// NotFound, AlreadyExists, InvalidArgument, PermissionDenied, ResourceExhausted (throttled: retryable),
// Unavailable (5xx: retryable), Internal. The message names the action, the error and what to do.
Status SqsErrorToStatus(const SqsError& error, std::string_view action);

struct SqsMessage {
  std::string message_id;
  std::string receipt_handle;
  std::string body;
  bool md5_ok = false;                            // MD5OfBody matched the body (a mismatch means corruption in transit)
  std::map<std::string, std::string> attributes;  // String and Number message attributes
};

Result<std::vector<SqsMessage>> ParseReceiveMessage(std::string_view body);

// The SQS rule for message bodies: 1 to 1 MiB (1,048,576 bytes) of UTF-8 in #x9 #xA #xD #x20-#xD7FF
// #xE000-#xFFFD #x10000-#x10FFFF. InvalidArgument names the offending byte offset.
Status ValidateSqsMessageBody(std::string_view body);

}  // namespace dlagent
