#include "tests/support/h2_hold.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <vector>

namespace dlagent::testing {
namespace {

enum FrameType : uint8_t { kData = 0, kHeaders = 1, kRstStream = 3, kSettings = 4, kPing = 6, kGoaway = 7, kWindowUpdate = 8 };
constexpr uint8_t kEndHeaders = 0x4, kAck = 0x1;
constexpr size_t kFrameMax = 16384;        // SETTINGS_MAX_FRAME_SIZE's default: never more in one DATA frame
constexpr size_t kOutMax = 256 << 10;      // what is queued before the socket takes it
constexpr int64_t kInitialWindow = 65535;  // RFC 9113, 6.9.2

void Frame(std::string& out, uint8_t type, uint8_t flags, uint32_t stream, const std::string& payload) {
  const uint32_t len = static_cast<uint32_t>(payload.size());
  const char head[9] = {static_cast<char>(len >> 16),    static_cast<char>(len >> 8),    static_cast<char>(len),
                        static_cast<char>(type),         static_cast<char>(flags),       static_cast<char>(stream >> 24 & 0x7f),
                        static_cast<char>(stream >> 16), static_cast<char>(stream >> 8), static_cast<char>(stream)};
  out.append(head, sizeof head);
  out += payload;
}

// HPACK: a literal header field without indexing, with a new name, no Huffman coding (RFC 7541, 6.2.2); every
// string here is shorter than 127 bytes.
void Literal(std::string& block, const std::string& name, const std::string& value) {
  block += '\0';
  block += static_cast<char>(name.size());
  block += name;
  block += static_cast<char>(value.size());
  block += value;
}

uint32_t Be32(const unsigned char* p) { return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | p[3]; }

struct Stream {
  int64_t window = kInitialWindow;
  size_t sent = 0;  // of the message's bytes, its 5-byte gRPC prefix included
  bool reset = false;
};

struct Conn {
  int fd = -1;
  bool open = false;
  std::string out, in;
  int64_t window = kInitialWindow;
  int64_t initial = kInitialWindow;  // the server's SETTINGS_INITIAL_WINDOW_SIZE
  std::map<uint32_t, Stream> streams;
};

// Reads the frames the server sent and answers what needs an answer. False when the server ended the connection.
bool Read(Conn& c, H2HoldResult& r) {
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(c.fd, buf, sizeof buf);
    if (n > 0) {
      c.in.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    return false;  // EOF or an error
  }
  while (c.in.size() >= 9) {
    const auto* h = reinterpret_cast<const unsigned char*>(c.in.data());
    const size_t len = size_t{h[0]} << 16 | size_t{h[1]} << 8 | h[2];
    if (c.in.size() < 9 + len) break;
    const uint8_t type = h[3], flags = h[4];
    const uint32_t stream = Be32(h + 5) & 0x7fffffff;
    const unsigned char* p = h + 9;
    switch (type) {
      case kSettings:
        if (!(flags & kAck)) {
          for (size_t i = 0; i + 6 <= len; i += 6) {
            const uint16_t id = static_cast<uint16_t>(p[i] << 8 | p[i + 1]);
            if (id != 4) continue;  // SETTINGS_INITIAL_WINDOW_SIZE: every open stream's window moves by the change
            const int64_t initial = Be32(p + i + 2);
            for (auto& [sid, s] : c.streams) s.window += initial - c.initial;
            c.initial = initial;
          }
          Frame(c.out, kSettings, kAck, 0, "");
        }
        break;
      case kPing:
        if (!(flags & kAck)) Frame(c.out, kPing, kAck, 0, std::string(reinterpret_cast<const char*>(p), len));
        break;
      case kWindowUpdate:
        if (len == 4) {
          const int64_t inc = Be32(p) & 0x7fffffff;
          if (stream == 0) {
            c.window += inc;
          } else if (auto it = c.streams.find(stream); it != c.streams.end()) {
            it->second.window += inc;
          }
        }
        break;
      case kRstStream:
        if (auto it = c.streams.find(stream); it != c.streams.end() && !it->second.reset) {
          it->second.reset = true;
          ++r.streams_reset;
        }
        break;
      case kGoaway: return false;
      default: break;  // HEADERS (a call's trailers), DATA: nothing to answer
    }
    c.in.erase(0, 9 + len);
  }
  return true;
}

// Queues the DATA that the windows allow, all but the message's last byte.
void Fill(Conn& c, size_t declared, H2HoldResult& r) {
  const size_t total = 5 + declared - 1;
  for (auto& [sid, s] : c.streams) {
    while (!s.reset && s.sent < total && c.out.size() < kOutMax) {
      const int64_t room = std::min(c.window, s.window);
      if (room <= 0) break;
      const size_t n = std::min({kFrameMax, static_cast<size_t>(room), total - s.sent});
      std::string payload(n, '\0');
      if (s.sent == 0) {  // the gRPC prefix: not compressed, then the declared length
        payload[1] = static_cast<char>(declared >> 24);
        payload[2] = static_cast<char>(declared >> 16);
        payload[3] = static_cast<char>(declared >> 8);
        payload[4] = static_cast<char>(declared);
      }
      Frame(c.out, kData, 0, sid, payload);
      s.sent += n;
      s.window -= static_cast<int64_t>(n);
      c.window -= static_cast<int64_t>(n);
      r.accepted_bytes += n;
    }
  }
}

bool Flush(Conn& c) {
  while (!c.out.empty()) {
    const ssize_t n = ::send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL);
    if (n > 0) {
      c.out.erase(0, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    return n < 0 && errno == EAGAIN;
  }
  return true;
}

}  // namespace

void SetTcpLoopback(H2HoldOptions& o, int port) {
  auto* a = reinterpret_cast<sockaddr_in*>(&o.addr);
  *a = sockaddr_in{};
  a->sin_family = AF_INET;
  a->sin_port = htons(static_cast<uint16_t>(port));
  a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  o.addr_len = sizeof(sockaddr_in);
}

void SetUnixPath(H2HoldOptions& o, const std::string& path) {
  auto* a = reinterpret_cast<sockaddr_un*>(&o.addr);
  *a = sockaddr_un{};
  a->sun_family = AF_UNIX;
  std::strncpy(a->sun_path, path.c_str(), sizeof a->sun_path - 1);
  o.addr_len = sizeof(sockaddr_un);
}

H2HoldResult HoldIncompleteMessages(const H2HoldOptions& o) {
  H2HoldResult r;
  std::string headers;
  Literal(headers, ":method", "POST");
  Literal(headers, ":scheme", "http");
  Literal(headers, ":path", o.path);
  Literal(headers, ":authority", "localhost");
  Literal(headers, "content-type", "application/grpc");
  Literal(headers, "te", "trailers");
  std::vector<Conn> conns(static_cast<size_t>(o.connections));
  for (Conn& c : conns) {
    c.fd = ::socket(o.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c.fd < 0 || ::connect(c.fd, reinterpret_cast<const sockaddr*>(&o.addr), o.addr_len) != 0) continue;
    ::fcntl(c.fd, F_SETFL, ::fcntl(c.fd, F_GETFL) | O_NONBLOCK);
    c.open = true;
    ++r.connected;
    c.out = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    Frame(c.out, kSettings, 0, 0, "");
    for (int i = 0; i < o.streams; ++i) {
      const uint32_t sid = 1 + 2 * static_cast<uint32_t>(i);
      Frame(c.out, kHeaders, kEndHeaders, sid, headers);
      c.streams[sid] = Stream{};
    }
  }
  const auto until = std::chrono::steady_clock::now() + o.duration;
  std::vector<pollfd> fds;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now()).count();
    if (left <= 0) break;
    fds.clear();
    for (Conn& c : conns) {
      if (!c.open) continue;
      Fill(c, o.declared, r);
      fds.push_back({c.fd, static_cast<short>(POLLIN | (c.out.empty() ? 0 : POLLOUT)), 0});
    }
    if (fds.empty()) break;
    if (::poll(fds.data(), fds.size(), static_cast<int>(std::min<int64_t>(left, 100))) < 0 && errno != EINTR) break;
    size_t k = 0;
    for (Conn& c : conns) {
      if (!c.open) continue;
      const short ev = fds[k++].revents;
      bool alive = true;
      if (ev & (POLLIN | POLLHUP | POLLERR)) alive = Read(c, r);
      if (alive) alive = Flush(c);
      if (!alive) {
        ++r.closed_by_server;
        c.open = false;
      }
    }
  }
  for (Conn& c : conns) {
    if (c.fd >= 0) ::close(c.fd);
  }
  return r;
}

}  // namespace dlagent::testing
