// agentd's shard serves only the jobs the agents started: a PsServer with job keys in this process, and
// workers (PsClient, or raw connections) with and without the job's token. A stranger cannot take a rank,
// Init, or commit a checkpoint, and a second job waits for the first. A worker whose connection died gives its
// rank back at once. Each user's checkpoints are their own (job owners).
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "agent/ps/client.h"
#include "agent/ps/data_conn.h"
#include "agent/ps/frame.h"
#include "agent/ps/server.h"
#include "bootstrap/common/crypto.h"
#include "tests/support/temp_dir.h"

namespace dlagent::ps {
namespace {

using namespace std::chrono;

const std::string kOld(32, 'o'), kKey(32, 'k');

// A raw connection's Hello: rank `rank` of a job of `workers`, with `token` (raw bytes; "" for none).
Hello JobHello(const std::string& job, uint32_t rank, uint32_t workers, const std::string& token) {
  Hello h;
  h.rank = rank;
  h.num_workers = workers;
  std::memcpy(h.job, job.data(), std::min(job.size(), sizeof h.job));
  std::memcpy(h.token, token.data(), std::min(token.size(), sizeof h.token));
  return h;
}

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
    o.job_owner = [this](const std::string& job) -> std::optional<uint32_t> {
      std::lock_guard<std::mutex> lock(mu);
      auto it = owners.find(job);
      return it == owners.end() ? 0 : it->second;  // root's, unless the test says
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
  // A job's first worker, once the previous job's have gone (their leaving is seen by the server a moment later).
  std::unique_ptr<PsClient> ConnectWhenFree(const PsClientOptions& o) {
    Result<std::unique_ptr<PsClient>> c = Status::Internal("test", "not tried");
    for (const auto until = steady_clock::now() + seconds(10); !c.ok() && steady_clock::now() < until;) {
      c = PsClient::Connect(o);
      if (!c.ok()) std::this_thread::sleep_for(milliseconds(20));
    }
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return c.ok() ? std::move(*c) : nullptr;
  }
  std::mutex mu;
  std::set<std::string> ended;             // the jobs that no longer live on "this node"
  std::map<std::string, uint32_t> owners;  // the jobs' users (root's when not listed)
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
  // A stranger's raw connection: a Hello without the job's token (none, or a forged one), and control requests
  // right behind it. The Hello is refused and the connection closed: nothing sent after it is served.
  for (const std::string& token : {std::string(), std::string(32, 'x')}) {
    Result<int> fd = ConnectTcp(address, seconds(2));
    ASSERT_TRUE(fd.ok()) << fd.status().ToString();
    timeval tv{5, 0};
    ::setsockopt(*fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    Hello hello = JobHello(job, 1, 2, token);
    InitBody body;
    body.length = 4;
    const std::string commit = "planted\n";
    Frame init{.op = Op::kInit, .key = 9, .id = 1, .bytes = sizeof body};
    Frame manifest{.op = Op::kCommitCheckpoint, .id = 2, .bytes = commit.size()};
    iovec iov[5] = {{&hello, sizeof hello},
                    {&init, sizeof init},
                    {&body, sizeof body},
                    {&manifest, sizeof manifest},
                    {const_cast<char*>(commit.data()), commit.size()}};
    ASSERT_TRUE(WriteAll(*fd, iov, 5).ok());
    // The refusal, unless the close (with our requests unread) reset the connection first; then the end.
    Frame refusal;
    Status st = ReadFull(*fd, &refusal, sizeof refusal);
    if (st.ok()) {
      EXPECT_EQ(refusal.op, Op::kError);
      EXPECT_EQ(refusal.aux, static_cast<uint32_t>(StatusCode::kPermissionDenied));
      std::string message(refusal.bytes, '\0');
      st = ReadFull(*fd, message.data(), message.size());
      char more;
      if (st.ok()) st = ReadFull(*fd, &more, 1);
    }
    EXPECT_EQ(st.code(), StatusCode::kUnavailable) << "the connection is closed after the refusal: " << st.ToString();
    ::close(*fd);
  }
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/planted")) << "a refused connection committed a checkpoint";
  // The job's own workers work: Init on both ranks (collective), then a push and pull.
  const OptimizerConfig sum{.kind = OptimizerConfig::Kind::kSum};
  std::vector<float> w = {1, 2, 3, 4};
  Status init1;
  std::thread t([&] { init1 = (*rank1)->Init(1, 4, nullptr, sum); });
  EXPECT_TRUE((*rank0)->Init(1, 4, w.data(), sum).ok());
  t.join();
  EXPECT_TRUE(init1.ok()) << init1.ToString();
  // A round: each rank pushes its gradient and pulls the sum. The server counts it (agentd's /metrics).
  std::vector<float> g0 = {1, 1, 1, 1}, g1 = {2, 2, 2, 2}, out0(4), out1(4);
  const Ticket t0 = (*rank0)->PushPull(1, g0.data(), out0.data(), 4);
  const Ticket t1 = (*rank1)->PushPull(1, g1.data(), out1.data(), 4);
  ASSERT_TRUE((*rank0)->Wait(t0).ok());
  ASSERT_TRUE((*rank1)->Wait(t1).ok());
  EXPECT_EQ(out0, (std::vector<float>{3, 3, 3, 3})) << "the sum optimizer: the weights become the gradients' sum";
  const PsStats& stats = server->stats();
  EXPECT_EQ(stats.rounds.load(), 1u);
  EXPECT_EQ(stats.pushes.load(), 3u) << "the initial values (round 0) and a gradient from each rank";
  EXPECT_EQ(stats.pulls.load(), 2u);
  EXPECT_EQ(stats.bytes_in.load(), 3 * 4 * sizeof(float));
  EXPECT_EQ(stats.bytes_out.load(), 2 * 4 * sizeof(float));
  EXPECT_EQ(stats.apply.buckets[stats.apply.buckets.size() - 1].load(), 0u) << "a 4-float sum takes under 10 s";
  uint64_t rounds_timed = 0;
  for (const auto& b : stats.round.buckets) rounds_timed += b.load();
  EXPECT_EQ(rounds_timed, 1u);
  EXPECT_EQ(stats.connections.load(), 2u);
  EXPECT_EQ(stats.refused_hello.load(), 4u) << "the stranger's, the other job's and the two raw Hellos";
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

// Rank 0 of a 1-worker job sends kMaxInFlight + 64 pulls of `version` and reads nothing, so that the server's
// reader stops at kMaxInFlight unanswered requests; then the worker dies (its connection closes). A restarted
// worker must take rank 0 back at once, not after a timeout, while a second worker beside a live one is refused.
void HoldRankThenDie(AuthTest& t, uint64_t version) {
  const std::string job = "j-0000000000cc";
  Result<int> fd = ConnectTcp(t.address, seconds(2));
  ASSERT_TRUE(fd.ok()) << fd.status().ToString();
  timeval tv{10, 0};
  ::setsockopt(*fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  Hello hello = JobHello(job, 0, 1, DlpsJobToken(kKey, job));
  constexpr uint64_t kFloats = 1 << 20;  // 4 MB: a few replies fill the socket's buffers
  InitBody body;
  body.length = kFloats;
  std::vector<float> values(kFloats, 1.0f);
  Frame init{.op = Op::kInit, .key = 1, .id = 1, .bytes = sizeof body};
  Frame push{.op = Op::kPush, .key = 1, .id = 2, .version = 0, .bytes = kFloats * sizeof(float)};
  iovec start[5] = {{&hello, sizeof hello}, {&init, sizeof init}, {&body, sizeof body}, {&push, sizeof push}, {values.data(), push.bytes}};
  ASSERT_TRUE(WriteAll(*fd, start, 5).ok());
  Hello ack;
  ASSERT_TRUE(ReadFull(*fd, &ack, sizeof ack).ok());
  for (int i = 0; i < 2; ++i) {  // Init's and the push's replies
    Frame reply;
    ASSERT_TRUE(ReadFull(*fd, &reply, sizeof reply).ok());
    ASSERT_NE(reply.op, Op::kError);
    std::string payload(reply.bytes, '\0');
    ASSERT_TRUE(ReadFull(*fd, payload.data(), payload.size()).ok());
  }
  std::vector<Frame> pulls(kMaxInFlight + 64);
  for (size_t i = 0; i < pulls.size(); ++i) pulls[i] = {.op = Op::kPull, .key = 1, .id = 10 + i, .version = version};
  iovec all{pulls.data(), pulls.size() * sizeof(Frame)};
  ASSERT_TRUE(WriteAll(*fd, &all, 1).ok());
  const PsStats& stats = t.server->stats();
  for (const auto until = steady_clock::now() + seconds(60); stats.pulls.load() < kMaxInFlight && steady_clock::now() < until;) {
    std::this_thread::sleep_for(milliseconds(10));
  }
  ASSERT_GE(stats.pulls.load(), kMaxInFlight) << "the server read the unanswered pulls";
  auto twin = PsClient::Connect(t.Worker(0, 1, job, kKey));
  ASSERT_FALSE(twin.ok());
  EXPECT_NE(twin.status().message().find("rank 0 is already connected"), std::string::npos) << twin.status().ToString();
  ::close(*fd);
  const auto died = steady_clock::now();
  Result<std::unique_ptr<PsClient>> back = Status::Internal("test", "not tried");
  while (!back.ok() && steady_clock::now() - died < seconds(30)) {
    back = PsClient::Connect(t.Worker(0, 1, job, kKey));
    if (!back.ok()) std::this_thread::sleep_for(milliseconds(20));
  }
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_LT(steady_clock::now() - died, seconds(3)) << "the dead connection held rank 0";
}

TEST_F(AuthTest, AWorkerThatNeverReadsItsRepliesIsCutOffAndItsRankFreed) {
  // It pulls a 4 MB slice 40 times and reads nothing: 160 MB of replies, over twice the shard's weights and
  // kSlowReaderSlack. The server cuts it off instead of holding them, and its rank is free again.
  const std::string job = "j-0000000000cc";
  Result<int> fd = ConnectTcp(address, seconds(2));
  ASSERT_TRUE(fd.ok()) << fd.status().ToString();
  timeval tv{10, 0};
  ::setsockopt(*fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  Hello hello = JobHello(job, 0, 1, DlpsJobToken(kKey, job));
  constexpr uint64_t kFloats = 1 << 20;
  InitBody body;
  body.length = kFloats;
  std::vector<float> values(kFloats, 1.0f);
  Frame init{.op = Op::kInit, .key = 1, .id = 1, .bytes = sizeof body};
  Frame push{.op = Op::kPush, .key = 1, .id = 2, .version = 0, .bytes = kFloats * sizeof(float)};
  std::vector<Frame> pulls(40);
  for (size_t i = 0; i < pulls.size(); ++i) pulls[i] = {.op = Op::kPull, .key = 1, .id = 10 + i, .version = 0};
  iovec all[6] = {{&hello, sizeof hello}, {&init, sizeof init},        {&body, sizeof body},
                  {&push, sizeof push},   {values.data(), push.bytes}, {pulls.data(), pulls.size() * sizeof(Frame)}};
  ASSERT_TRUE(WriteAll(*fd, all, 6).ok());
  // The server ends the connection: what it sent, then the end (or a reset), within the receive timeout.
  std::vector<char> sink(1 << 20);
  ssize_t n = 0;
  uint64_t received = 0;
  while ((n = ::recv(*fd, sink.data(), sink.size(), 0)) > 0) received += static_cast<uint64_t>(n);
  EXPECT_TRUE(n == 0 || errno == ECONNRESET) << "the connection was not closed: " << std::strerror(errno);
  EXPECT_LT(received, 40 * kFloats * sizeof(float)) << "every reply was sent: nothing was cut off";
  ::close(*fd);
  auto back = ConnectWhenFree(Worker(0, 1, job, kKey));
  EXPECT_TRUE(back) << "rank 0 is free again";
}

TEST_F(AuthTest, AWorkerThatDiedWaitingForARoundGivesItsRankBackAtOnce) {
  HoldRankThenDie(*this, 1);  // round 1 never comes: nothing is written, the reader waits for room
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST_F(AuthTest, EachUsersCheckpointsAreTheirOwnAndAnotherUsersAreNeitherReadNorOverwritten) {
  const std::string alice_job = "j-0000000000a1", bob_job = "j-0000000000b1";
  {
    std::lock_guard<std::mutex> lock(mu);
    owners[alice_job] = 1001;
    owners[bob_job] = 1002;
  }
  const OptimizerConfig sum{.kind = OptimizerConfig::Kind::kSum};
  std::vector<float> w = {1, 2, 3, 4};
  auto alice = ConnectWhenFree(Worker(0, 1, alice_job, kKey));
  ASSERT_TRUE(alice);
  ASSERT_TRUE(alice->Init(1, 4, w.data(), sum).ok());
  ASSERT_TRUE(alice->Checkpoint("model").ok());
  alice.reset();
  const std::string mine = dir.path() + "/users/1001";
  struct stat st {};
  ASSERT_EQ(::lstat(mine.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u) << "only root enters a user's checkpoints";
  EXPECT_EQ(st.st_uid, ::geteuid());
  const std::string alice_file = mine + "/model/" + ShardFileName(0, 1);
  const std::string alice_bytes = Slurp(alice_file);
  ASSERT_FALSE(alice_bytes.empty());
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/model")) << "nothing in the shared namespace";

  // Bob's job cannot restore Alice's checkpoint, and is told whose it is; his own of the same name is his.
  auto bob = ConnectWhenFree(Worker(0, 1, bob_job, kKey));
  ASSERT_TRUE(bob);
  std::vector<float> other = {9, 9, 9, 9};
  ASSERT_TRUE(bob->Init(1, 4, other.data(), sum).ok());
  Status taken = bob->Restore("model");
  EXPECT_EQ(taken.code(), StatusCode::kNotFound) << taken.ToString();
  EXPECT_NE(taken.message().find("uid 1001 has a checkpoint named model: each user's jobs see only their own"), std::string::npos)
      << taken.ToString();
  ASSERT_TRUE(bob->Checkpoint("model").ok());
  EXPECT_EQ(Slurp(alice_file), alice_bytes) << "Bob's checkpoint overwrote Alice's";
  EXPECT_NE(Slurp(dir.path() + "/users/1002/model/" + ShardFileName(0, 1)), alice_bytes);
  // A checkpoint from before they were per user is found and its move explained.
  std::filesystem::create_directories(dir.path() + "/legacy");
  std::ofstream(dir.path() + "/legacy/MANIFEST.json") << "{}";
  Status legacy = bob->Restore("legacy");
  EXPECT_NE(legacy.message().find("written before checkpoints were kept per user: root can move it to " + dir.path() + "/users/1002/"),
            std::string::npos)
      << legacy.ToString();
  bob.reset();

  // A user's directory that someone else made (shared storage) is refused, naming them.
  if (::geteuid() == 0) {
    const std::string planted = dir.path() + "/users/1003";
    ASSERT_EQ(::mkdir(planted.c_str(), 0777), 0);
    ASSERT_EQ(::chown(planted.c_str(), 1003, 1003), 0);
    {
      std::lock_guard<std::mutex> lock(mu);
      owners["j-0000000000c1"] = 1003;
    }
    auto carol = ConnectWhenFree(Worker(0, 1, "j-0000000000c1", kKey));
    ASSERT_TRUE(carol);
    ASSERT_TRUE(carol->Init(1, 4, w.data(), sum).ok());
    Status refused = carol->Checkpoint("model");
    EXPECT_NE(refused.message().find(planted + " belongs to uid 1003, not to the server"), std::string::npos) << refused.ToString();
  }
}

}  // namespace
}  // namespace dlagent::ps
