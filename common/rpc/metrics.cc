#include "common/rpc/metrics.h"

#include <mutex>

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <sstream>
#include <thread>

#include <prometheus/text_serializer.h>

#include "absl/strings/numbers.h"

#include "absl/strings/str_cat.h"

namespace lopt {

prometheus::Registry& MetricsRegistry() {
  static auto* registry = new std::shared_ptr<prometheus::Registry>(
      std::make_shared<prometheus::Registry>());
  return **registry;
}

namespace {
std::mutex& FamilyMu() {
  static std::mutex mu;
  return mu;
}
}  // namespace

namespace {

// A minimal HTTP/1.0 server for GET /metrics (and /healthz): one thread,
// one request per connection, the registry in Prometheus's text format.
// prometheus-cpp's civetweb exposer fails to start inside processes that
// load LibTorch (Debian's 1.13), so the services serve it themselves.
void ServeMetrics(int listen_fd) {
  while (true) {
    int fd = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE) continue;
      return;
    }
    timeval tv{5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    std::string req;
    char buf[2048];
    while (req.find("\r\n\r\n") == std::string::npos && req.size() < 16384) {
      ssize_t n = read(fd, buf, sizeof buf);
      if (n <= 0) break;
      req.append(buf, n);
    }
    std::string path;
    if (req.rfind("GET ", 0) == 0) path = req.substr(4, req.find(' ', 4) - 4);
    std::string status = "200 OK", type = "text/plain; version=0.0.4; charset=utf-8", body;
    if (path == "/metrics" || path.rfind("/metrics?", 0) == 0) {
      std::ostringstream out;
      prometheus::TextSerializer().Serialize(out, MetricsRegistry().Collect());
      body = out.str();
    } else if (path == "/healthz") {
      body = "ok\n";
    } else {
      status = req.rfind("GET ", 0) == 0 ? "404 Not Found" : "405 Method Not Allowed";
      body = "lopt serves GET /metrics and GET /healthz\n";
    }
    std::string resp = absl::StrCat("HTTP/1.0 ", status, "\r\nContent-Type: ", type,
                                     "\r\nContent-Length: ", body.size(),
                                     "\r\nConnection: close\r\n\r\n", body);
    size_t off = 0;
    while (off < resp.size()) {
      ssize_t n = write(fd, resp.data() + off, resp.size() - off);
      if (n <= 0) break;
      off += n;
    }
    close(fd);
  }
}

}  // namespace

absl::Status StartMetricsServer(const std::string& listen, int* port) {
  if (listen.empty()) return absl::OkStatus();
  static std::atomic<bool> started{false};
  if (started.exchange(true)) return absl::FailedPreconditionError("metrics server already started");
  auto colon = listen.rfind(':');
  int want = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), &want) ||
      want < 0 || want > 65535)
    return absl::InvalidArgumentError(
        absl::StrCat("metrics address must be HOST:PORT, got '", listen, "'"));
  std::string host = listen.substr(0, colon);
  if (host.empty() || host == "*") host = "0.0.0.0";
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(want));
  if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    addrinfo hints{}, *res = nullptr;
    hints.ai_family = AF_INET;
    if (getaddrinfo(host.c_str(), nullptr, &hints, &res) != 0 || !res)
      return absl::InvalidArgumentError(absl::StrCat("cannot resolve metrics host '", host, "'"));
    addr.sin_addr = reinterpret_cast<sockaddr_in*>(res->ai_addr)->sin_addr;
    freeaddrinfo(res);
  }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(fd, 64) != 0) {
    std::string err = strerror(errno);
    if (fd >= 0) close(fd);
    started = false;
    return absl::UnavailableError(absl::StrCat("cannot serve /metrics on ", listen, ": ", err));
  }
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  if (port) *port = ntohs(addr.sin_port);
  std::thread(ServeMetrics, fd).detach();
  return absl::OkStatus();
}

prometheus::Family<prometheus::Counter>& CounterFamily(const std::string& name,
                                                       const std::string& help) {
  std::lock_guard<std::mutex> l(FamilyMu());
  return prometheus::BuildCounter().Name(name).Help(help).Register(MetricsRegistry());
}
prometheus::Family<prometheus::Gauge>& GaugeFamily(const std::string& name,
                                                   const std::string& help) {
  std::lock_guard<std::mutex> l(FamilyMu());
  return prometheus::BuildGauge().Name(name).Help(help).Register(MetricsRegistry());
}
prometheus::Family<prometheus::Histogram>& HistogramFamily(const std::string& name,
                                                           const std::string& help) {
  std::lock_guard<std::mutex> l(FamilyMu());
  return prometheus::BuildHistogram().Name(name).Help(help).Register(MetricsRegistry());
}

const prometheus::Histogram::BucketBoundaries& SecondsBuckets() {
  static const prometheus::Histogram::BucketBoundaries b = {
      1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1, 3, 10, 30, 100};
  return b;
}

}  // namespace lopt
