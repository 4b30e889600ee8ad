#include "bootstrap/aws/sigv4.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

namespace dlagent {
namespace {

namespace fs = std::filesystem;

const AwsCredentials kCreds{"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "", std::nullopt, "test"};
const WallTime kTime = std::chrono::system_clock::from_time_t(1440938160);  // 20150830T123600Z

std::string Slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A .req file: request line, headers (continuation lines start with whitespace), blank line, body.
SigV4Request ParseReq(const std::string& text) {
  SigV4Request r;
  std::istringstream in(text);
  std::string line;
  std::getline(in, line);
  std::string target = line.substr(line.find(' ') + 1, line.rfind(' ') - line.find(' ') - 1);
  r.method = line.substr(0, line.find(' '));
  r.path = target.substr(0, target.find('?'));
  if (target.find('?') != std::string::npos) r.query = target.substr(target.find('?') + 1);
  while (std::getline(in, line) && !line.empty()) {
    if (line[0] == ' ' || line[0] == '\t') {
      r.headers.back().second += " " + line.substr(line.find_first_not_of(" \t"));
      continue;
    }
    size_t colon = line.find(':');
    r.headers.emplace_back(line.substr(0, colon), line.substr(colon + 1));
  }
  std::string rest((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  r.body = rest;
  return r;
}

fs::path SuiteDir() { return fs::path(DLAGENT_SOURCE_DIR) / ".." / "shared" / "sigv4-test-suite"; }

TEST(SigV4Test, PassesTheAwsTestSuite) {
  if (!fs::exists(SuiteDir())) GTEST_SKIP() << "no " << SuiteDir() << " (../shared is beside the checkout in CI)";
  int cases = 0;
  for (const auto& entry : fs::recursive_directory_iterator(SuiteDir())) {
    if (entry.path().extension() != ".req") continue;
    const fs::path base = entry.path().parent_path() / entry.path().stem();
    const std::string name = entry.path().stem().string();
    SCOPED_TRACE(name);
    SigV4Request req = ParseReq(Slurp(entry.path()));
    AwsCredentials creds = kCreds;
    // Session-token cases: the token is the one in the expected canonical request.
    const std::string creq = Slurp(base.string() + ".creq");
    if (name != "post-sts-header-after") {
      if (size_t at = creq.find("x-amz-security-token:"); at != std::string::npos) {
        size_t start = at + 21;
        creds.session_token = creq.substr(start, creq.find('\n', start) - start);
      }
    }
    SigV4Signature sig = SignV4(req, creds, "us-east-1", "service", kTime);
    EXPECT_EQ(sig.canonical_request, creq);
    EXPECT_EQ(sig.string_to_sign, Slurp(base.string() + ".sts"));
    EXPECT_EQ(sig.authorization, Slurp(base.string() + ".authz"));
    ++cases;
  }
  EXPECT_EQ(cases, 34);
}

// A few of the suite's signatures, kept here so that signing is checked even without ../shared.
TEST(SigV4Test, KnownSignatures) {
  struct Case {
    SigV4Request req;
    std::string token;
    std::string signature;
  } cases[] = {
      {{"GET", "/", "", {{"Host", "example.amazonaws.com"}, {"X-Amz-Date", "20150830T123600Z"}}, ""},
       "",
       "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"},
      {{"POST", "/", "", {{"Host", "example.amazonaws.com"}, {"X-Amz-Date", "20150830T123600Z"}}, ""},
       "",
       "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"},
      {{"GET", "/", "Param2=value2&Param1=value1", {{"Host", "example.amazonaws.com"}, {"X-Amz-Date", "20150830T123600Z"}}, ""},
       "",
       "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"},
  };
  for (const auto& c : cases) {
    AwsCredentials creds = kCreds;
    creds.session_token = c.token;
    EXPECT_EQ(SignV4(c.req, creds, "us-east-1", "service", kTime).signature, c.signature);
  }
}

TEST(SigV4Test, AddsDateAndTokenHeadersWhenMissing) {
  AwsCredentials creds = kCreds;
  creds.session_token = "TOKEN";
  SigV4Signature sig = SignV4({"POST", "/", "", {{"Host", "sqs.us-east-1.amazonaws.com"}}, "{}"}, creds, "us-east-1", "sqs", kTime);
  ASSERT_EQ(sig.added_headers.size(), 2u);
  EXPECT_EQ(sig.added_headers[0], (std::pair<std::string, std::string>{"X-Amz-Date", "20150830T123600Z"}));
  EXPECT_EQ(sig.added_headers[1], (std::pair<std::string, std::string>{"X-Amz-Security-Token", "TOKEN"}));
  EXPECT_NE(sig.authorization.find("SignedHeaders=host;x-amz-date;x-amz-security-token,"), std::string::npos);
  EXPECT_NE(sig.authorization.find("/20150830/us-east-1/sqs/aws4_request"), std::string::npos);
  // A different body gives a different signature.
  EXPECT_NE(SignV4({"POST", "/", "", {{"Host", "h"}}, "{}"}, creds, "us-east-1", "sqs", kTime).signature,
            SignV4({"POST", "/", "", {{"Host", "h"}}, "{ }"}, creds, "us-east-1", "sqs", kTime).signature);
}

TEST(SigV4Test, UriEncode) {
  EXPECT_EQ(UriEncode("a b/c~d*", false), "a%20b%2Fc~d%2A");
  EXPECT_EQ(UriEncode("a b/c", true), "a%20b/c");
  EXPECT_EQ(FormatAmzDate(kTime), "20150830T123600Z");
}

}  // namespace
}  // namespace dlagent
