#include "common/util/log.h"

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <mutex>
#include <vector>
#include <sys/time.h>

namespace lopt {
namespace {
std::mutex g_mu;
std::string g_component = "lopt";
LogLevel g_level = [] {
  const char* e = std::getenv("LOPT_LOG_LEVEL");
  if (e && std::string(e) == "debug") return LogLevel::kDebug;
  if (e && std::string(e) == "warning") return LogLevel::kWarning;
  if (e && std::string(e) == "error") return LogLevel::kError;
  return LogLevel::kInfo;
}();

const char* Name(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarning: return "warning";
    default: return "error";
  }
}

// logfmt value: bare if it has no space, quote or '=', else quoted.
std::string Value(const std::string& v) {
  bool bare = !v.empty();
  for (char c : v)
    if (c == ' ' || c == '"' || c == '=' || c == '\n' || c == '\\') bare = false;
  if (bare) return v;
  std::string out = "\"";
  for (char c : v) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out + "\"";
}
}  // namespace

void SetLogComponent(const std::string& component) {
  std::lock_guard<std::mutex> l(g_mu);
  g_component = component;
}

void SetLogLevel(LogLevel level) {
  std::lock_guard<std::mutex> l(g_mu);
  g_level = level;
}

void Log(LogLevel level, const std::string& msg, std::initializer_list<LogField> fields) {
  Log(level, msg, std::vector<LogField>(fields));
}

void Log(LogLevel level, const std::string& msg, const std::vector<LogField>& fields) {
  std::lock_guard<std::mutex> l(g_mu);
  if (level < g_level) return;
  timeval tv;
  gettimeofday(&tv, nullptr);
  tm t;
  gmtime_r(&tv.tv_sec, &t);
  char ts[64];
  snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", t.tm_year + 1900, t.tm_mon + 1,
           t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, int(tv.tv_usec / 1000));
  std::string line = absl::StrCat("ts=", ts, " level=", Name(level), " component=", g_component,
                                  " msg=", Value(msg));
  for (const auto& [k, v] : fields) absl::StrAppend(&line, " ", k, "=", Value(v));
  line += "\n";
  fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace lopt
