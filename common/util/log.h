// Structured logs: one logfmt line per event on stderr,
//   ts=2026-11-23T07:40:23.123Z level=info component=learner msg="job submitted" job=j-1
// so that they can be grepped by hand and parsed by a log shipper.
#pragma once

#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace lopt {

enum class LogLevel { kDebug, kInfo, kWarning, kError };

// The component name every line of this process carries ("learner", ...).
void SetLogComponent(const std::string& component);
// Lines below `level` are dropped (default kInfo; LOPT_LOG_LEVEL=debug).
void SetLogLevel(LogLevel level);

using LogField = std::pair<std::string, std::string>;
void Log(LogLevel level, const std::string& msg, std::initializer_list<LogField> fields = {});
// Fields gathered at run time.
void Log(LogLevel level, const std::string& msg, const std::vector<LogField>& fields);

inline void LogInfo(const std::string& msg, std::initializer_list<LogField> f = {}) {
  Log(LogLevel::kInfo, msg, f);
}
inline void LogWarning(const std::string& msg, std::initializer_list<LogField> f = {}) {
  Log(LogLevel::kWarning, msg, f);
}
inline void LogError(const std::string& msg, std::initializer_list<LogField> f = {}) {
  Log(LogLevel::kError, msg, f);
}

}  // namespace lopt
