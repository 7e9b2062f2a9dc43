#include "common/rpc/rpc.h"

#include <fstream>
#include <sstream>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/rpc/metrics.h"

namespace lopt {

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  if (path.empty()) return std::string();
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read token file ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  std::string token = ss.str();
  while (!token.empty() && isspace(static_cast<unsigned char>(token.back()))) token.pop_back();
  if (token.empty()) return absl::InvalidArgumentError(absl::StrCat("token file ", path, " is empty"));
  return token;
}

namespace {

absl::StatusOr<std::string> ReadPem(const std::string& flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("--", flag, ": cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  std::string pem = ss.str();
  if (pem.find("-----BEGIN ") == std::string::npos)
    return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", path, " is not PEM"));
  return pem;
}

}  // namespace

absl::Status LoadServerTls(const std::string& cert_file, const std::string& key_file,
                           ServerConfig* config) {
  if (cert_file.empty() && key_file.empty()) return absl::OkStatus();
  if (cert_file.empty() || key_file.empty())
    return absl::InvalidArgumentError("--tls-cert-file and --tls-key-file go together");
  auto cert = ReadPem("tls-cert-file", cert_file);
  if (!cert.ok()) return cert.status();
  auto key = ReadPem("tls-key-file", key_file);
  if (!key.ok()) return key.status();
  config->tls_cert_pem = std::move(*cert);
  config->tls_key_pem = std::move(*key);
  return absl::OkStatus();
}

absl::Status LoadClientTls(const std::string& ca_file, ClientConfig* config) {
  if (ca_file.empty()) return absl::OkStatus();
  auto ca = ReadPem("tls-ca-file", ca_file);
  if (!ca.ok()) return ca.status();
  config->tls = true;
  config->tls_ca_pem = std::move(*ca);
  return absl::OkStatus();
}

void ConfigureServer(grpc::ServerBuilder& builder, const ServerConfig& config, int* bound_port) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  std::shared_ptr<grpc::ServerCredentials> creds = grpc::InsecureServerCredentials();
  if (!config.tls_cert_pem.empty()) {
    grpc::SslServerCredentialsOptions opts;
    opts.pem_key_cert_pairs.push_back({config.tls_key_pem, config.tls_cert_pem});
    creds = grpc::SslServerCredentials(opts);
  }
  builder.AddListeningPort(config.listen, creds, bound_port);
  // gRPC sets SO_REUSEPORT by default: a second server on a taken port would
  // then bind beside the first and take half its calls. Off, the bind fails.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder.SetMaxSendMessageSize(kMaxMessageBytes);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 2 * kKeepaliveTimeMs);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, kKeepaliveTimeoutMs);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                             kKeepaliveTimeMs / 2);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
}

void SetServing(grpc::Server* server, const std::string& service, bool serving) {
  auto* health = server->GetHealthCheckService();
  if (!health) return;
  health->SetServingStatus(serving);
  health->SetServingStatus(service, serving);
}

grpc::Status CheckAuth(const grpc::ServerContext& context, const std::string& token) {
  if (token.empty()) return grpc::Status::OK;
  const auto& md = context.client_metadata();
  auto it = md.find("authorization");
  if (it == md.end())
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "this server requires a bearer token: pass --auth-token-file");
  std::string got(it->second.data(), it->second.size());
  std::string want = "Bearer " + token;
  // Constant-time comparison of equal-length strings.
  unsigned diff = got.size() ^ want.size();
  for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) diff |= got[i] ^ want[i];
  if (diff != 0)
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "wrong bearer token");
  return grpc::Status::OK;
}

std::shared_ptr<grpc::Channel> MakeChannel(const ClientConfig& config) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, kKeepaliveTimeMs);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, kKeepaliveTimeoutMs);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  args.SetMaxSendMessageSize(kMaxMessageBytes);
  // Reconnect quickly after a server restart.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  if (config.tls) {
    grpc::SslCredentialsOptions opts;
    opts.pem_root_certs = config.tls_ca_pem;
    creds = grpc::SslCredentials(opts);
  }
  return grpc::CreateCustomChannel(config.target, creds, args);
}

std::unique_ptr<grpc::ClientContext> MakeContext(const ClientConfig& config, int64_t timeout_ms) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  int64_t ms = timeout_ms > 0 ? timeout_ms : config.timeout_ms;
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(ms));
  if (!config.auth_token.empty()) ctx->AddMetadata("authorization", "Bearer " + config.auth_token);
  return ctx;
}

std::unique_ptr<grpc::ClientContext> MakeStreamContext(const ClientConfig& config) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  if (!config.auth_token.empty()) ctx->AddMetadata("authorization", "Bearer " + config.auth_token);
  return ctx;
}

bool WaitForConnected(grpc::Channel* channel, int64_t timeout_ms) {
  return channel->WaitForConnected(std::chrono::system_clock::now() +
                                   std::chrono::milliseconds(timeout_ms));
}

grpc::Status ToGrpcStatus(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(static_cast<int>(s.code())),
                      std::string(s.message()));
}

absl::Status FromGrpcStatus(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(static_cast<int>(s.error_code())),
                      s.error_message());
}

namespace {
prometheus::Family<prometheus::Histogram>& RpcDurations() {
  static auto& f = HistogramFamily("lopt_rpc_duration_seconds",
                                   "Server-side duration of gRPC calls (streams: their lifetime)");
  return f;
}
const char* CodeName(grpc::StatusCode c) {
  static const char* kNames[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT",
                                 "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
                                 "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
                                 "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
                                 "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
  int i = static_cast<int>(c);
  return i >= 0 && i <= 16 ? kNames[i] : "UNKNOWN";
}
}  // namespace

RpcTimer::RpcTimer(std::string service, std::string method)
    : service_(std::move(service)), method_(std::move(method)),
      start_(std::chrono::steady_clock::now()) {}

grpc::Status RpcTimer::Done(grpc::Status status) {
  if (!done_) {
    done_ = true;
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    RpcDurations()
        .Add({{"service", service_}, {"method", method_}, {"code", CodeName(status.error_code())}},
             SecondsBuckets())
        .Observe(s);
  }
  return status;
}

RpcTimer::~RpcTimer() {
  if (!done_) Done(grpc::Status(grpc::StatusCode::UNKNOWN, ""));
}

}  // namespace lopt
