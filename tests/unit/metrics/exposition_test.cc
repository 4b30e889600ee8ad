#include "agent/metrics/exposition.h"

#include <cmath>
#include <limits>

#include <gtest/gtest.h>

#include "agent/metrics/http_request.h"

namespace dlagent::metrics {
namespace {

TEST(ExpositionTest, WritesFamiliesWithHelpTypeAndLabels) {
  Exposition e;
  e.Family("dlagent_members", MetricType::kGauge, "Members by state.");
  e.Sample(3, {{"state", "alive"}});
  e.Sample(0, {{"state", "dead"}});
  e.Family("dlagent_gossip_packets_total", MetricType::kCounter, "Packets.");
  e.Sample(12345678901);
  EXPECT_EQ(e.text(),
            "# HELP dlagent_members Members by state.\n"
            "# TYPE dlagent_members gauge\n"
            "dlagent_members{state=\"alive\"} 3\n"
            "dlagent_members{state=\"dead\"} 0\n"
            "# HELP dlagent_gossip_packets_total Packets.\n"
            "# TYPE dlagent_gossip_packets_total counter\n"
            "dlagent_gossip_packets_total 12345678901\n");
}

TEST(ExpositionTest, EscapesLabelValuesAndHelp) {
  Exposition e;
  e.Family("x", MetricType::kGauge, "a \\ back\nslash");
  e.Sample(1, {{"v", "say \"hi\"\\\nbye"}, {"w", ""}});
  EXPECT_EQ(e.text(),
            "# HELP x a \\\\ back\\nslash\n"
            "# TYPE x gauge\n"
            "x{v=\"say \\\"hi\\\"\\\\\\nbye\",w=\"\"} 1\n");
}

TEST(ExpositionTest, HistogramBucketsAreCumulativeWithInfSumAndCount) {
  Exposition e;
  e.Family("dlagent_round_seconds", MetricType::kHistogram, "Rounds.");
  e.Histogram({{0.001, 0.01}, {2, 3, 1}, 0.05}, {{"shard", "0"}});
  EXPECT_EQ(e.text(),
            "# HELP dlagent_round_seconds Rounds.\n"
            "# TYPE dlagent_round_seconds histogram\n"
            "dlagent_round_seconds_bucket{shard=\"0\",le=\"0.001\"} 2\n"
            "dlagent_round_seconds_bucket{shard=\"0\",le=\"0.01\"} 5\n"
            "dlagent_round_seconds_bucket{shard=\"0\",le=\"+Inf\"} 6\n"
            "dlagent_round_seconds_sum{shard=\"0\"} 0.05\n"
            "dlagent_round_seconds_count{shard=\"0\"} 6\n");
}

TEST(ExpositionTest, FormatsValuesAsTheTextFormatReadsThem) {
  EXPECT_EQ(FormatValue(0), "0");
  EXPECT_EQ(FormatValue(-1), "-1");
  EXPECT_EQ(FormatValue(1.5), "1.5");
  EXPECT_EQ(FormatValue(1e300), "1e+300");
  EXPECT_EQ(FormatValue(std::numeric_limits<double>::quiet_NaN()), "NaN");
  EXPECT_EQ(FormatValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(FormatValue(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(FormatValue(1700000000.123), "1700000000.123");
}

TEST(HttpRequestTest, FindsTheEndOfTheHead) {
  EXPECT_EQ(RequestHeadEnd("GET / HTTP/1.1\r\nHost: x\r\n"), 0u);
  EXPECT_EQ(RequestHeadEnd("GET / HTTP/1.1\r\nHost: x\r\n\r\nbody"), 27u);
  EXPECT_EQ(RequestHeadEnd("GET / HTTP/1.0\n\n"), 16u);
  EXPECT_EQ(RequestHeadEnd(""), 0u);
}

TEST(HttpRequestTest, ParsesARequest) {
  auto r = ParseRequestHead("GET /metrics?x=1 HTTP/1.1\r\nHost: 127.0.0.1:7071\r\nAccept: */*\r\n\r\n");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->method, "GET");
  EXPECT_EQ(r->path, "/metrics");
  EXPECT_EQ(r->query, "x=1");
  EXPECT_EQ(r->authorization, "");
  auto auth = ParseRequestHead("GET /api/logs HTTP/1.1\r\naUTHORIZATION: \t Bearer 0a1b \r\n\r\n");
  ASSERT_TRUE(auth.ok()) << auth.status().ToString();
  EXPECT_EQ(auth->authorization, "Bearer 0a1b") << "any case of the name; the value without surrounding spaces";
  auto head = ParseRequestHead("\r\nHEAD / HTTP/1.0\r\n\r\n");
  ASSERT_TRUE(head.ok()) << head.status().ToString();
  EXPECT_EQ(head->method, "HEAD");
  EXPECT_EQ(head->path, "/");
}

TEST(HttpRequestTest, RefusesWhatIsNotHttpAndSaysWhy) {
  struct Case {
    const char* head;
    const char* says;
  };
  for (const Case& c :
       {Case{"GET /\r\n\r\n", "is not METHOD TARGET HTTP/1.x"}, Case{"GET  / HTTP/1.1\r\n\r\n", "is not METHOD TARGET HTTP/1.x"},
        Case{"GET / HTTP/2\r\n\r\n", "version \"HTTP/2\""}, Case{"G(T / HTTP/1.1\r\n\r\n", "method \"G(T\" is not a token"},
        Case{"GET http://evil/ HTTP/1.1\r\n\r\n", "is not a path starting with /"}, Case{"GET /\x01 HTTP/1.1\r\n\r\n", "is not a path"},
        Case{"GET / HTTP/1.1\r\nno colon\r\n\r\n", "header line \"no colon\" is not NAME: VALUE"},
        Case{"GET / HTTP/1.1\r\n folded: x\r\n\r\n", "is not NAME: VALUE"},
        Case{"GET / HTTP/1.1\r\nX: a\x01z\r\n\r\n", "header X holds control characters"}}) {
    auto r = ParseRequestHead(c.head);
    ASSERT_FALSE(r.ok()) << c.head;
    EXPECT_NE(r.status().message().find(c.says), std::string::npos) << r.status().ToString();
  }
}

TEST(HttpRequestTest, FormatsAWholeReply) {
  const std::string reply = FormatReply({405, "text/plain; charset=utf-8", "no\n", "GET, HEAD"}, false);
  EXPECT_EQ(reply,
            "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 3\r\nAllow: GET, HEAD\r\n"
            "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nContent-Security-Policy: default-src 'none'; script-src 'self'; "
            "style-src 'self'; connect-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'\r\n"
            "Connection: close\r\n\r\nno\n");
  const std::string head = FormatReply({200, "text/plain", "abc", ""}, true);
  EXPECT_NE(head.find("Content-Length: 3\r\n"), std::string::npos);
  EXPECT_EQ(head.substr(head.size() - 4), "\r\n\r\n") << "HEAD: no body";
}

}  // namespace
}  // namespace dlagent::metrics
