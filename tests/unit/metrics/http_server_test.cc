#include "agent/metrics/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace dlagent::metrics {
namespace {

using namespace std::chrono;

class HttpServerTest : public ::testing::Test {
 protected:
  void StartServer(HttpServerOptions o) {
    o.listen = "127.0.0.1:0";
    auto s = HttpServer::Start(*env_, o, [this](const HttpRequest& req, const HttpServerStats& stats) {
      ++handled_;
      last_requests_ = stats.requests;
      if (req.path == "/metrics") return HttpReply{200, "text/plain; version=0.0.4", "up 1\n", ""};
      return HttpReply{404, "text/plain", "not found\n", ""};
    });
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    server_ = std::move(*s);
  }

  int Connect() {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(server_->port());
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    return fd;
  }

  // Everything the server sends until it closes (or 10 s pass: the test then fails on what it got).
  static std::string ReadAll(int fd) {
    std::string out;
    char buf[4096];
    const auto end = steady_clock::now() + seconds(10);
    while (steady_clock::now() < end) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }

  std::string Exchange(const std::string& request) {
    const int fd = Connect();
    EXPECT_EQ(::send(fd, request.data(), request.size(), MSG_NOSIGNAL), static_cast<ssize_t>(request.size()));
    std::string reply = ReadAll(fd);
    ::close(fd);
    return reply;
  }

  std::unique_ptr<Env> env_ = NewPosixEnv();
  std::unique_ptr<HttpServer> server_;
  std::atomic<int> handled_{0};
  std::atomic<uint64_t> last_requests_{0};
};

TEST_F(HttpServerTest, ServesGetAndHeadAndCountsThem) {
  StartServer({});
  const std::string get = Exchange("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(get.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << get;
  EXPECT_NE(get.find("Content-Type: text/plain; version=0.0.4\r\n"), std::string::npos);
  EXPECT_EQ(get.substr(get.size() - 5), "up 1\n");
  const std::string head = Exchange("HEAD /metrics HTTP/1.0\r\n\r\n");
  EXPECT_EQ(head.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << head;
  EXPECT_EQ(head.find("up 1"), std::string::npos) << "HEAD has no body";
  EXPECT_EQ(Exchange("GET /nope HTTP/1.1\r\n\r\n").rfind("HTTP/1.1 404 ", 0), 0u);
  EXPECT_EQ(handled_, 3);
  EXPECT_EQ(last_requests_, 3u) << "the handler sees the counters, itself included";
  EXPECT_EQ(server_->stats().requests, 3u);
}

TEST_F(HttpServerTest, AnswersOtherMethodsAndGarbageWithoutCallingTheHandler) {
  StartServer({});
  const std::string post = Exchange("POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
  EXPECT_EQ(post.rfind("HTTP/1.1 405 Method Not Allowed\r\n", 0), 0u) << post;
  EXPECT_NE(post.find("Allow: GET, HEAD\r\n"), std::string::npos);
  const std::string garbage = Exchange(std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 15));
  EXPECT_EQ(garbage.rfind("HTTP/1.1 400 Bad Request\r\n", 0), 0u) << garbage;
  EXPECT_EQ(handled_, 0);
  EXPECT_EQ(server_->stats().bad_requests, 2u);
}

TEST_F(HttpServerTest, AHeadTooLongIsRefusedWith431) {
  StartServer({});
  const std::string big = "GET /metrics HTTP/1.1\r\nX-Pad: " + std::string(20000, 'a') + "\r\n\r\n";
  const int fd = Connect();
  ::send(fd, big.data(), big.size(), MSG_NOSIGNAL);  // the server may close before it takes it all
  const std::string reply = ReadAll(fd);
  ::close(fd);
  EXPECT_EQ(reply.rfind("HTTP/1.1 431 ", 0), 0u) << reply.substr(0, 100);
  EXPECT_EQ(handled_, 0);
}

TEST_F(HttpServerTest, SlowClientsAreCutOffAndDoNotHoldUpOthers) {
  HttpServerOptions o;
  o.timeout = milliseconds(300);
  StartServer(o);
  // A client that sends half a head and waits: the server closes it after the timeout.
  const int slow = Connect();
  ::send(slow, "GET /metr", 9, MSG_NOSIGNAL);
  // Meanwhile another is served at once.
  const auto t0 = steady_clock::now();
  EXPECT_EQ(Exchange("GET /metrics HTTP/1.1\r\n\r\n").rfind("HTTP/1.1 200 ", 0), 0u);
  EXPECT_LT(steady_clock::now() - t0, milliseconds(250)) << "served while the slow client waits";
  EXPECT_EQ(ReadAll(slow), "") << "closed without a reply";
  ::close(slow);
  EXPECT_EQ(server_->stats().timeouts, 1u);
}

TEST_F(HttpServerTest, ConnectionsOverTheCapAreClosedAndTheServerStillServes) {
  HttpServerOptions o;
  o.max_connections = 2;
  o.timeout = seconds(5);
  StartServer(o);
  std::vector<int> idle = {Connect(), Connect()};
  // Both are taken once the server turns; a third is closed unread. Wait for the server to have taken them:
  // the third's close is the event.
  const int third = Connect();
  EXPECT_EQ(ReadAll(third), "");
  ::close(third);
  EXPECT_GE(server_->stats().refused, 1u);
  for (const int fd : idle) ::close(fd);
  // Once they are gone (the server sees their close), a request is served again.
  std::string reply;
  for (int i = 0; i < 50 && reply.rfind("HTTP/1.1 200 ", 0) != 0; ++i) reply = Exchange("GET /metrics HTTP/1.1\r\n\r\n");
  EXPECT_EQ(reply.rfind("HTTP/1.1 200 ", 0), 0u) << reply;
}

TEST_F(HttpServerTest, AnAddressInUseIsAClearError) {
  StartServer({});
  auto second = HttpServer::Start(*env_, {"127.0.0.1:" + std::to_string(server_->port())},
                                  [](const HttpRequest&, const HttpServerStats&) { return HttpReply{}; });
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.status().message().find("cannot serve on 127.0.0.1:" + std::to_string(server_->port())), std::string::npos)
      << second.status().ToString();
}

}  // namespace
}  // namespace dlagent::metrics
