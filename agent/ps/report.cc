#include "agent/ps/report.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <charconv>
#include <cstddef>
#include <cstdlib>
#include <cstring>

namespace dlagent::ps {

TrainingReporter::TrainingReporter() {
  const char* path = std::getenv("DLAGENT_METRICS_SOCKET");
  const char* job = std::getenv("DLAGENT_JOB");
  if (path == nullptr || job == nullptr || *path == 0 || *job == 0 || std::strlen(path) >= sizeof(sockaddr_un::sun_path)) return;
  address_ = path;
  if (address_[0] == '@') address_[0] = '\0';
  job_ = job;
  fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
}

TrainingReporter::~TrainingReporter() {
  if (fd_ >= 0) ::close(fd_);
}

bool TrainingReporter::Report(uint64_t step, const std::vector<std::pair<std::string_view, double>>& values) const {
  if (fd_ < 0) return false;
  std::string text = "job=" + job_ + " step=" + std::to_string(step);
  for (const auto& [name, value] : values) {
    char buf[32];
    const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value);
    text += " ";
    text += name;
    text += "=";
    text.append(buf, end);
  }
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path, address_.data(), address_.size());
  const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + address_.size());
  return ::sendto(fd_, text.data(), text.size(), MSG_DONTWAIT | MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&a), len) ==
         static_cast<ssize_t>(text.size());
}

}  // namespace dlagent::ps
