// lopt-learner: holds every job's meta-parameters, hands out work units to
// workers and applies their results (JobService + WorkService over gRPC).
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/rpc/metrics.h"
#include "common/rpc/rpc.h"
#include "common/rpc/service_main.h"
#include "common/util/dir_lock.h"
#include "common/util/log.h"
#include "common/util/runtime.h"
#include "learner/job_manager.h"
#include "learner/learner_services.h"

namespace {

// The defaults are LearnerOptions' own, written once (learner/job_manager.h).
const lopt::LearnerOptions kDefaults;

const std::vector<lopt::FlagDef> kFlags = {
    {"listen", "0.0.0.0:50051", "gRPC address of JobService and WorkService (port 0: any free port)"},
    {"metrics-listen", "0.0.0.0:9101", "address of /metrics for Prometheus (empty: off)"},
    {"state-dir", kDefaults.state_dir, "jobs' checkpoints and trained optimizers"},
    {"buffer", "", "buffer server host:port, to delete a finished job's tables (empty: none)"},
    {"auth-token-file", "", "file with the bearer token clients, workers and the buffer share (empty: no auth)"},
    {"worker-timeout-ms", std::to_string(kDefaults.worker_timeout_ms), "a worker silent this long loses its unit to another"},
    {"heartbeat-interval-ms", std::to_string(kDefaults.heartbeat_interval_ms), "how often workers are told to send heartbeats"},
    {"metrics-retention-ms", std::to_string(kDefaults.metrics_retention_ms), "how long a finished job's labelled series stay exported"},
    {"threads", "0", "LibTorch threads (0: all cores)"},
    {"tls-cert-file", "", "PEM certificate chain: serve TLS (with --tls-key-file; empty: plaintext)"},
    {"tls-key-file", "", "PEM private key of --tls-cert-file"},
    {"tls-ca-file", "", "PEM roots that sign the buffer server's certificate: talk TLS to it (empty: plaintext)"},
    {"meta-test", "true", "after an ELO job's last outer step, have a worker meta-test the trained optimizer (as lopt eval does; an ELO_META_TEST unit) and succeed once the report is in the job's eval/ (false: off, the job succeeds after its last step)"},
};

}  // namespace

int main(int argc, char** argv) {
  lopt::PreferPassiveOpenMpWait(argv);  // first: it may re-execute the program
  // Before any thread starts, so that all of them inherit the mask.
  const sigset_t stop = lopt::BlockStopSignals();
  int code = 0;
  auto f = lopt::ParseServiceFlags("lopt-learner", "learner", "usage: lopt-learner [flags]", argc,
                                   argv, kFlags, &code);
  if (!f) return code;
  auto Fail = [](const absl::Status& s) { return lopt::ServiceStartFailed("lopt-learner", s); };
  lopt::LearnerOptions opt;
  opt.state_dir = f->Get("state-dir");
  // Two learners on one directory would both run its jobs and overwrite each
  // other's checkpoints: the second refuses to start. Held until exit.
  auto state_lock = lopt::DirLock::Acquire(opt.state_dir);
  if (!state_lock.ok())
    return Fail(absl::Status(state_lock.status().code(),
                             absl::StrCat("--state-dir ", state_lock.status().message())));
  auto timeout = f->GetInt("worker-timeout-ms", kDefaults.worker_timeout_ms);
  auto hb = f->GetInt("heartbeat-interval-ms", kDefaults.heartbeat_interval_ms);
  auto retention = f->GetInt("metrics-retention-ms", kDefaults.metrics_retention_ms);
  auto threads = f->GetInt("threads", 0);
  for (const auto* v : {&timeout, &hb, &retention, &threads})
    if (!v->ok()) return Fail(v->status());
  if (*timeout <= 0 || *hb <= 0 || *hb >= *timeout)
    return Fail(absl::InvalidArgumentError("need 0 < --heartbeat-interval-ms < --worker-timeout-ms"));
  opt.worker_timeout_ms = *timeout;
  opt.heartbeat_interval_ms = static_cast<int32_t>(*hb);
  opt.metrics_retention_ms = *retention;
  if (f->Get("meta-test") != "true" && f->Get("meta-test") != "false")
    return Fail(absl::InvalidArgumentError("--meta-test must be true or false"));
  opt.meta_test = f->Get("meta-test") == "true";
  auto token = lopt::ReadTokenFile(f->Get("auth-token-file"));
  if (!token.ok()) return Fail(token.status());
  opt.buffer.target = f->Get("buffer");
  opt.buffer.auth_token = *token;
  if (auto s = lopt::LoadClientTls(f->Get("tls-ca-file"), &opt.buffer); !s.ok()) return Fail(s);
  lopt::ServerConfig server_config{f->Get("listen"), *token};
  if (auto s = lopt::LoadServerTls(f->Get("tls-cert-file"), f->Get("tls-key-file"), &server_config);
      !s.ok())
    return Fail(s);
  int metrics_port = 0;
  if (auto s = lopt::StartMetricsServer(f->Get("metrics-listen"), &metrics_port); !s.ok())
    return Fail(s);
  lopt::ConfigureRuntime(static_cast<int>(*threads));

  auto manager = lopt::JobManager::Create(opt);
  if (!manager.ok()) return Fail(manager.status());

  lopt::JobServiceImpl jobs(manager->get(), *token);
  lopt::WorkServiceImpl work(manager->get(), *token, opt.heartbeat_interval_ms);
  grpc::ServerBuilder builder;
  int port = 0;
  lopt::ConfigureServer(builder, server_config, &port);
  builder.RegisterService(&jobs);
  builder.RegisterService(&work);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0)
    return Fail(lopt::ListenFailed(f->Get("listen")));
  lopt::SetServing(server.get(), "lopt.v1.JobService", true);
  lopt::SetServing(server.get(), "lopt.v1.WorkService", true);
  lopt::LogInfo("serving", {{"grpc_port", absl::StrCat(port)},
                            {"metrics_port", absl::StrCat(metrics_port)},
                            {"state_dir", opt.state_dir},
                            {"auth", token->empty() ? "off" : "bearer"},
                            {"tls", server_config.tls_cert_pem.empty() ? "off" : "on"}});

  std::thread stopper = lopt::WaitForStopSignal(stop, [&](const std::string&) {
    lopt::SetServing(server.get(), "lopt.v1.JobService", false);
    (*manager)->Shutdown();
    (*manager)->SaveAll();
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  });
  server->Wait();
  stopper.join();
  return 0;
}
