#!/bin/bash
# Offline check of deploy/k8s: validate_k8s.js (schemas, unknown fields, references), then that
# a deliberately broken manifest fails it (the validator is not vacuous), and that the job file
# the ConfigMap carries is the one Compose mounts.
#   deploy/check/check_k8s.sh NODE_MODULES_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
deploy=$(dirname "$here")
export NODE_PATH=${1:?usage: check_k8s.sh NODE_MODULES_DIR}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
node "$here/validate_k8s.js" "$deploy/k8s"
cmp "$deploy/jobs/fmnist8_cluster.textproto" "$deploy/k8s/config/fmnist8_cluster.textproto"
# Negative controls: a wrong type and an unknown field must each fail.
sed 's/^  replicas: 2$/  replicas: "two"/' "$deploy/k8s/worker.yaml" > "$tmp/replicas-two.yaml"
sed 's/^      enableServiceLinks: false.*/      enableServiceLink: false/' "$deploy/k8s/worker.yaml" > "$tmp/unknown-field.yaml"
for bad in replicas-two unknown-field; do
  if cmp -s "$deploy/k8s/worker.yaml" "$tmp/$bad.yaml"; then echo "check_k8s: could not break worker.yaml for $bad" >&2; exit 1; fi
  if out=$(node "$here/validate_k8s.js" "$deploy/k8s" "$tmp/$bad.yaml" 2>&1); then
    echo "check_k8s: the validator accepted a broken manifest ($bad)" >&2; exit 1
  fi
  echo "ok: broken manifest ($bad) rejected: $(echo "$out" | head -n1)"
done
echo "check_k8s: OK"
