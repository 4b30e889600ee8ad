#pragma once
// SqsClient: the SQS actions the agent uses, over the AWS JSON 1.0 protocol, signed with SigV4.
//
// Thread safety: all methods are thread-safe. Each call is retried as botocore's "standard" mode does
// (3 attempts in all, full-jitter backoff, on throttling, 5xx and network errors); every attempt has a
// deadline (a long poll's wait plus call_timeout).

#include <atomic>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bootstrap/aws/credentials.h"
#include "bootstrap/aws/http_client.h"
#include "bootstrap/aws/imds_client.h"
#include "bootstrap/aws/sqs_parse.h"
#include "bootstrap/common/backoff.h"

namespace dlagent {

struct SqsOptions {
  std::string endpoint;                              // REQUIRED (see ResolveSqsEndpoint)
  std::string region;                                // REQUIRED: the signing region
  Duration call_timeout = std::chrono::seconds(10);  // Default: 10 s per attempt, on top of a long poll's wait.
  BackoffPolicy retry{std::chrono::seconds(1), std::chrono::seconds(20), 2.0, 3, std::chrono::minutes(2)};  // botocore standard
  const std::atomic<bool>* cancel = nullptr;  // Default: none. When it turns true, calls end with Cancelled.
};

// The endpoint from the configuration (which already holds AWS_ENDPOINT_URL_SQS / AWS_ENDPOINT_URL), else
// https://sqs.<region>.amazonaws.com. InvalidArgument when the region is unknown.
Result<std::string> ResolveSqsEndpoint(const std::string& configured_endpoint, const std::string& region);

// The region as the SDKs find it: configured (aws.region, which AWS_REGION / AWS_DEFAULT_REGION override),
// else the instance's own region from IMDS (imds may be null: no IMDS).
Result<std::string> ResolveAwsRegion(const std::string& configured_region, ImdsClient* imds);

struct ReceiveOptions {
  int max_messages = 10;                       // Default: 10 (1..10).
  Duration wait = std::chrono::seconds(20);    // Default: 20 s long poll (0..20 s).
  std::optional<Duration> visibility_timeout;  // Default: the queue's.
  // Default: the client's (SqsOptions::cancel). When it turns true, this receive and its retries end with
  // Cancelled: a long poll its caller no longer wants.
  const std::atomic<bool>* cancel = nullptr;
};

class SqsClient {
 public:
  // http, credentials and env must outlive the client.
  SqsClient(HttpClient& http, CredentialsProvider& credentials, Env& env, SqsOptions options);

  Result<std::string> GetQueueUrl(const std::string& queue_name);
  // Creates the queue, or returns the URL of an existing one with the same attributes.
  Result<std::string> CreateQueue(const std::string& queue_name, const std::map<std::string, std::string>& attributes = {});
  // Returns the message id. The body is checked against SQS's size and character rules before sending.
  Result<std::string> SendMessage(const std::string& queue_url, const std::string& body,
                                  const std::map<std::string, std::string>& string_attributes = {});
  // An empty list when the long poll ends without messages.
  Result<std::vector<SqsMessage>> ReceiveMessage(const std::string& queue_url, const ReceiveOptions& options = {});
  Status DeleteMessage(const std::string& queue_url, const std::string& receipt_handle);
  Status ChangeMessageVisibility(const std::string& queue_url, const std::string& receipt_handle, Duration timeout);

  // HTTP requests sent so far, retries included.
  uint64_t requests() const { return requests_.load(); }

 private:
  Result<nlohmann::json> Call(const std::string& action, const nlohmann::json& input, Duration extra_timeout,
                              const std::atomic<bool>* cancel = nullptr);

  HttpClient& http_;
  CredentialsProvider& credentials_;
  Env& env_;
  const SqsOptions options_;
  std::string host_header_;
  std::string path_;
  std::atomic<uint64_t> requests_{0};
};

}  // namespace dlagent
