#!/usr/bin/env bash
# The LHOPT paper's schedule transfer (its Figure 2), issue 14: record a schedule with a trained
# controller on a small byte-level transformer LM, replay it (by normalised progress) on byte_lm
# models of about 4x, 16x and 64x the parameters trained for proportionally longer, and compare
# it with AdamW, constant and cosine, each tuned over a learning-rate grid, from the same
# initialisations and data order (`lopt eval --schedule`). Then bench/lhopt/speedup.py gives,
# per size, the speed-up of the replayed schedule (as recorded, and its shape at the best peak
# lr of the grid) over the best AdamW of each kind.
#
#   bench/lhopt/transfer_sizes.sh BUILD_DIR OUT_DIR [SIZE...]
#
# SIZE: s1 s4 s16 s64 (default all; the byte_lm d/layers/context and steps below).
# Env: LOPT_DEVICE (cpu), LOPT_THREADS (1), LOPT_CONTROLLER (models/lhopt_mlp_quadratic.lhopt),
# LOPT_TEXT (byte_lm's text, default the job's: Debian's fortunes), LOPT_SEEDS (3),
# LOPT_PARALLEL (1: the sizes one after another; on a GPU run them at once).
set -euo pipefail
build=${1:?build dir}
out=${2:?out dir}
shift 2
sizes=${*:-s1 s4 s16 s64}
lopt=$build/cli/lopt
here=$(cd "$(dirname "$0")" && pwd)
device=${LOPT_DEVICE:-cpu}
controller=${LOPT_CONTROLLER:-models/lhopt_mlp_quadratic.lhopt}
mkdir -p "$out"

# name -> "model_dim layers context steps" (parameters: 512d + ctx d + 2d + layers (12d^2 + 13d)).
spec_of() {
  case $1 in
    s1) echo "32 1 32 300" ;;      #    30,176 parameters
    s4) echo "64 2 32 1200" ;;     #   134,912 (4.5x)
    s16) echo "128 2 64 4800" ;;   #   470,528 (15.6x)
    s64) echo "192 4 64 19200" ;;  # 1,890,432 (62.6x)
    *) echo "unknown size $1" >&2; exit 2 ;;
  esac
}

job_of() {
  read -r d l c n <<<"$(spec_of "$1")"
  local every=$(( n / 15 ))
  cat <<JOB
# bench/lhopt/transfer_sizes.sh, size $1: byte_lm d$d, $l layer(s), context $c, $n steps.
name: "transfer_byte_lm_$1"
seed: 13
task { byte_lm { ${LOPT_TEXT:+data_path: "$LOPT_TEXT" }context_length: $c model_dim: $d num_heads: 2 num_layers: $l batch_size: 16 } }
eval { steps: $n seeds: ${LOPT_SEEDS:-3} record_every: $every adamw_lrs: 0.03 adamw_lrs: 0.01 adamw_lrs: 0.003 adamw_lrs: 0.001 adamw_lrs: 0.0003 adamw_lrs: 0.0001 adamw_weight_decay: 0.0001 }
JOB
}

# The schedule, recorded once on the smallest model at its budget.
job_of s1 >"$out/s1.textproto"
"$lopt" schedule --controller "$controller" --job "$out/s1.textproto" --out "$out/schedule" \
  --device "$device" --threads "${LOPT_THREADS:-1}" >"$out/schedule.log" 2>&1
pids=()
for s in $sizes; do
  job_of "$s" >"$out/$s.textproto"
  run() {
    t0=$(date +%s)
    "$lopt" eval --schedule "$out/schedule/schedule.json" --job "$out/$1.textproto" --device "$device" \
      --threads "${LOPT_THREADS:-1}" --out "$out/$1" >"$out/$1.log" 2>&1
    echo "$1: $(( $(date +%s) - t0 )) s" | tee -a "$out/wall.txt"
  }
  if [ "${LOPT_PARALLEL:-1}" -gt 1 ]; then run "$s" & pids+=($!); else run "$s"; fi
done
[ ${#pids[@]} -gt 0 ] && wait "${pids[@]}"
dirs=()
for s in $sizes; do [ -f "$out/$s/report.json" ] && dirs+=("$out/$s"); done
python3 "$here/speedup.py" "${dirs[@]}" --arms schedule,schedule_peak --json "$out/speedups.json" |
  tee "$out/speedups.txt"
