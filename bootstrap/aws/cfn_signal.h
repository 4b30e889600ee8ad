#pragma once
// CloudFormation wait condition signal: a PUT of {"Status","Reason","UniqueId","Data"} to the wait
// handle's presigned URL, retried on network errors and 5xx.

#include <string>

#include "bootstrap/aws/http_client.h"
#include "bootstrap/common/backoff.h"

namespace dlagent {

struct WaitConditionSignal {
  std::string status;  // "SUCCESS" or "FAILURE"
  std::string reason;
  std::string unique_id;  // CloudFormation counts signals by distinct UniqueId
  std::string data;
};

// The JSON document CloudFormation expects.
std::string WaitConditionBody(const WaitConditionSignal& signal);

// PermissionDenied when the URL is refused (403: expired or altered presigned URL); InvalidArgument for a
// bad status or URL; the last error once the retry budget is spent.
// cancel: when it turns true, the signal gives up within about a second (Cancelled).
Status SignalWaitHandle(HttpClient& http, Env& env, const std::string& url, const WaitConditionSignal& signal,
                        const BackoffPolicy& retry = {std::chrono::seconds(1), std::chrono::seconds(10), 2.0, 6, std::chrono::minutes(2)},
                        const std::atomic<bool>* cancel = nullptr);

}  // namespace dlagent
