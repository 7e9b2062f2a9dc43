// Runs the real lopt-buffer binary as a child process, for fault tests and
// the benchmark: starts it on 127.0.0.1 port 0, learns its ports from its
// "msg=serving grpc_port=N metrics_port=M" line, and stops it gently or with
// SIGKILL. Its log lines are copied to this process's stderr.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tests/support/child_process.h"

namespace lopt {

struct BufferProcessOptions {
  std::string binary;      // path of lopt-buffer
  std::string db_path;
  std::vector<std::string> extra_args;  // e.g. "--auth-token-file=..."
  int64_t start_timeout_ms = 20000;
};

class BufferProcess {
 public:
  // UNAVAILABLE if the binary cannot be started or exits, or no serving line
  // appears within start_timeout_ms (the child is then killed).
  static absl::StatusOr<std::unique_ptr<BufferProcess>> Start(const BufferProcessOptions& options);
  // Stops the child if it still runs (SIGTERM, then SIGKILL after 10 s).
  ~BufferProcess();

  int grpc_port() const;
  int metrics_port() const;
  std::string target() const { return "127.0.0.1:" + std::to_string(grpc_port()); }
  pid_t pid() const;

  // SIGKILL and reap: the crash the fault tests simulate.
  void Kill9();
  // SIGTERM and reap; returns the exit code (-1 if it had to be killed).
  int Stop();

 private:
  BufferProcess() = default;
  std::unique_ptr<testing::ChildProcess> child_;
};

}  // namespace lopt
