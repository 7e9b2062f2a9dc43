// An exclusive lock on a directory for the life of a process, as LevelDB
// locks its database: flock(2) on <dir>/LOCK. The kernel drops the lock when
// the process exits, however it exits (kill -9 included), so a stale LOCK
// file never blocks a restart. The file holds the holder's pid and host, so
// that the process refused can name who has the directory.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace lopt {

class DirLock {
 public:
  // Creates `dir` if needed and locks it. FAILED_PRECONDITION naming the
  // holder ("pid 123 on host h") when another process holds it; UNAVAILABLE
  // with errno's text when the LOCK file cannot be created or locked.
  static absl::StatusOr<std::unique_ptr<DirLock>> Acquire(const std::string& dir);
  ~DirLock();  // releases the lock (the LOCK file stays, empty of meaning)

  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;

  const std::string& path() const { return path_; }

 private:
  DirLock(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  std::string path_;
  int fd_;
};

}  // namespace lopt
