// lopt-buffer: the buffer server. Named FIFO tables of replay states and
// baseline curves in RocksDB, served over gRPC (lopt.v1.BufferService), with
// grpc.health.v1, reflection and Prometheus /metrics.
#include <csignal>
#include <cstdio>
#include <memory>
#include <string>

#include <pthread.h>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "buffer_server/buffer_service.h"
#include "buffer_server/rocks_store.h"
#include "common/flags.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/rpc.h"

namespace {

constexpr char kDefaultListen[] = "0.0.0.0:50052";
constexpr char kDefaultMetricsListen[] = "0.0.0.0:9102";
constexpr char kDefaultDbPath[] = "/var/lib/lopt/buffer";

void PrintUsage() {
  std::printf(
      "usage: lopt-buffer [flags]\n"
      "Serves lopt.v1.BufferService: named FIFO tables of tensors in RocksDB;\n"
      "every acknowledged put is synced to disk.\n\n"
      "  --listen HOST:PORT          gRPC address (default %s; port 0 picks one)\n"
      "  --metrics-listen HOST:PORT  Prometheus /metrics address (default %s;\n"
      "                              empty disables)\n"
      "  --db-path DIR               RocksDB directory (default %s)\n"
      "  --auth-token-file FILE      require this bearer token (default: none)\n"
      "  --max-item-bytes N          refuse items larger than N bytes (default %lld)\n"
      "  --help                      this text\n",
      kDefaultListen, kDefaultMetricsListen, kDefaultDbPath,
      static_cast<long long>(lopt::BufferServiceOptions().max_item_bytes));
}

int Fail(const absl::Status& s) {
  lopt::LogError("cannot start", {{"error", s.ToString()}});
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  lopt::SetLogComponent("buffer");
  // Block the stop signals in every thread (gRPC's and RocksDB's inherit the
  // mask) so that only the sigwait below receives them.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  auto flags = lopt::ParseFlags(argc, argv, 1,
                                {"listen", "metrics-listen", "db-path", "auth-token-file",
                                 "max-item-bytes"},
                                {"help"});
  if (!flags.ok()) {
    std::fprintf(stderr, "lopt-buffer: %s\n", std::string(flags.status().message()).c_str());
    return 2;
  }
  if (flags->Has("help")) {
    PrintUsage();
    return 0;
  }
  if (!flags->positional.empty()) {
    std::fprintf(stderr, "lopt-buffer: unexpected argument '%s' (see --help)\n",
                 flags->positional[0].c_str());
    return 2;
  }
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

  const std::string db_path = flags->Get("db-path", kDefaultDbPath);
  auto store = lopt::RocksReplayStore::Open(db_path);
  if (!store.ok()) return Fail(store.status());
  lopt::StoreTotals totals = (*store)->Totals();

  lopt::BufferServiceImpl service(store->get(), options);
  lopt::ServerConfig config;
  config.listen = flags->Get("listen", kDefaultListen);
  config.auth_token = options.auth_token;
  grpc::ServerBuilder builder;
  int grpc_port = 0;
  lopt::ConfigureServer(builder, config, &grpc_port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || grpc_port == 0)
    return Fail(absl::UnavailableError(
        absl::StrCat("cannot listen on ", config.listen, " (address in use or invalid?)")));

  int metrics_port = 0;
  const std::string metrics_listen = flags->Get("metrics-listen", kDefaultMetricsListen);
  if (auto s = lopt::StartMetricsServer(metrics_listen, &metrics_port); !s.ok()) {
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
                            {"auth", options.auth_token.empty() ? "none" : "bearer"}});

  int sig = 0;
  sigwait(&stop, &sig);
  lopt::LogInfo("shutting down", {{"signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"}});
  lopt::SetServing(server.get(), "lopt.v1.BufferService", false);
  // Calls in flight get a few seconds to finish; the store closes after them.
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  server->Wait();
  store->reset();
  lopt::LogInfo("stopped");
  return 0;
}
