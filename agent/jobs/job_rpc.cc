#include "agent/jobs/job_rpc.h"

#include <spdlog/spdlog.h>

#include "agent/jobs/summary.h"

namespace dlagent::jobs {
namespace {

constexpr int64_t kFreshMs = 60'000;

template <typename T>
pb::NodeReply Reply(const Result<T>& r, T* (pb::NodeReply::*slot)()) {
  pb::NodeReply out;
  if (!r.ok()) {
    out.set_error(std::string(r.status().message()));
    out.set_error_code(static_cast<int32_t>(r.status().code()));
  } else {
    *(out.*slot)() = *r;
  }
  return out;
}

}  // namespace

pb::NodeReply NodeEndpoint::Dispatch(const pb::NodeRequest& req) {
  switch (req.call_case()) {
    case pb::NodeRequest::kPrepare: return Reply(local_.Prepare(req.prepare()), &pb::NodeReply::mutable_prepare);
    case pb::NodeRequest::kStart: return Reply(local_.Start(req.start()), &pb::NodeReply::mutable_start);
    case pb::NodeRequest::kSignal: return Reply(local_.Signal(req.signal()), &pb::NodeReply::mutable_signal);
    case pb::NodeRequest::kQuery: {
      Result<pb::QueryReply> r = local_.Query(req.query());
      Coordinator* c = coordinator_.load();
      if (c && !req.query().job().empty() && req.query().summary()) {
        // The coordinator's summary rides along, also for a job with no ranks on this node.
        if (Result<pb::JobSummary> s = c->Summary(req.query().job()); s.ok()) {
          if (!r.ok()) {
            pb::QueryReply empty;
            pb::NodeJob* j = empty.add_jobs();
            if (Result<pb::JobSpec> spec = c->Spec(req.query().job()); spec.ok()) *j->mutable_spec() = *spec;
            r = empty;
          }
          *r->mutable_jobs(0)->mutable_summary() = *s;
        }
      } else if (c && req.query().job().empty() && r.ok()) {
        // Every job: the ones coordinated here that have no ranks here too.
        for (pb::JobSummary& s : c->List()) {
          Brief(&s);
          bool listed = false;
          for (pb::NodeJob& j : *r->mutable_jobs()) {
            if (j.spec().id() == s.id()) *j.mutable_summary() = s, listed = true;
          }
          if (!listed) {
            pb::NodeJob* j = r->add_jobs();
            if (Result<pb::JobSpec> spec = c->Spec(s.id()); spec.ok()) {
              *j->mutable_spec() = *spec;
              Brief(j->mutable_spec());
            }
            *j->mutable_summary() = s;
          }
        }
      }
      return Reply(r, &pb::NodeReply::mutable_query);
    }
    case pb::NodeRequest::kHealth: {
      if (!health_) return Reply(Result<pb::HealthReply>(Status::Unavailable("jobs", "no health on this agent")), &pb::NodeReply::mutable_health);
      return Reply(Result<pb::HealthReply>(health_(req.health())), &pb::NodeReply::mutable_health);
    }
    case pb::NodeRequest::kReport: {
      Coordinator* c = coordinator_.load();
      Result<pb::ReportReply> r = c ? Result<pb::ReportReply>(pb::ReportReply{}) : Status::Unavailable("jobs", "this agent's coordinator is not up");
      if (c) {
        if (Status st = c->Report(req.from(), req.report().part()); !st.ok()) r = st;
      }
      return Reply(r, &pb::NodeReply::mutable_report);
    }
    case pb::NodeRequest::CALL_NOT_SET: break;
  }
  return Reply(Result<pb::QueryReply>(Status::InvalidArgument("jobs", "an empty job call")), &pb::NodeReply::mutable_query);
}

Result<std::string> JobRpcServer::Handle(std::string_view sealed) {
  const std::shared_ptr<const swim::Keyring> ring = keyring_();
  auto refuse = [&](const Status& why) -> Status {
    ++refused_;
    const int64_t now = swim::NowUnixMs();
    int64_t last = last_warned_ms_.load();
    if (now - last >= 1000 && last_warned_ms_.compare_exchange_strong(last, now)) {
      spdlog::warn("jobs: refused a call ({} refused so far): {}", refused_.load(), why.ToString());
    }
    return Status::PermissionDenied("jobs", "refused");  // the caller learns nothing more
  };
  if (!ring) return refuse(Status::FailedPrecondition("jobs", "no cluster key"));
  Result<swim::Keyring::Opened> opened = ring->Open(sealed);
  if (!opened.ok()) return refuse(opened.status());
  {
    MutexLock lock(mu_);
    if (Status st = window_.Admit(*opened, swim::NowUnixMs()); !st.ok()) return refuse(st);
  }
  pb::NodeRequest req;
  if (!req.ParseFromString(opened->plaintext)) return refuse(Status::InvalidArgument("jobs", "an unreadable job call"));
  pb::NodeReply reply = endpoint_.Dispatch(req);
  reply.set_request_nonce(opened->nonce);
  return ring->Seal(reply.SerializeAsString(), swim::NowUnixMs());
}

Result<pb::NodeReply> CallNode(ClusterClient& client, const swim::Keyring& keyring, const std::string& addr, const pb::NodeRequest& req) {
  const std::string sealed = keyring.Seal(req.SerializeAsString(), swim::NowUnixMs());
  ASSIGN_OR_RETURN(std::string answer, client.Job(addr, sealed));
  ASSIGN_OR_RETURN(swim::Keyring::Opened opened, keyring.Open(answer));
  pb::NodeReply reply;
  if (!reply.ParseFromString(opened.plaintext)) return Status::Internal("jobs", addr + " sent an unreadable reply");
  const std::string nonce = sealed.substr(1, 12);  // [key id][nonce]...: packet_crypto.h
  if (reply.request_nonce() != nonce || std::abs(opened.sent_unix_ms - swim::NowUnixMs()) > kFreshMs) {
    return Status::PermissionDenied("jobs", addr + " sent a reply to another request (a replay?)");
  }
  return reply;
}

}  // namespace dlagent::jobs
