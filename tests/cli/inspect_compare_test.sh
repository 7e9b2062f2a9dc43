#!/bin/bash
# lopt inspect on the shipped optimizer and on a controller it trains;
# lopt eval's plot (seed bands, test curves beside the training loss, the
# meta-training horizon); lopt compare of two eval reports.
#
#   inspect_compare_test.sh LOPT SOURCE_DIR WORK_DIR
set -u
LOPT=$1 SRC=$2 WORK=$3
fail() { echo "FAIL: $*"; for f in "$WORK"/*.out; do echo "--- $f"; cat "$f"; done; exit 1; }
expect() { grep -q -- "$2" "$WORK/$1.out" || fail "$1: no line matching '$2'"; }
rm -rf "$WORK" && mkdir -p "$WORK"
M=$SRC/models/fmnist8_elo.lopt

# inspect: architecture, options, provenance of a .lopt.
"$LOPT" inspect "$M" >"$WORK/inspect.out" 2>&1 || fail "lopt inspect failed"
expect inspect "^$M: learned optimizer (lopt.v1.OptimizerFile, format 1)"
expect inspect "^architecture: small_fc_lopt, a per-parameter MLP 39 -> 32 -> 32 -> 2"
expect inspect "^theta: 2402 values"
expect inspect "^  w1  \[32, 32\]"
expect inspect "^  step_mult: 0.001"
expect inspect "^  job: fmnist8_elo"
expect inspect "^  task: fmnist_mlp {"
expect inspect "^  outer step: 2000 of 2000"
expect inspect "^  meta-loss: [0-9.]"
expect inspect "^  meta-training horizon: 300 inner steps"
# --job prints the job alone, as a file lopt reads.
"$LOPT" inspect "$M" --job >"$WORK/job.textproto" 2>"$WORK/inspect_job.out" || fail "inspect --job failed"
"$LOPT" validate "$WORK/job.textproto" >"$WORK/validate.out" 2>&1 || fail "inspect --job is not a valid job"
cmp -s <(sed -n '/^job (/,$p' "$WORK/inspect.out" | tail -n +2 | sed 's/^  //') "$WORK/job.textproto" ||
  fail "inspect's job differs from inspect --job's"

# inspect: an LHOPT controller (trained here, one PPO iteration).
"$LOPT" train --job "$SRC/tests/data/tiny_lhopt.textproto" --out "$WORK/lhopt" --no-eval \
  --no-progress --threads 1 >"$WORK/lhopt_train.out" 2>&1 || fail "training the controller failed"
"$LOPT" inspect "$WORK/lhopt/controller.lhopt" >"$WORK/inspect_lhopt.out" 2>&1 || fail "inspect .lhopt failed"
expect inspect_lhopt "LHOPT controller (lopt.v1.LhoptControllerFile, format 1)"
expect inspect_lhopt "^architecture: lhopt_lstm, an LSTM policy: [0-9]* features -> LSTM(16)"
expect inspect_lhopt "^  job: tiny_lhopt"
expect inspect_lhopt "^  PPO iteration: 1 of 1"
expect inspect_lhopt "^  mean episode reward: "
[ -f "$WORK/lhopt/job.textproto" ] || fail "the LHOPT run directory has no job.textproto"
# A file of neither kind, and a missing one.
"$LOPT" inspect "$SRC/tests/data/smoke_job.textproto" >"$WORK/inspect_bad.out" 2>&1 && fail "inspect accepts a job file"
expect inspect_bad "is neither a learned optimizer (.lopt) nor an LHOPT controller (.lhopt)"
"$LOPT" inspect "$WORK/nope.lopt" >"$WORK/inspect_missing.out" 2>&1 && fail "inspect accepts a missing file"
expect inspect_missing "cannot read .*nope.lopt: No such file or directory"

# eval: the plot has seed bands, test curves and the horizon.
cat >"$WORK/eval_job.textproto" <<EOF
name: "eval_plot"
seed: 1
task { fmnist_mlp { image_size: 8 hidden_sizes: 32 batch_size: 32 } }
eval { steps: 60 seeds: 2 record_every: 10 test_every: 20 adamw_lrs: 0.01 adamw_lrs: 0.001 }
EOF
"$LOPT" eval --optimizer "$M" --job "$WORK/eval_job.textproto" --out "$WORK/a/eval" \
  --threads 1 --no-progress >"$WORK/eval_a.out" 2>&1 || fail "lopt eval failed"
# The second with ELO's inference schedule as a third learned optimizer.
"$LOPT" eval --optimizer "$M" --job "$WORK/eval_job.textproto" --out "$WORK/b/eval" --steps 40 \
  --lopt-options 'warmup_fraction: 0.05' --threads 1 --no-progress >"$WORK/eval_b.out" 2>&1 ||
  fail "lopt eval --lopt-options failed"
expect eval_b "^lopt_scheduled "
E=$WORK/a/eval
[ "$(head -1 "$E/test_curves.csv")" = "optimizer,lr,seed,step,test_loss,test_accuracy" ] || fail "no test_curves.csv"
[ "$(head -c 4 "$E/curves.png" | tail -c 3)" = PNG ] || fail "no curves.png"
grep -q "filledcurves" "$E/curves.gp" || fail "curves.png has no seed bands"
grep -q "set title 'test loss'" "$E/curves.gp" || fail "curves.png has no test loss"
grep -q "set title 'test accuracy'" "$E/curves.gp" || fail "curves.png has no test accuracy"
grep -q "set arrow 1 from 30[0-9]*, graph 0\|meta-training horizon (300 steps)" "$E/curves.gp" && fail "horizon 300 drawn inside 60 steps"
# The shipped optimizer's horizon (300 steps) is marked where the run is longer.
"$LOPT" eval --optimizer "$M" --job "$WORK/eval_job.textproto" --out "$WORK/long" --steps 400 \
  --seeds 1 --threads 1 --no-progress >"$WORK/eval_long.out" 2>&1 || fail "lopt eval --steps 400 failed"
grep -q "meta-training horizon (300 steps)" "$WORK/long/curves.gp" || fail "the horizon is not marked"
colors=$(grep -o "lc rgb '#[0-9a-f]*'" "$E/curves.gp" | sort -u | wc -l)
[ "$colors" -ge 4 ] || fail "the 4 optimizers share colours ($colors distinct)"

# compare: the two reports side by side.
"$LOPT" compare "$WORK/a" "$WORK/b/eval" --names long,short --out "$WORK/cmp" >"$WORK/compare.out" 2>&1 ||
  fail "lopt compare failed"
expect compare "^long   fmnist_mlp_8.*, 60 steps, 2 seeds"
expect compare "^short  fmnist_mlp_8.*, 40 steps, 2 seeds"
expect compare "^long   lopt  .* +- "
expect compare "^short  lopt_untrained "
expect compare "^short  lopt_scheduled "
expect compare "^long   adamw lr=0.0[01]* (best) "
[ "$(head -c 4 "$WORK/cmp/compare.png" | tail -c 3)" = PNG ] || fail "no compare.png"
[ "$(grep -o "title 'long: \|title 'short: " "$WORK/cmp/compare.gp" | wc -l)" -eq 4 ] || fail "compare.png lacks a run's lines"
"$LOPT" compare "$WORK/nothing" >"$WORK/compare_bad.out" 2>&1 && fail "compare accepts a missing run"
expect compare_bad "nothing: no such run"
echo PASS
