// lopt-buffer: the buffer server. Named FIFO tables of replay states and
// baseline curves in RocksDB, served over gRPC (lopt.v1.BufferService), with
// grpc.health.v1, reflection and Prometheus /metrics.
#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "buffer_server/buffer_service.h"
#include "buffer_server/rocks_store.h"
#include "common/rpc/metrics.h"
#include "common/rpc/rpc.h"
#include "common/rpc/service_main.h"
#include "common/util/log.h"

namespace {

const std::vector<lopt::FlagDef> kFlags = {
    {"listen", "0.0.0.0:50052", "gRPC address of BufferService (port 0: any free port)"},
    {"metrics-listen", "0.0.0.0:9102", "address of /metrics for Prometheus (empty: off)"},
    {"db-path", "/var/lib/lopt/buffer", "RocksDB directory"},
    {"auth-token-file", "", "require this bearer token (empty: no auth)"},
    {"max-item-bytes", std::to_string(lopt::BufferServiceOptions().max_item_bytes),
     "refuse items larger than this many bytes"},
    {"min-free-bytes", "67108864",
     "keep this much of the database's disk free: refuse puts (NOT_SERVING) below it, and do not "
     "start with less"},
    {"tls-cert-file", "", "PEM certificate chain: serve TLS (with --tls-key-file; empty: plaintext)"},
    {"tls-key-file", "", "PEM private key of --tls-cert-file"},
};

constexpr char kUsage[] =
    "usage: lopt-buffer [flags]\n"
    "Serves lopt.v1.BufferService: named FIFO tables of tensors in RocksDB;\n"
    "every acknowledged put is synced to disk.";

}  // namespace

int main(int argc, char** argv) {
  const sigset_t stop = lopt::BlockStopSignals();
  int code = 0;
  auto flags = lopt::ParseServiceFlags("lopt-buffer", "buffer", kUsage, argc, argv, kFlags, &code);
  if (!flags) return code;
  auto Fail = [](const absl::Status& s) { return lopt::ServiceStartFailed("lopt-buffer", s); };
  lopt::BufferServiceOptions options;
  auto max_bytes = flags->GetInt("max-item-bytes", options.max_item_bytes);
  if (!max_bytes.ok()) return Fail(max_bytes.status());
  if (*max_bytes <= 0)
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--max-item-bytes must be > 0, got ", *max_bytes)));
  options.max_item_bytes = *max_bytes;
  auto token = lopt::ReadTokenFile(flags->Get("auth-token-file"));
  if (!token.ok()) return Fail(token.status());
  options.auth_token = *token;

  const std::string db_path = flags->Get("db-path");
  auto min_free = flags->GetInt("min-free-bytes", 64 << 20);
  if (!min_free.ok()) return Fail(min_free.status());
  if (*min_free < 0)
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--min-free-bytes must be >= 0, got ", *min_free)));
  auto store = lopt::RocksReplayStore::Open(db_path, /*sync_writes=*/true, *min_free);
  if (!store.ok()) return Fail(store.status());
  lopt::StoreTotals totals = (*store)->Totals();

  lopt::BufferServiceImpl service(store->get(), options);
  lopt::ServerConfig config;
  config.listen = flags->Get("listen");
  config.auth_token = options.auth_token;
  if (auto s = lopt::LoadServerTls(flags->Get("tls-cert-file"), flags->Get("tls-key-file"), &config);
      !s.ok())
    return Fail(s);
  grpc::ServerBuilder builder;
  int grpc_port = 0;
  lopt::ConfigureServer(builder, config, &grpc_port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || grpc_port == 0)
    return Fail(lopt::ListenFailed(config.listen));

  int metrics_port = 0;
  if (auto s = lopt::StartMetricsServer(flags->Get("metrics-listen"), &metrics_port); !s.ok()) {
    server->Shutdown();
    return Fail(s);
  }
  lopt::SetServing(server.get(), "lopt.v1.BufferService", true);
  // While writes fail (a full disk) lopt.v1.BufferService reports
  // NOT_SERVING (a readiness probe takes the pod out; the process-wide ""
  // status stays SERVING, so a liveness probe does not restart it for
  // nothing), and writes resume once there is room again.
  auto set_writable = [&](bool writable) {
    if (auto* health = server->GetHealthCheckService())
      health->SetServingStatus("lopt.v1.BufferService", writable);
  };
  std::atomic<bool> stopping{false};
  std::thread writes_watch([&] {
    bool serving = true;
    while (!stopping) {
      for (int i = 0; i < 10 && !stopping; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      if (stopping || !(*store)->WritesFailing()) continue;
      if (serving) {
        serving = false;
        set_writable(false);
        lopt::LogError("writes are failing: NOT_SERVING until they can resume (is the disk full?)",
                       {{"db_path", db_path}});
      }
      absl::Status resumed = (*store)->Resume();
      if (resumed.ok() && !stopping) {
        serving = true;
        set_writable(true);
        lopt::LogInfo("writes resumed: SERVING", {{"db_path", db_path}});
      }
    }
  });
  lopt::LogInfo("serving", {{"grpc_port", std::to_string(grpc_port)},
                            {"metrics_port", std::to_string(metrics_port)},
                            {"db_path", db_path},
                            {"tables", std::to_string(totals.tables)},
                            {"items", std::to_string(totals.items)},
                            {"bytes", std::to_string(totals.bytes)},
                            {"auth", options.auth_token.empty() ? "none" : "bearer"},
                            {"tls", config.tls_cert_pem.empty() ? "off" : "on"}});

  std::thread stopper = lopt::WaitForStopSignal(stop, [&](const std::string&) {
    stopping = true;
    lopt::SetServing(server.get(), "lopt.v1.BufferService", false);
    // Calls in flight get a few seconds to finish; the store closes after them.
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  });
  server->Wait();
  stopper.join();
  writes_watch.join();
  store->reset();
  lopt::LogInfo("stopped");
  return 0;
}
