#include "agent/rpc/unix_socket.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace dlagent {

Result<int> ConnectUnixSocket(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    return Status::InvalidArgument("socket", path + " is longer than a Unix socket path may be");
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::FromErrno("socket", "socket", errno);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int err = errno;
    ::close(fd);
    if (err == ENOENT) return Status::NotFound("socket", "no socket at " + path);
    if (err == EACCES || err == EPERM) return Status::PermissionDenied("socket", "permission denied on " + path);
    if (err == ECONNREFUSED) return Status::Unavailable("socket", "nobody is listening on " + path);
    if (err == ENOTDIR) return Status::NotFound("socket", "no socket at " + path + " (a parent is not a directory)");
    return Status::FromErrno("socket", "connect " + path, err);
  }
  return fd;
}

}  // namespace dlagent
