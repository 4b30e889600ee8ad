#include "agent/ps/frame.h"

#include "bootstrap/common/crypto.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <memory>

#include "bootstrap/common/host_port.h"

namespace dlagent::ps {
namespace {

constexpr char kComponent[] = "dlps-net";

Status Errno(const std::string& what, int err) {
  if (err == EAGAIN || err == EWOULDBLOCK) return Status::DeadlineExceeded(kComponent, what + ": timed out");
  if (err == ECONNRESET || err == EPIPE || err == ECONNREFUSED) return Status::Unavailable(kComponent, what + ": " + std::strerror(err));
  return Status::FromErrno(kComponent, what, err);
}

struct AddrInfoDeleter {
  void operator()(addrinfo* a) const { freeaddrinfo(a); }
};

Result<std::unique_ptr<addrinfo, AddrInfoDeleter>> Resolve(const std::string& address, bool passive) {
  std::string host, port;
  RETURN_IF_ERROR(SplitHostPort(address, &host, &port));
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  addrinfo* res = nullptr;
  const int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0) return Status::InvalidArgument(kComponent, "cannot resolve " + address + ": " + gai_strerror(rc));
  return std::unique_ptr<addrinfo, AddrInfoDeleter>(res);
}

}  // namespace

Status ReadFull(int fd, void* dst, size_t n) {
  auto* p = static_cast<char*>(dst);
  while (n > 0) {
    const ssize_t got = ::recv(fd, p, n, MSG_WAITALL);
    if (got == 0) return Status::Unavailable(kComponent, "connection closed");
    if (got < 0) {
      if (errno == EINTR) continue;
      return Errno("receive", errno);
    }
    p += got;
    n -= static_cast<size_t>(got);
  }
  return Status::Ok();
}

Status Discard(int fd, uint64_t n) {
  char sink[64 << 10];
  while (n > 0) {
    const size_t step = static_cast<size_t>(std::min<uint64_t>(n, sizeof sink));
    RETURN_IF_ERROR(ReadFull(fd, sink, step));
    n -= step;
  }
  return Status::Ok();
}

Status WriteAll(int fd, iovec* iov, int count) {
  while (count > 0) {
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = static_cast<size_t>(count);
    const ssize_t sent = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (sent < 0) {
      if (errno == EINTR) continue;
      return Errno("send", errno);
    }
    size_t left = static_cast<size_t>(sent);
    while (count > 0 && left >= iov->iov_len) {
      left -= iov->iov_len;
      ++iov;
      --count;
    }
    if (count > 0) {
      iov->iov_base = static_cast<char*>(iov->iov_base) + left;
      iov->iov_len -= left;
    }
  }
  return Status::Ok();
}

Status SplitHostPort(const std::string& address, std::string* host, std::string* port) {
  Result<HostPort> hp = ParseHostPort(address, /*allow_port_zero=*/true);
  if (!hp.ok()) return Status::InvalidArgument(kComponent, hp.status().message());
  *host = hp->host == "0.0.0.0" || hp->host == "*" ? "" : hp->host;  // "": any address
  *port = std::to_string(hp->port);
  return Status::Ok();
}

Result<int> ConnectTcp(const std::string& address, std::chrono::milliseconds timeout) {
  ASSIGN_OR_RETURN(auto addrs, Resolve(address, false));
  Status last = Status::Unavailable(kComponent, "connect to " + address + ": no address");
  for (addrinfo* a = addrs.get(); a; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
    if (fd < 0) return Errno("socket", errno);
    int rc = ::connect(fd, a->ai_addr, a->ai_addrlen);
    if (rc != 0 && errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      rc = ::poll(&p, 1, static_cast<int>(timeout.count()));
      if (rc == 0) {
        ::close(fd);
        last = Status::DeadlineExceeded(kComponent, "connect to " + address + ": no answer in " + std::to_string(timeout.count()) + " ms");
        continue;
      }
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      errno = err;
      rc = err == 0 ? 0 : -1;
    }
    if (rc != 0) {
      last = Errno("connect to " + address, errno);
      ::close(fd);
      continue;
    }
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
  }
  return last;
}

Result<int> ListenTcp(const std::string& address, int* port) {
  ASSIGN_OR_RETURN(auto addrs, Resolve(address, true));
  Status last = Status::Unavailable(kComponent, "listen on " + address + ": no address");
  for (addrinfo* a = addrs.get(); a; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) return Errno("socket", errno);
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, a->ai_addr, a->ai_addrlen) != 0 || ::listen(fd, 1024) != 0) {
      last = Errno("listen on " + address, errno);
      ::close(fd);
      continue;
    }
    sockaddr_storage bound{};
    socklen_t len = sizeof bound;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
    *port =
        ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
    return fd;
  }
  return last;
}

std::string DlpsJobToken(std::string_view key, std::string_view job) { return HmacSha256(key, "dlps-job:" + std::string(job)); }

InitBody MakeInitBody(uint64_t length, const OptimizerSpec& spec) {
  InitBody b;
  b.length = length;
  std::memcpy(b.kind, spec.kind.data(), std::min(spec.kind.size(), sizeof b.kind));  // longer is no kind the server knows
  b.learning_rate = spec.learning_rate;
  b.momentum = spec.momentum;
  b.weight_decay = spec.weight_decay;
  b.beta1 = spec.beta1;
  b.beta2 = spec.beta2;
  b.epsilon = spec.epsilon;
  b.rescale = spec.rescale;
  return b;
}

OptimizerSpec SpecOf(const InitBody& b) {
  return {std::string(b.kind, ::strnlen(b.kind, sizeof b.kind)), b.learning_rate, b.momentum, b.weight_decay, b.beta1, b.beta2, b.epsilon, b.rescale};
}

bool IsControl(Op op) { return op >= Op::kInit && op <= Op::kRestore; }

const char* OpName(Op op) {
  switch (op) {
    case Op::kPush: return "push";
    case Op::kPull: return "pull";
    case Op::kInit: return "init";
    case Op::kBarrier: return "barrier";
    case Op::kCheckpoint: return "checkpoint";
    case Op::kCommitCheckpoint: return "commit checkpoint";
    case Op::kRestore: return "restore";
    case Op::kPushReply:
    case Op::kPullReply:
    case Op::kControlReply:
    case Op::kError: return "reply";
  }
  return "request";
}

std::string EncodeCheckpointFiles(const std::vector<CheckpointFile>& files) {
  std::string out;
  for (const CheckpointFile& f : files) out += f.name + " " + std::to_string(f.bytes) + " " + f.sha256 + "\n";
  return out;
}

Result<std::vector<CheckpointFile>> DecodeCheckpointFiles(std::string_view text) {
  std::vector<CheckpointFile> files;
  size_t line = 0;
  while (!text.empty()) {
    ++line;
    const size_t end = text.find('\n');
    if (end == std::string_view::npos) return Status::InvalidArgument("dlps", "checkpoint file list: line " + std::to_string(line) + " is not ended");
    const std::string_view l = text.substr(0, end);
    text.remove_prefix(end + 1);
    const size_t a = l.find(' '), b = a == std::string_view::npos ? a : l.find(' ', a + 1);
    CheckpointFile f;
    if (b != std::string_view::npos && l.find(' ', b + 1) == std::string_view::npos && a > 0 && b > a + 1 && b + 1 < l.size()) {
      f.name = l.substr(0, a);
      f.sha256 = l.substr(b + 1);
      const std::string_view n = l.substr(a + 1, b - a - 1);
      const char* last = n.data() + n.size();
      if (std::from_chars(n.data(), last, f.bytes).ptr == last) {
        files.push_back(std::move(f));
        continue;
      }
    }
    return Status::InvalidArgument("dlps", "checkpoint file list: line " + std::to_string(line) + " is not 'name bytes sha256'");
  }
  return files;
}

}  // namespace dlagent::ps
