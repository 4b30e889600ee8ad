#include "agent/ps/shard.h"

#include <cblas.h>

#include <algorithm>
#include <cstring>
#include <string>

namespace dlagent::ps {
namespace {

constexpr size_t kMaxPooledSnapshots = 8;  // more pulls in flight than this get a buffer of their own

Status Refused(const std::string& what) { return Status::FailedPrecondition("dlps-shard", what); }

std::string Name(uint64_t key, uint32_t chunk) { return "key " + std::to_string(key) + " chunk " + std::to_string(chunk); }

}  // namespace

struct Shard::Slice {
  std::mutex mu;
  uint64_t key = 0;
  uint32_t chunk = 0;
  size_t length = 0;
  OptimizerConfig optimizer;
  OptimizerState state;
  std::vector<float> weights, sum, scratch;
  uint64_t version = 0;
  std::vector<bool> pushed;  // by rank, in the round in progress
  uint32_t pushes = 0;
  std::vector<std::pair<uint64_t, PullDone>> waiting;  // (min_version, done)
  std::vector<std::shared_ptr<std::vector<float>>> pool;
  Snapshot published;
  uint64_t published_version = 0;
};

Shard::Shard(ShardOptions options) : options_(options) {
  for (int i = 0; i < std::max(1, options_.threads); ++i) threads_.emplace_back([this] { Work(); });
}

Shard::~Shard() {
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    stopping_ = true;
  }
  queue_cv_.notify_all();
  for (auto& t : threads_) t.join();
  FailPending(Status::Unavailable("dlps-shard", "the server is shutting down"));
}

void Shard::Post(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    queue_.push_back(std::move(task));
  }
  queue_cv_.notify_one();
}

void Shard::Work() {
  for (;;) {
    std::function<void()> task;
    {
      std::unique_lock<std::mutex> lock(queue_mu_);
      queue_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and nothing left to do
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    task();
  }
}

Result<uint64_t> Shard::Init(uint64_t key, uint32_t chunk, uint64_t length, const OptimizerConfig& optimizer) {
  if (length > (uint64_t{1} << 31)) return Status::InvalidArgument("dlps-shard", Name(key, chunk) + ": a chunk of " + std::to_string(length) +
                                                                 " floats is too large (the client's chunk_floats must be at most 2^31)");
  std::lock_guard<std::mutex> lock(map_mu_);
  auto& slot = slices_[{key, chunk}];
  if (slot) {
    std::lock_guard<std::mutex> slice_lock(slot->mu);
    if (slot->length != length || !(slot->optimizer == optimizer)) {
      return Refused(Name(key, chunk) + " is already declared with " + std::to_string(slot->length) + " floats and optimizer " +
                     OptimizerName(slot->optimizer.kind) + "; this Init asks for " + std::to_string(length) + " floats and " +
                     OptimizerName(optimizer.kind));
    }
    return slot->version;
  }
  auto s = std::make_shared<Slice>();
  s->key = key;
  s->chunk = chunk;
  s->length = length;
  s->optimizer = optimizer;
  s->weights.assign(length, 0.0f);
  s->sum.assign(length, 0.0f);
  s->scratch.assign(length, 0.0f);
  s->pushed.assign(options_.num_workers, false);
  slot = std::move(s);
  return uint64_t{0};
}

std::shared_ptr<Shard::Slice> Shard::Find(uint64_t key, uint32_t chunk, std::string* error) {
  std::lock_guard<std::mutex> lock(map_mu_);
  auto it = slices_.find({key, chunk});
  if (it == slices_.end()) {
    *error = Name(key, chunk) + " is not declared on this server (call Init first)";
    return nullptr;
  }
  return it->second;
}

void Shard::Push(const PushHeader& h, Payload values, PushDone done) {
  std::string error;
  std::shared_ptr<Slice> s = Find(h.key, h.chunk, &error);
  if (!s) return done(Status::NotFound("dlps-shard", error), 0);
  Post([this, s, h, values = std::move(values), done = std::move(done)]() mutable { ApplyPush(*s, h, values, done); });
}

void Shard::ApplyPush(Slice& s, const PushHeader& h, const Payload& values, PushDone& done) {
  std::vector<std::pair<PullDone, Snapshot>> answers;
  Status result = Status::Ok();
  uint64_t version = 0;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    version = s.version;
    if (values.floats() != s.length) {
      result = Status::InvalidArgument("dlps-shard", Name(s.key, s.chunk) + " holds " + std::to_string(s.length) + " floats; rank " +
                                                         std::to_string(h.rank) + " pushed " + std::to_string(values.floats()));
    } else if (h.rank >= options_.num_workers) {
      result = Status::InvalidArgument("dlps-shard", "rank " + std::to_string(h.rank) + " is outside the job of " +
                                                         std::to_string(options_.num_workers) + " workers");
    } else if (h.assign) {
      values.CopyTo(s.weights.data());
      s.published.reset();
    } else if (options_.mode == Mode::kAsync) {
      values.CopyTo(s.scratch.data());
      ApplyUpdate(s.optimizer, s.weights.data(), s.scratch.data(), s.length, &s.state);
      version = ++s.version;
    } else if (h.round != s.version + 1) {
      result = Refused("rank " + std::to_string(h.rank) + " pushed round " + std::to_string(h.round) + " of " + Name(s.key, s.chunk) +
                       ", but the round in progress is " + std::to_string(s.version + 1) + " (sync mode: push once per round, then pull)");
    } else if (s.pushed[h.rank]) {
      result = Refused("rank " + std::to_string(h.rank) + " pushed twice in round " + std::to_string(h.round) + " of " + Name(s.key, s.chunk));
    } else {
      if (s.pushes == 0) {
        values.CopyTo(s.sum.data());
      } else {
        values.CopyTo(s.scratch.data());
        cblas_saxpy(static_cast<blasint>(s.length), 1.0f, s.scratch.data(), 1, s.sum.data(), 1);
      }
      s.pushed[h.rank] = true;
      if (++s.pushes == options_.num_workers) {
        ApplyUpdate(s.optimizer, s.weights.data(), s.sum.data(), s.length, &s.state);
        ++s.version;
        s.pushes = 0;
        std::fill(s.pushed.begin(), s.pushed.end(), false);
      }
      version = s.version;
    }
    if (result.ok() && !s.waiting.empty()) {
      auto ready = std::partition(s.waiting.begin(), s.waiting.end(), [&](const auto& w) { return w.first > s.version; });
      if (ready != s.waiting.end()) {
        Snapshot snap = Publish(s);
        for (auto it = ready; it != s.waiting.end(); ++it) answers.emplace_back(std::move(it->second), snap);
        s.waiting.erase(ready, s.waiting.end());
      }
    }
  }
  done(result, version);
  for (auto& [pull, snap] : answers) pull(Status::Ok(), version, snap);
}

Snapshot Shard::Publish(Slice& s) {
  if (s.published && s.published_version == s.version) return s.published;
  s.published.reset();
  std::shared_ptr<std::vector<float>> buffer;
  for (auto& b : s.pool) {
    if (b.use_count() == 1) {  // only the pool holds it: every pull it answered is sent
      buffer = b;
      break;
    }
  }
  if (!buffer) {
    buffer = std::make_shared<std::vector<float>>(s.length);
    if (s.pool.size() < kMaxPooledSnapshots) s.pool.push_back(buffer);
  }
  std::memcpy(buffer->data(), s.weights.data(), s.length * sizeof(float));
  s.published = buffer;
  s.published_version = s.version;
  return s.published;
}

void Shard::Pull(uint64_t key, uint32_t chunk, uint64_t min_version, PullDone done) {
  std::string error;
  std::shared_ptr<Slice> s = Find(key, chunk, &error);
  if (!s) return done(Status::NotFound("dlps-shard", error), 0, nullptr);
  Post([s, this, min_version, done = std::move(done)]() mutable {
    Snapshot snap;
    uint64_t version;
    {
      std::lock_guard<std::mutex> lock(s->mu);
      version = s->version;
      if (version < min_version) {
        s->waiting.emplace_back(min_version, std::move(done));
        return;
      }
      snap = Publish(*s);
    }
    done(Status::Ok(), version, std::move(snap));
  });
}

void Shard::FailPending(const Status& why) {
  std::vector<std::shared_ptr<Slice>> all;
  {
    std::lock_guard<std::mutex> lock(map_mu_);
    for (auto& [id, s] : slices_) all.push_back(s);
  }
  for (auto& s : all) {
    std::vector<std::pair<uint64_t, PullDone>> waiting;
    {
      std::lock_guard<std::mutex> lock(s->mu);
      waiting.swap(s->waiting);
      s->pushes = 0;
      std::fill(s->pushed.begin(), s->pushed.end(), false);
    }
    for (auto& [v, done] : waiting) done(why, 0, nullptr);
  }
  std::map<uint64_t, std::pair<std::vector<bool>, std::vector<std::function<void(const Status&)>>>> barriers;
  {
    std::lock_guard<std::mutex> lock(barrier_mu_);
    barriers.swap(barriers_);
  }
  for (auto& [g, b] : barriers) {
    for (auto& done : b.second) done(why);
  }
}

void Shard::Barrier(uint32_t rank, uint64_t generation, std::function<void(const Status&)> done) {
  if (rank >= options_.num_workers) {
    return done(Status::InvalidArgument("dlps-shard", "rank " + std::to_string(rank) + " is outside the job of " +
                                                          std::to_string(options_.num_workers) + " workers"));
  }
  std::vector<std::function<void(const Status&)>> release;
  {
    std::lock_guard<std::mutex> lock(barrier_mu_);
    auto& [arrived, waiting] = barriers_[generation];
    arrived.resize(options_.num_workers, false);
    if (arrived[rank]) return done(Refused("rank " + std::to_string(rank) + " entered barrier " + std::to_string(generation) + " twice"));
    arrived[rank] = true;
    waiting.push_back(std::move(done));
    if (std::count(arrived.begin(), arrived.end(), true) == static_cast<long>(options_.num_workers)) {
      release.swap(waiting);
      barriers_.erase(generation);
    }
  }
  for (auto& d : release) d(Status::Ok());
}

}  // namespace dlagent::ps
