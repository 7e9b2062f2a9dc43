#!/usr/bin/env bash
# On the GPU machine, from the checkout's root, after `source .debs/device-env.sh`
# (shared/gpu/README.md): configure and build with CUDA, run the CUDA step's
# check against the float64 reference and the ViT-B/16 optimizer-step
# benchmark. Logs and bench JSON go to $OUT (else ./gpu-out).
#
#   scripts/gpu_run.sh [build-dir]      (default build-gpu)
# Env: LOPT_GPU_BENCH_STEPS (30), LOPT_GPU_JOBS (nproc).
set -euo pipefail
build=${1:-build-gpu}
out=${OUT:-gpu-out}
mkdir -p "$out"
jobs=${LOPT_GPU_JOBS:-$(nproc)}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu \
  --format=csv 2>&1 | tee "$out/gpu.txt" || true
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLOPT_CUDA=ON \
  -DLOPT_BUILD_TESTS=OFF -DLOPT_BUILD_BENCH=ON >"$out/configure.log" 2>&1 ||
  { tail -40 "$out/configure.log"; exit 1; }
grep -q "CUDA step in lopt_common: ON" "$out/configure.log" ||
  { echo "LibTorch has no CUDA here"; tail -20 "$out/configure.log"; exit 1; }
cmake --build "$build" -j"$jobs" --target lopt_step_cuda_test bench_lopt_step_gpu \
  >"$out/build.log" 2>&1 || { grep -B2 -A12 "error" "$out/build.log" | head -80; exit 1; }
grep -A3 "MlpKernel\|StatsKernel\|AccumulateKernel\|TablesKernel" "$out/build.log" \
  | grep -i "registers\|spill" >"$out/ptxas.txt" || true
status=0
"$build/tests/gpu/lopt_step_cuda_test" 2>&1 | tee "$out/test.log" || status=1
"$build/bench/bench_lopt_step_gpu" --steps "${LOPT_GPU_BENCH_STEPS:-30}" \
  --json "$out/bench_lopt_step_gpu.json" 2>&1 | tee "$out/bench.log" || status=1
exit $status
