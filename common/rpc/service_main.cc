#include "common/rpc/service_main.h"

#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "common/util/log.h"

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

namespace {

// The stop signals' self-pipe: the handler writes the signal's number.
int g_stop_pipe[2] = {-1, -1};

void OnStopSignal(int sig) {
  const unsigned char b = static_cast<unsigned char>(sig);
  const int saved = errno;
  const ssize_t n = ::write(g_stop_pipe[1], &b, 1);
  (void)n;
  errno = saved;
}

}  // namespace

sigset_t BlockStopSignals() {
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  // Threads that libraries started before main (LibTorch's) do not block
  // the signals, and the default action there would end the process without
  // a clean stop: a handler makes any thread that takes one pass it on.
  if (g_stop_pipe[0] < 0 && ::pipe2(g_stop_pipe, O_CLOEXEC) == 0) {
    struct sigaction sa = {};
    sa.sa_handler = OnStopSignal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
  }
  return sigs;
}

std::thread WaitForStopSignal(sigset_t signals, std::function<void(const std::string&)> on_stop) {
  return std::thread([signals, on_stop = std::move(on_stop)] {
    // This thread takes the signals (one pending since BlockStopSignals included).
    pthread_sigmask(SIG_UNBLOCK, &signals, nullptr);
    unsigned char b = 0;
    while (::read(g_stop_pipe[0], &b, 1) < 0 && errno == EINTR) {
    }
    const int sig = b;
    const std::string name = sig == SIGTERM ? "SIGTERM" : sig == SIGINT ? "SIGINT" : "signal";
    LogInfo("stopping", {{"signal", name}});
    on_stop(name);
  });
}

}  // namespace lopt
