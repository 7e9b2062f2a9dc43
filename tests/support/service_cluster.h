// lopt's services on loopback for multi-process tests (integration, fault,
// soak): lopt-buffer, lopt-learner and lopt-worker as child processes,
// optionally with TLS and a bearer token, driven with loptctl. A learner and
// a buffer keep their ports across restarts, so that a kill -9 and a
// restart look to the others like the same server coming back. Also the
// small helpers these tests share: temporary directories, job texts,
// Prometheus metric values.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tests/support/child_process.h"

namespace lopt::testing {

// The binaries a cluster runs. TestBinary maps a path the build gave to the
// one to run: itself, or with LOPT_TEST_BIN_DIR set, the same name in that
// directory (to see a test fail on the code before a fix).
struct ServiceBinaries {
  std::string buffer, learner, worker, loptctl;
};
std::string TestBinary(const std::string& built);

// A fresh, empty directory under the test temp dir: <prefix>_<name>_<pid>.
std::string MakeTestDir(const std::string& prefix, const std::string& name);
void WriteTextFile(const std::string& path, const std::string& text);

// A small ELO job on the 8x8 Fashion-MNIST MLP that a CPU worker runs in
// about a second a step, for the cluster section's shards and staleness.
std::string SmallJobText(const std::string& name, int steps, int shards = 1, int staleness = 0,
                         int checkpoint_every = 4, int seed = 11);

// The value of `metric{...label...}` in a Prometheus text exposition (the
// first line whose labels contain `label`); -1 if absent.
double MetricValue(const std::string& text, const std::string& metric, const std::string& label);
// /metrics of a process on 127.0.0.1, retried; "" (and a test failure) if it
// does not answer.
std::string Scrape(int port);

// A test CA and a server certificate it signs for localhost and 127.0.0.1
// (openssl), plus an unrelated CA.
struct TlsFiles {
  std::string ca, cert, key, other_ca;
};
TlsFiles MakeTlsFiles(const std::string& dir);

class ServiceCluster {
 public:
  ServiceCluster(ServiceBinaries binaries, std::string dir);

  // Every process started after this serves (and talks) TLS with a fresh test CA.
  const TlsFiles& EnableTls();
  // Every process started after this (and Ctl) uses this bearer token file.
  void SetAuthTokenFile(const std::string& path) { token_file_ = path; }
  // Where the buffer keeps its database (default dir()/buffer) and extra flags.
  void SetBufferDbPath(const std::string& path) { buffer_db_ = path; }
  void SetBufferArgs(std::vector<std::string> args) { buffer_args_ = std::move(args); }

  // Each asserts (gtest) that the process came up. The buffer and the
  // learner come back on the port they had before.
  void StartBuffer();
  // `ignore_sigxfsz`: through /bin/sh with SIGXFSZ ignored (kept across
  // exec), so that a file-size limit makes writes fail instead of killing it.
  void StartLearner(bool ignore_sigxfsz = false);
  // `extra`: more lopt-worker flags (--memory=64K, say).
  void StartWorker(const std::string& name, const std::vector<std::string>& extra = {});

  // The learner's command line on `port`, without --buffer.
  std::vector<std::string> LearnerArgs(int port) const;
  std::string learner_target() const;
  std::string state_dir() const { return dir_ + "/learner"; }
  const std::string& dir() const { return dir_; }

  // loptctl's command line for `args`, and running it: (exit code, output).
  std::string Ctl(const std::string& args) const;
  std::pair<int, std::string> RunCtl(const std::string& args) const;
  // Submits the job text as a file; (exit code, output).
  std::pair<int, std::string> TrySubmit(const std::string& text, const std::string& flags = "");
  // Submits and expects success; returns the job id (the output's first line).
  std::string Submit(const std::string& text, bool watch = false, std::string* output = nullptr);
  // `loptctl status id`, polled until it contains `want` or `timeout` passes;
  // the last one seen.
  std::string PollStatus(const std::string& id, const std::string& want,
                         std::chrono::milliseconds timeout) const;
  double LearnerMetric(const std::string& metric, const std::string& label);

  ChildProcess& learner() { return *learner_; }
  ChildProcess& buffer() { return *buffer_; }
  ChildProcess& worker(const std::string& name) { return *workers_.at(name); }
  std::unique_ptr<ChildProcess>& learner_ptr() { return learner_; }
  std::unique_ptr<ChildProcess>& buffer_ptr() { return buffer_; }
  std::unique_ptr<ChildProcess>& worker_ptr(const std::string& name) { return workers_[name]; }
  int buffer_port() const { return buffer_port_; }

 private:
  ServiceBinaries bin_;
  std::string dir_;
  std::string buffer_db_;
  std::vector<std::string> buffer_args_;
  std::string token_file_;
  TlsFiles tls_;
  int learner_port_ = 0, buffer_port_ = 0;
  int jobs_ = 0;
  std::unique_ptr<ChildProcess> buffer_, learner_;
  std::map<std::string, std::unique_ptr<ChildProcess>> workers_;
};

}  // namespace lopt::testing
