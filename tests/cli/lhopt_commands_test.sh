#!/bin/bash
# README's LHOPT commands on a job that trains in about a second: lopt train
# (a controller), lopt schedule, lopt eval --schedule and --controller; and the
# same with the controller shipped in models/.
#
#   lhopt_commands_test.sh LOPT SOURCE_DIR WORK_DIR
set -u
LOPT=$1 SRC=$2 WORK=$3
JOB=$SRC/tests/data/tiny_lhopt.textproto
fail() { echo "FAIL: $*"; for f in "$WORK"/*.out; do echo "--- $f"; cat "$f"; done; exit 1; }
rm -rf "$WORK" && mkdir -p "$WORK"
"$LOPT" train --job "$JOB" --out "$WORK/run" --threads 1 --no-eval --no-progress >"$WORK/train.out" 2>&1 ||
  fail "lopt train (LHOPT) failed"
C=$WORK/run/controller.lhopt
[ -f "$C" ] && [ -f "$WORK/run/metrics.csv" ] && [ -f "$WORK/run/job.textproto" ] || fail "the run directory lacks files"
"$LOPT" schedule --controller "$C" --job "$JOB" --out "$WORK/sched" --threads 1 >"$WORK/schedule.out" 2>&1 ||
  fail "lopt schedule failed"
[ -f "$WORK/sched/schedule.json" ] || fail "no schedule.json"
"$LOPT" eval --schedule "$WORK/sched/schedule.json" --job "$JOB" --out "$WORK/eval_s" --seeds 1 --threads 1 \
  >"$WORK/eval_schedule.out" 2>&1 || fail "lopt eval --schedule failed"
"$LOPT" eval --controller "$C" --job "$JOB" --out "$WORK/eval_c" --seeds 1 --threads 1 \
  >"$WORK/eval_controller.out" 2>&1 || fail "lopt eval --controller failed"
grep -q "^controller " "$WORK/eval_controller.out" || fail "lopt eval --controller has no controller row"
# A controller passed where a learned optimizer goes is named, with the flag to use.
"$LOPT" eval --optimizer "$C" >"$WORK/wrong_flag.out" 2>&1 && fail "lopt eval --optimizer took a controller"
grep -q "is an LHOPT controller (lhopt_lstm), not a learned optimizer: pass it with --controller" \
  "$WORK/wrong_flag.out" || fail "no hint at --controller"
# The shipped controller works out of the box (README): it loads, records a
# schedule and runs online on a task it never trained on.
S=$SRC/models/lhopt_mlp_quadratic.lhopt
"$LOPT" inspect "$S" >"$WORK/shipped_inspect.out" 2>&1 || fail "lopt inspect of the shipped controller failed"
grep -q "LHOPT controller" "$WORK/shipped_inspect.out" || fail "the shipped file is not a controller"
"$LOPT" schedule --controller "$S" --job "$SRC/bench/lhopt/transfer_cnn.textproto" --out "$WORK/shipped_sched" \
  --steps 40 --decisions 4 --threads 1 >"$WORK/shipped_schedule.out" 2>&1 || fail "lopt schedule with the shipped controller failed"
[ -f "$WORK/shipped_sched/schedule.json" ] || fail "no schedule.json from the shipped controller"
"$LOPT" eval --controller "$S" --job "$SRC/bench/lhopt/transfer_cnn.textproto" --out "$WORK/shipped_eval" --steps 20 \
  --seeds 1 --threads 1 >"$WORK/shipped_eval.out" 2>&1 || fail "lopt eval --controller with the shipped controller failed"
grep -q "^controller " "$WORK/shipped_eval.out" || fail "the shipped controller's eval has no controller row"
echo PASS
