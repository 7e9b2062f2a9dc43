#include "common/util/remove_tree.h"

#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace lopt {

namespace {

absl::Status RemoveError(const std::string& path, int err) {
  return absl::UnavailableError(
      absl::StrCat("cannot remove ", path, ": ", std::strerror(err), " (errno ", err, ")"));
}


int RemoveEntry(const char* path, const struct stat*, int type, struct FTW*) {
  const int rc = type == FTW_DP ? ::rmdir(path) : ::unlink(path);
  return rc == 0 || errno == ENOENT ? 0 : errno;
}

}  // namespace

absl::Status RemoveTree(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return RemoveError(path, errno);
  }
  // Depth first (children before their directory), not through links.
  const int rc = ::nftw(path.c_str(), RemoveEntry, 32, FTW_DEPTH | FTW_PHYS);
  if (rc > 0) return RemoveError(path, rc);
  if (rc < 0) return RemoveError(path, errno);
  return absl::OkStatus();
}

}  // namespace lopt
