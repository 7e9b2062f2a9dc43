#!/bin/bash
# lopt select as a user runs it: a run that keeps snapshots (budget.snapshot_every),
# its meta-validation table and files, the kept optimizer that lopt eval takes;
# and the clear errors for a run without candidates and for bad flags.
#
#   select_test.sh LOPT SOURCE_DIR WORK_DIR
set -u
LOPT=$1 SRC=$2 WORK=$3
fail() { echo "FAIL: $*"; for f in "$WORK"/*.out; do echo "--- $f"; cat "$f"; done; exit 1; }
expect() { grep -q -- "$2" "$WORK/$1.out" || fail "$1: no line matching '$2'"; }
rm -rf "$WORK" && mkdir -p "$WORK"

sed 's/budget { outer_steps: 6 checkpoint_every: 2 }/budget { outer_steps: 6 checkpoint_every: 2 snapshot_every: 2 }/' \
  "$SRC/tests/data/smoke_job.textproto" >"$WORK/job.textproto"
grep -q "snapshot_every: 2" "$WORK/job.textproto" || fail "the smoke job's budget line changed"
"$LOPT" train --job "$WORK/job.textproto" --out "$WORK/run" --no-eval --no-progress --threads 1 \
  >"$WORK/train.out" 2>&1 || fail "lopt train failed"
for s in 2 4 6; do [ -f "$WORK/run/snapshots/step_00000$s.lopt" ] || fail "no snapshot of step $s"; done
[ -f "$WORK/run/snapshots/step_000003.lopt" ] && fail "a snapshot off the period"

"$LOPT" select --run "$WORK/run" --seeds 2 --steps 30 --threads 1 --no-progress \
  >"$WORK/select.out" 2>&1 || fail "lopt select failed"
expect select "^meta-validation: fmnist_mlp_8, 30 steps x 2 seeds (seed 2000004), 3 candidates"
expect select "step_000002 *2 "
expect select "step_000006 *6 "
expect select "^selected step_00000[246] (outer step [246]): $WORK/run/optimizer.selected.lopt"
# The selected file is the candidate the table marks, byte for byte.
best=$(sed -n 's/^\* \(step_[0-9]*\) .*/\1/p' "$WORK/select.out")
cmp -s "$WORK/run/snapshots/$best.lopt" "$WORK/run/optimizer.selected.lopt" || fail "selected file is not $best"
[ "$(wc -l <"$WORK/run/select/selection.csv")" = 4 ] || fail "selection.csv: not a header and 3 rows"
grep -q "\"selected\": \"$best\"" "$WORK/run/select/selection.json" || fail "selection.json names another"
"$LOPT" eval --optimizer "$WORK/run/optimizer.selected.lopt" --steps 20 --seeds 1 --threads 1 \
  --out "$WORK/eval" --no-progress >"$WORK/eval.out" 2>&1 || fail "lopt eval of the selected file failed"

# Candidates named by file (several runs' optimizers): named by their folder where the file
# is optimizer.lopt, written to the --run directory.
"$LOPT" select --run "$WORK/pick" "$WORK/run/optimizer.lopt" "$WORK/run/snapshots/step_000002.lopt" \
  --seeds 2 --steps 30 --threads 1 --no-progress >"$WORK/files.out" 2>&1 || fail "lopt select FILE... failed"
expect files "30 steps x 2 seeds (seed 2000004), 2 candidates"
expect files "^. run  *6 "
expect files "^. step_000002  *2 "
[ -f "$WORK/pick/optimizer.selected.lopt" ] && [ -f "$WORK/pick/select/selection.csv" ] || fail "no files in --run"

# What a user gets wrong.
"$LOPT" select --run "$WORK/nothing" >"$WORK/missing.out" 2>&1 && fail "select on a missing run succeeded"
expect missing "neither snapshots/\*.lopt nor optimizer.lopt: train with budget { snapshot_every: N }"
"$LOPT" select --run "$WORK/run" --seeds 0 >"$WORK/seeds.out" 2>&1 && fail "--seeds 0 accepted"
expect seeds "seeds in 1..1024"
"$LOPT" select >"$WORK/norun.out" 2>&1 && fail "select without --run succeeded"
expect norun "lopt select needs --run DIR"
echo PASS
