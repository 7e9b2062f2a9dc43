// The process's one Prometheus registry and its /metrics endpoint.
// Names follow REFERENCE.md section 6: the lopt_ prefix, base units with unit
// suffixes, counters ending in _total, latencies as _seconds histograms, and
// bounded label values (a job label is removed when its job ends).
#pragma once

#include <memory>
#include <string>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "absl/status/status.h"

namespace lopt {

prometheus::Registry& MetricsRegistry();

// Serves MetricsRegistry() at http://<listen>/metrics ("0.0.0.0:9101").
// An empty listen does nothing. Returns the bound port through *port.
absl::Status StartMetricsServer(const std::string& listen, int* port = nullptr);

prometheus::Family<prometheus::Counter>& CounterFamily(const std::string& name,
                                                       const std::string& help);
prometheus::Family<prometheus::Gauge>& GaugeFamily(const std::string& name,
                                                   const std::string& help);
prometheus::Family<prometheus::Histogram>& HistogramFamily(const std::string& name,
                                                           const std::string& help);

// Buckets for latencies from 100 us to ~100 s.
const prometheus::Histogram::BucketBoundaries& SecondsBuckets();

}  // namespace lopt
