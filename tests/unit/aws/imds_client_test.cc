#include "bootstrap/aws/imds_client.h"
#include "bootstrap/aws/imds_event_poller.h"
#include "bootstrap/aws/sqs_client.h"

#include <unistd.h>

#include <condition_variable>

#include <gtest/gtest.h>

#include "bootstrap/aws/aws_json.h"
#include "tests/emulators/imds/imds_emulator.h"
#include "tests/support/subprocess.h"

namespace dlagent {
namespace {

using namespace std::chrono;
using testing::ImdsEmulator;
using testing::ImdsFault;
using testing::RunCommand;
using testing::RunResult;

constexpr const char* kMetadata = R"({
  "instance-id": "i-0123456789abcdef0", "instance-type": "p4d.24xlarge", "local-ipv4": "10.0.1.17",
  "mac": "0e:1f:2a:3b:4c:5d", "availability-zone": "us-east-1a", "region": "us-east-1",
  "account-id": "123456789012", "ami-id": "ami-0abc", "iam-role": "dlagent-node",
  "credentials": {"AccessKeyId": "ASIAEXAMPLE", "SecretAccessKey": "secret", "Token": "session", "expires_in_s": 3600},
  "user-data": "#!/bin/bash\necho hi\n", "tags": {"Name": "node-1", "dlagent:cluster": "demo"}})";

class ImdsClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto e = ImdsEmulator::Start(kMetadata);
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    emulator_ = std::move(*e);
  }
  ImdsClient Client(ImdsOptions o = {}) {
    o.endpoint = emulator_->endpoint();
    o.backoff.initial = milliseconds(10);
    o.backoff.max_delay = milliseconds(50);
    return ImdsClient(*http_, *env_, o);
  }
  std::unique_ptr<ImdsEmulator> emulator_;
  std::unique_ptr<HttpClient> http_ = NewCurlHttpClient();
  std::unique_ptr<Env> env_ = NewPosixEnv();
};

TEST_F(ImdsClientTest, IdentifiesTheInstance) {
  ImdsClient imds = Client();
  Result<InstanceIdentity> id = imds.Identify();
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  EXPECT_EQ(id->instance_id, "i-0123456789abcdef0");
  EXPECT_EQ(id->instance_type, "p4d.24xlarge");
  EXPECT_EQ(id->local_ipv4, "10.0.1.17");
  EXPECT_EQ(id->availability_zone, "us-east-1a");
  EXPECT_EQ(id->region, "us-east-1");
  EXPECT_EQ(id->account_id, "123456789012");
  EXPECT_EQ(id->mac, "0e:1f:2a:3b:4c:5d");
  EXPECT_EQ(*imds.UserData(), "#!/bin/bash\necho hi\n");
  auto tags = imds.Tags();
  ASSERT_TRUE(tags.ok());
  EXPECT_EQ(tags->size(), 2u);
}

TEST_F(ImdsClientTest, TokenIsFetchedOnceAndReused) {
  ImdsClient imds = Client();
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(imds.Get("meta-data/instance-id").ok());
  EXPECT_EQ(emulator_->stats().token_puts, 1);
  EXPECT_EQ(imds.token_fetches(), 1);
}

TEST_F(ImdsClientTest, ExpiredTokenIsReplacedOn401) {
  ImdsClient imds = Client();
  ASSERT_TRUE(imds.Get("meta-data/instance-id").ok());
  emulator_->ExpireTokens();
  Result<std::string> id = imds.Get("meta-data/instance-id");
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  EXPECT_EQ(emulator_->stats().token_puts, 2);
  EXPECT_EQ(emulator_->stats().unauthorized, 1);
}

TEST_F(ImdsClientTest, AbsentItemIsNotFoundWithoutRetries) {
  ImdsClient imds = Client();
  Result<std::string> r = imds.Get("meta-data/no-such-thing");
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(emulator_->stats().gets, 1);
}

TEST_F(ImdsClientTest, RidesOutTransientFaults) {
  for (ImdsFault f : {ImdsFault::kError500, ImdsFault::kThrottle}) {
    ImdsClient imds = Client();
    emulator_->SetFault(f, 3);
    Result<std::string> id = imds.Get("meta-data/instance-id");
    ASSERT_TRUE(id.ok()) << id.status().ToString();
    EXPECT_EQ(*id, "i-0123456789abcdef0");
  }
}

TEST_F(ImdsClientTest, PersistentFaultFailsWithinTheDeadline) {
  ImdsOptions o;
  o.deadline = milliseconds(800);
  ImdsClient imds = Client(o);
  emulator_->SetFault(ImdsFault::kError500, -1);
  const auto start = steady_clock::now();
  Result<std::string> r = imds.Get("meta-data/instance-id");
  EXPECT_FALSE(r.ok());
  EXPECT_TRUE(r.status().retryable());
  EXPECT_LT(steady_clock::now() - start, milliseconds(1500));
  EXPECT_NE(r.status().ToString().find("last: token PUT answered 500"), std::string::npos) << r.status().ToString();
  EXPECT_EQ(r.status().ToString().find("gave up after"), std::string::npos) << "the attempt count is said once";
  EXPECT_NE(r.status().ToString().find(emulator_->endpoint()), std::string::npos) << r.status().ToString();
}

TEST_F(ImdsClientTest, SlowAnswerTimesOutPerAttemptThenSucceeds) {
  ImdsOptions o;
  o.attempt_timeout = milliseconds(200);
  ImdsClient imds = Client(o);
  ASSERT_TRUE(imds.Get("meta-data/instance-id").ok());  // token in hand
  emulator_->SetFault(ImdsFault::kSlow, 1, 1000);
  const auto start = steady_clock::now();
  Result<std::string> r = imds.Get("meta-data/instance-id");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_LT(steady_clock::now() - start, milliseconds(900));
}

TEST_F(ImdsClientTest, RefusedTokenIsAClearPermanentError) {
  ImdsClient imds = Client();
  emulator_->SetFault(ImdsFault::kTokenRefused, -1);
  Result<std::string> r = imds.Get("meta-data/instance-id");
  EXPECT_EQ(r.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(r.status().ToString().find("http-endpoint enabled"), std::string::npos);
  EXPECT_EQ(emulator_->stats().token_puts, 1);
}

TEST_F(ImdsClientTest, BadTokenTtlIsRejected) {
  ImdsOptions o;
  o.token_ttl = seconds(21601);
  Result<std::string> r = Client(o).Get("meta-data/instance-id");
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().ToString().find("outside 1..21600"), std::string::npos);
}

TEST_F(ImdsClientTest, DisabledMeansNoRequests) {
  ImdsOptions o;
  o.disabled = true;
  Result<std::string> r = Client(o).Get("meta-data/instance-id");
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(emulator_->stats().token_puts, 0);
}

TEST_F(ImdsClientTest, SpotNoticeAppearsWhenTriggered) {
  ImdsClient imds = Client();
  auto none = imds.SpotInterruption();
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  emulator_->TriggerSpotNotice("terminate", "2026-11-22T10:00:00Z");
  auto notice = imds.SpotInterruption();
  ASSERT_TRUE(notice.ok()) << notice.status().ToString();
  ASSERT_TRUE(notice->has_value());
  EXPECT_EQ((*notice)->action, "terminate");
  EXPECT_EQ(FormatIso8601((*notice)->time), "2026-11-22T10:00:00Z");
}

TEST_F(ImdsClientTest, ScheduledEvents) {
  ImdsClient imds = Client();
  EXPECT_TRUE(imds.ScheduledEvents()->empty());
  emulator_->SetScheduledEvents(R"([{"NotBefore": "21 Jan 2027 09:00:43 GMT", "Code": "system-reboot",
    "Description": "scheduled reboot", "EventId": "instance-event-0d59937288b749b32", "State": "active"}])");
  auto events = imds.ScheduledEvents();
  ASSERT_TRUE(events.ok()) << events.status().ToString();
  ASSERT_EQ(events->size(), 1u);
  EXPECT_EQ((*events)[0].code, "system-reboot");
  EXPECT_EQ((*events)[0].state, "active");
}

TEST_F(ImdsClientTest, RoleCredentialsCarryExpiration) {
  ImdsClient imds = Client();
  Result<AwsCredentials> c = imds.RoleCredentials();
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->access_key_id, "ASIAEXAMPLE");
  EXPECT_EQ(c->session_token, "session");
  EXPECT_EQ(c->source, "imds:dlagent-node");
  ASSERT_TRUE(c->expiration.has_value());
  EXPECT_GT(*c->expiration, system_clock::now() + minutes(55));
}

TEST(ImdsParseTest, RejectsBadDocuments) {
  struct Case {
    const char* json;
    const char* want;
  } cases[] = {
      {"", "not valid JSON"},
      {"[1]", "expected a JSON object"},
      {"{\"instanceId\": 5}", "\"instanceId\" is not a string"},
      {"{\"instanceId\": \"i-1\"}", "missing \"instanceType\""},
      {"{\"instanceId\": \"i-1\", \"instanceType\": \"x\", \"availabilityZone\": \"a\", \"region\": \"r\", \"privateIp\": \"\xff\"}",
       "not valid JSON"},
  };
  for (const auto& c : cases) {
    Result<InstanceIdentity> r = ParseIdentityDocument(c.json);
    ASSERT_FALSE(r.ok()) << c.json;
    EXPECT_NE(r.status().ToString().find(c.want), std::string::npos) << r.status().ToString();
  }
  EXPECT_FALSE(ParseImdsCredentials(R"({"Code":"Failed","Message":"no role"})", "r").ok());
  EXPECT_FALSE(ParseImdsCredentials(R"({"Code":"Success","AccessKeyId":"a","SecretAccessKey":"s","Expiration":"soon"})", "r").ok());
  EXPECT_FALSE(ParseSpotNotice(R"({"action":"explode","time":"2026-11-22T10:00:00Z"})").ok());
  EXPECT_FALSE(ParseScheduledEvents(R"({"Code":"x"})").ok());
  EXPECT_FALSE(ParseScheduledEvents(std::string(300000, '[')).ok());
  std::string deep = std::string(10000, '[') + std::string(10000, ']');
  EXPECT_NE(ParseJsonObject(deep, "t", "doc").status().ToString().find("nested deeper"), std::string::npos);
}

TEST(Iso8601Test, ParsesAndFormats) {
  EXPECT_EQ(FormatIso8601(*ParseIso8601("2026-11-22T10:00:00Z")), "2026-11-22T10:00:00Z");
  EXPECT_EQ(FormatIso8601(*ParseIso8601("2026-11-22T10:00:00.123Z")), "2026-11-22T10:00:00Z");
  EXPECT_EQ(FormatIso8601(*ParseIso8601("2026-11-22T12:00:00+02:00")), "2026-11-22T10:00:00Z");
  for (const char* bad : {"", "2026-11-22", "2026-11-22T10:00:00", "2026-13-22T10:00:00Z", "2026-11-22T10:00:00Zjunk", "2026-11-22T10:00:00+2"}) {
    EXPECT_FALSE(ParseIso8601(bad).ok()) << bad;
  }
}

}  // namespace
}  // namespace dlagent

namespace dlagent {
namespace {

TEST_F(ImdsClientTest, PollerReportsEachNoticeAndEventOnce) {
  ImdsClient imds = Client();
  std::vector<std::string> seen;
  ImdsEventPoller poller(imds, {[&](const SpotNotice& n) { seen.push_back("spot:" + n.action); },
                                [&](const ScheduledEvent& e) { seen.push_back("event:" + e.event_id); }});
  poller.PollOnce();
  EXPECT_TRUE(seen.empty());
  emulator_->TriggerSpotNotice("stop", "2026-11-22T10:00:00Z");
  emulator_->SetScheduledEvents(R"([{"Code":"system-reboot","EventId":"e-1","State":"active","NotBefore":"x"},
                                    {"Code":"instance-stop","EventId":"e-0","State":"completed","NotBefore":"x"}])");
  poller.PollOnce();
  poller.PollOnce();
  EXPECT_EQ(seen, (std::vector<std::string>{"spot:stop", "event:e-1"}));
}

TEST_F(ImdsClientTest, PollerThreadNoticesASpotNoticeWithinTheInterval) {
  ImdsClient imds = Client();
  std::mutex mu;
  std::condition_variable cv;
  bool got = false;
  ImdsEventPoller poller(imds,
                         {[&](const SpotNotice&) {
                            std::lock_guard<std::mutex> lock(mu);
                            got = true;
                            cv.notify_all();
                          },
                          nullptr},
                         milliseconds(50));
  poller.Start();
  emulator_->TriggerSpotNotice("terminate", "2026-11-22T10:00:00Z");
  std::unique_lock<std::mutex> lock(mu);
  EXPECT_TRUE(cv.wait_for(lock, seconds(5), [&] { return got; }));
  lock.unlock();
  const auto start = steady_clock::now();
  poller.Stop();
  EXPECT_LT(steady_clock::now() - start, seconds(1));
}

TEST_F(ImdsClientTest, RegionFromConfigElseImds) {
  ImdsClient imds = Client();
  EXPECT_EQ(*ResolveAwsRegion("eu-west-1", &imds), "eu-west-1");
  EXPECT_EQ(*ResolveAwsRegion("", &imds), "us-east-1");
  EXPECT_FALSE(ResolveAwsRegion("", nullptr).ok());
}

}  // namespace
}  // namespace dlagent

namespace dlagent {
namespace {

// The emulator as a new user meets it with AWS's documentation and an SDK: paths an SDK builds from an endpoint
// ending in "/", a role without credentials in the document, and a second emulator on a port in use.
TEST(ImdsEmulatorTest, AnswersAsRealImdsDoesWhereUsersNoticed) {
  auto e = ImdsEmulator::Start(R"({"instance-id": "i-1", "instance-type": "t3.micro", "local-ipv4": "10.0.0.1",
                                  "availability-zone": "us-east-1a", "region": "us-east-1", "iam-role": "node-role"})");
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  std::unique_ptr<HttpClient> http = NewCurlHttpClient();
  HttpRequest put{.method = "PUT", .url = (*e)->endpoint() + "//latest/api/token"};
  put.headers = {{"X-aws-ec2-metadata-token-ttl-seconds", "21600"}};
  Result<HttpResponse> token = http->Send(put);
  ASSERT_TRUE(token.ok()) << token.status().ToString();
  EXPECT_EQ(token->status, 200) << "a doubled leading slash is the same path";
  auto get = [&](const std::string& path) {
    HttpRequest r{.url = (*e)->endpoint() + path};
    r.headers = {{"X-aws-ec2-metadata-token", token->body}};
    return http->Send(r);
  };
  Result<HttpResponse> id = get("//latest/meta-data/instance-id");
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(id->status, 200);
  EXPECT_EQ(id->body, "i-1");
  Result<HttpResponse> roles = get("/latest/meta-data/iam/security-credentials/");
  ASSERT_TRUE(roles.ok());
  EXPECT_EQ(roles->body, "node-role");
  Result<HttpResponse> creds = get("/latest/meta-data/iam/security-credentials/node-role");
  ASSERT_TRUE(creds.ok());
  EXPECT_EQ(creds->status, 200) << "a listed role has credentials";
  EXPECT_NE(creds->body.find("\"AccessKeyId\""), std::string::npos) << creds->body;
  EXPECT_NE(creds->body.find("\"Expiration\""), std::string::npos) << creds->body;

  // AWS's documented token request, as curl sends it: a PUT without Content-Length (real IMDS answers it).
  ASSERT_EQ(::access("/usr/bin/curl", X_OK), 0) << "needs curl (scripts/deps.sh installs it)";
  const RunResult curl = RunCommand({"/usr/bin/curl", "-sS", "-m", "5", "-X", "PUT", (*e)->endpoint() + "/latest/api/token", "-H",
                                     "X-aws-ec2-metadata-token-ttl-seconds: 21600", "-w", " %{http_code}"},
                                    seconds(10));
  EXPECT_EQ(curl.exit_code, 0) << curl.output;
  EXPECT_NE(curl.output.find(" 200"), std::string::npos) << curl.output;
  EXPECT_GT(curl.output.size(), 20u) << "a token: " << curl.output;

  auto second = ImdsEmulator::Start(R"({"instance-id": "i-2", "instance-type": "t3.micro", "local-ipv4": "10.0.0.2",
                                       "availability-zone": "us-east-1a", "region": "us-east-1"})",
                                    "127.0.0.1", (*e)->port());
  EXPECT_FALSE(second.ok()) << "a port in use is an error, not a second server sharing it";
}

}  // namespace
}  // namespace dlagent

namespace dlagent {
namespace {

TEST(ImdsParseTest, EventTimesAreReadAsImdsWritesThem) {
  Result<WallTime> t = ParseEventTime("21 Jan 2019 09:00:43 GMT");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(std::chrono::duration_cast<std::chrono::seconds>(t->time_since_epoch()).count(), 1548061243);
  for (const char* bad : {"", "2019-01-21T09:00:43Z", "21 Jan 2019 09:00:43", "21 Foo 2019 09:00:43 GMT", "21 Jan 2019 09:00:43 GMT+1"}) {
    Result<WallTime> r = ParseEventTime(bad);
    EXPECT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.status().ToString().find("is not like \"21 Jan 2019 09:00:43 GMT\""), std::string::npos) << r.status().ToString();
  }
  // Years the clock cannot hold (found by fuzzing: the conversion to nanoseconds overflowed).
  for (const char* far : {"21 Jan 1014 09:00:43 GMT", "21 Jan 9999 09:00:43 GMT"}) {
    Result<WallTime> r = ParseEventTime(far);
    EXPECT_FALSE(r.ok()) << far;
    EXPECT_NE(r.status().ToString().find("outside 1970-2200"), std::string::npos) << r.status().ToString();
  }
}

}  // namespace
}  // namespace dlagent
