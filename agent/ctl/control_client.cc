#include "agent/ctl/control_client.h"

#include <sys/socket.h>
#include <unistd.h>

#include <set>

#include <grpcpp/grpcpp.h>

#include "agent/rpc/control_codec.h"
#include "agent/rpc/unix_socket.h"
#include "bootstrap/common/duration.h"
#include "bootstrap/common/env.h"
#include "proto/control.grpc.pb.h"
#include "proto/grpc_status.h"

namespace dlagent {
namespace {

namespace pb = ::dlagent::control::v1;

// A bound on a list's pages (100,000 jobs), so that an agent that never says "last page" cannot keep agentctl.
constexpr int kMaxListPages = 1000;

class GrpcControlClient final : public ControlClient {
 public:
  GrpcControlClient(std::string path, Duration timeout)
      : path_(std::move(path)),
        timeout_(timeout),
        stub_(pb::Control::NewStub(grpc::CreateChannel("unix:" + path_, grpc::InsecureChannelCredentials()))) {}

  Result<StatusSnapshot> GetStatus() override {
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    pb::AgentStatus reply;
    RETURN_IF_ERROR(Convert(stub_->GetStatus(&ctx, pb::GetStatusRequest(), &reply)));
    return FromProto(reply);
  }

  Result<MemberListSnapshot> ListMembers() override {
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    pb::MemberList reply;
    RETURN_IF_ERROR(Convert(stub_->ListMembers(&ctx, pb::ListMembersRequest(), &reply)));
    return FromProto(reply);
  }

  Result<std::string> GetVersion() override {
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    pb::VersionInfo reply;
    RETURN_IF_ERROR(Convert(stub_->GetVersion(&ctx, pb::GetVersionRequest(), &reply)));
    return reply.version();
  }

  Result<jobs::v1::JobSummary> RunJob(const jobs::v1::RunJobRequest& req) override { return Call(&pb::Control::Stub::RunJob, req); }
  Result<jobs::v1::JobList> ListJobs() override {
    // Page by page (each at most about 1 MiB), into one list; the nodes that did not answer, once each.
    jobs::v1::JobList all;
    std::set<std::string> unreachable;
    pb::ListJobsRequest req;
    for (int pages = 0; pages < kMaxListPages; ++pages) {
      ASSIGN_OR_RETURN(jobs::v1::JobList page, Call(&pb::Control::Stub::ListJobs, req));
      for (jobs::v1::JobSummary& s : *page.mutable_jobs()) all.add_jobs()->Swap(&s);
      unreachable.insert(page.unreachable().begin(), page.unreachable().end());
      if (page.next().empty()) break;
      if (page.next() == req.after()) return Status::Internal("agentctl", "the agent sent the same page of jobs twice");
      req.set_after(page.next());
    }
    for (const std::string& node : unreachable) all.add_unreachable(node);
    return all;
  }
  Result<jobs::v1::JobOutputReply> JobOutput(const jobs::v1::JobOutputRequest& req) override { return Call(&pb::Control::Stub::JobOutput, req); }
  Result<jobs::v1::KillJobReply> KillJob(const jobs::v1::KillJobRequest& req) override { return Call(&pb::Control::Stub::KillJob, req); }
  Result<jobs::v1::HealthReport> CheckHealth(const jobs::v1::HealthCheckRequest& req) override { return Call(&pb::Control::Stub::CheckHealth, req); }
  Result<jobs::v1::AttachReply> AttachProcess(const jobs::v1::AttachRequest& req) override { return Call(&pb::Control::Stub::AttachProcess, req); }

 private:
  void SetDeadline(grpc::ClientContext& ctx, Duration at_least = Duration(0)) {
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::duration_cast<std::chrono::system_clock::duration>(std::max(timeout_, at_least)));
  }

  template <typename Req, typename Reply>
  Result<Reply> Call(grpc::Status (pb::Control::Stub::*method)(grpc::ClientContext*, const Req&, Reply*), const Req& req) {
    grpc::ClientContext ctx;
    SetDeadline(ctx, std::chrono::seconds(30));
    Reply reply;
    grpc::Status st = (stub_.get()->*method)(&ctx, req, &reply);
    if (!st.ok() && st.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED && st.error_code() != grpc::StatusCode::UNAVAILABLE) {
      return FromGrpcStatus(st, "agentctl", "agentd");
    }
    RETURN_IF_ERROR(Convert(st));
    return reply;
  }

  Status Convert(const grpc::Status& st) {
    if (st.ok()) return Status::Ok();
    if (st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      return Status::DeadlineExceeded("agentctl", "agentd did not answer on " + path_ + " within " + FormatDuration(timeout_));
    }
    if (st.error_code() == grpc::StatusCode::UNAVAILABLE) {
      return Status::Unavailable(
          "agentctl", "agentd closed the connection on " + path_ + ": it may have refused this user (see journalctl -u agentd) or be stopping");
    }
    return FromGrpcStatus(st, "agentctl", "agentd answered with an error");
  }

  std::string path_;
  Duration timeout_;
  std::unique_ptr<pb::Control::Stub> stub_;
};

}  // namespace

Result<std::unique_ptr<ControlClient>> ControlClient::Connect(const std::string& socket_path, Duration timeout) {
  Result<int> probe = ConnectUnixSocket(socket_path);
  if (!probe.ok()) {
    const Status& st = probe.status();
    switch (st.code()) {
      case StatusCode::kNotFound: return Status::NotFound("agentctl", "agentd is not running: no socket at " + socket_path);
      case StatusCode::kPermissionDenied:
        return Status::PermissionDenied("agentctl", "permission denied on " + socket_path + ": run agentctl as root or as a member of group dlagent");
      case StatusCode::kUnavailable:
        return Status::Unavailable("agentctl",
                                   "agentd is not running: " + socket_path + " exists but nothing listens on it (left by a stopped agent)");
      default: return st;
    }
  }
  // Before anything is sent: the server must be root's (or this user's own agent). A socket path that another
  // user took over would otherwise receive root's requests.
  ucred peer{};
  socklen_t len = sizeof peer;
  const bool known = ::getsockopt(*probe, SOL_SOCKET, SO_PEERCRED, &peer, &len) == 0;
  ::close(*probe);
  if (!known || (peer.uid != 0 && peer.uid != ::getuid())) {
    return Status::PermissionDenied(
        "agentctl", "the process serving " + socket_path + " runs as uid " + (known ? std::to_string(peer.uid) : "unknown") +
                        ", neither root nor you: refusing to talk to it (another user may have taken the socket's path; check who owns " +
                        DirName(socket_path) + ", or name the agent's socket with --socket)");
  }
  return std::unique_ptr<ControlClient>(std::make_unique<GrpcControlClient>(socket_path, timeout));
}

}  // namespace dlagent
