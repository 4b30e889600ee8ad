#include "tests/emulators/imds/imds_emulator.h"

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "bootstrap/aws/aws_json.h"
#include "tests/support/local_http_server.h"

namespace dlagent::testing {
namespace {

using Clock = std::chrono::steady_clock;

class Emulator final : public ImdsEmulator {
 public:
  Emulator(nlohmann::json meta) : meta_(std::move(meta)) {
    auto s = [&](const char* k) { return meta_.value(k, std::string()); };
    items_["meta-data/instance-id"] = s("instance-id");
    items_["meta-data/instance-type"] = s("instance-type");
    items_["meta-data/local-ipv4"] = s("local-ipv4");
    items_["meta-data/placement/availability-zone"] = s("availability-zone");
    items_["meta-data/placement/region"] = s("region");
    items_["meta-data/local-hostname"] = "ip-" + s("local-ipv4") + ".ec2.internal";
    if (!s("mac").empty()) items_["meta-data/mac"] = s("mac");
    if (!s("ami-id").empty()) items_["meta-data/ami-id"] = s("ami-id");
    if (meta_.contains("user-data")) items_["user-data"] = s("user-data");
    if (meta_.contains("tags") && meta_["tags"].is_object()) {
      std::string keys;
      for (const auto& [k, v] : meta_["tags"].items()) {
        keys += (keys.empty() ? "" : "\n") + k;
        items_["meta-data/tags/instance/" + k] = v.is_string() ? v.get<std::string>() : v.dump();
      }
      items_["meta-data/tags/instance"] = keys;
    }
    if (!s("iam-role").empty()) items_["meta-data/iam/security-credentials/"] = s("iam-role");
    nlohmann::json doc = {{"instanceId", s("instance-id")}, {"instanceType", s("instance-type")},
                          {"privateIp", s("local-ipv4")},   {"availabilityZone", s("availability-zone")},
                          {"region", s("region")},          {"accountId", s("account-id")},
                          {"imageId", s("ami-id")},         {"architecture", "x86_64"}};
    items_["dynamic/instance-identity/document"] = doc.dump(2);
    events_ = "[]";
  }

  // Handlers read the members below: stop serving before any of them goes.
  ~Emulator() override { http_.Stop(); }

  Status Listen(const std::string& host, int port) {
    Routes();
    return http_.Start(host, port, /*bodyless_without_length=*/true);  // AWS's documented token PUT sends no length
  }

  int port() const override { return http_.port(); }
  std::string endpoint() const override { return http_.url(); }

  void SetFault(ImdsFault fault, int count, int delay_ms) override {
    std::lock_guard<std::mutex> lock(mu_);
    fault_ = fault;
    fault_count_ = count;
    delay_ms_ = delay_ms;
  }
  void TriggerSpotNotice(const std::string& action, const std::string& time) override {
    std::lock_guard<std::mutex> lock(mu_);
    spot_ = nlohmann::json{{"action", action}, {"time", time}}.dump();
  }
  void SetScheduledEvents(const std::string& json_array) override {
    std::lock_guard<std::mutex> lock(mu_);
    events_ = json_array;
  }
  void ExpireTokens() override {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [token, expiry] : tokens_) expiry = Clock::now() - std::chrono::seconds(1);
  }
  ImdsStats stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }

 private:
  // The fault for this request, consuming one from its count.
  ImdsFault TakeFault(int* delay_ms) {
    std::lock_guard<std::mutex> lock(mu_);
    if (fault_ == ImdsFault::kNone || fault_count_ == 0) return ImdsFault::kNone;
    if (fault_count_ > 0) --fault_count_;
    ++stats_.faulted;
    *delay_ms = delay_ms_;
    return fault_;
  }

  // Answers with the fault, or returns false when the request should be served normally.
  bool ApplyFault(httplib::Response& res, bool token_put) {
    int delay_ms = 0;
    switch (TakeFault(&delay_ms)) {
      case ImdsFault::kNone: return false;
      case ImdsFault::kSlow: std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms)); return false;
      case ImdsFault::kError500:
        res.status = 500;
        res.set_content("Internal Server Error", "text/plain");
        return true;
      case ImdsFault::kThrottle:
        res.status = 429;
        res.set_content("Too Many Requests", "text/plain");
        return true;
      case ImdsFault::kTokenRefused:
        if (!token_put) return false;
        res.status = 403;
        res.set_content("Forbidden", "text/plain");
        return true;
    }
    return false;
  }

  void Routes() {
    // Paths as real IMDS takes them: an SDK built from an endpoint ending in "/" asks for "//latest/...".
    server_.Put(R"(/+latest/api/token)", [this](const httplib::Request& req, httplib::Response& res) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++stats_.token_puts;
      }
      if (ApplyFault(res, true)) return;
      if (req.has_header("X-Forwarded-For")) {
        res.status = 403;
        return;
      }
      const std::string ttl_text = req.get_header_value("X-aws-ec2-metadata-token-ttl-seconds");
      long ttl = 0;
      bool ok = !ttl_text.empty() && ttl_text.size() <= 6;
      for (char c : ttl_text) ok = ok && std::isdigit(static_cast<unsigned char>(c));
      if (ok) ttl = std::stol(ttl_text);
      if (!ok || ttl < 1 || ttl > 21600) {
        res.status = 400;
        res.set_content("Bad Request", "text/plain");
        return;
      }
      std::string token;
      {
        std::lock_guard<std::mutex> lock(mu_);
        static const char* kChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        for (int i = 0; i < 56; ++i) token += kChars[rng_() % 62];
        tokens_[token] = Clock::now() + std::chrono::seconds(ttl);
      }
      res.set_header("X-aws-ec2-metadata-token-ttl-seconds", ttl_text);
      res.set_content(token, "text/plain");
    });
    server_.Get(R"(/+latest/(.*))", [this](const httplib::Request& req, httplib::Response& res) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++stats_.gets;
        auto it = tokens_.find(req.get_header_value("X-aws-ec2-metadata-token"));
        if (it == tokens_.end() || it->second <= Clock::now()) {
          ++stats_.unauthorized;
          res.status = 401;
          res.set_content("Unauthorized", "text/plain");
          return;
        }
      }
      if (ApplyFault(res, false)) return;
      std::optional<std::string> body = Lookup(req.matches[1]);
      if (!body) {
        res.status = 404;
        res.set_content("Not Found", "text/plain");
        return;
      }
      res.set_content(*body, "text/plain");
    });
    // Control endpoints: not part of IMDS.
    server_.Post("/_emulator/fault", [this](const httplib::Request& req, httplib::Response& res) {
      Result<nlohmann::json> j = ParseJsonObject(req.body, "imds-emulator", "fault request");
      Result<ImdsFault> f = j.ok() ? ParseImdsFault(j->value("mode", std::string())) : Result<ImdsFault>(j.status());
      if (!f.ok()) {
        res.status = 400;
        res.set_content(f.status().ToString(), "text/plain");
        return;
      }
      SetFault(*f, j->value("count", -1), j->value("delay_ms", 2000));
    });
    server_.Post("/_emulator/spot", [this](const httplib::Request& req, httplib::Response& res) {
      Result<nlohmann::json> j = ParseJsonObject(req.body, "imds-emulator", "spot request");
      if (!j.ok()) {
        res.status = 400;
        return;
      }
      TriggerSpotNotice(j->value("action", "terminate"), j->value("time", FormatIso8601(std::chrono::system_clock::now() + std::chrono::minutes(2))));
    });
    server_.Post("/_emulator/events", [this](const httplib::Request& req, httplib::Response&) { SetScheduledEvents(req.body); });
    server_.Post("/_emulator/expire-tokens", [this](const httplib::Request&, httplib::Response&) { ExpireTokens(); });
    server_.Get("/_emulator/stats", [this](const httplib::Request&, httplib::Response& res) {
      ImdsStats s = stats();
      res.set_content(nlohmann::json{{"token_puts", s.token_puts}, {"gets", s.gets}, {"unauthorized", s.unauthorized}, {"faulted", s.faulted}}.dump(),
                      "application/json");
    });
  }

  std::optional<std::string> Lookup(const std::string& path) {
    std::lock_guard<std::mutex> lock(mu_);
    if (path == "meta-data/spot/instance-action") {
      if (spot_.empty()) return std::nullopt;
      return spot_;
    }
    if (path == "meta-data/events/maintenance/scheduled") return events_;
    const std::string creds_prefix = "meta-data/iam/security-credentials/";
    if (path.size() > creds_prefix.size() && path.rfind(creds_prefix, 0) == 0 && !meta_.value("iam-role", std::string()).empty() &&
        path.substr(creds_prefix.size()) == meta_.value("iam-role", std::string())) {
      // A role always has credentials on EC2: made-up ones when the document gives none.
      const nlohmann::json c = meta_.contains("credentials") ? meta_["credentials"]
                                                             : nlohmann::json{{"AccessKeyId", "ASIAEMULATOREXAMPLE1"},
                                                                              {"SecretAccessKey", "emulator/secret/access/key/example"},
                                                                              {"Token", "emulator-session-token-example"}};
      const auto expiry = std::chrono::system_clock::now() + std::chrono::seconds(c.value("expires_in_s", 3600));
      return nlohmann::json{{"Code", "Success"},
                            {"LastUpdated", FormatIso8601(std::chrono::system_clock::now())},
                            {"Type", "AWS-HMAC"},
                            {"AccessKeyId", c.value("AccessKeyId", std::string())},
                            {"SecretAccessKey", c.value("SecretAccessKey", std::string())},
                            {"Token", c.value("Token", std::string())},
                            {"Expiration", FormatIso8601(expiry)}}
          .dump(2);
    }
    auto it = items_.find(path);
    if (it == items_.end()) return std::nullopt;
    return it->second;
  }

  LocalHttpServer http_;
  httplib::Server& server_ = http_.server();
  const nlohmann::json meta_;
  std::map<std::string, std::string> items_;  // immutable after construction

  mutable std::mutex mu_;
  // State below is protected by mu_.
  std::map<std::string, Clock::time_point> tokens_;
  std::mt19937_64 rng_{std::random_device{}()};
  ImdsFault fault_ = ImdsFault::kNone;
  int fault_count_ = 0;
  int delay_ms_ = 0;
  std::string spot_;
  std::string events_;
  ImdsStats stats_;
};

}  // namespace

Result<ImdsFault> ParseImdsFault(const std::string& name) {
  if (name == "none") return ImdsFault::kNone;
  if (name == "error500") return ImdsFault::kError500;
  if (name == "slow") return ImdsFault::kSlow;
  if (name == "throttle") return ImdsFault::kThrottle;
  if (name == "token-refused") return ImdsFault::kTokenRefused;
  return Status::InvalidArgument("imds-emulator", "unknown fault \"" + name + "\"; use error500, slow, throttle, token-refused or none");
}

Result<std::unique_ptr<ImdsEmulator>> ImdsEmulator::Start(const std::string& metadata_json, const std::string& host, int port) {
  ASSIGN_OR_RETURN(nlohmann::json meta, ParseJsonObject(metadata_json, "imds-emulator", "metadata document"));
  for (const char* key : {"instance-id", "instance-type", "local-ipv4", "availability-zone", "region"}) {
    if (!meta.contains(key) || !meta[key].is_string()) {
      return Status::InvalidArgument("imds-emulator", std::string("metadata document needs a string \"") + key + "\"");
    }
  }
  auto emulator = std::make_unique<Emulator>(std::move(meta));
  RETURN_IF_ERROR(emulator->Listen(host, port));
  return std::unique_ptr<ImdsEmulator>(std::move(emulator));
}

}  // namespace dlagent::testing
