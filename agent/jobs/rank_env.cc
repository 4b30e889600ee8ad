#include "agent/jobs/rank_env.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <pwd.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>

#include "agent/jobs/spawn.h"
#include "bootstrap/common/duration.h"

namespace dlagent::jobs {

std::string EnvValue(const std::vector<std::string>& env, const std::string& name) {
  std::string value;
  for (const std::string& e : env) {
    if (e.size() > name.size() && e.compare(0, name.size(), name) == 0 && e[name.size()] == '=') value = e.substr(name.size() + 1);
  }
  return value;
}

std::vector<std::string> RankEnv(std::vector<std::string> base, const v1::JobSpec& spec, const v1::RankSpec& rank, const std::string& home,
                                 const std::string& checkpoints) {
  auto set = [&](const std::string& kv) {
    const std::string name = kv.substr(0, kv.find('=') + 1);
    std::erase_if(base, [&](const std::string& e) { return e.compare(0, name.size(), name) == 0; });
    base.push_back(kv);
  };
  set("USER=" + spec.user());
  set("LOGNAME=" + spec.user());
  set("HOME=" + home);
  if (EnvValue(base, "PATH").empty()) set("PATH=/usr/local/bin:/usr/bin:/bin");
  set("DLAGENT_RESTART_COUNT=" + std::to_string(spec.attempt()));
  if (!checkpoints.empty()) set("DLAGENT_JOB_CHECKPOINT_DIR=" + checkpoints);
  for (const std::string& kv : rank.env()) set(kv);
  for (const std::string& kv : spec.env()) set(kv);
  return base;
}

std::string CheckpointDir(const std::vector<std::string>& base, const v1::JobSpec& spec) {
  const std::string efs = EnvValue(base, "EFS_MOUNT");
  if (efs.empty() || efs[0] != '/') return "";
  return (efs.back() == '/' ? efs : efs + "/") + "dlagent-jobs/" + spec.id();
}

Result<bool> MakeCheckpointDir(const std::string& dir, uid_t uid, gid_t gid, Duration wait) {
  const size_t job_slash = dir.rfind('/');
  const size_t parent_slash = job_slash == std::string::npos || job_slash == 0 ? std::string::npos : dir.rfind('/', job_slash - 1);
  if (parent_slash == std::string::npos) return Status::InvalidArgument("jobs", dir + " is not STORAGE/dlagent-jobs/JOB");
  // Every string is made before the fork: between fork and _exit only system calls run.
  const std::string storage = parent_slash == 0 ? "/" : dir.substr(0, parent_slash), parent = dir.substr(0, job_slash);
  const std::string parent_name = dir.substr(parent_slash + 1, job_slash - parent_slash - 1), job_name = dir.substr(job_slash + 1);
  enum : int { kMade = 0, kNoStorage, kOpenStorage, kMkdirParent, kOpenParent, kParentNotRoots, kMkdirJob, kOpenJob, kChown, kJobNotTheUsers };
  const pid_t pid = ::fork();
  if (pid < 0) return Status::FromErrno("jobs", "fork to make " + dir, errno);
  if (pid == 0) {
    const int root = ::open(storage.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root < 0) ::_exit(errno == ENOENT || errno == ENOTDIR ? kNoStorage : kOpenStorage);
    if (::mkdirat(root, parent_name.c_str(), 0755) != 0 && errno != EEXIST) ::_exit(kMkdirParent);
    const int jobs = ::openat(root, parent_name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (jobs < 0 || ::fstat(jobs, &st) != 0) ::_exit(kOpenParent);
    if (st.st_uid != 0 || (st.st_mode & 022) != 0) ::_exit(kParentNotRoots);
    if (::mkdirat(jobs, job_name.c_str(), 0700) != 0 && errno != EEXIST) ::_exit(kMkdirJob);
    const int job = ::openat(jobs, job_name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (job < 0 || ::fstat(job, &st) != 0) ::_exit(kOpenJob);
    if (st.st_uid == 0 && uid != 0 && ::fchown(job, uid, gid) != 0) ::_exit(kChown);
    if (st.st_uid != 0 && st.st_uid != uid) ::_exit(kJobNotTheUsers);
    ::_exit(kMade);
  }
  Result<int> status = WaitChild(pid, wait);
  if (!status.ok()) return Status::DeadlineExceeded("jobs", "making " + dir + " took over " + FormatDuration(wait) + " (shared storage hangs?)");
  if (!WIFEXITED(*status)) return Status::Internal("jobs", "the process making " + dir + " did not finish");
  switch (WEXITSTATUS(*status)) {
    case kMade: return true;
    case kNoStorage: return false;
    case kOpenStorage: return Status::Unavailable("jobs", "cannot open " + storage);
    case kMkdirParent: return Status::Unavailable("jobs", "cannot make " + parent);
    case kOpenParent: return Status::PermissionDenied("jobs", "cannot open " + parent + " (it must be a directory, not a link)");
    case kParentNotRoots: return Status::PermissionDenied("jobs", parent + " belongs to another user or others may write to it; only root may");
    case kMkdirJob: return Status::Unavailable("jobs", "cannot make " + dir);
    case kOpenJob: return Status::PermissionDenied("jobs", "cannot open " + dir + " (it must be a directory, not a link)");
    case kChown: return Status::Unavailable("jobs", "cannot give " + dir + " to uid " + std::to_string(uid));
    case kJobNotTheUsers: return Status::PermissionDenied("jobs", dir + " belongs to another user, not the job's");
    default: return Status::Internal("jobs", "the process making " + dir + " failed");
  }
}

std::string InterfaceHolding(const std::string& ipv4) {
  in_addr want{};
  if (::inet_pton(AF_INET, ipv4.c_str(), &want) != 1) return "";
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return "";
  std::string name;
  for (const ifaddrs* a = list; a && name.empty(); a = a->ifa_next) {
    if (a->ifa_addr && a->ifa_addr->sa_family == AF_INET && reinterpret_cast<const sockaddr_in*>(a->ifa_addr)->sin_addr.s_addr == want.s_addr) {
      name = a->ifa_name;
    }
  }
  ::freeifaddrs(list);
  return name;
}

std::vector<std::pair<std::string, std::string>> NetworkVariables(const std::string& ifname) {
  if (ifname.empty()) return {};
  return {{"GLOO_SOCKET_IFNAME", ifname},
          {"NCCL_SOCKET_IFNAME", ifname},
          {"TP_SOCKET_IFNAME", ifname},
          {"OMPI_MCA_btl_tcp_if_include", ifname},
          {"OMPI_MCA_oob_tcp_if_include", ifname}};
}

std::string HomeOf(uid_t uid) {
  struct passwd pw, *found = nullptr;
  char buf[4096];
  if (::getpwuid_r(uid, &pw, buf, sizeof buf, &found) == 0 && found && found->pw_dir) return found->pw_dir;
  return "/";
}

std::string Workdir(const v1::JobSpec& spec) {
  if (!spec.workdir().empty()) return spec.workdir();
  const std::string home = HomeOf(spec.uid());
  struct stat st;
  return ::stat(home.c_str(), &st) == 0 && S_ISDIR(st.st_mode) ? home : "/";
}

std::vector<std::string> ProgramCandidates(const std::string& program, const std::vector<std::string>& env) {
  if (program.find('/') != std::string::npos) return {program};
  std::string path = EnvValue(env, "PATH");
  if (path.empty()) path = "/usr/local/bin:/usr/bin:/bin";
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    const size_t colon = path.find(':', start);
    std::string dir = path.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
    if (dir.empty()) dir = ".";
    out.push_back(dir + "/" + program);
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  return out;
}

bool ProgramFound(const std::string& program, const std::vector<std::string>& env, const std::string& workdir) {
  for (const std::string& f : ProgramCandidates(program, env)) {
    if (::access((f[0] == '/' ? f : workdir + "/" + f).c_str(), X_OK) == 0) return true;
  }
  return false;
}

std::string SignalName(int sig) {
  const char* abbrev = ::sigabbrev_np(sig);
  return abbrev ? std::string("SIG") + abbrev : "signal " + std::to_string(sig);
}

}  // namespace dlagent::jobs
