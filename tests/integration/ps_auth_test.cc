// agentd's shard serves only the jobs the agents started: a PsServer with job keys in this process, and
// workers (PsClient, or raw connections) with and without the job's token. A stranger cannot take a rank,
// Init, or commit a checkpoint, and a second job waits for the first.
#include <sys/socket.h>

#include <mutex>
#include <set>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "agent/ps/client.h"
#include "agent/ps/frame.h"
#include "agent/ps/server.h"
#include "bootstrap/common/crypto.h"
#include "proto/dlps.grpc.pb.h"
#include "tests/support/temp_dir.h"

namespace dlagent::ps {
namespace {

using namespace std::chrono;

const std::string kOld(32, 'o'), kKey(32, 'k');

struct AuthTest : ::testing::Test {
  void SetUp() override {
    ServerOptions o;
    o.listen = "127.0.0.1:0";
    o.shard.num_workers = 0;  // as agentd: each job sized by its workers
    o.checkpoint_dir = dir.path();
    o.job_keys = [] { return std::vector<std::string>{kKey, kOld}; };  // a rotation in progress: both open
    o.job_live = [this](const std::string& job) {
      std::lock_guard<std::mutex> lock(mu);
      return !ended.contains(job);
    };
    auto s = PsServer::Start(o);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    server = std::move(*s);
    address = "127.0.0.1:" + std::to_string(server->port());
  }
  PsClientOptions Worker(uint32_t rank, uint32_t workers, const std::string& job, const std::string& key) {
    PsClientOptions o;
    o.servers = {address};
    o.rank = rank;
    o.num_workers = workers;
    o.connect_timeout = seconds(2);
    o.deadline = seconds(5);
    o.job = job;
    if (!key.empty()) o.token = HexEncode(DlpsJobToken(key, job));
    return o;
  }
  void End(const std::string& job) {
    std::lock_guard<std::mutex> lock(mu);
    ended.insert(job);
  }
  std::mutex mu;
  std::set<std::string> ended;  // the jobs that no longer live on "this node"
  testing::TempDir dir;
  std::unique_ptr<PsServer> server;
  std::string address;
};

TEST_F(AuthTest, AWorkerWithoutAValidTokenIsRefusedNamingWhatToDo) {
  auto none = PsClient::Connect(Worker(0, 1, "", ""));
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kPermissionDenied) << none.status().ToString();
  EXPECT_NE(none.status().message().find("agentctl run --launcher dlps"), std::string::npos) << none.status().ToString();
  auto forged = PsClient::Connect(Worker(0, 1, "j-000000000001", std::string(32, 'x')));
  ASSERT_FALSE(forged.ok());
  EXPECT_NE(forged.status().message().find("is not valid in this cluster"), std::string::npos) << forged.status().ToString();
  // A token made with another job's id does not open this one.
  PsClientOptions swapped = Worker(0, 1, "j-000000000001", kKey);
  swapped.job = "j-000000000002";
  EXPECT_FALSE(PsClient::Connect(swapped).ok());
  // A token that is not hex is refused by the client, saying where it comes from.
  PsClientOptions garbled = Worker(0, 1, "j-000000000004", kKey);
  garbled.token[0] = 'z';
  auto refused = PsClient::Connect(garbled);
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("agentctl run --launcher dlps"), std::string::npos) << refused.status().ToString();
  // Under either key of the keyring, a job's own token opens it.
  EXPECT_TRUE(PsClient::Connect(Worker(0, 1, "j-000000000003", kOld)).ok());
}

TEST_F(AuthTest, AStrangerCannotTakeARankInitOrCommitAndASecondJobWaits) {
  const std::string job = "j-0000000000aa";
  auto rank0 = PsClient::Connect(Worker(0, 2, job, kKey));
  ASSERT_TRUE(rank0.ok()) << rank0.status().ToString();
  // A stranger's Hello as rank 1 is refused, so its leaving fails nothing; the real rank 1 joins after it.
  EXPECT_FALSE(PsClient::Connect(Worker(1, 2, job, "")).ok());
  auto rank1 = PsClient::Connect(Worker(1, 2, job, kKey));
  ASSERT_TRUE(rank1.ok()) << rank1.status().ToString();
  // Another job, even with a valid token of its own, waits for this one to end.
  auto other = PsClient::Connect(Worker(0, 1, "j-0000000000bb", kKey));
  ASSERT_FALSE(other.ok());
  EXPECT_NE(other.status().message().find("is serving job " + job), std::string::npos) << other.status().ToString();
  // Control calls without the job's credentials (a stranger speaking gRPC to the port) are refused.
  auto stub = dlps::v1::DlpsControl::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  for (const std::string& token : {std::string(), HexEncode(std::string(32, 'x'))}) {
    grpc::ClientContext ctx;
    ctx.set_deadline(system_clock::now() + seconds(5));
    if (!token.empty()) {
      ctx.AddMetadata("dlps-job", job);
      ctx.AddMetadata("dlps-token", token);
    }
    dlps::v1::InitRequest init;
    init.set_key(9);
    init.set_length(4);
    dlps::v1::InitReply reply;
    EXPECT_EQ(stub->Init(&ctx, init, &reply).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  grpc::ClientContext commit_ctx;
  dlps::v1::CommitCheckpointRequest commit;
  commit.set_name("planted");
  dlps::v1::CommitCheckpointReply commit_reply;
  EXPECT_EQ(stub->CommitCheckpoint(&commit_ctx, commit, &commit_reply).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  // The job's own workers work: Init on both ranks (collective), then a push and pull.
  const OptimizerConfig sum{.kind = OptimizerConfig::Kind::kSum};
  std::vector<float> w = {1, 2, 3, 4};
  Status init1;
  std::thread t([&] { init1 = (*rank1)->Init(1, 4, nullptr, sum); });
  EXPECT_TRUE((*rank0)->Init(1, 4, w.data(), sum).ok());
  t.join();
  EXPECT_TRUE(init1.ok()) << init1.ToString();
  // Once the job has gone, the next one is served.
  rank0->reset();
  rank1->reset();
  std::this_thread::sleep_for(milliseconds(300));
  EXPECT_TRUE(PsClient::Connect(Worker(0, 1, "j-0000000000bb", kKey)).ok());
}

TEST_F(AuthTest, ATokenDiesWithItsJobAndItsShardIsDroppedSoTheNextJobRuns) {
  const std::string job = "j-0000000000cc";
  auto rank0 = PsClient::Connect(Worker(0, 2, job, kKey));
  ASSERT_TRUE(rank0.ok()) << rank0.status().ToString();
  const OptimizerConfig sum{.kind = OptimizerConfig::Kind::kSum};
  ASSERT_FALSE(PsClient::Connect(Worker(0, 1, "j-0000000000dd", kKey)).ok()) << "the next job waits while this one runs";
  // The job ends on the node, but its worker (or whoever holds its token) stays connected.
  End(job);
  auto refused = PsClient::Connect(Worker(1, 2, job, kKey));
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("does not run on this node"), std::string::npos) << refused.status().ToString();
  // Within about a second the shard is dropped with its connections, and the next job is served.
  Result<std::unique_ptr<PsClient>> next = Status::Unavailable("test", "not tried");
  for (auto until = steady_clock::now() + seconds(5); steady_clock::now() < until;) {
    next = PsClient::Connect(Worker(0, 1, "j-0000000000dd", kKey));
    if (next.ok()) break;
    std::this_thread::sleep_for(milliseconds(50));
  }
  ASSERT_TRUE(next.ok()) << next.status().ToString();
  std::vector<float> w = {1, 2, 3, 4};
  Status init = (*next)->Init(1, 4, w.data(), sum);
  EXPECT_TRUE(init.ok()) << init.ToString();
  EXPECT_FALSE((*rank0)->Init(1, 4, w.data(), sum).ok()) << "the ended job's connection was dropped";
}

}  // namespace
}  // namespace dlagent::ps
