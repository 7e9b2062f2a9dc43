#!/usr/bin/env bash
# Where the end-to-end meta-training time of the embedded job goes on a GPU:
# `lopt train --device cuda --no-eval` of the embedded job and of variants
# with one feature off (the replay buffer, behaviour cloning, checkpoints),
# then, where nsys is installed, a CUDA API / kernel summary of a short run.
#
#   bench/gpu/e2e_breakdown.sh BUILD_DIR OUT_DIR [DATA_DIR]
# Env: LOPT_BREAKDOWN_STEPS (outer steps a variant, default 1000), LOPT_BREAKDOWN_DEVICE (cuda).
set -uo pipefail
build=${1:?build dir}
out=${2:?out dir}
data=${3:-}
steps=${LOPT_BREAKDOWN_STEPS:-1000}
device=${LOPT_BREAKDOWN_DEVICE:-cuda}
mkdir -p "$out"
base=$out/default.textproto
"$build/cli/lopt" print-default-job >"$base"
[ -n "$data" ] && sed -i "s#fmnist_mlp {#fmnist_mlp { data_dir: \"$data\"#" "$base"
sed -i "s#outer_steps: [0-9]*#outer_steps: $steps#" "$base"
variant() {  # name sed-expression
  sed "$2" "$base" >"$out/$1.textproto"
}
variant no_buffer 's#buffer { enabled: true#buffer { enabled: false#'
variant no_bc 's#behavior_cloning { enabled: true#behavior_cloning { enabled: false#'
variant no_ckpt 's#checkpoint_every: [0-9]*#checkpoint_every: 1000000#'
variant bare 's#buffer { enabled: true#buffer { enabled: false#; s#behavior_cloning { enabled: true#behavior_cloning { enabled: false#; s#checkpoint_every: [0-9]*#checkpoint_every: 1000000#'
printf "%-10s %8s %14s\n" variant "train s" "p-steps/s"
for v in default no_buffer no_bc no_ckpt bare; do
  rm -rf "/tmp/lopt-bd-$v"
  "$build/cli/lopt" train --device "$device" --job "$out/$v.textproto" --out "/tmp/lopt-bd-$v" \
    --no-eval --no-progress >"$out/$v.log" 2>&1 || { echo "$v failed"; tail -5 "$out/$v.log"; continue; }
  python3 - "$v" "/tmp/lopt-bd-$v/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[2]))
wall = s.get("wall_seconds", s.get("wall_s"))
rate = s.get("inner_particle_steps_per_second")
print(f"{sys.argv[1]:<10} {wall:8.1f} {rate:14.0f}")
PY
done
if command -v nsys >/dev/null; then
  sed "s#outer_steps: [0-9]*#outer_steps: 300#" "$base" >"$out/nsys.textproto"
  rm -rf /tmp/lopt-bd-nsys
  nsys profile -o "$out/e2e" --force-overwrite true --stats=false \
    "$build/cli/lopt" train --device cuda --job "$out/nsys.textproto" --out /tmp/lopt-bd-nsys \
    --no-eval --no-progress >"$out/nsys_run.log" 2>&1
  nsys stats --report cuda_api_sum --report cuda_gpu_mem_time_sum --format csv \
    "$out/e2e.nsys-rep" >"$out/nsys_stats.csv" 2>&1
  rm -f "$out/e2e.nsys-rep" "$out/e2e.sqlite"
  python3 - "$out/nsys_stats.csv" <<'PY'
import sys
for line in open(sys.argv[1]):
    f = line.strip().split(",")
    if len(f) > 3 and f[0].replace('"', "").replace(".", "").isdigit() and float(f[0].strip('"')) < 1:
        continue  # under 1% of the time
    print(line.rstrip()[:160])
PY
else
  echo "no nsys"
fi
