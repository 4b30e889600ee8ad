#include "bootstrap/discovery/discovery_queue.h"

#include <spdlog/spdlog.h>

#include "bootstrap/common/log.h"

namespace dlagent {

DiscoveryQueue::DiscoveryQueue(SqsClient& sqs, Env& env, std::string queue_url, KeysFn keys, std::string cluster)
    : sqs_(sqs), env_(env), queue_url_(std::move(queue_url)), keys_(std::move(keys)), cluster_(std::move(cluster)) {}

Status DiscoveryQueue::SendHello(const Hello& hello) {
  const std::vector<std::string> keys = keys_();
  if (keys.empty()) return Status::FailedPrecondition("discovery", "no cluster key to sign HELLOs with");
  Result<std::string> id = sqs_.SendMessage(queue_url_, SignHello(hello, keys.front()), {{"dlagent", "hello"}, {"cluster", cluster_}});
  if (!id.ok()) return id.status().Annotate("sending HELLO");
  MutexLock lock(mu_);
  ++counters_.sent;
  return Status::Ok();
}

Result<int> DiscoveryQueue::PollOnce(Duration wait, const std::function<void(const Hello&)>& on_hello, Duration dedup_window,
                                     const std::atomic<bool>* cancel) {
  ASSIGN_OR_RETURN(std::vector<SqsMessage> messages, sqs_.ReceiveMessage(queue_url_, {.max_messages = 10, .wait = wait, .cancel = cancel}));
  int handed = 0;
  const MonoTime now = env_.NowMono();
  const std::vector<std::string> keys = keys_();
  for (const SqsMessage& m : messages) {
    HelloCheck check{HelloVerdict::kMalformed, {}, "body corrupted in transit (MD5 mismatch)"};
    for (size_t k = 0; m.md5_ok && k < keys.size(); ++k) {  // the primary's verdict, unless another key signed it
      HelloCheck under = VerifyHello(m.body, keys[k], cluster_, env_.NowWall());
      if (k == 0 || under.verdict != HelloVerdict::kBadSignature) check = under;
      if (check.verdict != HelloVerdict::kBadSignature) break;
    }
    bool duplicate = false;
    if (check.verdict == HelloVerdict::kAccepted) {
      auto it = handed_over_.find(check.hello.instance_id);
      duplicate = it != handed_over_.end() && now - it->second < dedup_window;
      if (!duplicate) {
        handed_over_[check.hello.instance_id] = now;
        on_hello(check.hello);
        ++handed;
      }
    } else {
      ScopedLogFields fields({{"SQS_MESSAGE_ID", m.message_id}});
      spdlog::warn("discovery: refused a message on the queue ({}): {}", HelloVerdictName(check.verdict), check.detail);
    }
    {
      MutexLock lock(mu_);
      ++counters_.received;
      if (check.verdict != HelloVerdict::kAccepted)
        ++counters_.refused[check.verdict];
      else if (duplicate)
        ++counters_.duplicates;
      else
        ++counters_.accepted;
    }
    // Read means done: accepted ones are being joined, the rest must never be seen again.
    if (Status st = sqs_.DeleteMessage(queue_url_, m.receipt_handle); !st.ok()) {
      spdlog::warn("discovery: could not delete message {}: {}", m.message_id, st.ToString());
    }
  }
  return handed;
}

DiscoveryCounters DiscoveryQueue::counters() const {
  MutexLock lock(mu_);
  return counters_;
}

}  // namespace dlagent
