#include "common/util/dir_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace lopt {
namespace {

absl::Status MakeDirsFor(const std::string& dir) {
  std::string cur;
  for (size_t i = 0; i <= dir.size(); ++i) {
    if ((i == dir.size() || dir[i] == '/') && !cur.empty() && ::mkdir(cur.c_str(), 0755) != 0 &&
        errno != EEXIST)
      return absl::UnavailableError(
          absl::StrCat("cannot create directory ", cur, ": ", std::strerror(errno)));
    if (i < dir.size()) cur += dir[i];
  }
  return absl::OkStatus();
}

std::string Holder(int fd) {
  char buf[256];
  ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return "another process (it has not written its pid yet)";
  return std::string(absl::StripAsciiWhitespace(absl::string_view(buf, size_t(n))));
}

}  // namespace

absl::StatusOr<std::unique_ptr<DirLock>> DirLock::Acquire(const std::string& dir) {
  if (auto s = MakeDirsFor(dir); !s.ok()) return s;
  const std::string path = dir + "/LOCK";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0)
    return absl::UnavailableError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    std::string holder = err == EWOULDBLOCK ? Holder(fd) : "";
    ::close(fd);
    if (err != EWOULDBLOCK)
      return absl::UnavailableError(absl::StrCat("cannot lock ", path, ": ", std::strerror(err)));
    return absl::FailedPreconditionError(absl::StrCat(
        dir, " is in use by another process (", holder, ", which holds ", path,
        "); stop it or use another directory"));
  }
  char host[256] = "unknown";
  ::gethostname(host, sizeof host - 1);
  const std::string me = absl::StrCat("pid ", ::getpid(), " on host ", host, "\n");
  // Best effort: the lock is what excludes; the text only names the holder.
  const bool named = ::ftruncate(fd, 0) == 0 &&
                     ::pwrite(fd, me.data(), me.size(), 0) == static_cast<ssize_t>(me.size());
  (void)named;
  return std::unique_ptr<DirLock>(new DirLock(path, fd));
}

DirLock::~DirLock() {
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace lopt
