#pragma once
// HttpClient: the one seam through which the agent speaks HTTP (IMDS, SQS, CloudFormation, credentials).
//
// Thread safety: implementations are safe to call from many threads at once.
// Every request carries its own deadlines; no call can wait longer than `timeout`.

#include <atomic>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bootstrap/common/env.h"

namespace dlagent {

using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

struct HttpRequest {
  std::string method = "GET";
  std::string url;
  HttpHeaders headers;  // sent as given; no Content-Type is added unless listed here
  std::string body;
  Duration connect_timeout = std::chrono::seconds(2);  // Default: 2 s.
  Duration timeout = std::chrono::seconds(10);         // Default: 10 s, the whole exchange.
  size_t max_response_bytes = 2 << 20;                 // Default: 2 MiB; a larger body fails the call.
  // When set and it turns true, the call ends with Cancelled within about a second (a long poll at shutdown).
  const std::atomic<bool>* cancel = nullptr;
  // Whom the call is for, as /metrics counts it (MeteredHttpClient): imds, sqs, secretsmanager, ssm,
  // cloudformation, credentials. A constant: no label grows with the calls.
  const char* service = "other";
  // This call repeats one that failed (a retry loop's second or later attempt): /metrics counts retries apart.
  bool retry = false;
};

struct HttpResponse {
  int status = 0;
  HttpHeaders headers;  // names in lower case
  std::string body;
  // The first header with this (lower-case) name, or "".
  std::string Header(std::string_view name) const;
};

// Errors: Unavailable (could not connect, connection reset: worth a retry), DeadlineExceeded,
// ResourceExhausted (response over max_response_bytes), InvalidArgument (bad URL), Cancelled (req.cancel). An HTTP error status is
// not an error here: it comes back in HttpResponse::status.
class HttpClient {
 public:
  virtual ~HttpClient() = default;
  virtual Result<HttpResponse> Send(const HttpRequest& request) = 0;
};

struct CurlOptions {
  bool reuse_connections = true;  // Default: keep-alive; false opens a new connection per request.
  size_t max_idle_handles = 8;    // Default: 8 handles (and their connections) kept for reuse.
};

std::unique_ptr<HttpClient> NewCurlHttpClient(const CurlOptions& options = {});

struct Url {
  std::string scheme;  // "http" or "https"
  std::string host;    // without brackets for IPv6
  int port = 0;        // explicit or the scheme's default
  bool explicit_port = false;
  std::string path;   // "/" at least
  std::string query;  // without '?'
  // Host header value: host, plus ":port" when the URL named one.
  std::string HostHeader() const;
};
Result<Url> ParseUrl(std::string_view url);

}  // namespace dlagent
