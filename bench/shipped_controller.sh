#!/bin/bash
# The shipped LHOPT controller on a study's job (bench/neumf, bench/speech): online
# (lopt eval --controller) and the schedule it records on that task replayed
# (lopt eval --schedule), from the same initialisations; bench/shipped_controller.py
# reads the results.
#
#   bench/shipped_controller.sh LOPT JOB OUT THREADS [DEVICE]   (DEVICE: cpu, cuda; default cpu)
set -euo pipefail
LOPT=$1 JOB=$2 OUT=$3 THREADS=$4 DEVICE=${5:-cpu}
C=models/lhopt_mlp_quadratic.lhopt
echo "== lopt eval --controller $C"
"$LOPT" eval --controller "$C" --job "$JOB" --out "$OUT/lhopt_mlp_quadratic" --threads "$THREADS" --device "$DEVICE" --no-progress
"$LOPT" schedule --controller "$C" --job "$JOB" --out "$OUT/lhopt_schedule" --threads "$THREADS" --device "$DEVICE" >/dev/null
echo "== lopt eval --schedule $OUT/lhopt_schedule/schedule.json"
"$LOPT" eval --schedule "$OUT/lhopt_schedule/schedule.json" --job "$JOB" \
  --out "$OUT/lhopt_mlp_quadratic_schedule" --threads "$THREADS" --device "$DEVICE" --no-progress
