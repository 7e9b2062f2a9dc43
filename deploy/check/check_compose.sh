#!/bin/bash
# Offline check of deploy/compose with docker-compose (Debian 12's 1.29, which validates against
# the Compose Specification schema, GPU device reservations included): `config -q` of the GPU
# file and of the GPU file merged with the CPU override, with the example .env and with no .env
# at all, then what a merged file must hold (the CPU override switches the GPU worker off and
# its worker-cpu answers to the name Prometheus scrapes).
#   deploy/check/check_compose.sh
set -euo pipefail
cd "$(dirname "$0")/../compose"
command -v docker-compose >/dev/null || { echo "check_compose: docker-compose not found (scripts/bootstrap.sh installs it)" >&2; exit 1; }
export GRAFANA_ADMIN_PASSWORD=offline-check   # required by the file; never a real one
# Variables of the caller's environment would change what is checked.
unset LOPT_WORKERS LOPT_TOKEN_FILE LOPT_IMAGE_PREFIX LOPT_TAG COMPOSE_FILE COMPOSE_PROJECT_NAME
empty=$(mktemp); trap 'rm -f "$empty"' EXIT
fail=0
for env in .env.example "$empty"; do
  for files in "-f docker-compose.yml" "-f docker-compose.yml -f docker-compose.cpu.yml"; do
    what="docker-compose --env-file $( [ "$env" = "$empty" ] && echo '(empty)' || echo "$env") $files config -q"
    # shellcheck disable=SC2086
    if docker-compose --project-directory . --env-file "$env" $files config -q; then
      echo "ok: $what"
    else
      echo "FAILED: $what" >&2; fail=1
    fi
  done
done
gpu=$(docker-compose --project-directory . --env-file .env.example -f docker-compose.yml config)
cpu=$(docker-compose --project-directory . --env-file .env.example -f docker-compose.yml -f docker-compose.cpu.yml config)
# Debian's python3: it has PyYAML whenever docker-compose is installed (a dependency).
/usr/bin/python3 - "$gpu" "$cpu" <<'PY' || fail=1
import sys, yaml
gpu, cpu = (yaml.safe_load(s) for s in sys.argv[1:3])
problems = []
w = gpu["services"]["worker"]
devs = w.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
if not any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devs):
    problems.append("worker: no nvidia device reservation with capabilities [gpu]")
if w.get("deploy", {}).get("replicas") != 2:
    problems.append("worker: deploy.replicas does not follow LOPT_WORKERS (.env.example sets 2)")
for name, svc in gpu["services"].items():
    if name in ("buffer", "learner", "worker") and "healthcheck" not in svc:
        problems.append(f"{name}: no healthcheck")
    for dep, cond in (svc.get("depends_on") or {}).items():
        if cond.get("condition") == "service_healthy" and "healthcheck" not in gpu["services"][dep]:
            problems.append(f"{name}: waits for {dep} to be healthy, which has no healthcheck")
if "lopt_token" not in gpu.get("secrets", {}):
    problems.append("no lopt_token secret")
if cpu["services"]["worker"].get("profiles") != ["gpu"]:
    problems.append("CPU override: the GPU worker is not switched off (profiles: [gpu])")
wc = cpu["services"].get("worker-cpu", {})
if "worker" not in (wc.get("networks", {}).get("default") or {}).get("aliases", []):
    problems.append("CPU override: worker-cpu does not answer to the name worker")
if any("devices" in (wc.get("deploy", {}).get("resources", {}).get("reservations") or {}) for _ in [0]):
    problems.append("CPU override: worker-cpu reserves a device")
for p in problems:
    print("FAILED:", p, file=sys.stderr)
if not problems:
    print("ok: GPU reservation, replicas, healthchecks, depends_on conditions, secret, CPU override")
sys.exit(1 if problems else 0)
PY
[ $fail = 0 ] && echo "check_compose: OK" || { echo "check_compose: FAILED" >&2; exit 1; }
