#!/bin/bash
# Offline check of the Prometheus files with promtool (Debian 12's package `prometheus`):
# the Compose config and rules, the rules' unit tests, the Kubernetes config (whose
# kubernetes_sd_configs Debian's promtool cannot parse: k8s_prometheus_config.js checks them
# and hands promtool the rest), and that Kubernetes' rules are the same file as Compose's.
#   deploy/check/check_prometheus.sh NODE_MODULES_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
deploy=$(dirname "$here")
export NODE_PATH=${1:?usage: check_prometheus.sh NODE_MODULES_DIR}
command -v promtool >/dev/null || { echo "check_prometheus: promtool not found (scripts/bootstrap.sh installs prometheus)" >&2; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
set -x
promtool check config "$deploy/prometheus/prometheus.yml"
promtool check rules "$deploy/prometheus/alerts.yml"
promtool test rules "$deploy/prometheus/alerts_test.yml"
cmp "$deploy/prometheus/alerts.yml" "$deploy/k8s/config/alerts.yml"
node "$here/k8s_prometheus_config.js" "$deploy/k8s/config/prometheus.yml" "$tmp/prometheus.yml"
cp "$deploy/k8s/config/alerts.yml" "$tmp/alerts.yml"
promtool check config "$tmp/prometheus.yml"
{ set +x; } 2>/dev/null
echo "check_prometheus: OK"
