#include "agent/ps/shard.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <string>
#include <utility>

namespace dlagent::ps {
namespace {

constexpr size_t kMaxPooledWeights = 8;  // more versions being sent at once than this get a buffer of their own

Status Refused(const std::string& what) { return Status::FailedPrecondition("dlps-shard", what); }

std::string Name(uint64_t key, uint32_t chunk) { return "key " + std::to_string(key) + " chunk " + std::to_string(chunk); }

uint32_t MicrosSince(std::chrono::steady_clock::time_point t0) {
  return static_cast<uint32_t>(std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count());
}

std::string Bytes(uint64_t n) { return n >= (uint64_t{1} << 20) ? std::to_string(n >> 20) + " MiB" : std::to_string(n) + " bytes"; }

enum class RankState : uint8_t { kIdle, kReceiving, kPushed };

}  // namespace

struct Shard::Slice {
  Mutex mu;
  // Set before the slice is in the map, never changed after.
  uint64_t key = 0;
  uint32_t chunk = 0;
  size_t length = 0;
  OptimizerConfig optimizer;

  OptimizerState state GUARDED_BY(mu);
  std::shared_ptr<std::vector<float>> weights GUARDED_BY(mu);            // the current version: what pulls are sent from
  std::vector<std::shared_ptr<std::vector<float>>> pool GUARDED_BY(mu);  // weight buffers, the current one among them
  // By rank, allocated at the rank's first push. A rank in kReceiving writes its buffer's floats without the
  // lock (the reading thread, straight from the socket); nothing else touches that buffer meanwhile.
  std::vector<std::vector<float>> received GUARDED_BY(mu);
  std::vector<const float*> grads GUARDED_BY(mu);  // the received buffers of a round, reused
  std::vector<RankState> ranks GUARDED_BY(mu);
  uint32_t pushed GUARDED_BY(mu) = 0;                               // ranks in kPushed
  std::chrono::steady_clock::time_point first_push GUARDED_BY(mu);  // of the round in progress (PsStats::round)
  uint64_t version GUARDED_BY(mu) = 0;
  uint32_t update_micros GUARDED_BY(mu) = 0;  // of the current version
  uint64_t epoch GUARDED_BY(mu) = 0;
  std::vector<std::pair<uint64_t, PullDone>> waiting GUARDED_BY(mu);  // (min_version, done)

  // A weights buffer no reply is being sent from, for the next version.
  std::shared_ptr<std::vector<float>> FreeBuffer() REQUIRES(mu) {
    for (auto& b : pool) {
      if (b.use_count() == 1) return b;  // only the pool holds it
    }
    auto b = std::make_shared<std::vector<float>>(length);
    if (pool.size() < kMaxPooledWeights) pool.push_back(b);
    return b;
  }
};

Shard::Shard(ShardOptions options) : options_(std::move(options)) {}

Shard::~Shard() { FailPending(Status::Unavailable("dlps-shard", "the server is shutting down")); }

Result<uint64_t> Shard::Init(uint64_t key, uint32_t chunk, uint64_t length, const OptimizerConfig& optimizer) {
  if (length == 0) return Status::InvalidArgument("dlps-shard", Name(key, chunk) + ": a slice needs at least one value");
  if (length > (uint64_t{1} << 31))
    return Status::InvalidArgument("dlps-shard", Name(key, chunk) + ": a chunk of " + std::to_string(length) +
                                                     " floats is too large (the client's "
                                                     "chunk_floats must be at most 2^31)");
  MutexLock lock(map_mu_);
  if (auto it = slices_.find({key, chunk}); it != slices_.end()) {
    Slice& slot = *it->second;
    MutexLock slice_lock(slot.mu);
    if (slot.length != length || !(slot.optimizer == optimizer)) {
      return Refused(Name(key, chunk) + " is already declared with " + std::to_string(slot.length) + " floats and optimizer " +
                     OptimizerName(slot.optimizer.kind) + "; this Init asks for " + std::to_string(length) + " floats and " +
                     OptimizerName(optimizer.kind));
    }
    return slot.version;
  }
  // Bounded before anything is allocated: a job (or a stranger) cannot declare the server out of memory.
  const uint64_t state_copies = optimizer.kind == OptimizerConfig::Kind::kAdam ? 2 : optimizer.momentum > 0 ? 1 : 0;
  const uint64_t bytes = length * sizeof(float) * (2 + options_.num_workers + state_copies) +
                         uint64_t{options_.num_workers} * (sizeof(std::vector<float>) + sizeof(RankState));
  if (slices_.size() >= options_.max_slices) {
    return Status::ResourceExhausted("dlps-shard", Name(key, chunk) + ": the job already has " + std::to_string(slices_.size()) +
                                                       " slices on this server, the most it may declare (declare fewer, larger keys)");
  }
  if (declared_bytes_ + bytes > options_.max_bytes) {
    return Status::ResourceExhausted("dlps-shard", Name(key, chunk) + ": declaring " + std::to_string(bytes) +
                                                       " more bytes would take the job past " + Bytes(options_.max_bytes) + " on this server (" +
                                                       Bytes(declared_bytes_) + " declared); run the job on more servers, or make the model smaller");
  }
  auto s = std::make_shared<Slice>();
  s->key = key;
  s->chunk = chunk;
  s->length = length;
  s->optimizer = optimizer;
  {
    MutexLock slice_lock(s->mu);  // nobody else has it yet
    s->weights = s->FreeBuffer();
    s->received.resize(options_.num_workers);
    s->ranks.assign(options_.num_workers, RankState::kIdle);
  }
  slices_.emplace(std::make_pair(key, chunk), std::move(s));  // only a whole slice is ever in the map
  declared_bytes_ += bytes;
  weight_bytes_.fetch_add(length * sizeof(float), std::memory_order_relaxed);
  return uint64_t{0};
}

std::shared_ptr<Shard::Slice> Shard::Find(uint64_t key, uint32_t chunk, std::string* error) {
  MutexLock lock(map_mu_);
  auto it = slices_.find({key, chunk});
  if (it == slices_.end()) {
    *error = Name(key, chunk) + " is not declared on this server (call Init first)";
    return nullptr;
  }
  return it->second;
}

Status Shard::Failed() {
  MutexLock lock(failed_mu_);
  return failed_;
}

Result<Shard::PushSlot> Shard::BeginPush(const PushHeader& h, uint64_t floats) {
  std::string error;
  std::shared_ptr<Slice> s = Find(h.key, h.chunk, &error);
  if (!s) return Status::NotFound("dlps-shard", error);
  MutexLock lock(s->mu);
  RETURN_IF_ERROR(Failed());  // under the slice's lock: FailPending sets it
                              // before it takes the slices' locks
  const std::string rank = "rank " + std::to_string(h.rank);
  if (floats != s->length) {
    return Status::InvalidArgument(
        "dlps-shard", Name(s->key, s->chunk) + " holds " + std::to_string(s->length) + " floats; " + rank + " pushed " + std::to_string(floats));
  }
  if (h.rank >= options_.num_workers) {
    return Status::InvalidArgument("dlps-shard", rank + " is outside the job of " + std::to_string(options_.num_workers) + " workers");
  }
  if (options_.mode == Mode::kSync && h.round != 0 && h.round != s->version + 1) {
    return Refused(rank + " pushed round " + std::to_string(h.round) + " of " + Name(s->key, s->chunk) + ", but the round in progress is " +
                   std::to_string(s->version + 1) + " (sync mode: push once per round, then pull)");
  }
  if (h.round == 0 && s->version != 0) {
    return Refused(rank + " pushed initial values (round 0) of " + Name(s->key, s->chunk) + ", which is already at version " +
                   std::to_string(s->version) + " (initial values are set once, before the first round)");
  }
  if (s->ranks[h.rank] != RankState::kIdle) {
    return Refused(rank + " pushed twice in round " + std::to_string(h.round) + " of " + Name(s->key, s->chunk));
  }
  s->ranks[h.rank] = RankState::kReceiving;
  std::vector<float>& buffer = s->received[h.rank];
  if (buffer.size() != s->length) buffer.resize(s->length);  // once per rank
  return PushSlot{s, h, buffer.data(), s->length, s->epoch};
}

Result<uint64_t> Shard::EndPush(const PushSlot& slot) {
  Slice& s = *slot.slice;
  const PushHeader& h = slot.header;
  std::vector<PullDone> answers;
  PullAnswer answer;
  {
    MutexLock lock(s.mu);
    if (slot.epoch != s.epoch || s.ranks[h.rank] != RankState::kReceiving) {
      return Status::Cancelled("dlps-shard",
                               "the round of " + Name(s.key, s.chunk) + " was failed while rank " + std::to_string(h.rank) + "'s push arrived");
    }
    const float* mine = slot.values;
    if (h.round == 0) {
      auto next = s.FreeBuffer();
      std::memcpy(next->data(), mine, s.length * sizeof(float));
      s.weights = std::move(next);
      s.ranks[h.rank] = RankState::kIdle;
    } else if (options_.mode == Mode::kAsync) {
      const auto t0 = std::chrono::steady_clock::now();
      auto next = s.FreeBuffer();
      ApplyUpdate(s.optimizer, s.weights->data(), next->data(), std::span<const float* const>(&mine, 1), s.length, &s.state, options_.apply_threads);
      s.update_micros = MicrosSince(t0);
      s.weights = std::move(next);
      ++s.version;
      s.ranks[h.rank] = RankState::kIdle;
      if (PsStats* st = options_.stats.get()) {
        st->rounds.fetch_add(1, std::memory_order_relaxed);
        st->apply.Observe(s.update_micros);
      }
    } else {
      s.ranks[h.rank] = RankState::kPushed;
      if (s.pushed == 0) s.first_push = std::chrono::steady_clock::now();
      if (++s.pushed == options_.num_workers) {
        s.grads.clear();  // in rank order: every run sums alike
        for (const auto& r : s.received) s.grads.push_back(r.data());
        const auto t0 = std::chrono::steady_clock::now();
        auto next = s.FreeBuffer();
        ApplyUpdate(s.optimizer, s.weights->data(), next->data(), s.grads, s.length, &s.state, options_.apply_threads);
        s.update_micros = MicrosSince(t0);
        s.weights = std::move(next);
        ++s.version;
        s.pushed = 0;
        if (PsStats* st = options_.stats.get()) {
          st->rounds.fetch_add(1, std::memory_order_relaxed);
          st->apply.Observe(s.update_micros);
          st->round.Observe(MicrosSince(s.first_push));
        }
        std::fill(s.ranks.begin(), s.ranks.end(), RankState::kIdle);
      }
    }
    answer = {s.version, s.weights, s.update_micros};
    const uint64_t version = s.version;
    auto ready = std::partition(s.waiting.begin(), s.waiting.end(), [version](const auto& w) { return w.first > version; });
    for (auto it = ready; it != s.waiting.end(); ++it) answers.push_back(std::move(it->second));
    s.waiting.erase(ready, s.waiting.end());
  }
  for (auto& pull : answers) pull(Status::Ok(), answer);
  return answer.version;
}

void Shard::AbortPush(const PushSlot& slot) {
  Slice& s = *slot.slice;
  MutexLock lock(s.mu);
  if (slot.epoch == s.epoch && s.ranks[slot.header.rank] == RankState::kReceiving) s.ranks[slot.header.rank] = RankState::kIdle;
}

Result<uint64_t> Shard::Push(const PushHeader& h, const float* values, uint64_t floats) {
  ASSIGN_OR_RETURN(PushSlot slot, BeginPush(h, floats));
  std::memcpy(slot.values, values, slot.length * sizeof(float));
  return EndPush(slot);
}

void Shard::Pull(uint64_t key, uint32_t chunk, uint64_t min_version, PullDone done) {
  std::string error;
  std::shared_ptr<Slice> s = Find(key, chunk, &error);
  if (!s) return done(Status::NotFound("dlps-shard", error), {});
  PullAnswer answer;
  Status failed;
  {
    MutexLock lock(s->mu);
    if (s->version < min_version) {
      failed = Failed();  // a version still to come never will
    }
    if (failed.ok() && s->version < min_version) {
      s->waiting.emplace_back(min_version, std::move(done));
      return;
    }
    answer = {s->version, s->weights, s->update_micros};
  }
  if (!failed.ok()) return done(failed, {});
  done(Status::Ok(), answer);
}

void Shard::FailPending(const Status& why) {
  {
    MutexLock lock(failed_mu_);
    if (failed_.ok()) failed_ = why;
  }
  std::vector<std::shared_ptr<Slice>> all;
  {
    MutexLock lock(map_mu_);
    for (auto& [id, s] : slices_) all.push_back(s);
  }
  for (auto& s : all) {
    std::vector<std::pair<uint64_t, PullDone>> waiting;
    {
      MutexLock lock(s->mu);
      waiting.swap(s->waiting);
      ++s->epoch;
      s->pushed = 0;
      std::fill(s->ranks.begin(), s->ranks.end(), RankState::kIdle);
    }
    for (auto& [v, done] : waiting) done(why, {});
  }
  std::map<uint64_t, std::pair<std::vector<bool>, std::vector<std::function<void(const Status&)>>>> barriers;
  {
    MutexLock lock(barrier_mu_);
    barriers.swap(barriers_);
  }
  for (auto& [g, b] : barriers) {
    for (auto& done : b.second) done(why);
  }
}

std::vector<Shard::SliceState> Shard::Export() {
  std::vector<std::shared_ptr<Slice>> all;
  {
    MutexLock lock(map_mu_);
    for (auto& [id, s] : slices_) all.push_back(s);
  }
  std::vector<SliceState> out;
  for (auto& s : all) {
    MutexLock lock(s->mu);
    out.push_back({s->key, s->chunk, s->optimizer, s->weights, s->state});  // weights: shared, never written again
  }
  return out;
}

// A key's slices on one server are consecutive pieces of one contiguous part of its tensor (partition.h), so
// their concatenation in chunk order does not depend on the chunk size. A checkpoint whose key is cut into
// other chunks than its declaration here (written with another chunk size) is re-cut into this shard's; one
// whose floats or optimizer differ is left as it is, for Import to refuse naming the slice.
std::vector<Shard::SliceState> Shard::InThisLayout(std::vector<SliceState> states) {
  std::map<uint64_t, std::vector<SliceState*>> by_key;
  for (SliceState& st : states) by_key[st.key].push_back(&st);
  std::vector<SliceState> out;
  for (auto& [key, from] : by_key) {
    std::ranges::sort(from, {}, &SliceState::chunk);
    std::vector<std::pair<uint32_t, uint64_t>> here;  // this shard's (chunk, length) of the key, in chunk order
    {
      MutexLock lock(map_mu_);
      for (auto it = slices_.lower_bound({key, 0}); it != slices_.end() && it->first.first == key; ++it) {
        here.emplace_back(it->first.second, it->second->length);
      }
    }
    uint64_t total = 0, declared = 0;
    bool same_layout = from.size() == here.size(), recut = !here.empty();
    for (size_t i = 0; i < from.size(); ++i) {
      const SliceState& st = *from[i];
      total += st.weights->size();
      same_layout = same_layout && st.chunk == here[i].first && st.weights->size() == here[i].second;
      recut = recut && st.optimizer == from[0]->optimizer && st.state.steps == from[0]->state.steps &&
              st.state.m.size() == (from[0]->state.m.empty() ? 0 : st.weights->size()) &&
              st.state.v.size() == (from[0]->state.v.empty() ? 0 : st.weights->size());
    }
    for (const auto& [chunk, length] : here) declared += length;
    if (same_layout || !recut || total != declared) {
      for (SliceState* st : from) out.push_back(std::move(*st));  // as they are: no copy of the optimizer state
      continue;
    }
    std::vector<float> weights, m, v;
    for (const SliceState* st : from) {
      weights.insert(weights.end(), st->weights->begin(), st->weights->end());
      m.insert(m.end(), st->state.m.begin(), st->state.m.end());
      v.insert(v.end(), st->state.v.begin(), st->state.v.end());
    }
    uint64_t offset = 0;
    for (const auto& [chunk, length] : here) {
      SliceState piece{.key = key, .chunk = chunk, .optimizer = from[0]->optimizer};
      const auto cut = [begin = offset, end = offset + length](const std::vector<float>& all) {
        return all.empty() ? std::vector<float>{} : std::vector<float>(all.begin() + begin, all.begin() + end);
      };
      piece.weights = std::make_shared<const std::vector<float>>(cut(weights));
      piece.state = {.m = cut(m), .v = cut(v), .steps = from[0]->state.steps};
      out.push_back(std::move(piece));
      offset += length;
    }
  }
  return out;
}

Status Shard::Import(std::vector<SliceState> checkpoint) {
  const std::vector<SliceState> states = InThisLayout(std::move(checkpoint));
  std::vector<std::shared_ptr<Slice>> targets;
  for (const SliceState& st : states) {
    std::string error;
    std::shared_ptr<Slice> s = Find(st.key, st.chunk, &error);
    if (!s) return Status::NotFound("dlps-shard", "the checkpoint has " + error);
    MutexLock lock(s->mu);
    if (s->length != st.weights->size() || !(s->optimizer == st.optimizer)) {
      return Refused(Name(st.key, st.chunk) + " holds " + std::to_string(s->length) + " floats with optimizer " + OptimizerName(s->optimizer.kind) +
                     "; the checkpoint has " + std::to_string(st.weights->size()) + " floats with " + OptimizerName(st.optimizer.kind) +
                     " (the job must declare its keys as the one that wrote it did)");
    }
    if (s->version != 0 || s->pushed != 0) {
      return Refused(Name(st.key, st.chunk) +
                     " has already taken pushes (restore right after Init, "
                     "before training)");
    }
    targets.push_back(std::move(s));
  }
  for (size_t i = 0; i < states.size(); ++i) {
    Slice& s = *targets[i];
    MutexLock lock(s.mu);
    auto next = s.FreeBuffer();
    std::copy(states[i].weights->begin(), states[i].weights->end(), next->begin());
    s.weights = std::move(next);
    s.state = states[i].state;
  }
  return Status::Ok();
}

void Shard::Barrier(uint32_t rank, uint64_t generation, std::function<void(const Status&)> done) {
  if (rank >= options_.num_workers) {
    return done(Status::InvalidArgument(
        "dlps-shard", "rank " + std::to_string(rank) + " is outside the job of " + std::to_string(options_.num_workers) + " workers"));
  }
  std::vector<std::function<void(const Status&)>> release;
  {
    MutexLock lock(barrier_mu_);
    if (Status failed = Failed(); !failed.ok()) {
      lock.Unlock();
      return done(failed);
    }
    if (!barriers_.contains(generation) && barriers_.size() >= kMaxOpenBarriers) {
      lock.Unlock();
      return done(Status::ResourceExhausted("dlps-shard", "rank " + std::to_string(rank) + " entered barrier " + std::to_string(generation) +
                                                              " while " + std::to_string(kMaxOpenBarriers) +
                                                              " others are still open (workers out of step?)"));
    }
    auto& [arrived, waiting] = barriers_[generation];
    arrived.resize(options_.num_workers, false);
    if (arrived[rank]) {
      lock.Unlock();
      return done(Refused("rank " + std::to_string(rank) + " entered barrier " + std::to_string(generation) + " twice"));
    }
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
