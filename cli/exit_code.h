// How a `lopt` command ends on an error: the message on stderr after the
// command's name, and exit code 2 for the user's mistakes (INVALID_ARGUMENT:
// a bad flag, a malformed job file) or 1 for everything else.
#pragma once

#include <cstdio>
#include <string>

#include "absl/status/status.h"

namespace lopt {

inline int ExitCodeOf(const absl::Status& s) {
  return s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

inline int FailCommand(const char* command, const absl::Status& s) {
  std::fprintf(stderr, "%s: %s\n", command, std::string(s.message()).c_str());
  return ExitCodeOf(s);
}

}  // namespace lopt
