#pragma once
// The data connection of a PsClient to one server (agent/ps/frame.h). Internal to the client library.
//
// Thread safety: Push and Pull may be called from any thread; a request completes on the link's reading thread.

#include <sys/time.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "agent/ps/frame.h"
#include "bootstrap/common/mutex.h"
#include "bootstrap/common/status.h"

namespace dlagent::ps::detail {

using Clock = std::chrono::steady_clock;

// One ticket: the messages still outstanding and the first error.
struct Pending {
  Mutex mu;
  std::condition_variable cv;
  size_t outstanding GUARDED_BY(mu) = 0;
  Status error GUARDED_BY(mu);
  std::shared_ptr<std::vector<float>> gradient;  // Push's copy, held until every chunk is sent

  void Done(const Status& st) {
    MutexLock lock(mu);
    if (!st.ok() && error.ok()) error = st;
    if (--outstanding == 0) cv.notify_all();
  }
};

// A control request's answer (Op::kControlReply): its version field and payload.
struct ControlReply {
  uint64_t version = 0;
  std::string payload;
};

// The data connection to one server. Requests go out on a writing thread, in the order they were made; replies
// come back in any order on a reading thread, which is the only one that completes requests (so that nothing
// writes into a caller's `out` after its Wait has returned). Pull replies are read straight into `out`. A
// request past its deadline fails; its reply, if it comes, is read and dropped.
class DataLink {
 public:
  // Connects (retried with backoff within connect_timeout) and shakes hands; each request then has `deadline`.
  static Result<std::unique_ptr<DataLink>> Open(const std::string& address, const Hello& hello, std::chrono::milliseconds deadline,
                                                std::chrono::milliseconds connect_timeout);
  ~DataLink();

  uint64_t server_micros() const { return server_micros_.load(); }

  // values stay alive (the caller's, or held by keep) until the request is answered.
  void Push(const std::shared_ptr<Pending>& p, uint64_t key, uint32_t chunk, uint64_t round, const float* values, size_t n,
            std::shared_ptr<const void> keep);
  // dst (n floats) is written by the reading thread when the reply comes, never after the request completed.
  void Pull(const std::shared_ptr<Pending>& p, uint64_t key, uint32_t chunk, uint64_t min_version, float* dst, size_t n);
  // A control request (frame.h: kInit ... kRestore; op, key, chunk, version and aux set, the rest is filled in).
  // *reply is written by the reading thread when the answer comes, never after the request completed.
  void Control(const std::shared_ptr<Pending>& p, Frame request, std::string payload, ControlReply* reply);

 private:
  struct Request {
    Frame frame;
    const void* payload;  // frame.bytes of it
    std::shared_ptr<const void> keep;
  };
  struct Expect {
    std::shared_ptr<Pending> pending;
    float* dst;  // pulls
    uint64_t floats;
    Clock::time_point deadline;
    bool abandoned;                 // failed at its deadline; the reply is dropped
    ControlReply* reply = nullptr;  // control requests
    Op op = Op::kPush;
    uint64_t key = 0;
    uint32_t chunk = 0;
  };

  DataLink(std::string address, int fd, std::chrono::milliseconds deadline);

  Status Named(const Expect& e, const Status& st) const;

  Status Handshake(const Hello& hello);

  void Submit(Request r, Expect e);

  void WriteLoop();

  void ReadLoop();

  // Fails the requests past their deadline; returns how long poll may wait.
  int ExpireAndNextWait();

  Status ReadReply();
  // The rest of the answer to e (whose frame f was read): *result is its outcome; an error is the connection's.
  Status ReadAnswer(const Frame& f, Expect& e, Status* result);

  const std::string address_;
  const int fd_;
  const std::chrono::milliseconds deadline_;
  Mutex mu_;
  std::condition_variable cv_;
  std::deque<Request> queue_ GUARDED_BY(mu_);
  std::map<uint64_t, Expect> expects_ GUARDED_BY(mu_);  // by request id
  uint64_t next_id_ GUARDED_BY(mu_) = 0;
  Status broken_ GUARDED_BY(mu_);  // once set, every request fails with it
  Status send_error_ GUARDED_BY(mu_);
  bool stopping_ GUARDED_BY(mu_) = false;
  std::atomic<uint64_t> server_micros_{0};
  std::thread reader_, writer_;
};

}  // namespace dlagent::ps::detail
