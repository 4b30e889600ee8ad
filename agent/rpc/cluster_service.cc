#include "agent/rpc/cluster_service.h"

#include <map>

#include <grpcpp/grpcpp.h>

#include "bootstrap/common/mutex.h"
#include "proto/cluster.grpc.pb.h"
#include "proto/grpc_status.h"

namespace dlagent {
namespace {

namespace pb = ::dlagent::cluster::v1;

// Sealed states are at most a few MB (20,000 members); refuse larger ones.
constexpr int kMaxStateBytes = 8 << 20;

class ClusterService final : public pb::Cluster::CallbackService {
 public:
  explicit ClusterService(ClusterHandlers handlers) : handlers_(std::move(handlers)) {}
  grpc::ServerUnaryReactor* PushPull(grpc::CallbackServerContext* ctx, const pb::SealedState* req, pb::SealedState* reply) override {
    return Serve(ctx, handlers_.push_pull, req, reply);
  }
  grpc::ServerUnaryReactor* FetchRoster(grpc::CallbackServerContext* ctx, const pb::SealedState* req, pb::SealedState* reply) override {
    return Serve(ctx, handlers_.fetch_roster, req, reply);
  }
  grpc::ServerUnaryReactor* Job(grpc::CallbackServerContext* ctx, const pb::SealedState* req, pb::SealedState* reply) override {
    return Serve(ctx, handlers_.job, req, reply);
  }

 private:
  static grpc::ServerUnaryReactor* Serve(grpc::CallbackServerContext* ctx, const std::function<Result<std::string>(std::string_view)>& handler,
                                         const pb::SealedState* req, pb::SealedState* reply) {
    auto* reactor = ctx->DefaultReactor();
    if (!handler) {
      reactor->Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "not served by this agent"));
      return reactor;
    }
    Result<std::string> ours = handler(req->sealed());
    if (!ours.ok()) {
      reactor->Finish(ToGrpcStatus(ours.status()));
      return reactor;
    }
    reply->set_sealed(std::move(*ours));
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  ClusterHandlers handlers_;
};

class GrpcClusterServer final : public ClusterServer {
 public:
  GrpcClusterServer(std::unique_ptr<ClusterService> service, std::unique_ptr<grpc::Server> server)
      : service_(std::move(service)), server_(std::move(server)) {}
  ~GrpcClusterServer() override { Shutdown(Duration(0)); }
  void Shutdown(Duration grace) override {
    if (!server_) return;
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::duration_cast<std::chrono::system_clock::duration>(grace));
    server_->Wait();
    server_.reset();
  }

 private:
  std::unique_ptr<ClusterService> service_;
  std::unique_ptr<grpc::Server> server_;
};

class GrpcClusterClient final : public ClusterClient {
 public:
  explicit GrpcClusterClient(Duration deadline) : deadline_(deadline) {}
  Result<std::string> Exchange(const std::string& addr, const std::string& sealed) override {
    return Call(addr, sealed, "push-pull", &pb::Cluster::Stub::PushPull);
  }
  Result<std::string> FetchRoster(const std::string& addr, const std::string& sealed) override {
    return Call(addr, sealed, "roster fetch", &pb::Cluster::Stub::FetchRoster);
  }
  Result<std::string> Job(const std::string& addr, const std::string& sealed) override {
    return Call(addr, sealed, "job call", &pb::Cluster::Stub::Job);
  }

 private:
  using Method = grpc::Status (pb::Cluster::Stub::*)(grpc::ClientContext*, const pb::SealedState&, pb::SealedState*);
  Result<std::string> Call(const std::string& addr, const std::string& sealed, const char* what, Method method) {
    pb::Cluster::Stub* stub = StubFor(addr);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::duration_cast<std::chrono::system_clock::duration>(deadline_));
    pb::SealedState req, reply;
    req.set_sealed(sealed);
    grpc::Status st = (stub->*method)(&ctx, req, &reply);
    if (!st.ok()) return FromGrpcStatus(st, "gossip", std::string(what) + " with " + addr);
    return reply.sealed();
  }

  pb::Cluster::Stub* StubFor(const std::string& addr) {
    MutexLock lock(mu_);
    auto& stub = stubs_[addr];
    if (!stub) {
      grpc::ChannelArguments args;
      args.SetMaxReceiveMessageSize(kMaxStateBytes);
      args.SetMaxSendMessageSize(kMaxStateBytes);
      stub = pb::Cluster::NewStub(grpc::CreateCustomChannel(addr, grpc::InsecureChannelCredentials(), args));
    }
    return stub.get();
  }

  Duration deadline_;
  Mutex mu_;
  std::map<std::string, std::unique_ptr<pb::Cluster::Stub>> stubs_ GUARDED_BY(mu_);  // one channel per member, for its lifetime
};

}  // namespace

Result<std::unique_ptr<ClusterServer>> StartClusterServer(const std::string& host, int port, ClusterHandlers handlers) {
  auto service = std::make_unique<ClusterService>(std::move(handlers));
  grpc::ServerBuilder builder;
  int bound = 0;
  builder.AddListeningPort(host + ":" + std::to_string(port), grpc::InsecureServerCredentials(), &bound);
  builder.SetMaxReceiveMessageSize(kMaxStateBytes);
  builder.RegisterService(service.get());
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || bound == 0) {
    return Status::Unavailable("gossip", "cannot listen on TCP " + host + ":" + std::to_string(port) + " (port in use?)");
  }
  return std::unique_ptr<ClusterServer>(std::make_unique<GrpcClusterServer>(std::move(service), std::move(server)));
}

std::unique_ptr<ClusterClient> NewGrpcClusterClient(Duration deadline) { return std::make_unique<GrpcClusterClient>(deadline); }

}  // namespace dlagent
