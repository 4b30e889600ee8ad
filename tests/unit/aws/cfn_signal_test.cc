#include "bootstrap/aws/cfn_signal.h"

#include <mutex>

#include <gtest/gtest.h>

#include "bootstrap/aws/aws_json.h"
#include "tests/support/local_http_server.h"

namespace dlagent {
namespace {

using namespace std::chrono;

// A wait handle endpoint that records each PUT and answers from a script of status codes.
class WaitHandle {
 public:
  explicit WaitHandle(std::vector<int> statuses) : statuses_(std::move(statuses)) {
    http_.server().Put(R"(/waitcondition/(.*))", [this](const httplib::Request& req, httplib::Response& res) {
      std::lock_guard<std::mutex> lock(mu_);
      bodies_.push_back(req.body);
      content_types_.push_back(req.get_header_value("Content-Type"));
      res.status = statuses_[std::min(bodies_.size(), statuses_.size()) - 1];
    });
    EXPECT_TRUE(http_.Start().ok());
  }
  ~WaitHandle() { http_.Stop(); }  // handlers use the members below
  std::string url() const { return http_.url("/waitcondition/arn%3Aaws%3Acloudformation?X-Amz-Signature=abc"); }
  std::vector<std::string> bodies() {
    std::lock_guard<std::mutex> lock(mu_);
    return bodies_;
  }
  std::vector<std::string> content_types() {
    std::lock_guard<std::mutex> lock(mu_);
    return content_types_;
  }

 private:
  testing::LocalHttpServer http_;
  std::mutex mu_;
  std::vector<int> statuses_;
  std::vector<std::string> bodies_, content_types_;
};

const BackoffPolicy kFast{milliseconds(5), milliseconds(20), 2.0, 4, seconds(5)};

TEST(CfnSignalTest, PutsTheDocumentCloudFormationExpects) {
  WaitHandle handle({200});
  auto http = NewCurlHttpClient();
  auto env = NewPosixEnv();
  ASSERT_TRUE(SignalWaitHandle(*http, *env, handle.url(), {"SUCCESS", "8 of 8 nodes ready", "cluster-demo-g1", "roster g1"}, kFast).ok());
  ASSERT_EQ(handle.bodies().size(), 1u);
  Result<nlohmann::json> j = ParseJsonObject(handle.bodies()[0], "t", "body");
  ASSERT_TRUE(j.ok());
  EXPECT_EQ((*j)["Status"], "SUCCESS");
  EXPECT_EQ((*j)["Reason"], "8 of 8 nodes ready");
  EXPECT_EQ((*j)["UniqueId"], "cluster-demo-g1");
  EXPECT_EQ((*j)["Data"], "roster g1");
  EXPECT_EQ(handle.content_types()[0], "") << "a presigned S3 URL is signed without a Content-Type";
}

TEST(CfnSignalTest, RetriesServerErrors) {
  WaitHandle handle({503, 500, 200});
  auto http = NewCurlHttpClient();
  auto env = NewPosixEnv();
  ASSERT_TRUE(SignalWaitHandle(*http, *env, handle.url(), {"FAILURE", "2 nodes missing: i-1, i-2", "g1", ""}, kFast).ok());
  EXPECT_EQ(handle.bodies().size(), 3u);
}

TEST(CfnSignalTest, ExpiredUrlIsAClearPermanentError) {
  WaitHandle handle({403});
  auto http = NewCurlHttpClient();
  auto env = NewPosixEnv();
  Status st = SignalWaitHandle(*http, *env, handle.url(), {"SUCCESS", "ok", "g1", ""}, kFast);
  EXPECT_EQ(st.code(), StatusCode::kPermissionDenied);
  EXPECT_NE(st.ToString().find("expired"), std::string::npos);
  EXPECT_EQ(handle.bodies().size(), 1u);
}

TEST(CfnSignalTest, RejectsBadSignals) {
  auto http = NewCurlHttpClient();
  auto env = NewPosixEnv();
  EXPECT_EQ(SignalWaitHandle(*http, *env, "http://127.0.0.1:1/x", {"DONE", "", "g1", ""}, kFast).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(SignalWaitHandle(*http, *env, "http://127.0.0.1:1/x", {"SUCCESS", "", "", ""}, kFast).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(SignalWaitHandle(*http, *env, "not a url", {"SUCCESS", "", "g1", ""}, kFast).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace dlagent
