#include "bootstrap/aws/http_client.h"

#include <curl/curl.h>
#include <strings.h>

#include <algorithm>
#include <cctype>

#include "bootstrap/common/mutex.h"

namespace dlagent {

std::string HttpResponse::Header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (k == name) return v;
  }
  return "";
}

std::string Url::HostHeader() const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return explicit_port ? h + ":" + std::to_string(port) : h;
}

Result<Url> ParseUrl(std::string_view text) {
  auto bad = [&](std::string_view why) { return Status::InvalidArgument("http", "bad URL \"" + std::string(text) + "\": " + std::string(why)); };
  Url u;
  size_t sep = text.find("://");
  if (sep == std::string_view::npos) return bad("no scheme");
  u.scheme = std::string(text.substr(0, sep));
  if (u.scheme != "http" && u.scheme != "https") return bad("scheme must be http or https");
  std::string_view rest = text.substr(sep + 3);
  size_t path_start = rest.find_first_of("/?");
  std::string_view authority = rest.substr(0, path_start);
  std::string_view tail = path_start == std::string_view::npos ? "" : rest.substr(path_start);
  if (authority.empty()) return bad("no host");
  if (authority.find('@') != std::string_view::npos) return bad("user info is not supported");
  std::string_view port_text;
  if (authority.front() == '[') {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) return bad("unclosed IPv6 bracket");
    u.host = std::string(authority.substr(1, close - 1));
    if (close + 1 < authority.size()) {
      if (authority[close + 1] != ':') return bad("junk after IPv6 address");
      port_text = authority.substr(close + 2);
    }
  } else {
    size_t colon = authority.rfind(':');
    u.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) port_text = authority.substr(colon + 1);
  }
  if (u.host.empty()) return bad("no host");
  u.port = u.scheme == "https" ? 443 : 80;
  if (!port_text.empty()) {
    int p = 0;
    for (char c : port_text) {
      if (!std::isdigit(static_cast<unsigned char>(c)) || p > 65535) return bad("bad port");
      p = p * 10 + (c - '0');
    }
    if (p < 1 || p > 65535) return bad("port out of range");
    u.port = p;
    u.explicit_port = true;
  }
  size_t q = tail.find('?');
  u.path = std::string(tail.substr(0, q));
  if (u.path.empty()) u.path = "/";
  if (q != std::string_view::npos) u.query = std::string(tail.substr(q + 1));
  return u;
}

namespace {

struct Transfer {
  HttpResponse* response;
  size_t max_bytes;
  bool too_large = false;
};

size_t OnBody(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  size_t len = size * n;
  if (t->response->body.size() + len > t->max_bytes) {
    t->too_large = true;
    return 0;  // aborts the transfer
  }
  t->response->body.append(data, len);
  return len;
}

size_t OnHeader(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  std::string_view line(data, size * n);
  // A new status line (after a redirect or 100-continue) starts a fresh header list.
  if (line.rfind("HTTP/", 0) == 0) t->response->headers.clear();
  size_t colon = line.find(':');
  if (colon != std::string_view::npos) {
    std::string name(line.substr(0, colon));
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
    while (!value.empty() && (value.back() == '\r' || value.back() == '\n' || value.back() == ' ')) value.remove_suffix(1);
    t->response->headers.emplace_back(std::move(name), std::string(value));
  }
  return size * n;
}

// Called by curl about once a second while a transfer waits: a non-zero return aborts it.
int OnProgress(void* cancel, curl_off_t, curl_off_t, curl_off_t, curl_off_t) { return static_cast<const std::atomic<bool>*>(cancel)->load() ? 1 : 0; }

class CurlHttpClient final : public HttpClient {
 public:
  explicit CurlHttpClient(const CurlOptions& options) : options_(options) {
    static std::once_flag once;
    std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  }
  ~CurlHttpClient() override {
    for (CURL* h : idle_) curl_easy_cleanup(h);
  }

  Result<HttpResponse> Send(const HttpRequest& req) override {
    CURL* h = Acquire();
    if (!h) return Status::Internal("http", "curl_easy_init failed");
    HttpResponse response;
    Status st = Perform(h, req, &response);
    Release(h, st.ok());
    if (!st.ok()) return st;
    return response;
  }

 private:
  Status Perform(CURL* h, const HttpRequest& req, HttpResponse* response) {
    using std::chrono::duration_cast;
    using std::chrono::milliseconds;
    curl_easy_reset(h);
    Transfer transfer{response, req.max_response_bytes};
    curl_easy_setopt(h, CURLOPT_URL, req.url.c_str());
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(duration_cast<milliseconds>(req.connect_timeout).count()));
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, std::max(1L, static_cast<long>(duration_cast<milliseconds>(req.timeout).count())));
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, OnBody);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &transfer);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, OnHeader);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &transfer);
    if (req.cancel) {
      curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
      curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, OnProgress);
      curl_easy_setopt(h, CURLOPT_XFERINFODATA, req.cancel);
    }
    if (!options_.reuse_connections) {
      curl_easy_setopt(h, CURLOPT_FRESH_CONNECT, 1L);
      curl_easy_setopt(h, CURLOPT_FORBID_REUSE, 1L);
    }
    if (req.method == "GET") {
      curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    } else if (req.method == "HEAD") {
      curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else {
      curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, req.method.c_str());
      curl_easy_setopt(h, CURLOPT_POSTFIELDS, req.body.data());
      curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(req.body.size()));
    }
    curl_slist* headers = nullptr;
    bool has_content_type = false;
    for (const auto& [k, v] : req.headers) {
      std::string line = v.empty() ? k + ";" : k + ": " + v;
      headers = curl_slist_append(headers, line.c_str());
      if (strcasecmp(k.c_str(), "content-type") == 0) has_content_type = true;
    }
    // No header the caller did not ask for: curl would add a form Content-Type to bodies and Expect:
    // 100-continue to large ones (a signed or presigned request must carry exactly what was signed).
    if (!has_content_type) headers = curl_slist_append(headers, "Content-Type:");
    headers = curl_slist_append(headers, "Expect:");
    headers = curl_slist_append(headers, "Accept:");
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);

    CURLcode rc = curl_easy_perform(h);
    curl_slist_free_all(headers);
    const std::string what = req.method + " " + req.url;
    if (transfer.too_large) {
      return Status::ResourceExhausted("http", what + ": response larger than " + std::to_string(req.max_response_bytes) + " bytes");
    }
    switch (rc) {
      case CURLE_OK: break;
      case CURLE_ABORTED_BY_CALLBACK: return Status(StatusCode::kCancelled, "http", what + ": cancelled");
      case CURLE_OPERATION_TIMEDOUT:
        return Status::DeadlineExceeded(
            "http", what + ": no complete answer within " + std::to_string(duration_cast<milliseconds>(req.timeout).count()) + " ms");
      case CURLE_URL_MALFORMAT:
      case CURLE_UNSUPPORTED_PROTOCOL: return Status::InvalidArgument("http", what + ": " + curl_easy_strerror(rc));
      default: return Status::Unavailable("http", what + ": " + curl_easy_strerror(rc));
    }
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    response->status = static_cast<int>(code);
    return Status::Ok();
  }

  CURL* Acquire() {
    {
      MutexLock lock(mu_);
      if (!idle_.empty()) {
        CURL* h = idle_.back();
        idle_.pop_back();
        return h;
      }
    }
    return curl_easy_init();
  }

  // A handle whose transfer failed may hold a broken connection: drop it.
  void Release(CURL* h, bool healthy) {
    if (healthy && options_.reuse_connections) {
      MutexLock lock(mu_);
      if (idle_.size() < options_.max_idle_handles) {
        idle_.push_back(h);
        return;
      }
    }
    curl_easy_cleanup(h);
  }

  const CurlOptions options_;
  Mutex mu_;
  std::vector<CURL*> idle_ GUARDED_BY(mu_);
};

}  // namespace

std::unique_ptr<HttpClient> NewCurlHttpClient(const CurlOptions& options) { return std::make_unique<CurlHttpClient>(options); }

}  // namespace dlagent
