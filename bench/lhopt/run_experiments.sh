#!/bin/sh
# LHOPT experiments of issue 4 (slow; not part of CI). Usage, from the repo root
# after building lopt in build/:  sh bench/lhopt/run_experiments.sh OUT_DIR
set -e
OUT=${1:-runs/lhopt}
LOPT=${LOPT:-build/cli/lopt}
D=bench/lhopt
mkdir -p "$OUT"
# (a) PPO training on the quadratic + Fashion-MNIST MLP mixture.
/usr/bin/time -v $LOPT train --job examples/lhopt_mixture.textproto --out "$OUT/mix" --fresh \
  --no-progress --no-eval --threads 1 2> "$OUT/train.log"
# (a') the trained controller vs its untrained policy on the job's own task (held-out seeds).
$LOPT eval --controller "$OUT/mix/controller.lhopt" --job examples/lhopt_mixture.textproto \
  --out "$OUT/eval_mlp" --threads 1 --steps 300
# (b) transfer to the CNN (not trained on).
$LOPT eval --controller "$OUT/mix/controller.lhopt" --job $D/transfer_cnn.textproto \
  --out "$OUT/eval_cnn" --threads 1
# (b') its schedule, recorded on the CNN, replayed on byte_lm (a third task).
$LOPT schedule --controller "$OUT/mix/controller.lhopt" --job $D/transfer_cnn.textproto \
  --out "$OUT/schedule_cnn" --threads 1
$LOPT eval --schedule "$OUT/schedule_cnn/schedule.json" --job $D/transfer_byte_lm.textproto \
  --out "$OUT/eval_byte_lm_schedule" --threads 1
