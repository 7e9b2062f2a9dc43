// What the mains of lopt-learner, lopt-worker and lopt-buffer share: flags
// from one FlagDef table (--help prints them with their defaults), the stop
// signals blocked in every thread (gRPC's and RocksDB's threads inherit the
// mask) and one thread that waits for them.
#pragma once

#include <signal.h>

#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "common/util/flags.h"

namespace lopt {

// Parses argv[1..] against `defs` (defaults filled in). On --help prints
// FlagsHelp(usage, defs) and sets *exit_code = 0; on a bad flag or an
// unexpected positional argument prints "PROG: message" and sets *exit_code =
// 2; both return nullopt. Also names the process in the log (component).
std::optional<Flags> ParseServiceFlags(const std::string& prog, const std::string& component,
                                       const std::string& usage, int argc, char** argv,
                                       const std::vector<FlagDef>& defs, int* exit_code);

// "PROG: message" on stderr and a logfmt error line; returns the exit code:
// 2 for a bad argument, 1 for anything else (a port in use, a bad disk).
int ServiceStartFailed(const std::string& prog, const absl::Status& status);

// The error of a server whose BuildAndStart failed: servers do not share
// ports (common/rpc/rpc.h's ConfigureServer turns SO_REUSEPORT off), so a port
// another process holds is the usual reason.
absl::Status ListenFailed(const std::string& listen);

// Blocks SIGTERM and SIGINT in this thread and every thread started after it,
// and handles them in any thread that does not block them (libraries start
// threads before main), so that each reaches WaitForStopSignal's thread.
// Call before starting threads.
sigset_t BlockStopSignals();

// A thread that waits for one of `signals` and runs on_stop(name) ("SIGTERM"
// or "SIGINT") once.
std::thread WaitForStopSignal(sigset_t signals, std::function<void(const std::string&)> on_stop);

}  // namespace lopt
