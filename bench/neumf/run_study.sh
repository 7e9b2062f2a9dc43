#!/bin/bash
# The neumf study (issue 16): `lopt eval` on a synthetic MovieLens-1M-shaped
# set, the shipped ELO optimizers and the shipped LHOPT controller (online and
# its recorded schedule replayed) against AdamW over a constant learning-rate
# grid, several seeds; HR@10, NDCG@10 and the final training loss. Writes
# OUT/{data,job.textproto,<optimizer>/,table.md} and prints the table.
#
#   bench/neumf/run_study.sh [OUT]        (default OUT: runs/neumf_study)
#
# Environment (the defaults are what bench/neumf/README.md reports):
#   LOPT=build/cli/lopt  USERS=1000 ITEMS=800 INTERACTIONS=100000 DATA_SEED=0
#   STEPS=1000 SEEDS=3 BATCH=256 THREADS=1
# (USERS=6040 ITEMS=3706 INTERACTIONS=1000209 is MovieLens-1M's size, the
# generator's default; on a shared 2-core box keep THREADS=1: LibTorch's
# spinning OpenMP threads made a second thread 10x slower there.)
#   LRS="0.01 0.004 0.001 0.0004 0.0001"   AdamW's grid (constant lr)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-runs/neumf_study}
LOPT=${LOPT:-build/cli/lopt}
USERS=${USERS:-1000} ITEMS=${ITEMS:-800} INTERACTIONS=${INTERACTIONS:-100000} DATA_SEED=${DATA_SEED:-0}
STEPS=${STEPS:-1000} SEEDS=${SEEDS:-3} BATCH=${BATCH:-256} THREADS=${THREADS:-1}
LRS=${LRS:-"0.01 0.004 0.001 0.0004 0.0001"}
mkdir -p "$OUT"
start=$(date +%s)
"$LOPT" gen-movielens --out "$OUT/data" --seed "$DATA_SEED" --users "$USERS" --items "$ITEMS" \
  --interactions "$INTERACTIONS"
grid=""
for lr in $LRS; do grid="$grid adamw_lrs: $lr"; done
job() {  # job(FILE, ADAMW_GRID)
  cat >"$1" <<JOB
name: "neumf_study"
seed: 0
task { neumf { data_path: "$OUT/data" num_users: $USERS num_items: $ITEMS batch_size: $BATCH } }
eval { steps: $STEPS seeds: $SEEDS record_every: 20 test_every: $((STEPS / 4)) $2 }
JOB
}
job "$OUT/job.textproto" "$grid"
# AdamW runs once, with the first optimizer; the second's eval carries one
# AdamW point only (the same initialisations and batches: the same numbers).
job "$OUT/job_one_adamw.textproto" "adamw_lrs: 0.001"
"$LOPT" validate "$OUT/job.textproto" >/dev/null
first=1
for opt in fmnist8_elo fmnist28_mlp_elo_xi0; do
  j=$OUT/job.textproto
  [ $first = 1 ] || j=$OUT/job_one_adamw.textproto
  echo "== lopt eval --optimizer models/$opt.lopt ($STEPS steps, $SEEDS seeds)"
  "$LOPT" eval --optimizer "models/$opt.lopt" --job "$j" --out "$OUT/$opt" --threads "$THREADS" --no-progress
  first=0
done
bench/shipped_controller.sh "$LOPT" "$OUT/job.textproto" "$OUT" "$THREADS"
/usr/bin/python3 bench/neumf/make_table.py "$OUT" | tee "$OUT/table.md"
echo "study took $(( $(date +%s) - start )) s on $(nproc) cores; wrote $OUT/table.md"
