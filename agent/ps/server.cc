#include "agent/ps/server.h"

#include <chrono>
#include <mutex>

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>

#include "proto/dlps.grpc.pb.h"

namespace dlagent::ps {
namespace {

namespace pb = ::dlps::v1;

grpc::Status ToGrpc(const Status& s) {
  if (s.ok()) return grpc::Status::OK;
  grpc::StatusCode code = grpc::StatusCode::INTERNAL;
  switch (s.code()) {
    case StatusCode::kInvalidArgument: code = grpc::StatusCode::INVALID_ARGUMENT; break;
    case StatusCode::kNotFound: code = grpc::StatusCode::NOT_FOUND; break;
    case StatusCode::kFailedPrecondition: code = grpc::StatusCode::FAILED_PRECONDITION; break;
    case StatusCode::kUnavailable: code = grpc::StatusCode::UNAVAILABLE; break;
    case StatusCode::kCancelled: code = grpc::StatusCode::CANCELLED; break;
    case StatusCode::kDeadlineExceeded: code = grpc::StatusCode::DEADLINE_EXCEEDED; break;
    default: break;
  }
  return grpc::Status(code, s.ToString());
}

// One Push or Pull call. The shard answers it later from its own threads, possibly after the client has
// gone: the reply goes through a Responder that knows whether the call still exists.
class DataCall final : public grpc::ServerGenericBidiReactor {
 public:
  DataCall(Shard& shard, bool push) : shard_(shard), push_(push), responder_(std::make_shared<Responder>(this)) { StartRead(&request_); }

  void OnReadDone(bool ok) override {
    if (!ok) return responder_->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "dlps: no request"), nullptr);
    push_ ? HandlePush() : HandlePull();
  }
  void OnWriteDone(bool) override {}
  void OnCancel() override { responder_->Finish(grpc::Status(grpc::StatusCode::CANCELLED, "dlps: cancelled by the client"), nullptr); }
  void OnDone() override {
    responder_->Detach();
    delete this;
  }

 private:
  struct Responder {
    explicit Responder(DataCall* c) : call(c) {}
    void Finish(const grpc::Status& status, grpc::ByteBuffer* reply) {
      std::lock_guard<std::recursive_mutex> lock(mu);  // OnDone may run inline in Finish, on this thread
      if (!call || finished) return;
      finished = true;
      if (status.ok() && reply) {
        call->response_ = std::move(*reply);
        call->StartWriteAndFinish(&call->response_, grpc::WriteOptions(), grpc::Status::OK);
      } else {
        call->Finish(status);
      }
    }
    void Detach() {
      std::lock_guard<std::recursive_mutex> lock(mu);
      call = nullptr;
    }
    std::recursive_mutex mu;
    DataCall* call;
    bool finished = false;
  };

  void HandlePush() {
    PushHeader h;
    Payload values;
    if (Status st = DecodePush(request_, &h, &values); !st.ok()) return responder_->Finish(ToGrpc(st), nullptr);
    request_.Clear();  // the payload holds its own references to the slices
    shard_.Push(h, std::move(values), [r = responder_](const Status& st, uint64_t version) {
      pb::PushReply reply;
      reply.set_version(version);
      grpc::ByteBuffer out = SerializeSmall(reply);
      r->Finish(ToGrpc(st), &out);
    });
  }

  void HandlePull() {
    pb::PullRequest req;
    if (!grpc::GenericDeserialize<grpc::ProtoBufferReader, pb::PullRequest>(&request_, &req).ok()) {
      return responder_->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "dlps: malformed PullRequest"), nullptr);
    }
    const uint64_t key = req.key();
    const uint32_t chunk = req.chunk();
    shard_.Pull(key, chunk, req.min_version(), [r = responder_, key, chunk](const Status& st, uint64_t version, Snapshot values) {
      if (!st.ok()) return r->Finish(ToGrpc(st), nullptr);
      const float* data = values->data();
      const size_t n = values->size();
      grpc::ByteBuffer out = EncodePullReply({key, chunk, version}, data, n, std::move(values));
      r->Finish(grpc::Status::OK, &out);
    });
  }

  Shard& shard_;
  const bool push_;
  std::shared_ptr<Responder> responder_;
  grpc::ByteBuffer request_, response_;
};

class DataService final : public grpc::CallbackGenericService {
 public:
  explicit DataService(Shard& shard) : shard_(shard) {}
  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext* ctx) override {
    if (ctx->method() == kPushMethod) return new DataCall(shard_, true);
    if (ctx->method() == kPullMethod) return new DataCall(shard_, false);
    return CallbackGenericService::CreateReactor(ctx);  // UNIMPLEMENTED
  }

 private:
  Shard& shard_;
};

class ControlService final : public pb::DlpsControl::CallbackService {
 public:
  explicit ControlService(Shard& shard) : shard_(shard) {}
  grpc::ServerUnaryReactor* Init(grpc::CallbackServerContext* ctx, const pb::InitRequest* req, pb::InitReply* reply) override {
    auto* reactor = ctx->DefaultReactor();
    Result<OptimizerConfig> opt = OptimizerFromProto(req->optimizer());
    if (!opt.ok()) {
      reactor->Finish(ToGrpc(opt.status()));
      return reactor;
    }
    Result<uint64_t> version = shard_.Init(req->key(), req->chunk(), req->length(), *opt);
    if (version.ok()) reply->set_version(*version);
    reactor->Finish(ToGrpc(version.status()));
    return reactor;
  }
  grpc::ServerWriteReactor<pb::AttachEvent>* Attach(grpc::CallbackServerContext*, const pb::AttachRequest* req) override {
    // Ends only when the worker goes away (or the server stops): then its job's pending work fails.
    class Attached final : public grpc::ServerWriteReactor<pb::AttachEvent> {
     public:
      Attached(Shard& shard, uint32_t rank) : shard_(shard), rank_(rank) {}
      void OnCancel() override {
        shard_.FailPending(Status::Unavailable("dlps-server", "worker rank " + std::to_string(rank_) +
                                                                  " disconnected (it exited or lost its connection); the rounds in progress fail"));
        Finish(grpc::Status::CANCELLED);
      }
      void OnDone() override { delete this; }

     private:
      Shard& shard_;
      const uint32_t rank_;
    };
    return new Attached(shard_, req->rank());
  }
  grpc::ServerUnaryReactor* Barrier(grpc::CallbackServerContext* ctx, const pb::BarrierRequest* req, pb::BarrierReply*) override {
    auto* reactor = ctx->DefaultReactor();
    shard_.Barrier(req->rank(), req->generation(), [reactor](const Status& st) { reactor->Finish(ToGrpc(st)); });
    return reactor;
  }

 private:
  Shard& shard_;
};

}  // namespace

struct PsServer::Services {
  explicit Services(Shard& shard) : control(shard), data(shard) {}
  ControlService control;
  DataService data;
};

Result<std::unique_ptr<PsServer>> PsServer::Start(const ServerOptions& options) {
  if (options.shard.num_workers == 0) return Status::InvalidArgument("dlps-server", "the job needs at least one worker");
  std::unique_ptr<PsServer> s(new PsServer());
  s->shard_ = std::make_unique<Shard>(options.shard);
  s->services_ = std::make_unique<Services>(*s->shard_);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, grpc::InsecureServerCredentials(), &s->port_);
  builder.RegisterService(&s->services_->control);
  builder.RegisterCallbackGenericService(&s->services_->data);
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder.SetMaxSendMessageSize(kMaxMessageBytes);
  s->server_ = builder.BuildAndStart();
  if (!s->server_ || s->port_ == 0) return Status::Unavailable("dlps-server", "cannot listen on " + options.listen + " (in use, or not an address of this host)");
  return s;
}

PsServer::~PsServer() {
  if (server_) {
    // Waiting pulls and barriers hold calls open: fail them, then give the rest a moment to finish.
    shard_->FailPending(Status::Unavailable("dlps-server", "the server is shutting down"));
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    server_->Wait();
  }
}

}  // namespace dlagent::ps
