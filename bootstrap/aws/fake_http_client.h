#pragma once
// FakeHttpClient: answers from a handler the test sets, and records every request.
// Thread safety: all methods are thread-safe.

#include <functional>
#include <mutex>

#include "bootstrap/aws/http_client.h"

namespace dlagent {

class FakeHttpClient : public HttpClient {
 public:
  using Handler = std::function<Result<HttpResponse>(const HttpRequest&)>;
  void SetHandler(Handler h) {
    std::lock_guard<std::mutex> lock(mu_);
    handler_ = std::move(h);
  }
  std::vector<HttpRequest> requests() const {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }
  Result<HttpResponse> Send(const HttpRequest& request) override {
    Handler h;
    {
      std::lock_guard<std::mutex> lock(mu_);
      requests_.push_back(request);
      h = handler_;
    }
    if (!h) return Status::Unavailable("http", "FakeHttpClient has no handler");
    return h(request);
  }
  static HttpResponse Reply(int status, std::string body, HttpHeaders headers = {}) {
    HttpResponse r;
    r.status = status;
    r.body = std::move(body);
    r.headers = std::move(headers);
    return r;
  }

 private:
  mutable std::mutex mu_;
  Handler handler_;
  std::vector<HttpRequest> requests_;
};

}  // namespace dlagent
