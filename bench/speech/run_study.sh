#!/bin/bash
# The speech_ctc study (issue 16): `lopt eval` on a synthetic spoken
# digits-and-words corpus (`lopt gen-speech`: espeak-ng voices, sox noise),
# the shipped ELO optimizers and the shipped LHOPT controller (online and its
# recorded schedule replayed) against AdamW over a learning-rate grid, constant
# and cosine, several seeds; the test CTC loss along the run (the seed's
# Figure 6 analogue: validation CTC loss over training), the character error
# rate and the final training loss. Writes OUT/{data,job*.textproto,
# <optimizer>/,table.md,validation_ctc.png} and prints the table.
#
#   bench/speech/run_study.sh [OUT]        (default OUT: runs/speech_study)
#
# Environment (the defaults are what bench/speech/README.md reports):
#   LOPT=build/cli/lopt  UTTERANCES=240 MAX_WORDS=2 DATA_SEED=0
#   STEPS=1500 SEEDS=3 BATCH=8 THREADS=1 PRECISION=FP32 DEVICE=cpu
#   DATA=OUT/data (a corpus `lopt gen-speech` wrote: generated there when absent)
#   LRS="0.01 0.003 0.001 0.0003"           AdamW's grid (constant and cosine)
#   MODEL='conv_channels: 8 conv_channels: 8 sequence_layer: CONV1D num_sequence_layers: 2 hidden_size: 64'
# (keep THREADS=1 on a shared 2-core box: LibTorch's spinning OpenMP threads
# slow a second thread down there.)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-runs/speech_study}
LOPT=${LOPT:-build/cli/lopt}
UTTERANCES=${UTTERANCES:-240} MAX_WORDS=${MAX_WORDS:-2} DATA_SEED=${DATA_SEED:-0}
STEPS=${STEPS:-1500} SEEDS=${SEEDS:-3} BATCH=${BATCH:-8} THREADS=${THREADS:-1}
PRECISION=${PRECISION:-FP32} DEVICE=${DEVICE:-cpu}
DATA=${DATA:-$OUT/data}
LRS=${LRS:-"0.01 0.003 0.001 0.0003"}
MODEL=${MODEL:-"conv_channels: 8 conv_channels: 8 sequence_layer: CONV1D num_sequence_layers: 2 hidden_size: 64"}
mkdir -p "$OUT"
start=$(date +%s)
if [ ! -d "$DATA/train" ]; then
  "$LOPT" gen-speech --out "$DATA" --seed "$DATA_SEED" --utterances "$UTTERANCES" \
    --max-words "$MAX_WORDS"
fi
grid=""
for lr in $LRS; do grid="$grid adamw_lrs: $lr"; done
job() {  # job(FILE, EVAL_EXTRA)
  cat >"$1" <<JOB
name: "speech_study"
seed: 0
task { speech_ctc { data_path: "$DATA" $MODEL batch_size: $BATCH precision: $PRECISION } }
eval { steps: $STEPS seeds: $SEEDS record_every: 10 test_every: $((STEPS / 10)) $2 }
JOB
}
job "$OUT/job.textproto" "$grid adamw_cosine: true"
# AdamW runs once, with the first optimizer; the second's eval carries one
# AdamW point only (the same initialisations and batches: the same numbers).
job "$OUT/job_one_adamw.textproto" "adamw_lrs: 0.001"
"$LOPT" validate "$OUT/job.textproto" >/dev/null
first=1
for opt in fmnist8_elo fmnist28_mlp_elo_xi0; do
  j=$OUT/job.textproto
  [ $first = 1 ] || j=$OUT/job_one_adamw.textproto
  echo "== lopt eval --optimizer models/$opt.lopt ($STEPS steps, $SEEDS seeds)"
  t0=$(date +%s)
  "$LOPT" eval --optimizer "models/$opt.lopt" --job "$j" --out "$OUT/$opt" --threads "$THREADS" --device "$DEVICE" --no-progress
  echo "($opt: $(( $(date +%s) - t0 )) s)"
  first=0
done
bench/shipped_controller.sh "$LOPT" "$OUT/job.textproto" "$OUT" "$THREADS" "$DEVICE"
/usr/bin/python3 bench/speech/make_table.py "$OUT" | tee "$OUT/table.md"
echo "study took $(( $(date +%s) - start )) s on $(nproc) cores; wrote $OUT/table.md"
