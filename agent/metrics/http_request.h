#pragma once
// The HTTP/1.x that /metrics and the status page need, and no more: a request head is parsed (GET and HEAD are
// all the server serves; anything else is answered, never crashed on) and a whole reply is written at once
// with Connection: close. Pure functions, fuzzed (tests/fuzz/http_request_fuzz.cc).
//
// Thread safety: functions only.

#include <cstddef>
#include <string>
#include <string_view>

#include "bootstrap/common/status.h"

namespace dlagent::metrics {

struct HttpRequest {
  std::string method;         // as sent: a token (the server answers 405 to all but GET and HEAD)
  std::string path;           // origin-form, before any '?'; starts with '/'
  std::string query;          // after '?', undecoded; "" when none
  std::string authorization;  // the Authorization header's value, without surrounding spaces; "" when none
};

// Where the head in buf ends: the offset just past the blank line ("\r\n\r\n", or "\n\n" from a lenient
// client), or 0 while it is incomplete.
size_t RequestHeadEnd(std::string_view buf);

// Parses a request head (the request line, the header lines and the blank line). InvalidArgument names what is
// wrong: a request line that is not "METHOD TARGET HTTP/1.x", a target that is not a path, a header line
// without a name and a colon, control characters.
Result<HttpRequest> ParseRequestHead(std::string_view head);

struct HttpReply {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::string allow;  // the Allow header of a 405; "" for none
};

// The reply as sent: status line, Content-Type, Content-Length, Cache-Control: no-store, X-Content-Type-Options:
// nosniff, a Content-Security-Policy that allows scripts, styles and requests to this origin only and no
// framing, Connection: close, the body unless head_only.
std::string FormatReply(const HttpReply& reply, bool head_only);

}  // namespace dlagent::metrics
