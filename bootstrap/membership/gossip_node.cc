#include "bootstrap/membership/gossip_node.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>

#include <spdlog/spdlog.h>

#include "bootstrap/common/backoff.h"
#include "bootstrap/common/crypto.h"
#include "bootstrap/common/host_port.h"
#include "bootstrap/common/log.h"

namespace dlagent::swim {
namespace {

constexpr size_t kMaxDatagram = 1400;
constexpr size_t kMaxQueuedPushPulls = 8;
constexpr int kMaxServedPushPulls = 4;  // incoming full-state exchanges at once

void LogEvents(const std::vector<MemberEvent>& events) {
  for (const MemberEvent& e : events) {
    ScopedLogFields fields({{"PEER", e.name}, {"PEER_STATE", MemberStateName(e.to)}});
    const bool bad = e.to == MemberState::kSuspect || e.to == MemberState::kDead;
    spdlog::log(bad ? spdlog::level::warn : spdlog::level::info, "member {} is {} (was {}, incarnation {})", e.name, MemberStateName(e.to),
                MemberStateName(e.from), e.incarnation);
  }
}

// An IPv4 "ip:port" (gossip is IPv4 only).
bool ParseAddr(const std::string& addr, sockaddr_in* out) {
  Result<HostPort> hp = ParseHostPort(addr);
  if (!hp.ok()) return false;
  std::memset(out, 0, sizeof *out);
  out->sin_family = AF_INET;
  out->sin_port = htons(hp->port);
  return inet_pton(AF_INET, hp->host.c_str(), &out->sin_addr) == 1;
}

MonoTime Now() { return std::chrono::steady_clock::now(); }

}  // namespace

Result<std::unique_ptr<GossipNode>> GossipNode::Start(GossipOptions options, Keyring keyring, PushPullTransport* transport) {
  if (options.name.empty()) return Status::InvalidArgument("gossip", "a member needs a name: set gossip.name (on EC2, the instance id)");
  if (options.advertise_host.empty()) {
    if (options.bind_host == "0.0.0.0") {
      return Status::InvalidArgument("gossip", "gossip binds every interface: set gossip.advertise to the address peers should use");
    }
    options.advertise_host = options.bind_host;
  }
  sockaddr_in addr;
  const std::string bind_addr = options.bind_host + ":" + std::to_string(options.port);
  if (!ParseAddr(bind_addr, &addr))
    return Status::InvalidArgument("gossip", "cannot bind " + bind_addr + ": gossip.bind must be an IPv4 address such as 0.0.0.0 or 10.0.1.17");
  int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return Status::FromErrno("gossip", "socket", errno);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int err = errno;
    ::close(fd);
    return Status::FromErrno("gossip", "bind UDP " + bind_addr, err);
  }
  int wake = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake < 0) {
    ::close(fd);
    return Status::FromErrno("gossip", "eventfd", errno);
  }
  return std::unique_ptr<GossipNode>(new GossipNode(std::move(options), std::move(keyring), transport, fd, wake));
}

GossipNode::GossipNode(GossipOptions options, Keyring keyring, PushPullTransport* transport, int fd, int wake_fd)
    : options_(std::move(options)), keyring_(std::make_shared<const Keyring>(std::move(keyring))), transport_(transport), fd_(fd), wake_fd_(wake_fd) {
  advertise_addr_ = options_.advertise_host + ":" + std::to_string(options_.port);
  swim_ = std::make_unique<Swim>(options_.swim, options_.name, advertise_addr_, options_.meta, RandomSeed(), Now());
  for (const std::string& seed : options_.seeds) {
    if (seed != advertise_addr_) push_pull_queue_.push_back(seed);
  }
  loop_ = std::thread([this] { Loop(); });
  worker_ = std::thread([this] { Worker(); });
}

GossipNode::~GossipNode() {
  Stop();
  ::close(fd_);
  ::close(wake_fd_);
}

void GossipNode::Stop() {
  {
    MutexLock lock(mu_);
    if (stop_ && !loop_.joinable()) return;
    stop_ = true;
  }
  cv_.notify_all();
  uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof one);
  if (loop_.joinable()) loop_.join();
  if (worker_.joinable()) worker_.join();
}

void GossipNode::Leave(Duration grace) {
  {
    MutexLock lock(mu_);
    swim_->Leave(Now());
  }
  // The loop goes on sending the leave for a moment.
  std::this_thread::sleep_for(grace);
  Stop();
}

void GossipNode::Loop() {
  const Duration tick = std::min<Duration>(options_.swim.probe_timeout / 10, std::chrono::milliseconds(50));
  const int tick_ms = std::max<int>(1, static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(tick).count()));
  std::mt19937_64 rng(RandomSeed());
  // While alone, retry the seeds with jittered backoff: 200 ms at first (a seed may still be starting),
  // growing to rejoin_interval.
  const BackoffPolicy rejoin_policy{std::chrono::milliseconds(200), options_.rejoin_interval, 2.0, 0, Duration(0)};
  Backoff rejoin(rejoin_policy, rng());
  MonoTime next_rejoin = Now() + *rejoin.NextDelay();
  char buf[kMaxDatagram + 64];
  int wait_ms = tick_ms;
  for (;;) {
    if (options_.heartbeat) options_.heartbeat->Beat();
    pollfd fds[2] = {{fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    ::poll(fds, 2, wait_ms);
    if (fds[1].revents & POLLIN) {
      uint64_t n;
      (void)!::read(wake_fd_, &n, sizeof n);  // a meta change or stop: tick now
    }
    std::vector<std::string> received;
    for (int i = 0; i < 256; ++i) {
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) break;
      received.emplace_back(buf, static_cast<size_t>(n));
    }
    std::vector<OutPacket> out;
    std::vector<MemberEvent> events;
    std::shared_ptr<const Keyring> ring;
    {
      MutexLock lock(mu_);
      if (stop_) return;
      ring = keyring_;
      const MonoTime now = Now();
      for (const std::string& sealed : received) {
        ++stats_.packets_in;
        Result<std::string> plain = OpenOnce(sealed);
        if (!plain.ok()) continue;  // never parsed
        if (!swim_->OnPacket(*plain, now).ok()) ++stats_.malformed;
      }
      swim_->Tick(now);
      out = swim_->TakeOutbox();
      for (std::string& addr : swim_->TakePushPullRequests()) {
        if (push_pull_queue_.size() < kMaxQueuedPushPulls) push_pull_queue_.push_back(std::move(addr));
      }
      // Alone (never joined, or cut off from everyone): try a seed again.
      if (swim_->NumActive() > 1) {
        rejoin = Backoff(rejoin_policy, rng());
      } else if (now >= next_rejoin && !options_.seeds.empty() && push_pull_queue_.empty()) {
        next_rejoin = now + std::max<Duration>(std::chrono::milliseconds(50), *rejoin.NextDelay());
        push_pull_queue_.push_back(options_.seeds[std::uniform_int_distribution<size_t>(0, options_.seeds.size() - 1)(rng)]);
      }
      if (!push_pull_queue_.empty()) cv_.notify_all();
      stats_.packets_out += out.size();
      events = swim_->TakeEvents();
      // Alone there is nothing to probe: only rejoin attempts (200 ms apart at the least) need the clock.
      // A packet from a peer wakes the poll at once.
      wait_ms = swim_->NumActive() <= 1 ? std::max(tick_ms, 200) : tick_ms;
    }
    LogEvents(events);
    for (const OutPacket& p : out) {
      sockaddr_in to;
      if (!ParseAddr(p.to_addr, &to)) continue;
      const std::string sealed = ring->Seal(p.bytes, NowUnixMs());
      ::sendto(fd_, sealed.data(), sealed.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
    }
  }
}

void GossipNode::Worker() {
  for (;;) {
    std::string addr;
    {
      MutexLock lock(mu_);
      while (!stop_ && push_pull_queue_.empty()) cv_.wait(lock.native());
      if (stop_) return;
      addr = std::move(push_pull_queue_.front());
      push_pull_queue_.pop_front();
    }
    PushPull(addr);
  }
}

void GossipNode::PushPull(const std::string& addr) {
  std::string ours;
  {
    MutexLock lock(mu_);
    ours = keyring_->Seal(EncodeState(swim_->LocalState()), NowUnixMs());
  }
  Result<std::string> theirs = transport_->Exchange(addr, ours);
  MutexLock lock(mu_);
  Result<std::string> plain = theirs.ok() ? OpenOnce(*theirs) : Result<std::string>(theirs.status());
  Result<std::vector<MemberInfo>> state = plain.ok() ? DecodeState(*plain) : Result<std::vector<MemberInfo>>(plain.status());
  ++stats_.push_pulls;
  if (!state.ok()) {
    ++stats_.push_pull_failures;
    spdlog::debug("gossip: push-pull with {} failed: {}", addr, state.status().ToString());
    return;
  }
  const bool alone = swim_->NumActive() <= 1;
  swim_->MergeState(*state, Now());
  LogEvents(swim_->TakeEvents());
  if (alone && swim_->NumActive() > 1) spdlog::info("gossip: joined through {} ({} members known)", addr, swim_->NumActive());
}

Result<std::string> GossipNode::HandlePushPull(std::string_view sealed_state) {
  struct Slot {
    std::atomic<int>& n;
    ~Slot() { --n; }
  } slot{serving_push_pulls_};
  if (++serving_push_pulls_ > kMaxServedPushPulls) {
    MutexLock lock(mu_);
    ++stats_.push_pulls_refused;
    return Status::ResourceExhausted("gossip", "too many push-pulls at once; try later");
  }
  std::string ours;
  std::shared_ptr<const Keyring> ring;
  {
    MutexLock lock(mu_);
    ring = keyring_;
    ASSIGN_OR_RETURN(std::string plain, OpenOnce(sealed_state));
    ASSIGN_OR_RETURN(std::vector<MemberInfo> remote, DecodeState(plain));
    swim_->MergeState(remote, Now());
    ours = EncodeState(swim_->LocalState());
    LogEvents(swim_->TakeEvents());
  }
  return ring->Seal(ours, NowUnixMs());
}

Result<std::string> GossipNode::OpenOnce(std::string_view sealed) {
  Result<Keyring::Opened> opened = keyring_->Open(sealed);
  if (!opened.ok()) {
    ++stats_.auth_failures;
    return opened.status();
  }
  if (Status st = replays_.Admit(*opened, NowUnixMs()); !st.ok()) {
    ++stats_.replays;
    return st;
  }
  return std::move(opened->plaintext);
}

void GossipNode::SetKeyring(Keyring keyring) {
  auto ring = std::make_shared<const Keyring>(std::move(keyring));
  MutexLock lock(mu_);
  keyring_ = std::move(ring);
}

std::shared_ptr<const Keyring> GossipNode::keyring() {
  MutexLock lock(mu_);
  return keyring_;
}

void GossipNode::UpdateMeta(std::string meta) {
  {
    MutexLock lock(mu_);
    swim_->UpdateMeta(std::move(meta), Now());
  }
  uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof one);
}

void GossipNode::Join(const std::string& addr) {
  {
    MutexLock lock(mu_);
    if (addr == advertise_addr_ || push_pull_queue_.size() >= kMaxQueuedPushPulls) return;
    push_pull_queue_.push_back(addr);
  }
  cv_.notify_all();
}

std::vector<MemberInfo> GossipNode::Members() {
  MutexLock lock(mu_);
  return swim_->Members();
}

GossipStats GossipNode::stats() {
  MutexLock lock(mu_);
  return stats_;
}

int GossipNode::health_score() {
  MutexLock lock(mu_);
  return swim_->health_score();
}

}  // namespace dlagent::swim
