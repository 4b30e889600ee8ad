#include "tests/support/free_port.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <random>
#include <set>

namespace dlagent::testing {

int FreePort() {
  // Below the kernel's ephemeral range (32768 and up by default), so that no outgoing connection or bind to
  // port 0 of another test running at the same time takes it between this call and the caller's bind.
  static std::mt19937 rng(std::random_device{}());
  // Never the same port twice in one process: a test picks all its agents' ports before the first binds them,
  // so a port still free would otherwise be handed to two agents.
  static std::set<int> given;
  std::uniform_int_distribution<int> pick(20000, 32000);
  for (int attempt = 0; attempt < 50; ++attempt) {
    const int port = pick(rng);
    if (given.count(port)) continue;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port));
    int t = ::socket(AF_INET, SOCK_STREAM, 0);
    int u = ::socket(AF_INET, SOCK_DGRAM, 0);
    const bool ok = ::bind(t, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 && ::bind(u, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(t);
    ::close(u);
    if (ok) {
      given.insert(port);
      return port;
    }
  }
  return -1;
}

}  // namespace dlagent::testing
