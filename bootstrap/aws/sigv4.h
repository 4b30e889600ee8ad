#pragma once
// AWS Signature Version 4 (header signing), checked against the AWS SigV4 test suite.
//
// Thread safety: pure functions.

#include <atomic>
#include <string>

#include "bootstrap/aws/http_client.h"

namespace dlagent {

struct AwsCredentials {
  std::string access_key_id;
  std::string secret_access_key;
  std::string session_token;           // "" for long-term keys
  std::optional<WallTime> expiration;  // none for long-term keys
  std::string source;                  // "environment", "container", "imds:<role>": for logs, never the secret
};

struct SigV4Request {
  std::string method;
  std::string path;     // as on the request line: raw or percent-encoded, not yet normalised
  std::string query;    // without '?'
  HttpHeaders headers;  // must include Host
  std::string body;
};

struct SigV4Signature {
  std::string canonical_request;
  std::string string_to_sign;
  std::string signature;      // hex
  std::string authorization;  // the Authorization header value
  HttpHeaders added_headers;  // X-Amz-Date and X-Amz-Security-Token when the request lacked them
};

// Signs at time `now` for region and service. Headers named in the request are all signed. Adds (in
// added_headers, and signs) X-Amz-Date when absent, and X-Amz-Security-Token when the credentials carry a
// token and the request lacks it.
SigV4Signature SignV4(const SigV4Request& request, const AwsCredentials& credentials, const std::string& region, const std::string& service,
                      WallTime now);

// One signed POST of a JSON body to an AWS service, the request shape the JSON protocols share (SQS's 1.0,
// Secrets Manager's and SSM's 1.1): Host, Content-Type and X-Amz-Target, the extra headers, then the SigV4
// headers for `now`. The caller retries (signing anew each time: the date is signed).
struct SignedJsonPost {
  std::string url;          // the endpoint
  std::string host_header;  // Url::HostHeader() of it
  std::string path;         // its path
  std::string region, service;
  std::string content_type;  // "application/x-amz-json-1.0" or "-1.1"
  std::string target;        // "AmazonSQS.SendMessage"
  HttpHeaders extra_headers;
  Duration timeout = std::chrono::seconds(10);
  const std::atomic<bool>* cancel = nullptr;
  size_t max_response_bytes = 1 << 20;
  bool retry = false;  // HttpRequest::retry
};
Result<HttpResponse> SendSignedJson(HttpClient& http, const AwsCredentials& credentials, WallTime now, const SignedJsonPost& post,
                                    const std::string& body);

// "20150830T123600Z".
std::string FormatAmzDate(WallTime t);

// RFC 3986 percent-encoding of every byte but A-Z a-z 0-9 - _ . ~ (and '/' when keep_slash).
std::string UriEncode(std::string_view s, bool keep_slash);

}  // namespace dlagent
