#!/bin/bash
# README's neumf commands, small: lopt gen-movielens (deterministic under a
# seed, the requested counts, errors that name the flag), lopt validate on a
# neumf job (and a bad one refused naming the field), and lopt eval with both
# shipped ELO optimizers reporting HR@10 and NDCG@10.
#
#   neumf_commands_test.sh LOPT SOURCE_DIR WORK_DIR
set -u
LOPT=$1 SRC=$2 WORK=$3
fail() { echo "FAIL: $*"; for f in "$WORK"/*.out; do echo "--- $f"; cat "$f"; done; exit 1; }
rm -rf "$WORK" && mkdir -p "$WORK"
GEN="--users 300 --items 200 --interactions 9000"
"$LOPT" gen-movielens --out "$WORK/ml" --seed 1 $GEN >"$WORK/gen.out" 2>&1 || fail "gen-movielens failed"
grep -q "wrote $WORK/ml/ratings.dat: 300 users, 200 items, 9000 ratings (seed 1)" "$WORK/gen.out" ||
  fail "gen-movielens did not say what it wrote"
"$LOPT" gen-movielens --out "$WORK/ml_again" --seed 1 $GEN >"$WORK/gen2.out" 2>&1 || fail "gen-movielens failed"
"$LOPT" gen-movielens --out "$WORK/ml_other" --seed 2 $GEN >"$WORK/gen3.out" 2>&1 || fail "gen-movielens failed"
cmp -s "$WORK/ml/ratings.dat" "$WORK/ml_again/ratings.dat" || fail "the same seed wrote other bytes"
cmp -s "$WORK/ml/ratings.dat" "$WORK/ml_other/ratings.dat" && fail "another seed wrote the same bytes"
[ "$(wc -l <"$WORK/ml/ratings.dat")" = 9000 ] || fail "not 9000 lines"
grep -qvE '^[0-9]+::[0-9]+::[1-5]::[0-9]+$' "$WORK/ml/ratings.dat" && fail "a line not in MovieLens' format"
[ "$(cut -d: -f1 "$WORK/ml/ratings.dat" | sort -u | wc -l)" = 300 ] || fail "not 300 users"
[ "$(cut -d: -f3 "$WORK/ml/ratings.dat" | sort -u | wc -l)" = 200 ] || fail "not 200 items"
"$LOPT" gen-movielens --out "$WORK/x" --users 10 --items 4 --interactions 100 >"$WORK/gen_bad.out" 2>&1 &&
  fail "gen-movielens took counts it cannot meet"
grep -q -- "--interactions must be in \[10, 20\]" "$WORK/gen_bad.out" || fail "no message naming --interactions"

cat >"$WORK/job.textproto" <<JOB
name: "neumf_smoke"
seed: 1
task { neumf { data_path: "$WORK/ml" num_users: 300 num_items: 200 eval_negatives: 50 batch_size: 64 } }
eval { steps: 60 seeds: 2 record_every: 10 test_every: 30 adamw_lrs: 0.01 adamw_lrs: 0.001 }
JOB
"$LOPT" validate "$WORK/job.textproto" >"$WORK/validate.out" 2>&1 || fail "lopt validate refused the neumf job"
grep -q "mlp_layers: 32" "$WORK/validate.out" || fail "validate did not fill in mlp_layers"
sed 's/batch_size: 64/batch_size: 64 negatives: 0/' "$WORK/job.textproto" >"$WORK/bad.textproto"
"$LOPT" validate "$WORK/bad.textproto" >"$WORK/validate_bad.out" 2>&1 && fail "lopt validate took negatives: 0"
grep -q "task.neumf.negatives must be in \[1, 1024\], got 0" "$WORK/validate_bad.out" || fail "no message naming the field"

"$LOPT" eval --optimizer "$SRC/models/fmnist8_elo.lopt" --job "$WORK/job.textproto" --out "$WORK/eval8" \
  --threads 1 --no-progress >"$WORK/eval8.out" 2>&1 || fail "lopt eval (fmnist8_elo) failed"
grep -q "HR@10 *NDCG@10" "$WORK/eval8.out" || fail "the table has no HR@10 / NDCG@10 columns"
grep -qE "^lopt +[0-9.]+ \+- " "$WORK/eval8.out" || fail "no lopt row"
grep -q "best AdamW of the grid" "$WORK/eval8.out" || fail "no best AdamW"
grep -q '"test_hit_rate": [0-9.]*, "test_ndcg": ' "$WORK/eval8/report.json" || fail "report.json lacks HR/NDCG"
head -1 "$WORK/eval8/test_curves.csv" | grep -q "test_hit_rate,test_ndcg" || fail "test_curves.csv lacks HR/NDCG"
"$LOPT" eval --optimizer "$SRC/models/fmnist28_mlp_elo_xi0.lopt" --job "$WORK/job.textproto" --out "$WORK/eval28" \
  --steps 30 --seeds 1 --threads 1 --no-progress >"$WORK/eval28.out" 2>&1 || fail "lopt eval (fmnist28_mlp_elo_xi0) failed"
grep -q "HR@10" "$WORK/eval28.out" || fail "no HR@10 with fmnist28_mlp_elo_xi0"
"$LOPT" compare "$WORK/eval8" "$WORK/eval28" --out "$WORK/compare" >"$WORK/compare.out" 2>&1 ||
  fail "lopt compare of two neumf reports failed"
grep -q "HR@10 *NDCG@10" "$WORK/compare.out" || fail "lopt compare shows no HR@10 / NDCG@10"
grep -qE "eval8 +lopt +[0-9.]+ \+- [0-9.]+ +[0-9.]+ \+- [0-9.]+ +- +0\.[0-9]{4} +0\.[0-9]{4}$" "$WORK/compare.out" ||
  fail "lopt compare's lopt row has no HR/NDCG (or shows an accuracy)"

# ELO: meta-training on a mixture with a neumf entry (elo.tasks), then the
# meta-test on neumf that lopt train runs at the end.
cat >"$WORK/elo.textproto" <<JOB
name: "neumf_elo"
seed: 1
task { neumf { data_path: "$WORK/ml" num_users: 300 num_items: 200 eval_negatives: 50 batch_size: 32 } }
elo { tasks { task { neumf { data_path: "$WORK/ml" num_users: 300 num_items: 200 eval_negatives: 50 batch_size: 32 } } }
      tasks { task { fmnist_mlp { image_size: 8 hidden_sizes: 8 batch_size: 32 } } } }
pes { num_tasks: 2 truncation_length: 5 min_unroll_length: 5 max_unroll_length: 20 }
budget { outer_steps: 3 checkpoint_every: 3 }
eval { steps: 20 seeds: 1 record_every: 10 adamw_lrs: 0.01 }
JOB
"$LOPT" train --job "$WORK/elo.textproto" --out "$WORK/elo_run" --threads 1 --fresh --no-progress \
  >"$WORK/elo_train.out" 2>&1 || fail "lopt train (ELO with a neumf entry) failed"
[ -f "$WORK/elo_run/optimizer.lopt" ] || fail "no optimizer.lopt"
grep -q "HR@10" "$WORK/elo_train.out" || fail "lopt train's meta-test on neumf has no HR@10"

# LHOPT: a controller trained on a mixture with a neumf entry, then evaluated
# on the neumf task (lopt eval --controller reports HR@10 / NDCG@10 too).
NEUMF="neumf { data_path: \"$WORK/ml\" num_users: 300 num_items: 200 eval_negatives: 50 batch_size: 32 }"
cat >"$WORK/lhopt.textproto" <<JOB
name: "neumf_lhopt"
seed: 2
task { $NEUMF }
eval { steps: 40 seeds: 1 record_every: 10 adamw_lrs: 0.01 }
lhopt {
  tasks { task { noisy_quadratic { min_dim: 5 max_dim: 10 } } }
  tasks { task { $NEUMF } weight: 2 }
  min_inner_steps: 20 max_inner_steps: 30 min_decisions: 2 max_decisions: 4
  particles: 2 episodes_per_iteration: 4 iterations: 1 hidden_size: 16
  curve_points: 3 baseline_refresh_iterations: 1 instances_per_task: 1
}
JOB
"$LOPT" train --job "$WORK/lhopt.textproto" --out "$WORK/lhopt_run" --threads 1 --no-eval --no-progress \
  >"$WORK/lhopt_train.out" 2>&1 || fail "lopt train (LHOPT with a neumf entry) failed"
"$LOPT" eval --controller "$WORK/lhopt_run/controller.lhopt" --job "$WORK/lhopt.textproto" --out "$WORK/lhopt_eval" \
  --seeds 1 --threads 1 >"$WORK/lhopt_eval.out" 2>&1 || fail "lopt eval --controller on neumf failed"
grep -q "HR@10 *NDCG@10" "$WORK/lhopt_eval.out" || fail "lopt eval --controller has no HR@10 / NDCG@10"
grep -q '"test_hit_rate": ' "$WORK/lhopt_eval/report.json" || fail "the LHOPT report lacks HR"
echo PASS
