// libFuzzer target: the control requests other than RunJob (JobOutput, KillJob, AttachProcess, CheckHealth,
// ListJobs: what any member of the dlagent group can send its agent) and the agent-to-agent job calls (a
// NodeRequest, sealed with the cluster key and opened by the real JobRpcServer), against a real Jobs of a
// two-node roster: this node, with one job running (`sleep`) and one finished, and a second node that never
// answers.
//
// Input: byte 0 picks the request, byte 1 the caller (the jobs' owner, a stranger, root), byte 2 the job id
// (as fuzzed, the running job's, the finished job's); the rest is the request's protobuf encoding. Two more
// picks send a job call that an agent must refuse unopened: sealed under another cluster's key, or with the
// right key 10 minutes ago (a replay window's worth stale).
// Nothing fuzzed is ever run: AttachProcess goes only to strangers (refused before anything starts), and
// NodeRequests that start or prepare ranks are skipped. Run as root, the jobs belong to nobody (65534).
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>

#include "agent/jobs/jobs.h"

using namespace dlagent;
using namespace dlagent::jobs;

namespace {

constexpr const char* kSelf = "i-0a";
constexpr const char* kSelfAddr = "127.0.0.1:1";

// The other agents: this node's own address reaches its JobRpcServer (the sealed path end to end); every
// other address does not answer.
class LoopbackClient final : public ClusterClient {
 public:
  Jobs* jobs = nullptr;
  Result<std::string> Exchange(const std::string&, const std::string&) override { return Status::Unavailable("fuzz", "no gossip"); }
  Result<std::string> FetchRoster(const std::string&, const std::string&) override { return Status::Unavailable("fuzz", "no roster"); }
  Result<std::string> Job(const std::string& addr, const std::string& sealed) override {
    if (addr != kSelfAddr || !jobs) return Status::Unavailable("fuzz", addr + " does not answer");
    return jobs->HandleRpc(sealed);
  }
  void SetKeyring(std::shared_ptr<const swim::Keyring>) override {}  // no connections to prove
};

struct World {
  LoopbackClient client;
  std::shared_ptr<const swim::Keyring> ring;
  std::unique_ptr<Jobs> jobs;
  PeerCredentials owner, stranger{1000, 1000, {1000}, 0}, root{0, 0, {0}, 0};
  std::string running, finished;
};

World& TheWorld() {
  static World* w = [] {
    spdlog::set_level(spdlog::level::off);
    auto* w = new World;
    const uint32_t id = ::geteuid() == 0 ? 65534 : ::geteuid();
    w->owner = {id, id, {id}, 0};
    w->ring = std::make_shared<const swim::Keyring>(*swim::Keyring::Create({{1, std::string(32, 'k')}}, 1, "fuzz"));
    JobsDeps d;
    d.client = &w->client;
    d.keyring = [w] { return w->ring; };
    d.gone = [](const std::string& id) { return id != kSelf; };
    d.roster = [] { return std::vector<JobNode>{{kSelf, "127.0.0.1", kSelfAddr, 1}, {"i-0b", "127.0.0.2", "127.0.0.2:1", 0}}; };
    d.ready = [](std::string*) { return true; };
    d.base_env = [] { return std::vector<std::string>{"PATH=/usr/bin:/bin"}; };
    d.health = [](const pb::HealthRequest& r) {
      pb::HealthReply h;
      h.set_phase("ready");
      h.set_workdir(r.workdir());
      h.add_alive(kSelf);
      return h;
    };
    d.alive = [] { return std::vector<std::string>{kSelf}; };
    JobsOptions o;
    o.self = kSelf;
    o.self_addr = kSelfAddr;
    w->jobs = std::make_unique<Jobs>(d, o);
    w->client.jobs = w->jobs.get();
    auto run = [&](std::vector<std::string> argv) {
      pb::RunJobRequest req;
      req.set_per_node(1);
      req.add_nodes("0");
      req.set_workdir("/");
      req.set_grace_ms(100);
      for (auto& a : argv) req.add_argv(a);
      Result<pb::JobSummary> s = w->jobs->Run(req, w->owner);
      if (!s.ok()) {
        std::fprintf(stderr, "control_fuzz: cannot start a job: %s\n", s.status().ToString().c_str());
        std::abort();
      }
      return s->id();
    };
    w->finished = run({"/bin/true"});
    w->running = run({"/bin/sleep", "100000"});
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // /bin/true has exited
    std::atexit([] {                                              // no rank outlives the fuzzer
      World& w = TheWorld();
      pb::KillJobRequest k;
      k.set_job(w.running);
      k.set_signal(SIGKILL);
      (void)w.jobs->Kill(k, w.root);
    });
    return w;
  }();
  return *w;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 3) return 0;
  World& w = TheWorld();
  const PeerCredentials& caller = data[1] % 3 == 0 ? w.owner : data[1] % 3 == 1 ? w.stranger : w.root;
  auto job = [&](std::string* field) {
    if (data[2] % 3 == 1) *field = w.running;
    if (data[2] % 3 == 2) *field = w.finished;
  };
  const uint8_t* body = data + 3;
  const int len = static_cast<int>(size - 3);
  auto says_why = [](const Status& st) {
    if (st.message().empty()) __builtin_trap();  // a refusal names what is wrong
  };
  switch (data[0] % 8) {
    case 0: {
      pb::JobOutputRequest req;
      if (!req.ParseFromArray(body, len)) return 0;
      job(req.mutable_job());
      if (auto r = w.jobs->Output(req, caller); !r.ok()) says_why(r.status());
      break;
    }
    case 1: {
      pb::KillJobRequest req;
      if (!req.ParseFromArray(body, len)) return 0;
      job(req.mutable_job());
      // Signals that would stop the fuzzer's own process group are not the point: the ranks have their own.
      if (auto r = w.jobs->Kill(req, caller); !r.ok()) says_why(r.status());
      break;
    }
    case 2: {
      pb::AttachRequest req;
      if (!req.ParseFromArray(body, len)) return 0;
      job(req.mutable_job());
      if (auto r = w.jobs->Attach(req, w.stranger); r.ok()) {
        __builtin_trap();  // a stranger never starts a process in someone's job
      } else {
        says_why(r.status());
      }
      break;
    }
    case 3: {
      pb::HealthCheckRequest req;
      if (!req.ParseFromArray(body, len)) return 0;
      if (auto r = w.jobs->Health(req, caller); !r.ok()) says_why(r.status());
      break;
    }
    case 4: {
      if (auto r = w.jobs->List(caller); !r.ok()) says_why(r.status());
      break;
    }
    case 6:
    case 7: {
      // Refused before anything is parsed, and counted: never an answer.
      static const swim::Keyring other = *swim::Keyring::Create({{1, std::string(32, 'o')}}, 1, "fuzz");
      const int64_t now = swim::NowUnixMs();
      const std::string_view plain(reinterpret_cast<const char*>(body), static_cast<size_t>(len));
      const std::string sealed = data[0] % 8 == 6 ? other.Seal(plain, now) : w.ring->Seal(plain, now - 600'000);
      const uint64_t refused = w.jobs->refused_calls();
      if (w.jobs->HandleRpc(sealed).ok() || w.jobs->refused_calls() != refused + 1) __builtin_trap();
      break;
    }
    default: {
      pb::NodeRequest req;
      if (!req.ParseFromArray(body, len)) return 0;
      if (req.has_start() || req.has_prepare()) return 0;  // would run what the input says
      if (req.has_query()) job(req.mutable_query()->mutable_job());
      if (req.has_signal()) job(req.mutable_signal()->mutable_job());
      (void)CallNode(w.client, *w.ring, kSelfAddr, req);
      break;
    }
  }
  return 0;
}
