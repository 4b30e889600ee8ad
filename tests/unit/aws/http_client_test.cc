#include "bootstrap/aws/http_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <set>
#include <thread>

#include <gtest/gtest.h>
#include <httplib.h>

#include "tests/support/local_http_server.h"

namespace dlagent {
namespace {

using namespace std::chrono;

// A local HTTP server for one test.
class TestServer {
 public:
  TestServer() {
    server_.Get("/hello", [this](const httplib::Request& req, httplib::Response& res) {
      std::lock_guard<std::mutex> lock(mu_);
      ports_.insert(req.remote_port);
      res.set_header("X-Answer", "42");
      res.set_content("hello " + req.get_header_value("X-Who"), "text/plain");
    });
    server_.Put("/echo", [](const httplib::Request& req, httplib::Response& res) {
      res.status = 201;
      res.set_content(req.body + "|" + req.get_header_value("Content-Type"), "text/plain");
    });
    server_.Get("/slow", [](const httplib::Request&, httplib::Response& res) {
      std::this_thread::sleep_for(milliseconds(1500));
      res.set_content("late", "text/plain");
    });
    server_.Get("/big", [](const httplib::Request&, httplib::Response& res) { res.set_content(std::string(100000, 'x'), "text/plain"); });
    server_.Get("/missing", [](const httplib::Request&, httplib::Response& res) { res.status = 404; });
    EXPECT_TRUE(http_.Start().ok());
  }
  ~TestServer() { http_.Stop(); }  // handlers use the members below
  std::string Url(const std::string& path) const { return http_.url(path); }
  size_t distinct_client_ports() {
    std::lock_guard<std::mutex> lock(mu_);
    return ports_.size();
  }

 private:
  testing::LocalHttpServer http_;
  httplib::Server& server_ = http_.server();
  std::mutex mu_;
  std::set<int> ports_;
};

TEST(HttpClientTest, GetWithHeaders) {
  TestServer server;
  auto http = NewCurlHttpClient();
  Result<HttpResponse> r = http->Send({"GET", server.Url("/hello"), {{"X-Who", "agent"}}});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "hello agent");
  EXPECT_EQ(r->Header("x-answer"), "42");
}

TEST(HttpClientTest, PutSendsExactlyTheBodyAndNoDefaultContentType) {
  TestServer server;
  auto http = NewCurlHttpClient();
  Result<HttpResponse> r = http->Send({"PUT", server.Url("/echo"), {}, "{\"Status\":\"SUCCESS\"}"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 201);
  EXPECT_EQ(r->body, "{\"Status\":\"SUCCESS\"}|");
  r = http->Send({"PUT", server.Url("/echo"), {{"Content-Type", "application/json"}}, "x"});
  EXPECT_EQ(r->body, "x|application/json");
}

TEST(HttpClientTest, HttpErrorStatusIsNotAnError) {
  TestServer server;
  Result<HttpResponse> r = NewCurlHttpClient()->Send({"GET", server.Url("/missing")});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 404);
}

TEST(HttpClientTest, DeadlineIsKept) {
  TestServer server;
  HttpRequest req{"GET", server.Url("/slow")};
  req.timeout = milliseconds(300);
  const auto start = steady_clock::now();
  Result<HttpResponse> r = NewCurlHttpClient()->Send(req);
  EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded) << r.status().ToString();
  EXPECT_LT(steady_clock::now() - start, milliseconds(1200));
}

TEST(HttpClientTest, ResponseSizeIsCapped) {
  TestServer server;
  HttpRequest req{"GET", server.Url("/big")};
  req.max_response_bytes = 1000;
  Result<HttpResponse> r = NewCurlHttpClient()->Send(req);
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(r.status().ToString().find("larger than 1000 bytes"), std::string::npos);
}

TEST(HttpClientTest, ConnectionRefusedIsUnavailable) {
  // A port bound but never listening: connections to it are refused.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const int port = ntohs(addr.sin_port);
  Result<HttpResponse> r = NewCurlHttpClient()->Send({"GET", "http://127.0.0.1:" + std::to_string(port) + "/"});
  ::close(fd);
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().ToString();
  EXPECT_TRUE(r.status().retryable());
}

TEST(HttpClientTest, KeepAliveReusesTheConnection) {
  TestServer server;
  auto http = NewCurlHttpClient();
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(http->Send({"GET", server.Url("/hello")}).ok());
  EXPECT_EQ(server.distinct_client_ports(), 1u);
  auto fresh = NewCurlHttpClient({.reuse_connections = false});
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(fresh->Send({"GET", server.Url("/hello")}).ok());
  EXPECT_EQ(server.distinct_client_ports(), 6u);
}

TEST(UrlTest, Parses) {
  Result<Url> u = ParseUrl("http://127.0.0.1:4566/000000000000/q?x=1");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->host, "127.0.0.1");
  EXPECT_EQ(u->port, 4566);
  EXPECT_EQ(u->path, "/000000000000/q");
  EXPECT_EQ(u->query, "x=1");
  EXPECT_EQ(u->HostHeader(), "127.0.0.1:4566");
  u = ParseUrl("https://sqs.us-east-1.amazonaws.com");
  EXPECT_EQ(u->port, 443);
  EXPECT_EQ(u->path, "/");
  EXPECT_EQ(u->HostHeader(), "sqs.us-east-1.amazonaws.com");
  EXPECT_EQ(ParseUrl("http://[::1]:80/")->HostHeader(), "[::1]:80");
  for (const char* bad : {"", "127.0.0.1:80", "ftp://x/", "http://", "http://h:99999/", "http://h:x/", "http://u@h/"}) {
    EXPECT_FALSE(ParseUrl(bad).ok()) << bad;
  }
}

}  // namespace
}  // namespace dlagent
