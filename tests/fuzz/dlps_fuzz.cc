// libFuzzer target: what anyone who reaches a shard's port can send on a connection: a Hello, then frames
// (pushes, pulls, control requests: init, barrier, checkpoint, commit, restore; anything), served by the real
// connection code (agent/ps/data_conn) over a socketpair, with a shard of two workers whose slices 1/0 (16
// floats, sum) and 2/0 (4 floats, adam) are declared, and a checkpoint directory (removed at exit). A Hello
// that names a job is served as agentd serves a member of that job: with job keys, and the job's valid token
// put in the Hello, so that what follows is what a job member (not a stranger) can send; its checkpoints go to
// its user's directory.
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>

#include "agent/ps/data_conn.h"

using namespace dlagent::ps;

namespace {

char checkpoint_dir[] = "/tmp/dlps-fuzz-XXXXXX";  // a plain array: the exit handler outlives any std::string

std::string CheckpointDir() {
  static const bool made = [] {
    if (!::mkdtemp(checkpoint_dir)) __builtin_trap();
    std::atexit([] { std::filesystem::remove_all(checkpoint_dir); });
    return true;
  }();
  (void)made;
  return checkpoint_dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Hello hello;
  std::memcpy(&hello, data, std::min(size, sizeof hello));
  const std::string job(hello.job, ::strnlen(hello.job, sizeof hello.job));
  const bool member = !job.empty();
  if (member) {
    const std::string token = DlpsJobToken(std::string(32, 'k'), job);
    std::memcpy(hello.token, token.data(), std::min(token.size(), sizeof hello.token));
  }
  const uint8_t* frames = data + std::min(size, sizeof hello);
  const size_t frames_size = size - std::min(size, sizeof hello);

  ShardOptions options;
  options.num_workers = 2;
  options.max_bytes = 1 << 20;  // a peer that declares more is refused, as in agentd (smaller here)
  options.max_slices = 64;
  JobKeysFn keys;
  JobLiveFn live;
  JobOwnerFn owner;
  if (member) {
    keys = [] { return std::vector<std::string>{std::string(32, 'k')}; };
    live = [](const std::string&) { return true; };
    owner = [](const std::string&) -> std::optional<uint32_t> { return 4242; };
  }
  Jobs jobs(options, keys, live, owner);
  auto shard = jobs.Served();
  if (!shard.ok() || !(*shard)->Init(1, 0, 16, {}).ok()) __builtin_trap();
  OptimizerConfig adam;
  adam.kind = OptimizerConfig::Kind::kAdam;
  if (!(*shard)->Init(2, 0, 4, adam).ok()) __builtin_trap();

  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) return 0;
  const int finished = ::eventfd(0, EFD_CLOEXEC);
  std::atomic<bool> stopping{false};
  // The peer: writes the frames and closes its sending side, while reading every reply until the server closes.
  std::thread writer([&] {
    for (size_t off = 0; off < frames_size;) {
      const ssize_t n = ::send(fds[1], frames + off, frames_size - off, MSG_NOSIGNAL);
      if (n <= 0) break;
      off += static_cast<size_t>(n);
    }
    ::shutdown(fds[1], SHUT_WR);
  });
  // Every reply is read (a peer that reads nothing is throttled by TCP, which the fuzzer need not wait for).
  std::thread reader([&] {
    char sink[65536];
    while (::recv(fds[1], sink, sizeof sink, 0) > 0) {
    }
  });
  auto conn = StartDataConnection(jobs, CheckpointDir(), fds[0], hello, stopping, finished);
  writer.join();
  // The peer has sent everything and closed its side: the connection must end by itself, at once.
  pollfd p{finished, POLLIN, 0};
  if (::poll(&p, 1, 5000) <= 0) __builtin_trap();
  conn.reset();  // closes the server's end: the reader sees the end of the replies
  reader.join();
  ::close(fds[1]);
  ::close(finished);
  return 0;
}
