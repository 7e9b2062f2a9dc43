// Runs one of lopt's binaries as a child process for multi-process tests:
// captures its log lines (echoed to stderr with a label), learns the ports
// it reports ("grpc_port=N", "metrics_port=M" on its ready line), waits for
// lines, and stops it with SIGTERM or kills it with SIGKILL.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"

namespace lopt::testing {

class ChildProcess {
 public:
  // Starts `argv` (argv[0] the binary) and waits up to `timeout` for a line
  // containing `ready`. UNAVAILABLE (with the output so far) otherwise.
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Start(
      const std::string& label, std::vector<std::string> argv, const std::string& ready,
      std::chrono::milliseconds timeout = std::chrono::seconds(30));
  ~ChildProcess();

  int grpc_port() const { return grpc_port_; }
  int metrics_port() const { return metrics_port_; }
  pid_t pid() const { return pid_; }
  bool running();

  // Waits for an output line containing `text` (already seen lines count).
  bool WaitForLine(const std::string& text, std::chrono::milliseconds timeout);
  int CountLines(const std::string& text);
  std::string Output();

  void Kill9();
  // SIGTERM, then SIGKILL after `grace`; the exit code (-1: killed by a signal).
  int Stop(std::chrono::milliseconds grace = std::chrono::seconds(10));

 private:
  ChildProcess() = default;
  void Drain();
  int Reap(bool block);

  std::string label_;
  pid_t pid_ = -1;
  int fd_ = -1;
  int grpc_port_ = 0, metrics_port_ = 0;
  int exit_code_ = 0;
  std::thread drain_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> lines_;
  bool eof_ = false;
};

// A TCP port that was free a moment ago (for a server that must come back on
// the same address after a restart).
int FreePort();

// GET http://127.0.0.1:port/path; the body, or an error.
absl::StatusOr<std::string> HttpGet(int port, const std::string& path);

// Runs a command with /bin/sh; returns (exit code, stdout+stderr).
std::pair<int, std::string> RunCommand(const std::string& command);

}  // namespace lopt::testing
