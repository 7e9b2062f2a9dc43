#include "common/service_main.h"

#include <pthread.h>

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace lopt {

std::optional<Flags> ParseServiceFlags(const std::string& prog, const std::string& component,
                                       const std::string& usage, int argc, char** argv,
                                       const std::vector<FlagDef>& defs, int* exit_code) {
  SetLogComponent(component);
  auto f = ParseFlagDefs(argc, argv, 1, defs);
  if (!f.ok()) {
    std::fprintf(stderr, "%s: %s\n", prog.c_str(), std::string(f.status().message()).c_str());
    *exit_code = 2;
    return std::nullopt;
  }
  if (f->Has("help")) {
    std::printf("%s", FlagsHelp(usage, defs).c_str());
    *exit_code = 0;
    return std::nullopt;
  }
  if (!f->positional.empty()) {
    std::fprintf(stderr, "%s: unexpected argument '%s' (see --help)\n", prog.c_str(),
                 f->positional[0].c_str());
    *exit_code = 2;
    return std::nullopt;
  }
  return std::move(*f);
}

int ServiceStartFailed(const std::string& prog, const absl::Status& status) {
  std::fprintf(stderr, "%s: %s\n", prog.c_str(), std::string(status.message()).c_str());
  LogError("cannot start", {{"error", status.ToString()}});
  return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

absl::Status ListenFailed(const std::string& listen) {
  return absl::UnavailableError(absl::StrCat(
      "cannot listen on ", listen,
      ": the port is in use by another process, or the address is not one of this host's"));
}

sigset_t BlockStopSignals() {
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  return sigs;
}

std::thread WaitForStopSignal(sigset_t signals, std::function<void(const std::string&)> on_stop) {
  return std::thread([signals, on_stop = std::move(on_stop)] {
    int sig = 0;
    sigwait(&signals, &sig);
    const std::string name = sig == SIGTERM ? "SIGTERM" : sig == SIGINT ? "SIGINT" : "signal";
    LogInfo("stopping", {{"signal", name}});
    on_stop(name);
  });
}

}  // namespace lopt
