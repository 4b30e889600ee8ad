#include "bootstrap/aws/cfn_signal.h"

#include <nlohmann/json.hpp>

namespace dlagent {
namespace {
constexpr std::string_view kCfn = "cloudformation";
}  // namespace

std::string WaitConditionBody(const WaitConditionSignal& s) {
  nlohmann::json j = {{"Status", s.status}, {"Reason", s.reason}, {"UniqueId", s.unique_id}, {"Data", s.data}};
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

Status SignalWaitHandle(HttpClient& http, Env& env, const std::string& url, const WaitConditionSignal& signal, const BackoffPolicy& retry,
                        const std::atomic<bool>* cancel) {
  if (signal.status != "SUCCESS" && signal.status != "FAILURE") {
    return Status::InvalidArgument(kCfn, "wait condition status \"" + signal.status + "\" must be SUCCESS or FAILURE");
  }
  if (signal.unique_id.empty()) return Status::InvalidArgument(kCfn, "wait condition signal needs a UniqueId");
  RETURN_IF_ERROR(ParseUrl(url).status());
  HttpRequest req;
  req.method = "PUT";
  req.url = url;
  req.body = WaitConditionBody(signal);
  req.timeout = std::chrono::seconds(15);
  req.max_response_bytes = 64 << 10;
  req.cancel = cancel;
  req.service = "cloudformation";
  int attempt = 0;
  return Retry(
      env, retry,
      [&]() -> Status {
        req.retry = attempt++ > 0;
        ASSIGN_OR_RETURN(HttpResponse resp, http.Send(req));
        if (resp.status >= 200 && resp.status < 300) return Status::Ok();
        if (resp.status == 403) {
          return Status::PermissionDenied(kCfn,
                                          "the wait handle refused the signal (403): its presigned URL has expired or "
                                          "was altered; signal the stack by hand or recreate the wait handle");
        }
        if (resp.status >= 500 || resp.status == 429) {
          return Status::Unavailable(kCfn, "wait handle answered " + std::to_string(resp.status));
        }
        return Status::InvalidArgument(kCfn, "wait handle answered " + std::to_string(resp.status) + ": " + resp.body.substr(0, 200));
      },
      cancel);
}

}  // namespace dlagent
