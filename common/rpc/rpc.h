// One place that builds gRPC servers and channels with lopt's settings
// (REFERENCE.md section 6): keepalive agreed on both sides, a deadline on
// every call, grpc.health.v1 and server reflection on every server, an
// optional bearer token, and absl::Status <-> grpc::Status mapping.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace lopt {

// Keepalive, agreed on both sides: clients ping every kKeepaliveTimeMs and
// servers accept pings that often (a stricter server would close the
// connection with "too_many_pings").
inline constexpr int kKeepaliveTimeMs = 20000;
inline constexpr int kKeepaliveTimeoutMs = 10000;
// Every message stays under this: big tensors travel in ~1 MiB chunks.
inline constexpr int kMaxMessageBytes = 4 << 20;
inline constexpr int64_t kChunkBytes = 1 << 20;

// Reads a bearer token from a file (trailing whitespace removed). An empty
// path gives an empty token: no authentication.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

struct ServerConfig {
  std::string listen = "0.0.0.0:0";  // host:port; port 0 picks a free one
  std::string auth_token;            // empty: no authentication
  // PEM certificate chain and private key: TLS when set, plaintext when empty.
  std::string tls_cert_pem, tls_key_pem;
};

// Reads --tls-cert-file and --tls-key-file into `config` (both or neither;
// errors name the file). Both empty: the server stays plaintext.
absl::Status LoadServerTls(const std::string& cert_file, const std::string& key_file,
                           ServerConfig* config);

// Adds lopt's settings, health and reflection to `builder`, listening on
// config.listen. `*bound_port` receives the port once the server starts.
void ConfigureServer(grpc::ServerBuilder& builder, const ServerConfig& config, int* bound_port);

// Marks the server serving (or not) in its grpc.health.v1 service, both for
// the empty service name and for `service`.
void SetServing(grpc::Server* server, const std::string& service, bool serving);

// UNAUTHENTICATED unless the call carries "authorization: Bearer <token>"
// (OK when the server has no token).
grpc::Status CheckAuth(const grpc::ServerContext& context, const std::string& token);

struct ClientConfig {
  std::string target;       // host:port
  std::string auth_token;   // sent as a bearer token when not empty
  int64_t timeout_ms = 10000;
  bool tls = false;         // TLS, verifying the server against tls_ca_pem
  std::string tls_ca_pem;   // PEM roots to trust (empty with tls: the system's)
};

// Reads --tls-ca-file into `config` and turns TLS on; an empty path leaves
// the channel plaintext. Errors name the file.
absl::Status LoadClientTls(const std::string& ca_file, ClientConfig* config);

std::shared_ptr<grpc::Channel> MakeChannel(const ClientConfig& config);

// A context with the config's deadline (or `timeout_ms` when > 0) and token.
std::unique_ptr<grpc::ClientContext> MakeContext(const ClientConfig& config,
                                                 int64_t timeout_ms = 0);
// A context for a long-lived stream: no deadline, the token, wait for ready off.
std::unique_ptr<grpc::ClientContext> MakeStreamContext(const ClientConfig& config);

// Waits up to timeout_ms for the channel to connect.
bool WaitForConnected(grpc::Channel* channel, int64_t timeout_ms);

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

// Times a server method into lopt_rpc_duration_seconds{service,method,code}.
class RpcTimer {
 public:
  RpcTimer(std::string service, std::string method);
  // Records the duration with the status's code; returns it unchanged.
  grpc::Status Done(grpc::Status status);
  ~RpcTimer();

 private:
  std::string service_, method_;
  std::chrono::steady_clock::time_point start_;
  bool done_ = false;
};

}  // namespace lopt
