#!/bin/sh
# LHOPT experiments of issue 4 (slow; not part of CI). Usage, from the repo root
# after building lopt in build/:  sh bench/lhopt/run_experiments.sh OUT_DIR
# The two trainings run at once (one core each, --threads 1); about 45 minutes
# on a 2-core box.
set -e
OUT=${1:-runs/lhopt}
LOPT=${LOPT:-build/cli/lopt}
D=bench/lhopt
mkdir -p "$OUT"
# (a) PPO training on the quadratic + Fashion-MNIST MLP mixture with the fixed
# yardstick, at REFERENCE's PPO lr 2e-4 and at 1e-3.
sed 's/lr: 0.0002/lr: 0.001/; s/name: "lhopt_mixture_yardstick"/name: "lhopt_mixture_yardstick_lr1e-3"/' \
  $D/mixture_yardstick.textproto > "$OUT/mix_lr1e-3.textproto"
nice -n 10 /usr/bin/time -v $LOPT train --job $D/mixture_yardstick.textproto --out "$OUT/mix_lr2e-4" \
  --fresh --no-progress --no-eval --threads 1 2> "$OUT/train_lr2e-4.log" &
nice -n 10 /usr/bin/time -v $LOPT train --job "$OUT/mix_lr1e-3.textproto" --out "$OUT/mix_lr1e-3" \
  --fresh --no-progress --no-eval --threads 1 2> "$OUT/train_lr1e-3.log" &
wait
for r in mix_lr2e-4 mix_lr1e-3; do python3 $D/block_table.py "$OUT/$r" 100 > "$OUT/$r/blocks.md"; done
C=${CONTROLLER:-$OUT/mix_lr2e-4/controller.lhopt}
# (a') the trained controller vs its untrained policy on the job's own task (held-out seeds).
$LOPT eval --controller "$C" --job $D/mixture_yardstick.textproto --out "$OUT/eval_mlp" \
  --threads 1 --steps 300
# (b) transfer to the CNN and to byte_lm (neither trained on).
$LOPT eval --controller "$C" --job $D/transfer_cnn.textproto --out "$OUT/eval_cnn" --threads 1
$LOPT eval --controller "$C" --job $D/transfer_byte_lm.textproto --out "$OUT/eval_byte_lm" --threads 1
# (b') its schedule, recorded on the CNN, replayed on byte_lm (a third task):
# as recorded (absolute) and its shape with the peak lr over the AdamW grid.
$LOPT schedule --controller "$C" --job $D/transfer_cnn.textproto --out "$OUT/schedule_cnn" --threads 1
$LOPT eval --schedule "$OUT/schedule_cnn/schedule.json" --job $D/transfer_byte_lm.textproto \
  --out "$OUT/eval_byte_lm_schedule" --threads 1
