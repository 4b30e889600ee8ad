#include "agent/rpc/control_server.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <grpcpp/server_posix.h>
#include <spdlog/spdlog.h>

#include "agent/rpc/control_codec.h"
#include "agent/rpc/unix_socket.h"
#include "bootstrap/common/accept.h"
#include "proto/control.grpc.pb.h"
#include "proto/grpc_limits.h"
#include "proto/grpc_status.h"

namespace dlagent {
namespace {

namespace pb = ::dlagent::control::v1;

// The peer's supplementary groups.
bool PeerGroups(int fd, std::vector<gid_t>* groups) {
  groups->resize(64);
  socklen_t len = static_cast<socklen_t>(groups->size() * sizeof(gid_t));
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups->data(), &len) != 0) {
    if (errno != ERANGE) return false;
    groups->resize(len / sizeof(gid_t));
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups->data(), &len) != 0) return false;
  }
  groups->resize(len / sizeof(gid_t));
  return true;
}

// Root, the agent's own user, or a member of the socket's group.
bool PeerAllowed(int fd, gid_t group, bool have_group, ucred* cred) {
  socklen_t len = sizeof *cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cred, &len) != 0) return false;
  if (cred->uid == 0 || cred->uid == ::geteuid()) return true;
  if (!have_group) return false;
  if (cred->gid == group) return true;
  std::vector<gid_t> groups;
  if (!PeerGroups(fd, &groups)) return false;
  for (gid_t g : groups)
    if (g == group) return true;
  return false;
}

// A call's caller. gRPC names a connection handed to it by fd "fd:N"; the fd stays open while a call on it is
// served (the transport outlives its calls), so the credentials read now are that connection's.
Result<PeerCredentials> PeerOf(const std::string& peer) {
  int fd = -1, used = 0;
  if (std::sscanf(peer.c_str(), "fd:%d%n", &fd, &used) != 1 || used != static_cast<int>(peer.size()) || fd < 0) {
    return Status::Internal("control", "cannot tell who is calling (peer \"" + peer + "\")");
  }
  ucred cred{};
  socklen_t len = sizeof cred;
  std::vector<gid_t> groups;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || !PeerGroups(fd, &groups)) {
    return Status::FromErrno("control", "reading the caller's credentials", errno);
  }
  PeerCredentials who;
  who.uid = cred.uid;
  who.gid = cred.gid;
  who.pid = cred.pid;
  who.groups.assign(groups.begin(), groups.end());
  return who;
}

class ControlService final : public pb::Control::CallbackService {
 public:
  explicit ControlService(ControlHandler* handler) : handler_(handler) {}
  // The job calls still running finish first (each is bounded by the deadlines of its calls to other agents).
  ~ControlService() override {
    while (running_.load() > 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }

  grpc::ServerUnaryReactor* GetStatus(grpc::CallbackServerContext* ctx, const pb::GetStatusRequest*, pb::AgentStatus* reply) override {
    ToProto(handler_->GetStatus(), reply);
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerUnaryReactor* ListMembers(grpc::CallbackServerContext* ctx, const pb::ListMembersRequest*, pb::MemberList* reply) override {
    ToProto(handler_->ListMembers(), reply);
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerUnaryReactor* RunJob(grpc::CallbackServerContext* ctx, const jobs::v1::RunJobRequest* req, jobs::v1::JobSummary* reply) override {
    return Blocking(ctx, reply, [this, req](const PeerCredentials& who) { return handler_->RunJob(who, *req); });
  }
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* ctx, const pb::ListJobsRequest* req, jobs::v1::JobList* reply) override {
    return Blocking(ctx, reply, [this, req](const PeerCredentials& who) { return handler_->ListJobs(who, req->after(), req->limit()); });
  }
  grpc::ServerUnaryReactor* JobOutput(grpc::CallbackServerContext* ctx, const jobs::v1::JobOutputRequest* req,
                                      jobs::v1::JobOutputReply* reply) override {
    return Blocking(ctx, reply, [this, req](const PeerCredentials& who) { return handler_->JobOutput(who, *req); });
  }
  grpc::ServerUnaryReactor* KillJob(grpc::CallbackServerContext* ctx, const jobs::v1::KillJobRequest* req, jobs::v1::KillJobReply* reply) override {
    return Blocking(ctx, reply, [this, req](const PeerCredentials& who) { return handler_->KillJob(who, *req); });
  }

  grpc::ServerUnaryReactor* AttachProcess(grpc::CallbackServerContext* ctx, const jobs::v1::AttachRequest* req,
                                          jobs::v1::AttachReply* reply) override {
    return Blocking(ctx, reply, [this, req](const PeerCredentials& who) { return handler_->AttachProcess(who, *req); });
  }

  grpc::ServerUnaryReactor* CheckHealth(grpc::CallbackServerContext* ctx, const jobs::v1::HealthCheckRequest* req,
                                        jobs::v1::HealthReport* reply) override {
    return Blocking(ctx, reply, [this, req](const PeerCredentials& who) { return handler_->CheckHealth(who, *req); });
  }

  grpc::ServerUnaryReactor* GetVersion(grpc::CallbackServerContext* ctx, const pb::GetVersionRequest*, pb::VersionInfo* reply) override {
    reply->set_version(handler_->GetStatus().version);
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

 private:
  // Runs a call that may block (it reaches other agents) on a thread of its own, as the caller the socket says.
  template <typename Reply, typename Fn>
  grpc::ServerUnaryReactor* Blocking(grpc::CallbackServerContext* ctx, Reply* reply, Fn fn) {
    auto* reactor = ctx->DefaultReactor();
    Result<PeerCredentials> who = PeerOf(ctx->peer());
    if (!who.ok()) {
      reactor->Finish(ToGrpcStatus(who.status()));
      return reactor;
    }
    if (running_.fetch_add(1) >= kMaxBlockingCalls) {
      --running_;
      reactor->Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "agentd is serving too many job calls; try again"));
      return reactor;
    }
    std::thread([this, reactor, reply, fn = std::move(fn), who = *who] {
      auto result = fn(who);
      if (result.ok()) {
        *reply = std::move(*result);
        reactor->Finish(grpc::Status::OK);
      } else {
        reactor->Finish(ToGrpcStatus(result.status()));
      }
      --running_;
    }).detach();
    return reactor;
  }

  static constexpr int kMaxBlockingCalls = 64;
  ControlHandler* handler_;
  std::atomic<int> running_{0};
};

class UnixControlServer final : public ControlServer {
 public:
  UnixControlServer(std::string path, int listen_fd, int wake_fd, gid_t group, bool have_group, std::unique_ptr<ControlService> service,
                    std::unique_ptr<grpc::Server> server, const ControlServerOptions& options)
      : path_(std::move(path)),
        listen_fd_(listen_fd),
        wake_fd_(wake_fd),
        group_(group),
        have_group_(have_group),
        service_(std::move(service)),
        server_(std::move(server)),
        heartbeat_(options.heartbeat),
        gate_(options.max_connections_per_user, options.max_connections) {
    accept_thread_ = std::thread([this] { AcceptLoop(); });
  }
  ~UnixControlServer() override { Shutdown(std::chrono::seconds(0)); }

  void Shutdown(Duration grace) override {
    if (stopped_) return;
    stopped_ = true;
    uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof one);
    accept_thread_.join();
    ::close(listen_fd_);
    ::close(wake_fd_);
    ::unlink(path_.c_str());
    server_->Shutdown(std::chrono::system_clock::now() + grace);
    server_->Wait();
  }

 private:
  void AcceptLoop() {
    for (;;) {
      if (heartbeat_) heartbeat_->Beat();
      pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
      const int ready = ::poll(fds, 2, 1000);  // wakes at least once a second: the heartbeat
      if (ready == 0) continue;
      if (ready < 0) {
        if (errno == EINTR) continue;
        spdlog::error("control socket: poll failed: {}", std::strerror(errno));
        return;
      }
      if (fds[1].revents) return;
      std::string error;
      const int fd = AcceptOne(listen_fd_, &error);
      if (fd < 0) {
        if (!error.empty()) spdlog::warn("control socket: {}", error);
        continue;
      }
      ucred cred{};
      if (!PeerAllowed(fd, group_, have_group_, &cred)) {
        spdlog::warn(
            "control socket: refused a connection from uid {} pid {}: not root, not the agent's user "
            "and not in the socket's group",
            cred.uid, cred.pid);
        ::close(fd);
        continue;
      }
      const bool exempt = cred.uid == 0 || cred.uid == ::geteuid();
      if (!gate_.Admit(fd, "uid " + std::to_string(cred.uid), exempt, &error)) {
        ::close(fd);
        ++refused_;
        // At most one line a second: a flood of refusals must not flood the journal.
        if (const MonoTime now = std::chrono::steady_clock::now(); now - last_warning_ >= std::chrono::seconds(1)) {
          last_warning_ = now;
          spdlog::warn("control socket: refused a connection from uid {} pid {}: {} ({} refused in all)", cred.uid, cred.pid, error, refused_);
        }
        continue;
      }
      grpc::AddInsecureChannelFromFd(server_.get(), fd);
    }
  }

  std::string path_;
  int listen_fd_;
  int wake_fd_;
  gid_t group_;
  bool have_group_;
  bool stopped_ = false;
  std::unique_ptr<ControlService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::thread accept_thread_;
  std::shared_ptr<Heartbeat> heartbeat_;
  // The accept thread's:
  ConnectionGate gate_;
  MonoTime last_warning_{};
  uint64_t refused_ = 0;
};

// Removes a socket file that no process listens on; refuses to touch a live socket or another kind of file.
Status ClearStaleSocket(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return Status::Ok();
  if (!S_ISSOCK(st.st_mode)) {
    return Status::FailedPrecondition("control", path + " exists and is not a socket; remove it or set agent.socket");
  }
  Result<int> fd = ConnectUnixSocket(path);
  if (fd.ok()) {
    ::close(*fd);
    return Status::AlreadyExists("control", "another agentd is already serving on " + path);
  }
  if (::unlink(path.c_str()) != 0) return Status::FromErrno("control", "remove stale socket " + path, errno);
  spdlog::info("removed stale control socket {}", path);
  return Status::Ok();
}

// The socket's directory must be the agent's alone: whoever else can write to it can unlink the socket and bind
// their own in its place, and agentctl run as root would then talk to them.
Status CheckSocketDir(const std::string& dir) {
  struct stat st;
  if (::lstat(dir.c_str(), &st) != 0) return Status::FromErrno("control", "lstat " + dir, errno);
  const char* fix = "; use a directory that only the agent's user (or root) can write to ([agent] socket)";
  if (!S_ISDIR(st.st_mode)) return Status::FailedPrecondition("control", "socket directory " + dir + " is not a directory (a link?)" + fix);
  if (st.st_uid != 0 && st.st_uid != ::geteuid()) {
    return Status::FailedPrecondition("control", "socket directory " + dir + " belongs to uid " + std::to_string(st.st_uid) + fix);
  }
  if (st.st_mode & (S_IWGRP | S_IWOTH)) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return Status::FailedPrecondition("control", "socket directory " + dir + " is writable by others (mode " + mode + ")" + fix);
  }
  // Every directory above it too, as written and as resolved: whoever can write to one of them can rename the
  // socket's directory away after this check and put their own in its place. A sticky directory (/tmp) is
  // fine: others cannot rename what they do not own in it. A link is judged by its owner and its target.
  char resolved[PATH_MAX];
  if (::realpath(dir.c_str(), resolved) == nullptr) return Status::FromErrno("control", "realpath " + dir, errno);
  for (const std::string& start : {dir, std::string(resolved)}) {
    for (std::string p = DirName(start);; p = DirName(p)) {
      if (::lstat(p.c_str(), &st) != 0) return Status::FromErrno("control", "lstat " + p, errno);
      if (st.st_uid != 0 && st.st_uid != ::geteuid()) {
        return Status::FailedPrecondition("control", dir + " is inside " + p + ", which belongs to uid " + std::to_string(st.st_uid) + fix);
      }
      if (S_ISDIR(st.st_mode) && (st.st_mode & (S_IWGRP | S_IWOTH)) && !(st.st_mode & S_ISVTX)) {
        return Status::FailedPrecondition("control", dir + " is inside " + p + ", which others can write to" + fix);
      }
      if (p == "/" || p == ".") break;
    }
  }
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<ControlServer>> StartControlServer(const ControlServerOptions& options, ControlHandler* handler) {
  const std::string& path = options.socket_path;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path[0] != '/' || path.size() >= sizeof addr.sun_path) {
    return Status::InvalidArgument("control", "socket path \"" + path + "\" must be absolute and under 108 bytes");
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);

  gid_t gid = 0;
  bool have_group = false;
  if (!options.group.empty()) {
    if (group* g = ::getgrnam(options.group.c_str())) {
      gid = g->gr_gid;
      have_group = true;
    }
  }

  std::string dir = DirName(path);
  if (::access(dir.c_str(), F_OK) != 0) {
    std::unique_ptr<Env> env = NewPosixEnv();
    RETURN_IF_ERROR(env->CreateDirs(dir, 0755));
    (void)::fchmodat(AT_FDCWD, dir.c_str(), have_group ? 0750 : 0755, AT_SYMLINK_NOFOLLOW);
    if (have_group) (void)!::lchown(dir.c_str(), static_cast<uid_t>(-1), gid);
  }
  RETURN_IF_ERROR(CheckSocketDir(dir));
  RETURN_IF_ERROR(ClearStaleSocket(path));

  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return Status::FromErrno("control", "socket", errno);
  auto fail = [&](std::string_view what, int err) {
    ::close(fd);
    return Status::FromErrno("control", std::string(what) + " " + path, err);
  };
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return fail("bind", errno);
  // Until this chmod the file has umask permissions; the peer check in the accept loop covers that window. The
  // directory is the agent's own (CheckSocketDir), and links are not followed all the same.
  if (::fchmodat(AT_FDCWD, path.c_str(), 0660, AT_SYMLINK_NOFOLLOW) != 0) return fail("chmod", errno);
  if (have_group && ::lchown(path.c_str(), static_cast<uid_t>(-1), gid) != 0) {
    spdlog::warn("control socket: cannot give {} to group {}: {}", path, options.group, std::strerror(errno));
  }
  if (::listen(fd, 64) != 0) return fail("listen", errno);

  auto service = std::make_unique<ControlService>(handler);
  grpc::ServerBuilder builder;
  GrpcServerLimits limits;
  limits.name = "control";
  limits.max_streams = 8;
  limits.idle_timeout_ms = 60000;
  ApplyServerLimits(builder, limits);
  builder.RegisterService(service.get());
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server) {
    ::close(fd);
    ::unlink(path.c_str());
    return Status::Internal("control", "the gRPC server for " + path + " failed to start; see the log lines above it");
  }
  int wake = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake < 0) {
    ::close(fd);
    ::unlink(path.c_str());
    return Status::FromErrno("control", "eventfd", errno);
  }
  return std::unique_ptr<ControlServer>(
      std::make_unique<UnixControlServer>(path, fd, wake, gid, have_group, std::move(service), std::move(server), options));
}

}  // namespace dlagent
