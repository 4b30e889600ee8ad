#pragma once
// MeteredHttpClient: an HttpClient that counts every call it forwards, by service (HttpRequest::service) and
// outcome, and times it (/metrics: dlagent_aws_requests_total, dlagent_aws_request_duration_seconds); a call
// marked HttpRequest::retry also counts as a retry (dlagent_aws_retries_total).
// Outcomes: ok (a 2xx or 3xx answer), throttled (429, or a 400 naming Throttling), error (another answer),
// failed (no answer: could not connect, reset, timed out), cancelled (the agent stops).
//
// Thread safety: Send and counts() from any thread (relaxed atomics; counts() may see a call counted and not
// yet timed).

#include <array>
#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "bootstrap/aws/http_client.h"
#include "bootstrap/common/env.h"

namespace dlagent {

class MeteredHttpClient final : public HttpClient {
 public:
  // env must outlive the client.
  MeteredHttpClient(Env& env, std::unique_ptr<HttpClient> target);
  Result<HttpResponse> Send(const HttpRequest& request) override;

  static constexpr std::array<const char*, 7> kServices = {"imds", "sqs", "secretsmanager", "ssm", "cloudformation", "credentials", "other"};
  static constexpr std::array<const char*, 5> kOutcomes = {"ok", "throttled", "error", "failed", "cancelled"};
  // Upper bounds of the duration buckets, in seconds (a long poll lands in the last ones).
  static constexpr std::array<double, 12> kBuckets = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};

  struct ServiceCounts {
    const char* service;
    std::array<uint64_t, kOutcomes.size()> calls{};
    std::array<uint64_t, kBuckets.size() + 1> buckets{};  // per bucket, not cumulative; the last above 30 s
    double seconds = 0;                                   // every call's duration, summed
    uint64_t retries = 0;                                 // of the calls, those that repeated one that failed
  };
  // The services that were called, in kServices order.
  std::vector<ServiceCounts> counts() const;

 private:
  struct Slot {
    std::array<std::atomic<uint64_t>, kOutcomes.size()> calls{};
    std::array<std::atomic<uint64_t>, kBuckets.size() + 1> buckets{};
    std::atomic<uint64_t> micros{0};
    std::atomic<uint64_t> retries{0};
  };
  Env& env_;
  const std::unique_ptr<HttpClient> target_;
  std::array<Slot, kServices.size()> slots_;
};

}  // namespace dlagent
