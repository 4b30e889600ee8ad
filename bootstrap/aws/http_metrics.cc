#include "bootstrap/aws/http_metrics.h"

#include <algorithm>
#include <cstring>

namespace dlagent {

MeteredHttpClient::MeteredHttpClient(Env& env, std::unique_ptr<HttpClient> target) : env_(env), target_(std::move(target)) {}

Result<HttpResponse> MeteredHttpClient::Send(const HttpRequest& request) {
  const MonoTime start = env_.NowMono();
  Result<HttpResponse> r = target_->Send(request);
  const double seconds = std::chrono::duration<double>(env_.NowMono() - start).count();
  size_t service = kServices.size() - 1;
  for (size_t i = 0; i < kServices.size(); ++i) {
    if (request.service != nullptr && std::strcmp(request.service, kServices[i]) == 0) service = i;
  }
  size_t outcome;  // an index into kOutcomes
  if (!r.ok()) {
    outcome = r.status().code() == StatusCode::kCancelled ? 4 : 3;
  } else if (r->status == 429 || (r->status == 400 && r->body.find("Throttl") != std::string::npos)) {
    outcome = 1;
  } else {
    outcome = r->status >= 200 && r->status < 400 ? 0 : 2;
  }
  Slot& s = slots_[service];
  s.calls[outcome].fetch_add(1, std::memory_order_relaxed);
  if (request.retry) s.retries.fetch_add(1, std::memory_order_relaxed);
  const size_t bucket = static_cast<size_t>(std::lower_bound(kBuckets.begin(), kBuckets.end(), seconds) - kBuckets.begin());
  s.buckets[bucket].fetch_add(1, std::memory_order_relaxed);
  s.micros.fetch_add(static_cast<uint64_t>(seconds * 1e6), std::memory_order_relaxed);
  return r;
}

std::vector<MeteredHttpClient::ServiceCounts> MeteredHttpClient::counts() const {
  std::vector<ServiceCounts> out;
  for (size_t i = 0; i < kServices.size(); ++i) {
    const Slot& s = slots_[i];
    ServiceCounts c{kServices[i]};
    uint64_t total = 0;
    for (size_t k = 0; k < kOutcomes.size(); ++k) total += c.calls[k] = s.calls[k].load(std::memory_order_relaxed);
    if (total == 0) continue;
    for (size_t b = 0; b < c.buckets.size(); ++b) c.buckets[b] = s.buckets[b].load(std::memory_order_relaxed);
    c.seconds = static_cast<double>(s.micros.load(std::memory_order_relaxed)) / 1e6;
    c.retries = s.retries.load(std::memory_order_relaxed);
    out.push_back(c);
  }
  return out;
}

}  // namespace dlagent
