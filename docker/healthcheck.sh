#!/bin/bash
# Container health check of the lopt images (Docker HEALTHCHECK and Compose):
#   lopt-healthcheck METRICS_PORT [GRPC_PORT]
# Healthy when /metrics answers 200 and, given GRPC_PORT, the gRPC port takes
# a TCP connection. grpc_health_probe is not packaged for Debian or Ubuntu, so
# this does not ask grpc.health.v1; Kubernetes does, with its native gRPC probes.
set -eu
curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$1/metrics"
if [ -n "${2:-}" ]; then
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$2"
fi
