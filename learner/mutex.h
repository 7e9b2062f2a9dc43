// The learner's locks: absl::Mutex, absl::MutexLock and absl::CondVar, with
// clang's thread-safety annotations (ABSL_GUARDED_BY and friends; the
// learner.thread_safety test compiles the learner with -Wthread-safety).
//
// Under ThreadSanitizer (the tsan label's build) the same API sits on
// std::mutex and std::condition_variable instead: the system's libabsl is
// not built with TSAN's annotations, so TSAN cannot see the happens-before
// edges an absl::Mutex makes and would report every access it guards as a
// race, while the std:: ones go through pthread, which TSAN intercepts.
#pragma once

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

#if defined(__SANITIZE_THREAD__)
#define LOPT_TSAN_BUILD 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define LOPT_TSAN_BUILD 1
#endif
#endif

#ifdef LOPT_TSAN_BUILD
#include <chrono>
#include <condition_variable>
#include <mutex>
#endif

namespace lopt {

#ifndef LOPT_TSAN_BUILD

using Mutex = absl::Mutex;
using MutexLock = absl::MutexLock;
using CondVar = absl::CondVar;

#else

class ABSL_LOCKABLE Mutex {
 public:
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }
  void AssertHeld() const ABSL_ASSERT_EXCLUSIVE_LOCK() {}

 private:
  friend class CondVar;
  std::mutex mu_;
};

class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

class CondVar {
 public:
  void Wait(Mutex* mu) {
    std::unique_lock<std::mutex> l(mu->mu_, std::adopt_lock);
    cv_.wait(l);
    l.release();
  }
  // true: the deadline passed.
  bool WaitWithDeadline(Mutex* mu, absl::Time deadline) {
    std::unique_lock<std::mutex> l(mu->mu_, std::adopt_lock);
    bool timeout = cv_.wait_until(l, absl::ToChronoTime(deadline)) == std::cv_status::timeout;
    l.release();
    return timeout;
  }
  bool WaitWithTimeout(Mutex* mu, absl::Duration timeout) {
    return WaitWithDeadline(mu, absl::Now() + timeout);
  }
  void Signal() { cv_.notify_one(); }
  void SignalAll() { cv_.notify_all(); }

 private:
  std::condition_variable cv_;
};

#endif

}  // namespace lopt
