#!/usr/bin/env bash
# The services as a user runs them, on one machine, timed: lopt-buffer,
# lopt-learner and one lopt-worker on DEVICE (cpu or cuda) on loopback; the
# embedded default job (`lopt print-default-job`) submitted and watched with
# loptctl; its optimizer exported and meta-tested with `lopt eval`.
#
#   scripts/services_run.sh [build-dir] [cpu|cuda] [out-dir]
# Env: LOPT_JOB (a job file to run instead of the embedded default job),
# LOPT_JOB_DATA_DIR (Fashion-MNIST IDX dir for the default job), LOPT_EVAL_DEVICE (the
# meta-test's device, default cpu), LOPT_OUTER_STEPS
# (override the job's budget, e.g. 20 for a smoke run), LOPT_EVAL_STEPS, LOPT_WORKER_ARGS and
# LOPT_LEARNER_ARGS (extra flags, e.g. --threads=1 on a shared CPU).
# Prints the wall time from submit to success and the meta-test table; logs in out-dir. The
# learner runs with --meta-test=false, so that the time is meta-training's: the script
# meta-tests the exported optimizer with `lopt eval` itself.
set -uo pipefail
build=${1:-build}
device=${2:-cpu}
out=${3:-services-out}
mkdir -p "$out"
d=$(mktemp -d /tmp/lopt-svc-XXXXXX)
job=$d/job.textproto
if [ -n "${LOPT_JOB:-}" ]; then cp "$LOPT_JOB" "$job"; else "$build/cli/lopt" print-default-job >"$job"; fi
if [ -n "${LOPT_JOB_DATA_DIR:-}" ]; then
  sed -i "s#fmnist_mlp {#fmnist_mlp { data_dir: \"$LOPT_JOB_DATA_DIR\"#" "$job"
fi
if [ -n "${LOPT_OUTER_STEPS:-}" ]; then
  sed -i "s#outer_steps: [0-9]*#outer_steps: $LOPT_OUTER_STEPS#" "$job"
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
bport=$(free_port); lport=$(free_port)
"$build/buffer_server/lopt-buffer" --listen=127.0.0.1:$bport --metrics-listen=127.0.0.1:0 \
  --db-path=$d/buffer >"$out/svc_buffer.log" 2>&1 & bpid=$!
"$build/learner/lopt-learner" --listen=127.0.0.1:$lport --metrics-listen=127.0.0.1:0 \
  --state-dir=$d/learner --buffer=127.0.0.1:$bport --meta-test=false ${LOPT_LEARNER_ARGS:-} \
  >"$out/svc_learner.log" 2>&1 & lpid=$!
"$build/worker/lopt-worker" --learner=127.0.0.1:$lport --buffer=127.0.0.1:$bport \
  --device=$device --name=w-$device --metrics-listen=127.0.0.1:0 ${LOPT_WORKER_ARGS:-} >"$out/svc_worker.log" 2>&1 & wpid=$!
trap 'kill $wpid $lpid $bpid 2>/dev/null' EXIT
ctl="$build/cli/loptctl --learner=127.0.0.1:$lport"
for _ in $(seq 50); do $ctl health >/dev/null 2>&1 && break; sleep 0.2; done
status=0
t1=$(date +%s.%N)
$ctl submit "$job" --watch --no-progress >"$out/svc_submit.log" 2>&1 || status=1
wall=$(python3 -c "import time; print(round(time.time() - $t1, 1))")
tail -2 "$out/svc_submit.log"
id=$(head -1 "$out/svc_submit.log")
steps=$(grep -o 'outer_steps: [0-9]*' "$job" | grep -o '[0-9]*')
tasks=$(grep -o 'num_tasks: [0-9]*' "$job" | grep -o '[0-9]*')
trunc=$(grep -o 'truncation_length: [0-9]*' "$job" | grep -o '[0-9]*')
echo "services ($device worker): $steps outer steps in $wall s from submit to success" \
     "($(python3 -c "print(round($steps * 2 * ${tasks:-8} * ${trunc:-50} / $wall))") inner particle-steps/s)"
$ctl export "$id" --out $d/optimizer.lopt || status=1
kill $wpid $lpid $bpid 2>/dev/null; wait $wpid $lpid $bpid 2>/dev/null
grep -m2 "device" "$out/svc_worker.log"
"$build/cli/lopt" eval --optimizer $d/optimizer.lopt --job "$job" --no-progress --device "${LOPT_EVAL_DEVICE:-cpu}" \
  ${LOPT_EVAL_STEPS:+--steps $LOPT_EVAL_STEPS} --out "$out/svc_eval" 2>&1 | tail -12 || status=1
rm -rf "$d"
exit $status
