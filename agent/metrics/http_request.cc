#include "agent/metrics/http_request.h"

#include <string>

namespace dlagent::metrics {
namespace {

constexpr std::string_view kComponent = "http";
// The status page's scripts and styles come from the agent only (no inline code, nothing from elsewhere), and
// no other site may frame it.
constexpr std::string_view kPolicy =
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'";

bool TokenChar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool Token(std::string_view s) {
  if (s.empty()) return false;
  for (const char c : s) {
    if (!TokenChar(c)) return false;
  }
  return true;
}

// Visible ASCII (a target has no spaces, controls or bytes above 0x7e).
bool Visible(std::string_view s) {
  for (const char c : s) {
    if (c <= 0x20 || c >= 0x7f) return false;
  }
  return true;
}

// Printable text with tabs, or bytes above 0x7f (obs-text): a header value.
bool FieldValue(std::string_view s) {
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && u != '\t') || u == 0x7f) return false;
  }
  return true;
}

bool EqualNoCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    const char x = (a[i] >= 'A' && a[i] <= 'Z') ? static_cast<char>(a[i] - 'A' + 'a') : a[i];
    if (x != b[i]) return false;
  }
  return true;
}

std::string Trimmed(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return std::string(s);
}

std::string Shown(std::string_view s) {
  constexpr size_t kMax = 64;
  std::string out;
  for (const char c : s.substr(0, kMax)) out += (c >= 0x20 && c < 0x7f) ? c : '?';
  if (s.size() > kMax) out += "...";
  return out;
}

// The next line of text without its "\r\n" or "\n"; advances text.
std::string_view NextLine(std::string_view& text) {
  const size_t nl = text.find('\n');
  std::string_view line = text.substr(0, nl);
  text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  return line;
}

std::string_view Reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Unknown";
  }
}

}  // namespace

size_t RequestHeadEnd(std::string_view buf) {
  for (size_t i = buf.find('\n'); i != std::string_view::npos; i = buf.find('\n', i + 1)) {
    if (i + 1 < buf.size() && buf[i + 1] == '\n') return i + 2;
    if (i + 2 < buf.size() && buf[i + 1] == '\r' && buf[i + 2] == '\n') return i + 3;
  }
  return 0;
}

Result<HttpRequest> ParseRequestHead(std::string_view head) {
  std::string_view rest = head;
  // RFC 9112 2.2: a server should ignore empty lines before the request line.
  std::string_view line = NextLine(rest);
  while (line.empty() && !rest.empty()) line = NextLine(rest);
  const size_t sp1 = line.find(' ');
  const size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
    return Status::InvalidArgument(kComponent, "request line \"" + Shown(line) + "\" is not METHOD TARGET HTTP/1.x");
  }
  const std::string_view method = line.substr(0, sp1);
  const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = line.substr(sp2 + 1);
  if (!Token(method)) return Status::InvalidArgument(kComponent, "method \"" + Shown(method) + "\" is not a token");
  if (version != "HTTP/1.1" && version != "HTTP/1.0") {
    return Status::InvalidArgument(kComponent, "version \"" + Shown(version) + "\" is not HTTP/1.0 or HTTP/1.1");
  }
  if (target.empty() || target[0] != '/' || !Visible(target)) {
    return Status::InvalidArgument(kComponent, "target \"" + Shown(target) + "\" is not a path starting with /");
  }
  HttpRequest req;
  for (line = NextLine(rest); !line.empty(); line = NextLine(rest)) {
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos || !Token(line.substr(0, colon))) {
      return Status::InvalidArgument(kComponent, "header line \"" + Shown(line) + "\" is not NAME: VALUE");
    }
    if (!FieldValue(line.substr(colon + 1))) {
      return Status::InvalidArgument(kComponent, "header " + Shown(line.substr(0, colon)) + " holds control characters");
    }
    if (EqualNoCase(line.substr(0, colon), "authorization")) req.authorization = Trimmed(line.substr(colon + 1));
  }
  req.method = method;
  const size_t q = target.find('?');
  req.path = target.substr(0, q);
  if (q != std::string_view::npos) req.query = target.substr(q + 1);
  return req;
}

std::string FormatReply(const HttpReply& reply, bool head_only) {
  std::string out = "HTTP/1.1 " + std::to_string(reply.status) + " " + std::string(Reason(reply.status)) + "\r\n";
  out += "Content-Type: " + reply.content_type + "\r\n";
  out += "Content-Length: " + std::to_string(reply.body.size()) + "\r\n";
  if (!reply.allow.empty()) out += "Allow: " + reply.allow + "\r\n";
  out += "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n";
  out += "Content-Security-Policy: ";
  out += kPolicy;
  out += "\r\nConnection: close\r\n\r\n";
  if (!head_only) out += reply.body;
  return out;
}

}  // namespace dlagent::metrics
