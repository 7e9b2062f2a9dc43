#!/usr/bin/env bash
# On the GPU machine, from the checkout's root, after `source .debs/device-env.sh`
# (shared/gpu/README.md): configure and build with CUDA, then run the GPU
# checks and benchmarks. Logs and bench JSON go to $OUT (else ./gpu-out).
#
#   scripts/gpu_run.sh [build-dir] [steps...]      (default build-gpu; steps: all)
# Steps: steptest (the fused LO step against float64), mlptest (the fused
# MLP-task kernel against the CPU task), neumftest (the neumf family on CUDA
# against the CPU task), lhopttest (LHOPT episodes on CUDA against the CPU's),
# lhoptbench (bench_lhopt_episode on the CPU and on CUDA), unrollerbusy (unrollertest in
# LOPT_UNROLLER_COPIES copies at once, 6), unrollertest (the captured inner step
# against eager, and the CUDA unroller against the CPU one from the same seed,
# BC and the replay buffer on and off), pes (bench_pes_throughput, graph vs
# no graph vs JAX), train (`lopt train --device cuda` of the embedded job),
# services (lopt-buffer, lopt-learner and a CUDA lopt-worker run the embedded
# job: scripts/services_run.sh), evallarge (`lopt eval-large` on every GPU,
# then on one), vit (the ViT-B/16 optimizer-step bench), nccl
# (tests/gpu/nccl_data_parallel_test on every GPU, then on GPU 0 alone, with
# the ViT-B/16 gradient all-reduce timing), pesgraph (bench_pes_throughput
# graph-only at 1, 8 and 25 inner steps a replay), profile (ncu: the kernels
# of one captured 8x8 inner step at 16 and at 128 particles, and their
# durations), python (the Python package built against this machine's torch,
# its CUDA tests: python/tests/test_optim_cuda.py beside test_optim.py),
# families (scripts/gpu_families.sh: every task family meta-trained,
# meta-tested and run under an LHOPT controller on CUDA), speechsvc (the
# services with a CUDA worker meta-train a speech_ctc job: the worker runs
# it without a CUDA graph). "all" = steptest mlptest neumftest lhopttest unrollertest pes train.
# bench/gpu/e2e_breakdown.sh splits the embedded job's GPU time further.
# Env: LOPT_DATA_DIR (Fashion-MNIST IDX dir; default the job's),
# LOPT_TEXT (byte_lm's text for lhoptbench), LOPT_LHOPT_BENCH_ARGS, LOPT_GPU_BENCH_STEPS (30), LOPT_GPU_JOBS (nproc), LOPT_PES_SECONDS (4),
# LOPT_TRAIN_ARGS (extra `lopt train` flags), LOPT_TRAIN_REPEATS (1).
set -uo pipefail
build=${1:-build-gpu}
shift || true
steps=${*:-all}
[ "$steps" = all ] && steps="steptest mlptest neumftest lhopttest unrollertest pes train"
out=${OUT:-gpu-out}
mkdir -p "$out"
jobs=${LOPT_GPU_JOBS:-$(nproc)}
data=${LOPT_DATA_DIR:-}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu \
  --format=csv 2>&1 || true
# Only the targets the steps run are built.
targets=lopt
for s in $steps; do
  case $s in
    steptest) targets="$targets lopt_step_cuda_test" ;;
    unrollertest|unrollerbusy) targets="$targets elo_unroller_cuda_test" ;;
    mlptest) targets="$targets mlp_task_cuda_test" ;;
    neumftest) targets="$targets neumf_task_cuda_test" ;;
    lhopttest) targets="$targets lhopt_episode_cuda_test" ;;
    lhoptbench) targets="$targets bench_lhopt_episode" ;;
    pes|pesgraph|profile) targets="$targets bench_pes_throughput" ;;
    services|speechsvc) targets="$targets lopt-learner lopt-worker lopt-buffer loptctl" ;;
    vit) targets="$targets bench_lopt_step_gpu" ;;
    nccl) targets="$targets nccl_data_parallel_test" ;;
  esac
done
pyflags=
case " $steps " in *" python "*)
  # The venv's python (torch 2.11 with CUDA), when it has Python's headers.
  py=$(command -v python3)
  if "$py" -c 'import os, sysconfig, torch; assert os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))' 2>/dev/null; then
    pyflags="-DLOPT_PYTHON=ON -DPython3_EXECUTABLE=$py"
  else echo "python: no Python.h for $py: the package cannot be built here"; fi ;;
esac
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLOPT_CUDA=ON \
  -DLOPT_BUILD_TESTS=OFF -DLOPT_BUILD_BENCH=ON $pyflags >/tmp/lopt-configure.log 2>&1 ||
  { tail -40 /tmp/lopt-configure.log; exit 1; }
grep -q "CUDA step in lopt_common: ON" /tmp/lopt-configure.log ||
  { echo "LibTorch has no CUDA here"; tail -20 /tmp/lopt-configure.log; exit 1; }
case " $steps " in *" nccl "*) grep "NCCL data parallel" /tmp/lopt-configure.log ;; esac
export NCCL_NVLS_ENABLE=0  # never NVLink multicast on these shared hosts
t0=$(date +%s)
cmake --build "$build" -j"$jobs" --target $targets >"$out/build.log" 2>&1 ||
  { grep -B2 -A12 "error" "$out/build.log" | head -120; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
status=0
for s in $steps; do
  echo "=== $s"
  case $s in
    steptest) "$build/tests/gpu/lopt_step_cuda_test" >"$out/steptest.log" 2>&1 || status=1
              tail -3 "$out/steptest.log" ;;
    unrollertest) "$build/tests/gpu/elo_unroller_cuda_test" "$data" 2>&1 | tee "$out/unrollertest.log" || status=1 ;;
    unrollerbusy)
      # The same test, LOPT_UNROLLER_COPIES copies at once (6): a busy GPU, where a missing
      # stream order shows (the 19th session's CUDA-graph table upload failed 1-6 checks a copy).
      pids=()
      for i in $(seq "${LOPT_UNROLLER_COPIES:-6}"); do
        "$build/tests/gpu/elo_unroller_cuda_test" "$data" >"$out/unrollerbusy_$i.log" 2>&1 &
        pids+=($!)
      done
      for i in "${!pids[@]}"; do
        if wait "${pids[$i]}"; then echo "copy $((i + 1)): ok"
        else echo "copy $((i + 1)): FAILED ($(grep -c "FAIL$" "$out/unrollerbusy_$((i + 1)).log") checks)"; status=1; fi
      done ;;
    pes) "$build/bench/bench_pes_throughput" --device cuda ${data:+--data-dir "$data"} \
           --seconds "${LOPT_PES_SECONDS:-4}" --json "$out/pes_throughput.json" 2>&1 |
           tee "$out/pes.log" || status=1 ;;
    train)
      job=/tmp/lopt_gpu_job.textproto
      if [ -n "$data" ]; then
        "$build/cli/lopt" print-default-job | sed "s#fmnist_mlp {#fmnist_mlp { data_dir: \"$data\"#" >"$job"
      else
        "$build/cli/lopt" print-default-job >"$job"
      fi
      # LOPT_TRAIN_REPEATS runs of the same job (the same seed: on the GPU
      # they differ only by float rounding, atomics and TF32), to show the
      # spread of the meta-trained result.
      for rep in $(seq "${LOPT_TRAIN_REPEATS:-1}"); do
        t1=$(date +%s.%N)
        rm -rf /tmp/lopt-run
        "$build/cli/lopt" train --device cuda --job "$job" --out /tmp/lopt-run --no-progress \
          ${LOPT_TRAIN_ARGS:-} >"$out/train_$rep.log" 2>&1 || status=1
        tail -30 "$out/train_$rep.log"
        echo "train wall (incl. meta-test): $(python3 -c "import time; print(round(time.time() - $t1, 1))") s"
        cp /tmp/lopt-run/summary.json "$out/train_summary_$rep.json" 2>/dev/null || true
        cp /tmp/lopt-run/metrics.csv "$out/train_metrics_$rep.csv" 2>/dev/null || true
        cp /tmp/lopt-run/eval/report.json "$out/train_eval_$rep.json" 2>/dev/null || true
      done ;;
    mlptest) "$build/tests/gpu/mlp_task_cuda_test" "$data" 2>&1 | tee "$out/mlptest.log" || status=1 ;;
    neumftest) "$build/tests/gpu/neumf_task_cuda_test" 2>&1 | tee "$out/neumftest.log" || status=1 ;;
    lhopttest) "$build/tests/gpu/lhopt_episode_cuda_test" "$data" 2>&1 | tee "$out/lhopttest.log" || status=1 ;;
    lhoptbench)
      # LHOPT episodes a second, CPU (every core) against CUDA, one unit of
      # each family at the sizes of bench/lhopt/README.md's table.
      for d in cpu cuda; do
        "$build/bench/bench_lhopt_episode" --device $d ${data:+--data-dir "$data"} \
          ${LOPT_TEXT:+--text "$LOPT_TEXT"} ${LOPT_LHOPT_BENCH_ARGS:-} --json "$out/lhopt_episode.json" 2>&1 |
          tee -a "$out/lhoptbench.log" || status=1
      done ;;
    services)
      LOPT_JOB_DATA_DIR="$data" scripts/services_run.sh "$build" cuda "$out" || status=1 ;;
    evallarge)
      opt=${LOPT_EVAL_OPTIMIZER:-models/fmnist8_elo.lopt}
      ngpu=$(nvidia-smi -L | wc -l)
      for g in $(echo "$ngpu 1" | tr ' ' '\n' | sort -u -r); do
        echo "--- --gpus $g" | tee -a "$out/evallarge.log"
        "$build/cli/lopt" eval-large --optimizer "$opt" --gpus "$g" --device cuda \
          ${data:+--data-dir "$data"} ${LOPT_EVAL_LARGE_ARGS:---hidden 4096,4096 --batch 1024 --steps 300 --adamw-lrs 0.0003,0.001,0.003} \
          --no-progress --out "$out/evallarge_$g" 2>&1 | tee -a "$out/evallarge.log" || status=1
      done ;;
    nccl) nvidia-smi topo -m 2>&1 | head -5 >"$out/nccl.log"
          NCCL_DEBUG=VERSION "$build/tests/gpu/nccl_data_parallel_test" --bench-vit 2>&1 |
            tee -a "$out/nccl.log" || status=1
          echo "--- CUDA_VISIBLE_DEVICES=0" | tee -a "$out/nccl.log"
          CUDA_VISIBLE_DEVICES=0 "$build/tests/gpu/nccl_data_parallel_test" --bench-vit 2>&1 |
            tee -a "$out/nccl.log" || status=1 ;;
    pesgraph)
      for n in ${LOPT_GRAPH_STEPS_LIST:-1 8 25}; do
        echo "--- --graph-steps $n" | tee -a "$out/pesgraph.log"
        "$build/bench/bench_pes_throughput" --device cuda ${data:+--data-dir "$data"} --graph-only \
          --graph-steps "$n" --seconds "${LOPT_PES_SECONDS:-4}" --json "$out/pes_graph_steps_$n.json" 2>&1 |
          tee -a "$out/pesgraph.log" || status=1
      done ;;
    profile)
      # ncu over two captured inner steps (graph replays) of the 8x8 MLP task
      # at 16 and at 128 particles: the kernels a step launches, and their
      # durations (ncu serialises kernels and flushes caches, so its sum is
      # an upper bound on the replay's time).
      if command -v ncu >/dev/null; then
        for P in 16 128; do
          ncu --csv --metrics gpu__time_duration.sum --launch-skip 300 --launch-count 46 \
            "$build/bench/bench_pes_throughput" --device cuda ${data:+--data-dir "$data"} --graph-only \
            --graph-steps 1 --configs 8:$P --seconds 0.5 >"$out/ncu_8x8_$P.csv" 2>>"$out/ncu.err" || status=1
          echo "--- 8x8 MLP, $P particles" | tee -a "$out/profile.log"
          python3 - "$out/ncu_8x8_$P.csv" <<'PY' | tee -a "$out/profile.log"
import csv, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
h = rows[0]; rows = rows[1:]
ki, vi, ui = h.index("Kernel Name"), h.index("Metric Value"), h.index("Metric Unit")
scale = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}
# One step starts at the task's kernel; report the first whole step.
names = [r[ki] for r in rows]
starts = [i for i, n in enumerate(names) if "MlpTaskKernel" in n]
if len(starts) >= 2:
    step = rows[starts[0]:starts[1]]
    tot = 0.0
    for r in step:
        v = float(r[vi].replace(",", "")) * scale[r[ui]]
        tot += v
        print(f"{v:8.2f} us  {r[ki][:100]}")
    print(f"{len(step)} kernel launches an inner step, {tot:.1f} us in all (under ncu)")
else:
    print(f"{len(rows)} kernels profiled; no two task kernels to delimit a step")
PY
        done
      else echo "no ncu"; fi ;;
    vit) "$build/bench/bench_lopt_step_gpu" --steps "${LOPT_GPU_BENCH_STEPS:-30}" \
           --json "$out/bench_lopt_step_gpu.json" 2>&1 | tee "$out/bench.log" || status=1 ;;
    python)
      # Built apart, so that a failure here stops no other step.
      if [ -n "$pyflags" ] && cmake --build "$build" -j"$jobs" --target lopt_python >"$out/python_build.log" 2>&1; then
        PYTHONPATH=$build/python python3 -c 'import lopt, torch; print("lopt", lopt.__file__, "CUDA kernel:", lopt._C.with_cuda, "torch", torch.__version__, torch.cuda.get_device_name(0))' 2>&1 | tee "$out/python.log"
        LOPT_BUILD_DIR=$build PYTHONPATH=$build/python:python/tests python3 -m pytest -v -p no:cacheprovider \
          python/tests/test_optim_cuda.py python/tests/test_optim.py 2>&1 | tee -a "$out/python.log" || status=1
      else grep -B2 -A12 "error" "$out/python_build.log" 2>/dev/null | head -60; status=1; fi ;;
    families)
      LOPT_DATA_DIR="${data:-/usr/share/datasets/fashion-mnist}" scripts/gpu_families.sh "$build" cuda "$out/families" || status=1 ;;
    speechsvc)
      # An ELO job on speech_ctc through the services, on a CUDA worker.
      sj=/tmp/lopt_speech_job.textproto
      cat >"$sj" <<JOB
name: "speech_services"
seed: 3
task { speech_ctc { data_path: "${LOPT_SPEECH_DIR:?speechsvc needs LOPT_SPEECH_DIR}" batch_size: 8 } }
pes { num_tasks: 4 truncation_length: 10 min_unroll_length: 10 max_unroll_length: 40 }
budget { outer_steps: 10 checkpoint_every: 5 }
eval { steps: 200 seeds: 2 record_every: 10 adamw_lrs: 0.001 }
JOB
      LOPT_JOB=$sj LOPT_EVAL_DEVICE=cuda scripts/services_run.sh "$build" cuda "$out/speechsvc" || status=1 ;;
    *) echo "unknown step $s"; status=1 ;;
  esac
done
exit $status
