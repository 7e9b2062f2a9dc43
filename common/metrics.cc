#include "common/metrics.h"

#include <mutex>

#include <prometheus/exposer.h>

#include "absl/strings/str_cat.h"

namespace lopt {

prometheus::Registry& MetricsRegistry() {
  static auto* registry = new std::shared_ptr<prometheus::Registry>(
      std::make_shared<prometheus::Registry>());
  return **registry;
}

namespace {
std::shared_ptr<prometheus::Registry> SharedRegistry() {
  // The exposer needs a shared_ptr; the registry lives for the process.
  return std::shared_ptr<prometheus::Registry>(&MetricsRegistry(), [](auto*) {});
}
std::mutex& FamilyMu() {
  static std::mutex mu;
  return mu;
}
}  // namespace

absl::Status StartMetricsServer(const std::string& listen, int* port) {
  if (listen.empty()) return absl::OkStatus();
  static prometheus::Exposer* exposer = nullptr;
  if (exposer) return absl::FailedPreconditionError("metrics server already started");
  try {
    exposer = new prometheus::Exposer(listen);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("cannot serve /metrics on ", listen, ": ", e.what()));
  }
  exposer->RegisterCollectable(SharedRegistry());
  if (port) {
    auto ports = exposer->GetListeningPorts();
    *port = ports.empty() ? 0 : ports[0];
  }
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
