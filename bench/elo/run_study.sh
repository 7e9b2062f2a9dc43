#!/usr/bin/env bash
# The ELO study (bench/elo/README.md): meta-trains each variant of
# bench/elo/jobs/ (naive LO, + uniform lengths, + behaviour cloning, ELO,
# LO with a curriculum, muLO over widths) with `lopt train`, meta-tests each
# at 10,000 steps against AdamW over the job's grid with `lopt eval` (plain,
# and with ELO's step-multiplier warm-up / cosine at inference), and runs
# `lopt eval-large` on wide MLPs and `lopt eval` on the out-of-distribution
# tasks (jobs/ood_*.textproto); then bench/elo/make_tables.py writes the
# tables and figures of the README from the result files.
#
#   bench/elo/run_study.sh BUILD_DIR RUNS_DIR [PHASE...]
#
# PHASE: train (every variant:seed at once, on one device; at the deadline
# each run stops after its outer step under way (SIGTERM), writes the
# optimizer it has and resumes from its checkpoint the next time), select (`lopt select`
# on each run's snapshots), eval, ood, evallarge,
# pack (RUNS_DIR's result files, without checkpoints and buffers, into
# $OUT/study.tar.gz). Default: train eval ood evallarge pack.
# Env: LOPT_STUDY_RUNS ("variant:seed ..."), LOPT_STUDY_DEVICE (cuda),
# LOPT_STUDY_DEADLINE_S (train's wall limit, 480; a run it stops below alpha 1 is not ready
# to train alone: give such a variant fewer steps), LOPT_DATA_DIR (the
# Fashion-MNIST IDX directory, default the jobs'), LOPT_TEXT_DIR (byte_lm's
# text, default the jobs'), LOPT_STUDY_OUTER_STEPS
# (overrides budget.outer_steps; LOPT_STUDY_OUTER_STEPS_MULO etc. for one
# variant), LOPT_STUDY_SCHEDULES (warmup cosine: the
# inference schedules meta-tested), LOPT_STUDY_EVAL_SEEDS, LOPT_STUDY_EVAL_TAG (a suffix of
# the eval folders, e.g. _6seeds), LOPT_STUDY_ADAMW_LRS ("1e-3 3e-3": the AdamW grid of every
# meta-test instead of the jobs'; LOPT_STUDY_ADAMW_LRS_OOD_RESNET etc. for one job),
# LOPT_STUDY_SELECT_SEEDS (4), LOPT_STUDY_SELECT_OPTIONS (--lopt-options of select),
# LOPT_STUDY_EVAL_FILE (selected: eval meets optimizer.selected.lopt), LOPT_STUDY_OOD_VARIANTS ("variant[:seed] ..."), LOPT_STUDY_OOD_STEPS,
# LOPT_STUDY_OOD_SCHEDULES (warmup cosine: ood_<task>/ and ood_<task>_cosine/),
# LOPT_STUDY_WIDE ("width:steps ..."), LOPT_STUDY_WIDE_LRS, LOPT_STUDY_SCALE=cpu (the
# study shrunk for a 2-core CPU: 8x8 images, widths / 4, 1,000 outer steps).
# The GPU machine (shared/gpu/README.md):
#   source .debs/device-env.sh && cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release \
#     -DLOPT_CUDA=ON -DLOPT_BUILD_TESTS=OFF && cmake --build build-gpu --target lopt &&
#   LOPT_DATA_DIR=$PWD/.fmnist bench/elo/run_study.sh build-gpu /tmp/study
set -uo pipefail
build=${1:?build dir}
runs=${2:?runs dir}
shift 2
phases=${*:-train eval ood evallarge pack}
here=$(cd "$(dirname "$0")" && pwd)
lopt=$build/cli/lopt
device=${LOPT_STUDY_DEVICE:-cuda}
deadline=${LOPT_STUDY_DEADLINE_S:-480}
list=${LOPT_STUDY_RUNS:-"naive:0 naive:1 uniform:0 bc:0 elo:0 elo:1 curriculum:0 curriculum:1 mulo:0"}
out=${OUT:-$runs}
mkdir -p "$runs" "$out"

# The variant's job, with the data directory and step budget of this machine.
job_of() {
  local v=$1 f=$runs/jobs/$1.textproto
  # LOPT_STUDY_OUTER_STEPS_<VARIANT> (e.g. _MULO) overrides LOPT_STUDY_OUTER_STEPS for one variant.
  local per="LOPT_STUDY_OUTER_STEPS_${v^^}"
  local steps=${!per:-${LOPT_STUDY_OUTER_STEPS:-}}
  mkdir -p "$runs/jobs"
  sed -e "${LOPT_DATA_DIR:+s#fmnist_mlp {#fmnist_mlp { data_dir: \"$LOPT_DATA_DIR\"#g}" \
      -e "${LOPT_DATA_DIR:+s#fmnist_resnet {#fmnist_resnet { data_dir: \"$LOPT_DATA_DIR\"#g}" \
      -e "${LOPT_TEXT_DIR:+s#byte_lm {#byte_lm { data_path: \"$LOPT_TEXT_DIR\"#g}" \
      -e "${steps:+s#outer_steps: [0-9]*#outer_steps: $steps#}" \
      "$here/jobs/$v.textproto" >"$f"
  # LOPT_STUDY_ADAMW_LRS_<JOB> (e.g. _OOD_RESNET) overrides LOPT_STUDY_ADAMW_LRS for one job.
  local per_lrs="LOPT_STUDY_ADAMW_LRS_${v^^}"
  local lrs=${!per_lrs:-${LOPT_STUDY_ADAMW_LRS:-}}
  if [ -n "$lrs" ]; then
    local grid=""
    for lr in $lrs; do grid="$grid adamw_lrs: $lr"; done
    sed -i -e 's/ *adamw_lrs: [0-9.eE+-]*//g' -e "s/eval {/eval {$grid/" "$f"
  fi
  if [ "${LOPT_STUDY_SCALE:-}" = cpu ]; then
    # The same study shrunk for a 2-core CPU: 8x8 images, widths / 4
    # (muLO over 32/128/256 around base 32), 1,000 outer steps.
    sed -i -e 's/image_size: 28/image_size: 8/g' -e 's/hidden_sizes: 128/hidden_sizes: 32/g' \
      -e 's/hidden_sizes: 512/hidden_sizes: 128/g' -e 's/hidden_sizes: 1024/hidden_sizes: 256/g' \
      -e 's/mup_base_width: 128/mup_base_width: 32/g' -e 's/outer_steps: 3000/outer_steps: 1000/' "$f"
  fi
  echo "$f"
}

# ELO's inference schedules, as --lopt-options: warm-up over the first 5%, then
# constant ("warmup"), or then a cosine to 0.1 of step_mult ("cosine").
schedule_options() {
  case $1 in
    warmup) echo "warmup_fraction: 0.05" ;;
    cosine) echo "warmup_fraction: 0.05 step_mult_schedule: COSINE min_step_mult: 0.0001" ;;
    *) echo "unknown schedule $1" >&2; exit 2 ;;
  esac
}

for phase in $phases; do
  echo "=== $phase ($(date -u +%T))"
  case $phase in
    train)
      pids=()
      for r in $list; do
        v=${r%:*} s=${r#*:} dir=$runs/${r/:/_s}
        job=$(job_of "$v")
        [ -f "$dir/summary.json" ] && ! grep -q '"stopped_early": true' "$dir/summary.json" &&
          { echo "$r: done already"; continue; }
        # (The seed flag replaces the job's seed: meta-training seeds 0, 1, ...)
        ( t0=$(date +%s.%N)
          timeout "$deadline" "$lopt" train --job "$job" --seed "$s" --out "$dir" --device "$device" \
            --threads 1 --no-eval --no-progress >>"$dir.train.log" 2>&1
          rc=$?
          echo "$r: rc $rc, $(python3 -c "import time; print(round(time.time() - $t0, 1))") s" |
            tee -a "$dir.train.log" ) &
        pids+=($!)
      done
      wait "${pids[@]}" 2>/dev/null
      for r in $list; do
        dir=$runs/${r/:/_s}
        printf '%-14s ' "$r"; tail -1 "$dir/metrics.csv" 2>/dev/null | cut -d, -f1-3,10,11
        [ -f "$dir/summary.json" ] && tr -d '\n' <"$dir/summary.json" && echo
      done ;;
    eval)
      pids=()
      for r in $list; do
        v=${r%:*} dir=$runs/${r/:/_s}
        file=$dir/optimizer${LOPT_STUDY_EVAL_FILE:+.$LOPT_STUDY_EVAL_FILE}.lopt
        [ -f "$file" ] || { echo "$r: no $file"; continue; }
        job=$(job_of "$v")
        for name in ${LOPT_STUDY_SCHEDULES:-warmup cosine}; do
          opts=$(schedule_options "$name") || exit 2
          ev=eval_$name${LOPT_STUDY_EVAL_TAG:-}
          [ -f "$dir/$ev/report.json" ] && continue
          "$lopt" eval --optimizer "$file" --job "$job" --device "$device" \
            --lopt-options "$opts" ${LOPT_STUDY_EVAL_SEEDS:+--seeds $LOPT_STUDY_EVAL_SEEDS} \
            --out "$dir/$ev" --no-progress >"$dir.$ev.log" 2>&1 &
          pids+=($!)
        done
      done
      wait "${pids[@]}" 2>/dev/null
      for r in $list; do
        dir=$runs/${r/:/_s}
        [ -f "$dir/eval_warmup/table.txt" ] && { echo "--- $r"; cat "$dir/eval_warmup/table.txt"; }
      done ;;
    select)
      # Meta-validation of each run's snapshots (budget.snapshot_every):
      # `lopt select` keeps the best as optimizer.selected.lopt, on validation
      # seeds of its own (the job's seed + 2000003, the same for every run);
      # LOPT_STUDY_EVAL_FILE=selected meta-tests that file.
      pids=()
      for r in $list; do
        v=${r%:*} dir=$runs/${r/:/_s}
        [ -d "$dir/snapshots" ] || { echo "$r: no snapshots"; continue; }
        [ -f "$dir/select/selection.json" ] && continue
        "$lopt" select --run "$dir" --job "$(job_of "$v")" --device "$device" \
          --seeds "${LOPT_STUDY_SELECT_SEEDS:-4}" ${LOPT_STUDY_SELECT_OPTIONS:+--lopt-options "$LOPT_STUDY_SELECT_OPTIONS"} \
          --threads 2 --no-progress >"$dir.select.log" 2>&1 &
        pids+=($!)
      done
      wait "${pids[@]}" 2>/dev/null
      for r in $list; do
        dir=$runs/${r/:/_s}
        [ -f "$dir.select.log" ] && { echo "--- $r"; cat "$dir.select.log"; }
      done ;;
    ood)
      # Out of distribution on the device: the GPT-style byte_lm (and the
      # ResNet where the build has it), seed 0 of each variant (variant:seed for another).
      pids=()
      for v in ${LOPT_STUDY_OOD_VARIANTS:-naive elo curriculum mulo}; do
        case $v in *:*) dir=$runs/${v/:/_s} ;; *) dir=$runs/${v}_s0 ;; esac  # variant[:seed]
        [ -f "$dir/optimizer.lopt" ] || continue
        for t in $(cd "$here/jobs" && ls ood_*.textproto | sed 's/.textproto//'); do
          for name in ${LOPT_STUDY_OOD_SCHEDULES:-warmup}; do
            opts=$(schedule_options "$name") || exit 2
            o=$t
            [ "$name" = warmup ] || o=${t}_$name
            [ -f "$dir/$o/report.json" ] && continue
            "$lopt" eval --optimizer "$dir/optimizer.lopt" --job "$(job_of "$t")" --device "$device" \
              ${LOPT_STUDY_OOD_STEPS:+--steps $LOPT_STUDY_OOD_STEPS} ${LOPT_STUDY_EVAL_SEEDS:+--seeds $LOPT_STUDY_EVAL_SEEDS} \
              --lopt-options "$opts" --out "$dir/$o" --no-progress >"$dir.$o.log" 2>&1 &
            pids+=($!)
          done
        done
      done
      wait "${pids[@]}" 2>/dev/null
      for f in "$runs"/*_s*/ood_*/table.txt; do [ -f "$f" ] && { echo "--- $f"; cat "$f"; }; done ;;
    evallarge)
      # Width generalisation: the muLO and the ELO of seed 0 on 784-w-w-10.
      for r in ${LOPT_STUDY_WIDE_RUNS:-mulo:0 elo:0}; do
        dir=$runs/${r/:/_s}
        [ -f "$dir/optimizer.lopt" ] || continue
        for spec in ${LOPT_STUDY_WIDE:-1024:2000 4096:1000}; do
          w=${spec%:*} n=${spec#*:}
          "$lopt" eval-large --optimizer "$dir/optimizer.lopt" --device "$device" \
            ${LOPT_DATA_DIR:+--data-dir "$LOPT_DATA_DIR"} --hidden "$w,$w" --batch 1024 --steps "$n" \
            --adamw-lrs ${LOPT_STUDY_WIDE_LRS:-0.0001,0.0003,0.001,0.003} --lopt-options "warmup_fraction: 0.05" \
            --no-progress --out "$dir/evallarge_$w" >"$dir.evallarge_$w.log" 2>&1
          echo "--- $r width $w"; cat "$dir/evallarge_$w/table.txt" 2>/dev/null || tail -5 "$dir.evallarge_$w.log"
        done
      done ;;
    pack)
      nvidia-smi --query-gpu=name,driver_version --format=csv,noheader >"$runs/device.txt" 2>/dev/null ||
        rm -f "$runs/device.txt"
      tar -C "$runs" --exclude='checkpoint.pt' --exclude='buffer' -czf "$out/study.tar.gz" . &&
        ls -la "$out/study.tar.gz" ;;
    *) echo "unknown phase $phase"; exit 2 ;;
  esac
done
