// lopt-buffer: the buffer server. Named FIFO tables of replay states and
// baseline curves in RocksDB, served over gRPC (lopt.v1.BufferService), with
// grpc.health.v1, reflection and Prometheus /metrics.
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "buffer_server/buffer_service.h"
#include "buffer_server/rocks_store.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/rpc.h"
#include "common/service_main.h"

namespace {

const std::vector<lopt::FlagDef> kFlags = {
    {"listen", "0.0.0.0:50052", "gRPC address of BufferService (port 0: any free port)"},
    {"metrics-listen", "0.0.0.0:9102", "address of /metrics for Prometheus (empty: off)"},
    {"db-path", "/var/lib/lopt/buffer", "RocksDB directory"},
    {"auth-token-file", "", "require this bearer token (empty: no auth)"},
    {"max-item-bytes", std::to_string(lopt::BufferServiceOptions().max_item_bytes),
     "refuse items larger than this many bytes"},
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
  auto store = lopt::RocksReplayStore::Open(db_path);
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
  lopt::LogInfo("serving", {{"grpc_port", std::to_string(grpc_port)},
                            {"metrics_port", std::to_string(metrics_port)},
                            {"db_path", db_path},
                            {"tables", std::to_string(totals.tables)},
                            {"items", std::to_string(totals.items)},
                            {"bytes", std::to_string(totals.bytes)},
                            {"auth", options.auth_token.empty() ? "none" : "bearer"},
                            {"tls", config.tls_cert_pem.empty() ? "off" : "on"}});

  std::thread stopper = lopt::WaitForStopSignal(stop, [&](const std::string&) {
    lopt::SetServing(server.get(), "lopt.v1.BufferService", false);
    // Calls in flight get a few seconds to finish; the store closes after them.
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  });
  server->Wait();
  stopper.join();
  store->reset();
  lopt::LogInfo("stopped");
  return 0;
}
