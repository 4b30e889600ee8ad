#include "bootstrap/common/host_port.h"

#include <gtest/gtest.h>

namespace dlagent {
namespace {

TEST(HostPortTest, ParsesNamesAddressesAndBracketedIpv6) {
  struct Case {
    const char* text;
    const char* host;
    uint16_t port;
  } cases[] = {{"10.0.1.17:7946", "10.0.1.17", 7946}, {"node-3.cluster:7070", "node-3.cluster", 7070}, {"[::1]:65535", "::1", 65535}};
  for (const Case& c : cases) {
    Result<HostPort> hp = ParseHostPort(c.text);
    ASSERT_TRUE(hp.ok()) << c.text << ": " << hp.status().ToString();
    EXPECT_EQ(hp->host, c.host);
    EXPECT_EQ(hp->port, c.port);
  }
  EXPECT_EQ(ParseHostPort("0.0.0.0:0", /*allow_port_zero=*/true)->port, 0);
}

TEST(HostPortTest, RefusalsNameTheTextAndTheProblem) {
  struct Case {
    const char* text;
    const char* why;
  } cases[] = {{"10.0.1.17", "no port"},
               {":7946", "no host"},
               {"10.0.1.17:", "the port must be a number 1-65535"},
               {"10.0.1.17:0", "the port must be a number 1-65535"},
               {"10.0.1.17:65536", "the port must be a number 1-65535"},
               {"10.0.1.17:99999999999", "the port must be a number 1-65535"},
               {"10.0.1.17:79x", "the port must be a number 1-65535"}};
  for (const Case& c : cases) {
    Result<HostPort> hp = ParseHostPort(c.text);
    ASSERT_FALSE(hp.ok()) << c.text;
    EXPECT_EQ(hp.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(hp.status().ToString().find("\"" + std::string(c.text) + "\" is not host:port (" + c.why + ")"), std::string::npos)
        << hp.status().ToString();
  }
}

}  // namespace
}  // namespace dlagent
