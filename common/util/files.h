// Plain files, without LibTorch: existence, mkdir -p, and writes that must
// survive a crash (written to a temporary, fsynced, then renamed over the
// target, so a reader sees the old file or the new one).
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace lopt {

// Whether `path` names an existing file or directory.
bool FileExists(const std::string& path);

// mkdir -p: creates `dir` and its missing parents.
absl::Status MakeDirs(const std::string& dir);

absl::Status WriteFileAtomically(const std::string& path, const std::string& bytes);
// NOT_FOUND "cannot read [what ]path: <errno's text>" when it cannot.
absl::StatusOr<std::string> ReadFile(const std::string& path, const std::string& what = "");

}  // namespace lopt
