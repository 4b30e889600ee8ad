// NodeJobs: training metrics the ranks report (training.h) through the node's abstract datagram socket.

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>

#include <spdlog/spdlog.h>

#include "agent/jobs/node_jobs.h"
#include "agent/jobs/training.h"
#include "bootstrap/membership/packet_crypto.h"

namespace dlagent::jobs {

int NodeJobs::OpenTrainingSocket(const std::string& name) {
  if (name.empty()) return -1;
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  const size_t len = std::min(name.size(), sizeof a.sun_path - 1);
  std::memcpy(a.sun_path + 1, name.data(), len);  // sun_path[0] = 0: the abstract namespace, no file to guard
  const int one = 1;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + len)) != 0 ||
      ::setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) != 0) {
    spdlog::warn("jobs: cannot serve training reports on @{}: {}; ranks' reports are not taken", name, std::strerror(errno));
    if (fd >= 0) ::close(fd);
    return -1;
  }
  return fd;
}

void NodeJobs::ReadReports() {
  for (int i = 0; i < kReportsPerTurn; ++i) {
    char buf[kMaxReportBytes + 1];
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred))];
    iovec iov{buf, sizeof buf};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const ssize_t n = ::recvmsg(training_fd_, &msg, MSG_DONTWAIT);
    if (n < 0) return;  // EAGAIN: none left (or an error that the next turn sees again)
    const cmsghdr* c = CMSG_FIRSTHDR(&msg);
    if (c == nullptr || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_CREDENTIALS) {
      ++counters_.reports_refused;  // SO_PASSCRED gives every datagram its sender's credentials
      continue;
    }
    ucred who;
    std::memcpy(&who, CMSG_DATA(c), sizeof who);
    Result<TrainingReport> report = (msg.msg_flags & MSG_TRUNC) != 0
                                        ? Status::InvalidArgument("training", "over " + std::to_string(kMaxReportBytes) + " bytes")
                                        : ParseTrainingReport(std::string_view(buf, static_cast<size_t>(n)));
    if (!report.ok()) {
      if (counters_.reports_malformed++ == 0) {
        spdlog::warn("jobs: a training report from pid {} refused: {} (only the first is logged)", who.pid, report.status().message());
      }
      continue;
    }
    auto it = jobs_.find(report->job);
    if (it == jobs_.end() || it->second->ended != MonoTime::max() || (who.uid != 0 && who.uid != it->second->spec.uid())) {
      ++counters_.reports_refused;
      continue;
    }
    Status st = ApplyTrainingReport(*report, swim::NowUnixMs(), &it->second->training);
    ++counters_.reports;
    Job& job = *it->second;
    const bool rank0 = std::any_of(job.ranks.begin(), job.ranks.end(),
                                   [&](const Rank& r) { return r.state.rank() == 0 && r.state.attempt() == job.spec.attempt(); });
    if (const MonoTime now = std::chrono::steady_clock::now();
        now - job.training_pushed >= (rank0 ? kTrainingPushEvery : kTrainingPushEveryElsewhere)) {
      job.training_pushed = now;
      Changed(job);
    }
    if (!st.ok()) ++counters_.reports_too_many_names;
  }
}

std::map<std::string, pb::Training> NodeJobs::Training(Duration grace) const {
  MutexLock lock(mu_);
  std::map<std::string, pb::Training> out;
  const MonoTime now = std::chrono::steady_clock::now();
  for (const auto& [id, job] : jobs_) {
    if (job->training.reports() == 0) continue;
    if (job->ended == MonoTime::max() || now - job->ended < grace) out[id] = job->training;
  }
  return out;
}

}  // namespace dlagent::jobs
