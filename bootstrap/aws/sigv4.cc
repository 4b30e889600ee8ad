#include "bootstrap/aws/sigv4.h"

#include <algorithm>
#include <cctype>
#include <ctime>
#include <map>

#include "bootstrap/aws/aws_json.h"
#include "bootstrap/common/crypto.h"

namespace dlagent {
namespace {

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

// Trims and collapses runs of spaces, as SigV4 canonical headers require.
std::string CanonicalHeaderValue(std::string_view v) {
  std::string out;
  bool space = false;
  for (char c : v) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      space = !out.empty();
      continue;
    }
    if (space) out.push_back(' ');
    space = false;
    out.push_back(c);
  }
  return out;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string UriDecode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && HexValue(s[i + 1]) >= 0 && HexValue(s[i + 2]) >= 0) {
      out.push_back(static_cast<char>(HexValue(s[i + 1]) * 16 + HexValue(s[i + 2])));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

// Removes "." and ".." segments and empty segments ("//"), keeping a trailing slash.
std::string NormalizePath(std::string_view path) {
  std::vector<std::string_view> segments;
  size_t i = 0;
  while (i <= path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    std::string_view seg = path.substr(i, j - i);
    if (seg == "..") {
      if (!segments.empty()) segments.pop_back();
    } else if (!seg.empty() && seg != ".") {
      segments.push_back(seg);
    }
    i = j + 1;
  }
  std::string out;
  for (auto seg : segments) out += "/" + std::string(seg);
  const bool trailing = !path.empty() && (path.back() == '/' || path.ends_with("/.") || path.ends_with("/.."));
  if (out.empty() || trailing) out += "/";
  return out;
}

std::string CanonicalQuery(std::string_view query) {
  std::vector<std::pair<std::string, std::string>> params;
  size_t i = 0;
  while (i < query.size()) {
    size_t amp = query.find('&', i);
    if (amp == std::string_view::npos) amp = query.size();
    std::string_view kv = query.substr(i, amp - i);
    if (!kv.empty()) {
      size_t eq = kv.find('=');
      std::string_view k = kv.substr(0, eq);
      std::string_view v = eq == std::string_view::npos ? "" : kv.substr(eq + 1);
      params.emplace_back(UriEncode(UriDecode(k), false), UriEncode(UriDecode(v), false));
    }
    i = amp + 1;
  }
  std::sort(params.begin(), params.end());
  std::string out;
  for (const auto& [k, v] : params) out += (out.empty() ? "" : "&") + k + "=" + v;
  return out;
}

}  // namespace

std::string UriEncode(std::string_view s, bool keep_slash) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/')) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

std::string FormatAmzDate(WallTime t) { return FormatUtc(t, "%Y%m%dT%H%M%SZ"); }

SigV4Signature SignV4(const SigV4Request& req, const AwsCredentials& creds, const std::string& region, const std::string& service, WallTime now) {
  SigV4Signature sig;
  const std::string amz_date = FormatAmzDate(now);
  const std::string date = amz_date.substr(0, 8);

  // Lower-case names; repeated headers joined with ',' in the order given.
  std::map<std::string, std::string> headers;
  for (const auto& [k, v] : req.headers) {
    std::string name = Lower(k);
    std::string value = CanonicalHeaderValue(v);
    auto [it, inserted] = headers.emplace(name, value);
    if (!inserted) it->second += "," + value;
  }
  if (!headers.count("x-amz-date")) {
    headers["x-amz-date"] = amz_date;
    sig.added_headers.emplace_back("X-Amz-Date", amz_date);
  }
  if (!creds.session_token.empty() && !headers.count("x-amz-security-token")) {
    headers["x-amz-security-token"] = creds.session_token;
    sig.added_headers.emplace_back("X-Amz-Security-Token", creds.session_token);
  }
  std::string canonical_headers, signed_headers;
  for (const auto& [k, v] : headers) {
    canonical_headers += k + ":" + v + "\n";
    signed_headers += (signed_headers.empty() ? "" : ";") + k;
  }
  const std::string payload_hash = HexEncode(Sha256(req.body));
  // Non-S3 services: the path is normalised and each segment encoded again (a '%' becomes %25).
  sig.canonical_request = req.method + "\n" + UriEncode(NormalizePath(req.path), true) + "\n" + CanonicalQuery(req.query) + "\n" + canonical_headers +
                          "\n" + signed_headers + "\n" + payload_hash;
  const std::string scope = date + "/" + region + "/" + service + "/aws4_request";
  sig.string_to_sign = "AWS4-HMAC-SHA256\n" + amz_date + "\n" + scope + "\n" + HexEncode(Sha256(sig.canonical_request));
  std::string key = HmacSha256("AWS4" + creds.secret_access_key, date);
  key = HmacSha256(key, region);
  key = HmacSha256(key, service);
  key = HmacSha256(key, "aws4_request");
  sig.signature = HexEncode(HmacSha256(key, sig.string_to_sign));
  sig.authorization =
      "AWS4-HMAC-SHA256 Credential=" + creds.access_key_id + "/" + scope + ", SignedHeaders=" + signed_headers + ", Signature=" + sig.signature;
  return sig;
}

Result<HttpResponse> SendSignedJson(HttpClient& http, const AwsCredentials& credentials, WallTime now, const SignedJsonPost& post,
                                    const std::string& body) {
  HttpRequest req;
  req.method = "POST";
  req.url = post.url;
  req.body = body;
  req.headers = {{"Host", post.host_header}, {"Content-Type", post.content_type}, {"X-Amz-Target", post.target}};
  req.headers.insert(req.headers.end(), post.extra_headers.begin(), post.extra_headers.end());
  SigV4Signature sig = SignV4({"POST", post.path, "", req.headers, body}, credentials, post.region, post.service, now);
  req.headers.insert(req.headers.end(), sig.added_headers.begin(), sig.added_headers.end());
  req.headers.emplace_back("Authorization", sig.authorization);
  req.timeout = post.timeout;
  req.cancel = post.cancel;
  req.max_response_bytes = post.max_response_bytes;
  req.retry = post.retry;
  req.service = post.service == "sqs" ? "sqs" : post.service == "secretsmanager" ? "secretsmanager" : post.service == "ssm" ? "ssm" : "other";
  return http.Send(req);
}

}  // namespace dlagent
