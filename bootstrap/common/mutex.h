#pragma once
// A mutex that clang's thread-safety analysis understands (-Wthread-safety, the `tsa` preset): shared state is
// declared GUARDED_BY(mu_), functions that expect the lock held say REQUIRES(mu_), and a scoped MutexLock
// takes it. With other compilers the annotations compile to nothing.
//
// Waiting on a condition: loop on the condition in the function that holds the lock, so that the analysis
// sees every access under it:
//   MutexLock lock(mu_);
//   while (!ready_) cv_.wait(lock.native());
//
// Thread safety: a Mutex is what makes other things thread-safe; a MutexLock belongs to one thread.

#include <mutex>

#if defined(__clang__)
#define DLAGENT_TSA(x) __attribute__((x))
#else
#define DLAGENT_TSA(x)
#endif

// abseil's internal thread_annotations.h (which gRPC's headers include) defines GUARDED_BY, PT_GUARDED_BY and
// NO_THREAD_SAFETY_ANALYSIS with the same meaning; ours replace them, whichever header comes first.
#undef GUARDED_BY
#undef PT_GUARDED_BY
#undef NO_THREAD_SAFETY_ANALYSIS
#define CAPABILITY(x) DLAGENT_TSA(capability(x))
#define SCOPED_CAPABILITY DLAGENT_TSA(scoped_lockable)
#define GUARDED_BY(x) DLAGENT_TSA(guarded_by(x))
#define PT_GUARDED_BY(x) DLAGENT_TSA(pt_guarded_by(x))
#define REQUIRES(...) DLAGENT_TSA(requires_capability(__VA_ARGS__))
#define EXCLUDES(...) DLAGENT_TSA(locks_excluded(__VA_ARGS__))
#define ACQUIRE(...) DLAGENT_TSA(acquire_capability(__VA_ARGS__))
#define RELEASE(...) DLAGENT_TSA(release_capability(__VA_ARGS__))
#define NO_THREAD_SAFETY_ANALYSIS DLAGENT_TSA(no_thread_safety_analysis)

namespace dlagent {

class CAPABILITY("mutex") Mutex {
 public:
  void Lock() ACQUIRE() { mu_.lock(); }
  void Unlock() RELEASE() { mu_.unlock(); }

 private:
  friend class MutexLock;
  std::mutex mu_;
};

class SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& mu) ACQUIRE(mu) : lock_(mu.mu_) {}
  ~MutexLock() RELEASE() {}
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

  // For std::condition_variable::wait and wait_for, which release and retake the lock.
  std::unique_lock<std::mutex>& native() { return lock_; }
  // Let go for a while within the scope (no access to guarded state until Lock).
  void Unlock() RELEASE() { lock_.unlock(); }
  void Lock() ACQUIRE() { lock_.lock(); }

 private:
  std::unique_lock<std::mutex> lock_;
};

}  // namespace dlagent
