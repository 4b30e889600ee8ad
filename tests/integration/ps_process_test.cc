// dlps-server processes with workers that are threads of this test (PsClient, one per thread) or processes
// (dlps-train): 2 servers and 3 workers in sync and async mode, a server killed under the workers, a worker
// that goes away or is killed, malformed connections.
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <thread>

#include <gtest/gtest.h>

#include "agent/ps/client.h"
#include "agent/ps/frame.h"
#include "tests/support/dlps_job.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"

namespace dlagent::ps {
namespace {

using namespace std::chrono;
using testing::Subprocess;

struct LogDir {
  testing::TempDir dir;  // made before the servers (a base listed first), removed after them
};

// The servers of one test, the directory for their logs and client options for them.
struct Servers : LogDir, testing::DlpsServers {
  Servers(int n, int workers, const std::string& mode, const std::string& checkpoint_dir = "")
      : DlpsServers(dir, n, static_cast<uint32_t>(workers), mode, checkpoint_dir) {}
  PsClientOptions Options(uint32_t rank, uint32_t workers) const {
    PsClientOptions o;
    o.servers = addresses;
    o.rank = rank;
    o.num_workers = workers;
    o.deadline = seconds(10);
    o.split_floats = 1000;   // small enough that the big key is cut over both servers
    o.chunk_floats = 50000;  // several chunks per part
    return o;
  }
};

constexpr uint64_t kBig = 1, kSmall = 2;
constexpr size_t kBigLength = 300'001, kSmallLength = 10;

// Runs fn(rank, client) on one thread per worker and returns each worker's status.
std::vector<Status> RunWorkers(const Servers& s, int workers, const std::function<Status(uint32_t, PsClient&)>& fn) {
  std::vector<Status> results(workers);
  std::vector<std::thread> threads;
  for (int r = 0; r < workers; ++r) {
    threads.emplace_back([&, r] {
      auto client = PsClient::Connect(s.Options(r, workers));
      results[r] = client.ok() ? fn(r, **client) : client.status();
    });
  }
  for (auto& t : threads) t.join();
  return results;
}

TEST(PsProcessTest, SyncTwoServersThreeWorkersAgreeOnEveryRound) {
  Servers s(2, 3, "sync");
  ASSERT_TRUE(s.ok()) << s.procs[0]->Output();
  const OptimizerConfig sgd{.kind = OptimizerConfig::Kind::kSgd, .learning_rate = 0.1f};
  std::vector<std::vector<float>> finals(3);
  auto results = RunWorkers(s, 3, [&](uint32_t rank, PsClient& c) -> Status {
    std::vector<float> w(kBigLength), small(kSmallLength);
    for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(i % 97);
    RETURN_IF_ERROR(c.Init(kBig, kBigLength, w.data(), sgd));
    RETURN_IF_ERROR(c.Init(kSmall, kSmallLength, nullptr, sgd));
    for (int round = 1; round <= 4; ++round) {
      // Gradient rank+1 everywhere: the round's sum is 6, so every weight drops by 0.6.
      std::vector<float> g(kBigLength, static_cast<float>(rank + 1)), gs(kSmallLength, 1.0f);
      Ticket a = c.PushPull(kBig, g.data(), w.data(), kBigLength);
      Ticket b = c.PushPull(kSmall, gs.data(), small.data(), kSmallLength);
      RETURN_IF_ERROR(c.Wait(a));
      RETURN_IF_ERROR(c.Wait(b));
      for (size_t i = 0; i < w.size(); i += 9973) {
        const float want = static_cast<float>(i % 97) - 0.6f * round;
        if (std::abs(w[i] - want) > 1e-4f)
          return Status::Internal("test", "round " + std::to_string(round) + " w[" + std::to_string(i) + "] = " + std::to_string(w[i]));
      }
      if (std::abs(small[0] + 0.3f * round) > 1e-5f) return Status::Internal("test", "small key: " + std::to_string(small[0]));
    }
    finals[rank] = w;
    return c.Barrier();
  });
  for (int r = 0; r < 3; ++r) EXPECT_TRUE(results[r].ok()) << "rank " << r << ": " << results[r].ToString();
  EXPECT_EQ(finals[0], finals[1]);
  EXPECT_EQ(finals[0], finals[2]);
}

TEST(PsProcessTest, AsyncAppliesEveryPush) {
  Servers s(2, 3, "async");
  ASSERT_TRUE(s.ok());
  const OptimizerConfig sgd{.kind = OptimizerConfig::Kind::kSgd, .learning_rate = 0.5f};
  std::vector<float> last(kBigLength);
  auto results = RunWorkers(s, 3, [&](uint32_t rank, PsClient& c) -> Status {
    RETURN_IF_ERROR(c.Init(kBig, kBigLength, nullptr, sgd));
    std::vector<float> g(kBigLength, 1.0f);
    for (int i = 0; i < 5; ++i) RETURN_IF_ERROR(c.Wait(c.Push(kBig, g.data(), kBigLength)));
    RETURN_IF_ERROR(c.Barrier());  // every push applied
    if (rank == 0) RETURN_IF_ERROR(c.Wait(c.Pull(kBig, last.data(), kBigLength)));
    return Status::Ok();
  });
  for (int r = 0; r < 3; ++r) EXPECT_TRUE(results[r].ok()) << "rank " << r << ": " << results[r].ToString();
  for (size_t i = 0; i < last.size(); i += 7919) EXPECT_FLOAT_EQ(last[i], -0.5f * 15) << i;
}

TEST(PsProcessTest, AKilledServerFailsTheNextStepFastNamingIt) {
  Servers s(2, 1, "sync");
  ASSERT_TRUE(s.ok());
  auto c = PsClient::Connect(s.Options(0, 1));
  ASSERT_TRUE(c.ok());
  std::vector<float> w(kBigLength, 1.0f), g(kBigLength, 1.0f);
  ASSERT_TRUE((*c)->Init(kBig, kBigLength, w.data(), {.kind = OptimizerConfig::Kind::kSum}).ok());
  ASSERT_TRUE((*c)->Wait((*c)->PushPull(kBig, g.data(), w.data(), kBigLength)).ok());
  s.procs[1]->Signal(SIGKILL);
  s.procs[1]->Wait(seconds(5));
  const auto t0 = steady_clock::now();
  Status st = (*c)->Wait((*c)->PushPull(kBig, g.data(), w.data(), kBigLength));
  const double took = duration<double>(steady_clock::now() - t0).count();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.ToString().find(s.addresses[1]), std::string::npos) << st.ToString();
  EXPECT_LT(took, 5.0) << "fails fast, well before the 10 s deadline";
  std::printf("%s (after %.3f s)\n", st.ToString().c_str(), took);
}

TEST(PsProcessTest, AWorkerThatGoesAwayFailsTheOthersRoundNamingItsRank) {
  Servers s(2, 2, "sync");
  ASSERT_TRUE(s.ok());
  auto c0 = PsClient::Connect(s.Options(0, 2));
  auto c1 = PsClient::Connect(s.Options(1, 2));
  ASSERT_TRUE(c0.ok() && c1.ok());
  std::vector<float> w(kBigLength, 1.0f), g(kBigLength, 1.0f);
  std::thread init1([&] { ASSERT_TRUE((*c1)->Init(kBig, kBigLength, nullptr, {}).ok()); });
  ASSERT_TRUE((*c0)->Init(kBig, kBigLength, w.data(), {}).ok());
  init1.join();
  // Rank 0 pushes and waits for the round; rank 1 goes away instead of pushing.
  const auto t0 = steady_clock::now();
  Ticket t = (*c0)->PushPull(kBig, g.data(), w.data(), kBigLength);
  std::this_thread::sleep_for(milliseconds(200));
  c1->reset();
  Status st = (*c0)->Wait(t);
  const double took = duration<double>(steady_clock::now() - t0).count();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.ToString().find("worker rank 1 disconnected"), std::string::npos) << st.ToString();
  EXPECT_LT(took, 5.0) << "well before the 10 s deadline";
}

TEST(PsProcessTest, ARoundThatNeverCompletesEndsAtTheDeadline) {
  Servers s(1, 2, "sync");
  ASSERT_TRUE(s.ok());
  PsClientOptions o = s.Options(0, 2);
  o.deadline = milliseconds(800);
  auto c = PsClient::Connect(o);
  ASSERT_TRUE(c.ok());
  // Rank 1 never comes: Init's barrier, then a round, end in errors instead of hanging.
  std::vector<float> w(10, 0.0f);
  Status st = (*c)->Init(kSmall, 10, w.data(), {});
  EXPECT_EQ(st.code(), StatusCode::kDeadlineExceeded) << st.ToString();
  EXPECT_NE(st.ToString().find("barrier"), std::string::npos) << st.ToString();
}

TEST(PsProcessTest, TheServerRefusesAWorkerOfAnotherJobAndSurvivesMalformedConnections) {
  Servers s(1, 1, "sync");
  ASSERT_TRUE(s.ok());
  auto wrong = PsClient::Connect(s.Options(2, 3));
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.status().ToString().find("dlps server " + s.addresses[0] +
                                           ": dlps-server: the worker says the job has 3 workers; "
                                           "this server was started for 1"),
            std::string::npos)
      << wrong.status().ToString();

  // Raw connections whose reads give up after 5 s instead of hanging the test.
  auto raw = [&] {
    Result<int> fd = ConnectTcp(s.addresses[0], milliseconds(2000));
    EXPECT_TRUE(fd.ok());
    timeval tv{5, 0};
    if (fd.ok()) ::setsockopt(*fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
  };
  // Two bytes, then nothing: the server waits for the rest without spinning, and serves others meanwhile.
  Result<int> slow = raw();
  ASSERT_TRUE(slow.ok());
  char two[] = "DL";
  iovec half{two, 2};
  ASSERT_TRUE(WriteAll(*slow, &half, 1).ok());
  const double cpu0 = testing::CpuSeconds(s.procs[0]->pid());
  std::this_thread::sleep_for(milliseconds(500));
  EXPECT_LT(testing::CpuSeconds(s.procs[0]->pid()) - cpu0, 0.2) << "the accept loop must not spin on a partial first read";
  ::close(*slow);

  // Not dlps at all: closed without an answer.
  Result<int> junk = raw();
  ASSERT_TRUE(junk.ok());
  char text[] = "GET / HTTP/1.1\r\n\r\n";
  iovec iov{text, sizeof text - 1};
  ASSERT_TRUE(WriteAll(*junk, &iov, 1).ok());
  char byte;
  const ssize_t got = ::read(*junk, &byte, 1);
  EXPECT_TRUE(got == 0 || (got < 0 && errno == ECONNRESET))
      << "closed (a reset: the request was never read), not " << got << " " << std::strerror(errno);
  ::close(*junk);

  // The server still serves a proper worker.
  {
    auto c = PsClient::Connect(s.Options(0, 1));
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    std::vector<float> w(kSmallLength, 2.0f), g(kSmallLength, 1.0f);
    ASSERT_TRUE((*c)->Init(kSmall, kSmallLength, w.data(), {}).ok());
    Status st = (*c)->Wait((*c)->PushPull(kSmall, g.data(), w.data(), kSmallLength));
    ASSERT_TRUE(st.ok()) << st.ToString();
    EXPECT_EQ(w, g) << "sum: the weights are the round's gradient";
    st = (*c)->Checkpoint("ck");
    EXPECT_NE(st.ToString().find("has no checkpoint directory (dlps-server --checkpoint-dir DIR; in agentd, ps.checkpoint_dir)"), std::string::npos)
        << st.ToString();
  }

  // A dlps worker that sends a frame claiming a 1 TiB payload: an error naming
  // the size, then the connection closes. Rank 0 is taken until the server has seen the proper worker leave
  // (its Hello is refused meanwhile, with an error frame instead of the Hello): asked again until accepted.
  Result<int> liar = Status::Unavailable("test", "not connected");
  Hello hello;
  hello.num_workers = 1;
  for (const auto until = steady_clock::now() + seconds(10); steady_clock::now() < until;) {
    liar = raw();
    ASSERT_TRUE(liar.ok());
    iovec iov{&hello, sizeof hello};
    ASSERT_TRUE(WriteAll(*liar, &iov, 1).ok());
    Hello ack;
    ASSERT_TRUE(ReadFull(*liar, &ack.magic, sizeof ack.magic).ok());
    if (ack.magic == kHelloMagic) {
      ASSERT_TRUE(ReadFull(*liar, reinterpret_cast<char*>(&ack) + sizeof ack.magic, sizeof ack - sizeof ack.magic).ok());
      break;
    }
    ::close(*liar);
    liar = Status::Unavailable("test", "rank 0 still taken");
    std::this_thread::sleep_for(milliseconds(10));
  }
  ASSERT_TRUE(liar.ok()) << liar.status().ToString();
  Frame f;
  f.op = Op::kPush;
  f.id = 9;
  f.version = 1;
  f.bytes = uint64_t{1} << 40;
  iovec out{&f, sizeof f};
  ASSERT_TRUE(WriteAll(*liar, &out, 1).ok());
  Frame reply;
  ASSERT_TRUE(ReadFull(*liar, &reply, sizeof reply).ok());
  EXPECT_EQ(reply.op, Op::kError);
  EXPECT_EQ(reply.id, 9u);
  std::string message(reply.bytes, '\0');
  ASSERT_TRUE(ReadFull(*liar, message.data(), message.size()).ok());
  EXPECT_NE(message.find("a frame of 1099511627776 bytes is over the limit"), std::string::npos) << message;
  EXPECT_EQ(::read(*liar, &byte, 1), 0) << "closed";
  ::close(*liar);
  EXPECT_FALSE(s.procs[0]->Wait(milliseconds(100)).has_value()) << "the server is still running";
}

std::vector<std::unique_ptr<Subprocess>> StartTrainers(const Servers& s, int workers, const std::vector<std::string>& args) {
  return testing::StartTrainers(s.dir, s.List(), workers, args);
}

TEST(PsProcessTest, TrainerProcessesInSyncModeMatchTrainingInOneProcess) {
  for (const char* model : {"softmax", "mlp"}) {
    Servers s(2, 3, "sync");
    ASSERT_TRUE(s.ok());
    // 3 workers and a global batch of 100: uneven shares (33, 33, 34) of every batch, and a last batch of 50.
    auto ranks = StartTrainers(s, 3, {"--model", model, "--samples", "1550", "--features", "20", "--batch", "100", "--epochs", "3", "--verify"});
    for (int r = 0; r < 3; ++r) {
      EXPECT_EQ(ranks[r]->Wait(seconds(60)), 0) << model << " rank " << r << ":\n" << ranks[r]->Output();
    }
    const std::string out = ranks[0]->Output();
    EXPECT_NE(out.find("epoch 3/3: loss"), std::string::npos) << out;
    EXPECT_NE(out.find("3 workers"), std::string::npos) << out;
    // The reference sums the workers' shares in rank order as the servers do: a correct job matches it to the bit.
    EXPECT_NE(out.find("as the servers sum them) is 0 (max |a-b| / max |b| over all weights; tolerance 1e-05): ok"), std::string::npos) << out;
    std::printf("%s", out.c_str());
  }
}

TEST(PsProcessTest, TrainerProcessesInAsyncModeLearn) {
  Servers s(2, 3, "async");
  ASSERT_TRUE(s.ok());
  auto ranks = StartTrainers(s, 3, {"--samples", "3000", "--features", "20", "--classes", "3", "--batch", "60", "--epochs", "4"});
  for (int r = 0; r < 3; ++r) EXPECT_EQ(ranks[r]->Wait(seconds(60)), 0) << "rank " << r << ":\n" << ranks[r]->Output();
  const std::string out = ranks[0]->Output();
  const size_t at = out.find("epoch 4/4: loss ");
  ASSERT_NE(at, std::string::npos) << out;
  const double accuracy = std::stod(out.substr(out.find("accuracy ", at) + 9));
  EXPECT_GT(accuracy, 0.8) << out;  // 3 classes: chance is 0.33
}

TEST(PsProcessTest, AKilledTrainerProcessFailsTheOthersNamingItsRank) {
  Servers s(2, 3, "sync");
  ASSERT_TRUE(s.ok());
  auto ranks = StartTrainers(s, 3, {"--model", "mlp", "--samples", "200000", "--features", "50", "--batch", "64", "--epochs", "1000"});
  const auto until = steady_clock::now() + seconds(30);
  while (ranks[0]->Output().find("dlps-train: mlp") == std::string::npos && steady_clock::now() < until) {
    std::this_thread::sleep_for(milliseconds(20));
  }
  std::this_thread::sleep_for(milliseconds(200));  // well into the first epoch
  ranks[2]->Signal(SIGKILL);
  const auto t0 = steady_clock::now();
  for (int r = 0; r < 2; ++r) {
    std::optional<int> status = ranks[r]->Wait(seconds(10));
    ASSERT_TRUE(status.has_value()) << "rank " << r << " did not end:\n" << ranks[r]->Output();
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 1) << *status;
    EXPECT_NE(ranks[r]->Output().find("worker rank 2 disconnected"), std::string::npos) << ranks[r]->Output();
  }
  const double took = duration<double>(steady_clock::now() - t0).count();
  EXPECT_LT(took, 5.0) << "the others fail at once, not at the 120 s deadline";
  std::printf("rank 0 after %.3f s: %s", took, ranks[0]->Output().substr(ranks[0]->Output().rfind("dlps-train: rank")).c_str());
}

TEST(PsProcessTest, ACheckpointRestoresTheWeightsAndOptimizerStateAndABrokenOneIsRefused) {
  testing::TempDir shared;  // the checkpoint directory every server sees
  const OptimizerConfig adam{.kind = OptimizerConfig::Kind::kAdam, .learning_rate = 0.01f};
  // Step i's gradient is a function of rank, step and index: the same steps give the same weights.
  auto step = [](PsClient& c, uint32_t rank, int i, std::vector<float>& w) {
    std::vector<float> g(w.size());
    for (size_t j = 0; j < g.size(); ++j) g[j] = std::sin(0.001f * static_cast<float>(j) + static_cast<float>(i + rank));
    return c.Wait(c.PushPull(kBig, g.data(), w.data(), w.size()));
  };
  std::vector<float> expected(kBigLength), at_checkpoint(kBigLength);
  {
    Servers s(2, 2, "sync", shared.path());
    ASSERT_TRUE(s.ok());
    auto results = RunWorkers(s, 2, [&](uint32_t rank, PsClient& c) -> Status {
      std::vector<float> w(kBigLength, 0.5f);
      RETURN_IF_ERROR(c.Init(kBig, kBigLength, w.data(), adam));
      for (int i = 0; i < 3; ++i) RETURN_IF_ERROR(step(c, rank, i, w));
      RETURN_IF_ERROR(c.Barrier());
      if (rank == 0) {
        RETURN_IF_ERROR(c.Checkpoint("ck"));
        at_checkpoint = w;
      }
      RETURN_IF_ERROR(c.Barrier());
      for (int i = 3; i < 6; ++i) RETURN_IF_ERROR(step(c, rank, i, w));
      if (rank == 0) expected = w;
      return c.Barrier();
    });
    for (int r = 0; r < 2; ++r) ASSERT_TRUE(results[r].ok()) << "rank " << r << ": " << results[r].ToString();
  }
  // A new job: Init, restore, then the same three steps end at the same weights
  // (Adam's moments and step count came back too, or they would not).
  auto rerun = [&](std::vector<float>* restored, std::vector<float>* final) {
    Servers s(2, 2, "sync", shared.path());
    EXPECT_TRUE(s.ok());
    return RunWorkers(s, 2, [&](uint32_t rank, PsClient& c) -> Status {
      std::vector<float> w(kBigLength, 0.0f);
      RETURN_IF_ERROR(c.Init(kBig, kBigLength, w.data(), adam));
      if (rank == 0) RETURN_IF_ERROR(c.Restore("ck"));
      RETURN_IF_ERROR(c.Barrier());
      RETURN_IF_ERROR(c.Wait(c.Pull(kBig, w.data(), w.size())));
      if (rank == 0) *restored = w;
      for (int i = 3; i < 6; ++i) RETURN_IF_ERROR(step(c, rank, i, w));
      if (rank == 0) *final = w;
      return c.Barrier();
    })[0];
  };
  std::vector<float> restored, final;
  Status st = rerun(&restored, &final);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(restored, at_checkpoint);
  EXPECT_EQ(final, expected);

  // One flipped byte in server 1's file: refused, naming the file; nothing loaded.
  const std::string file = shared.path() + "/ck/server-1-of-2.dlps";
  {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(1000);
    f.put('\x7f');
  }
  st = rerun(&restored, &final);
  EXPECT_NE(st.ToString().find(file + " is corrupt (its SHA-256 does not match its contents); it was not loaded"), std::string::npos)
      << st.ToString();
  // No manifest (a checkpoint interrupted before it was complete): refused.
  ASSERT_EQ(std::remove((shared.path() + "/ck/MANIFEST.json").c_str()), 0);
  st = rerun(&restored, &final);
  EXPECT_NE(st.ToString().find("is missing or incomplete: it has no MANIFEST.json"), std::string::npos) << st.ToString();
}

TEST(PsProcessTest, AServerWithoutAJobSizeServesOneJobAfterAnother) {
  Servers s(2, 0, "sync");  // as agentd runs it
  ASSERT_TRUE(s.ok());
  // A job of 2 while nothing else runs; another client of a 3-worker job is refused meanwhile.
  auto first = StartTrainers(s, 2, {"--samples", "20000", "--features", "50", "--batch", "32", "--epochs", "3"});
  const auto until = steady_clock::now() + seconds(30);
  while (first[0]->Output().find("dlps-train: softmax") == std::string::npos && steady_clock::now() < until) {
    std::this_thread::sleep_for(milliseconds(10));  // both trainers are connected once rank 0 prints this
  }
  auto other = PsClient::Connect(s.Options(0, 3));
  ASSERT_FALSE(other.ok());
  EXPECT_NE(other.status().ToString().find("the worker says the job has 3 workers; this server is serving a job of 2 (one job at a time)"),
            std::string::npos)
      << other.status().ToString();
  auto twin = PsClient::Connect(s.Options(0, 2));
  ASSERT_FALSE(twin.ok());
  EXPECT_NE(twin.status().ToString().find("rank 0 is already connected"), std::string::npos) << twin.status().ToString();
  for (int r = 0; r < 2; ++r) EXPECT_EQ(first[r]->Wait(seconds(60)), 0) << first[r]->Output();
  // The next job, of another size, starts clean (its keys are new again).
  auto second = StartTrainers(s, 3, {"--samples", "2000", "--features", "10", "--epochs", "2", "--verify"});
  for (int r = 0; r < 3; ++r) EXPECT_EQ(second[r]->Wait(seconds(60)), 0) << second[r]->Output();
  EXPECT_NE(second[0]->Output().find("3 workers"), std::string::npos) << second[0]->Output();
}

}  // namespace
}  // namespace dlagent::ps
