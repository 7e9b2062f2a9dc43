// lopt-learner: holds every job's meta-parameters, hands out work units to
// workers and applies their results (JobService + WorkService over gRPC).
#include <csignal>
#include <cstdio>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/flags.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/rpc.h"
#include "common/runtime.h"
#include "learner/job_manager.h"
#include "learner/learner_services.h"

namespace {

const std::vector<lopt::FlagDef> kFlags = {
    {"listen", "0.0.0.0:50051", "gRPC address of JobService and WorkService (port 0: any free port)"},
    {"metrics-listen", "0.0.0.0:9101", "address of /metrics for Prometheus (empty: off)"},
    {"state-dir", "/var/lib/lopt/learner", "jobs' checkpoints and trained optimizers"},
    {"buffer", "", "buffer server host:port, to delete a finished job's tables (empty: none)"},
    {"auth-token-file", "", "file with the bearer token clients, workers and the buffer share (empty: no auth)"},
    {"worker-timeout-ms", "30000", "a worker silent this long loses its unit to another"},
    {"heartbeat-interval-ms", "1000", "how often workers are told to send heartbeats"},
    {"metrics-retention-ms", "600000", "how long a finished job's labelled series stay exported"},
    {"threads", "0", "LibTorch threads (0: all cores)"},
};

int Fail(const std::string& msg) {
  fprintf(stderr, "lopt-learner: %s\n", msg.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  lopt::SetLogComponent("learner");
  auto f = lopt::ParseFlagDefs(argc, argv, 1, kFlags);
  if (!f.ok()) return Fail(std::string(f.status().message()));
  if (f->Has("help")) {
    printf("%s", lopt::FlagsHelp("usage: lopt-learner [flags]", kFlags).c_str());
    return 0;
  }
  lopt::LearnerOptions opt;
  opt.state_dir = f->Get("state-dir");
  auto timeout = f->GetInt("worker-timeout-ms", 30000);
  auto hb = f->GetInt("heartbeat-interval-ms", 1000);
  auto retention = f->GetInt("metrics-retention-ms", 600000);
  auto threads = f->GetInt("threads", 0);
  if (!timeout.ok()) return Fail(std::string(timeout.status().message()));
  if (!hb.ok()) return Fail(std::string(hb.status().message()));
  if (!retention.ok()) return Fail(std::string(retention.status().message()));
  if (!threads.ok()) return Fail(std::string(threads.status().message()));
  if (*timeout <= 0 || *hb <= 0 || *hb >= *timeout)
    return Fail("need 0 < --heartbeat-interval-ms < --worker-timeout-ms");
  opt.worker_timeout_ms = *timeout;
  opt.heartbeat_interval_ms = static_cast<int32_t>(*hb);
  opt.metrics_retention_ms = *retention;
  auto token = lopt::ReadTokenFile(f->Get("auth-token-file"));
  if (!token.ok()) return Fail(std::string(token.status().message()));
  opt.buffer.target = f->Get("buffer");
  opt.buffer.auth_token = *token;
  int metrics_port = 0;
  if (auto s = lopt::StartMetricsServer(f->Get("metrics-listen"), &metrics_port); !s.ok())
    return Fail(std::string(s.message()));
  lopt::ConfigureRuntime(static_cast<int>(*threads));

  // Block the stop signals in every thread; one thread waits for them.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  auto manager = lopt::JobManager::Create(opt);
  if (!manager.ok()) return Fail(std::string(manager.status().message()));

  lopt::JobServiceImpl jobs(manager->get(), *token);
  lopt::WorkServiceImpl work(manager->get(), *token, opt.heartbeat_interval_ms);
  grpc::ServerBuilder builder;
  int port = 0;
  lopt::ConfigureServer(builder, {f->Get("listen"), *token}, &port);
  builder.RegisterService(&jobs);
  builder.RegisterService(&work);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) return Fail(absl::StrCat("cannot listen on ", f->Get("listen")));
  lopt::SetServing(server.get(), "lopt.v1.JobService", true);
  lopt::SetServing(server.get(), "lopt.v1.WorkService", true);
  lopt::LogInfo("serving", {{"grpc_port", absl::StrCat(port)},
                            {"metrics_port", absl::StrCat(metrics_port)},
                            {"state_dir", opt.state_dir},
                            {"auth", token->empty() ? "off" : "bearer"}});

  std::thread stopper([&] {
    int sig = 0;
    sigwait(&sigs, &sig);
    lopt::LogInfo("stopping", {{"signal", absl::StrCat(sig)}});
    lopt::SetServing(server.get(), "lopt.v1.JobService", false);
    (*manager)->Shutdown();
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  });
  server->Wait();
  stopper.join();
  return 0;
}
