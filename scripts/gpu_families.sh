#!/usr/bin/env bash
# Every task family on a device, through the three ways a job uses a task:
# ELO meta-training (`lopt train`: the unroller, its CUDA graph where the task
# can be captured, the replay buffer and behaviour cloning), the meta-test
# (`lopt eval`: the learned optimizer and AdamW on fresh optimizees) and an
# LHOPT controller run online (`lopt eval --controller`). Each family's job is
# tiny; what counts is that it runs on the device and its losses are finite
# (task_loss: the truncation's mean task loss at the first and last outer
# step; lopt/adamw/controller: final train loss of the meta-test). Prints one line a family and writes OUT/families.tsv.
#
#   scripts/gpu_families.sh BUILD DEVICE OUT
# Env: LOPT_DATA_DIR (Fashion-MNIST IDX), LOPT_TEXT_DIR (text for byte_lm),
# LOPT_SPEECH_DIR (a `lopt gen-speech` corpus: espeak-ng may be missing on
# the device), LOPT_FAMILIES (default: all eight below).
set -uo pipefail
build=${1:-build-gpu}
device=${2:-cuda}
out=${3:-families-out}
mkdir -p "$out"
lopt=$build/cli/lopt
data=${LOPT_DATA_DIR:-/usr/share/datasets/fashion-mnist}
text=${LOPT_TEXT_DIR:-/usr/share/games/fortunes}
speech=${LOPT_SPEECH_DIR:-}
tmp=$(mktemp -d /tmp/lopt-families-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
if [ -z "$speech" ]; then
  speech=$tmp/speech
  "$lopt" gen-speech --out "$speech" --seed 0 --utterances 60 --max-words 2 >/dev/null ||
    { echo "no speech corpus (set LOPT_SPEECH_DIR)"; speech=; }
fi
"$lopt" gen-movielens --out "$tmp/ml" --seed 0 --users 600 --items 400 --interactions 40000 >/dev/null
families=${LOPT_FAMILIES:-"fmnist_mlp fmnist_cnn fmnist_resnet noisy_quadratic byte_lm neumf speech_ctc speech_ctc_fp16"}
spec() {
  case $1 in
    fmnist_mlp) echo "fmnist_mlp { data_dir: \"$data\" hidden_sizes: 128 hidden_sizes: 128 }" ;;
    fmnist_cnn) echo "fmnist_cnn { data_dir: \"$data\" }" ;;
    fmnist_resnet) echo "fmnist_resnet { data_dir: \"$data\" channels: 16 channels: 32 }" ;;
    noisy_quadratic) echo "noisy_quadratic {}" ;;
    byte_lm) echo "byte_lm { data_path: \"$text\" }" ;;
    neumf) echo "neumf { data_path: \"$tmp/ml\" num_users: 600 num_items: 400 }" ;;
    speech_ctc) echo "speech_ctc { data_path: \"$speech\" batch_size: 8 }" ;;
    speech_ctc_fp16) echo "speech_ctc { data_path: \"$speech\" batch_size: 8 precision: FP16 }" ;;
  esac
}
printf "family\ttrain_s\tfirst_task_loss\tlast_task_loss\teval_s\tlopt_final\tadamw_final\tcontroller_s\tcontroller_final\tstatus\n" \
  >"$out/families.tsv"
status=0
for f in $families; do
  case $f in speech*) [ -n "$speech" ] || { echo "$f: skipped (no corpus)"; continue; } ;; esac
  job=$tmp/$f.textproto
  cat >"$job" <<JOB
name: "family_$f"
seed: 5
task { $(spec "$f") }
pes { num_tasks: 4 truncation_length: 10 min_unroll_length: 10 max_unroll_length: 40 }
elo { behavior_cloning { enabled: true } buffer { enabled: true } }
budget { outer_steps: 6 checkpoint_every: 3 }
eval { steps: 200 seeds: 2 record_every: 10 adamw_lrs: 0.001 }
JOB
  st=ok
  "$lopt" validate "$job" >"$out/$f.validate.log" 2>&1 || st=invalid
  t0=$(date +%s.%N)
  "$lopt" train --device "$device" --job "$job" --out "$tmp/run_$f" --no-eval --no-progress \
    >"$out/$f.train.log" 2>&1 || st=train_failed
  t1=$(date +%s.%N)
  "$lopt" eval --device "$device" --optimizer "$tmp/run_$f/optimizer.lopt" --job "$job" \
    --out "$tmp/eval_$f" --no-progress >"$out/$f.eval.log" 2>&1 || st=${st/ok/eval_failed}
  t2=$(date +%s.%N)
  "$lopt" eval --device "$device" --controller models/lhopt_mlp_quadratic.lhopt --job "$job" \
    --out "$tmp/ctl_$f" --seeds 1 --steps 200 --no-progress >"$out/$f.controller.log" 2>&1 ||
    st=${st/ok/controller_failed}
  t3=$(date +%s.%N)
  cp "$tmp/run_$f/metrics.csv" "$out/$f.metrics.csv" 2>/dev/null
  cp "$tmp/eval_$f/report.json" "$out/$f.eval.json" 2>/dev/null
  cp "$tmp/ctl_$f/report.json" "$out/$f.controller.json" 2>/dev/null
  line=$(python3 - "$f" "$t0" "$t1" "$t2" "$t3" "$st" "$out" <<'PY'
import csv, json, sys
f, t0, t1, t2, t3, st, out = sys.argv[1:]
def final(path, name):
    # lopt eval --optimizer: runs[] per seed (mean here); --controller: arms[].
    try:
        r = json.load(open(path))
    except Exception:
        return "-"
    v = [x["final_train_loss"] for x in r.get("runs", []) if x.get("optimizer") == name]
    v += [x["final_train_loss"] for x in r.get("arms", []) if x.get("arm") == name]
    return f"{sum(v) / len(v):.4f}" if v else "-"
try:
    rows = list(csv.DictReader(open(f"{out}/{f}.metrics.csv")))
    first, last = float(rows[0]["task_loss"]), float(rows[-1]["task_loss"])
    ml = f"{first:.4f}\t{last:.4f}"
except Exception:
    ml = "-\t-"
vals = [ml.split("\t")[1], final(f"{out}/{f}.eval.json", "lopt"), final(f"{out}/{f}.controller.json", "controller")]
if st == "ok" and any(v == "-" or v in ("nan", "inf") for v in vals):
    st = "missing_or_nonfinite"
print("\t".join([f, f"{float(t1) - float(t0):.1f}", ml, f"{float(t2) - float(t1):.1f}",
                 final(f"{out}/{f}.eval.json", "lopt"), final(f"{out}/{f}.eval.json", "adamw"),
                 f"{float(t3) - float(t2):.1f}", final(f"{out}/{f}.controller.json", "controller"), st]))
PY
)
  echo "$line" | tee -a "$out/families.tsv"
  st=$(echo "$line" | awk -F'\t' '{print $NF}')
  [ "$st" = ok ] || { status=1; tail -n 5 "$out/$f".*.log; }
done
exit $status
