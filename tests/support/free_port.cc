#include "tests/support/free_port.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <random>

namespace dlagent::testing {

int FreePort() {
  // Below the kernel's ephemeral range (32768 and up by default), so that no outgoing connection or bind to
  // port 0 of another test running at the same time takes it between this call and the caller's bind.
  static std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int> pick(20000, 32000);
  for (int attempt = 0; attempt < 50; ++attempt) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(pick(rng)));
    int t = ::socket(AF_INET, SOCK_STREAM, 0);
    int u = ::socket(AF_INET, SOCK_DGRAM, 0);
    const bool ok = ::bind(t, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 && ::bind(u, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(t);
    ::close(u);
    if (ok) return ntohs(a.sin_port);
  }
  return -1;
}

}  // namespace dlagent::testing
