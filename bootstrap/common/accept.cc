#include "bootstrap/common/accept.h"

#include <errno.h>
#include <sys/socket.h>

#include <cstring>
#include <thread>

namespace dlagent {

int AcceptOne(int listen_fd, std::string* error, Duration backoff) {
  const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (fd >= 0) return fd;
  const int err = errno;
  if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR || err == ECONNABORTED) return -1;
  if (error) *error = std::string("accept: ") + std::strerror(err);
  if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) std::this_thread::sleep_for(backoff);
  return -1;
}

}  // namespace dlagent
