#!/bin/bash
# Builds lopt's libFuzzer targets with clang into BUILD_DIR and runs each for
# SECONDS (0: build only). Exits non-zero when a target finds a crash; the
# input is in BUILD_DIR/artifacts/<target>/ and the report on stderr.
#
#   tests/fuzz/run.sh BUILD_DIR SECONDS [TARGET...]
#
# Targets (default: the ones CI runs, which need no LibTorch):
#   fuzz_job_spec fuzz_chunk_codec fuzz_buffer_put
#   fuzz_optimizer_file fuzz_tensor_codec   (LibTorch; built only when named)
# Environment: FUZZ_SECONDS overrides SECONDS (except 0, build only);
# FUZZ_BUILD_JOBS (default 2) parallel compiles; FUZZ_FLAGS extra libFuzzer
# flags (e.g. -jobs=2 -workers=2); FUZZ_CXX the clang++ to use.
#
# Each target's corpus grows in BUILD_DIR/corpus/<target>, seeded from
# tests/fuzz/corpus/<target> (in the tree); a run prints executions,
# executions per second and libFuzzer's coverage (cov: edges, ft: features).
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,18p' "$0" >&2
  exit 2
fi
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
mkdir -p "$1"
BUILD="$(cd "$1" && pwd)"
SECONDS_EACH="$2"
[ "$SECONDS_EACH" = 0 ] || SECONDS_EACH="${FUZZ_SECONDS:-$SECONDS_EACH}"
shift 2
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(fuzz_job_spec fuzz_chunk_codec fuzz_buffer_put)

TORCH=OFF
for t in "${TARGETS[@]}"; do
  case "$t" in
    fuzz_optimizer_file|fuzz_tensor_codec) TORCH=ON ;;
    fuzz_job_spec|fuzz_chunk_codec|fuzz_buffer_put) ;;
    *) echo "run.sh: unknown target $t" >&2; exit 2 ;;
  esac
done
# Torch stays on once a build has it (a later run without it rebuilds nothing).
if [ -f "$BUILD/CMakeCache.txt" ] && grep -q '^LOPT_FUZZ_TORCH:BOOL=ON' "$BUILD/CMakeCache.txt"; then
  TORCH=ON
fi

CXX_BIN="${FUZZ_CXX:-$(command -v clang++ || true)}"
if [ -z "$CXX_BIN" ]; then
  echo "run.sh: clang++ not found (apt-get install clang libclang-rt-dev)" >&2
  exit 1
fi
LAUNCHER=()
command -v ccache >/dev/null && LAUNCHER=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
if [ ! -f "$BUILD/build.ninja" ] || ! grep -q "^LOPT_FUZZ_TORCH:BOOL=$TORCH" "$BUILD/CMakeCache.txt"; then
  cmake -S "$HERE" -B "$BUILD" -G Ninja -DCMAKE_CXX_COMPILER="$CXX_BIN" "${LAUNCHER[@]}" \
    -DLOPT_FUZZ_TORCH="$TORCH" >"$BUILD/configure.log" 2>&1 ||
    { cat "$BUILD/configure.log" >&2; exit 1; }
fi
start=$(date +%s)
nice -n 10 cmake --build "$BUILD" -j"${FUZZ_BUILD_JOBS:-2}" --target "${TARGETS[@]}" >"$BUILD/build.log" 2>&1 ||
  { tail -50 "$BUILD/build.log" >&2; exit 1; }
echo "run.sh: built ${TARGETS[*]} in $(( $(date +%s) - start )) s"
[ "$SECONDS_EACH" -gt 0 ] || exit 0

status=0
for t in "${TARGETS[@]}"; do
  corpus="$BUILD/corpus/$t"
  artifacts="$BUILD/artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  seeds=("$HERE/corpus/$t")
  extra=()
  [ -f "$HERE/$t.dict" ] && extra+=("-dict=$HERE/$t.dict")
  log="$BUILD/$t.log"
  # -timeout: one input for more than 10 s is a hang; -rss_limit_mb: a
  # decoder that allocates what a peer announces is a finding too.
  set +e
  (cd "$BUILD" && ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}" \
     UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}" \
     "$BUILD/$t" -max_total_time="$SECONDS_EACH" -print_final_stats=1 -timeout=10 \
     -rss_limit_mb=2560 -artifact_prefix="$artifacts/" "${extra[@]}" ${FUZZ_FLAGS:-} \
     "$corpus" "${seeds[@]}") >"$log" 2>&1
  rc=$?
  set -e
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -1 || true)
  files=$(find "$corpus" -type f | wc -l)
  echo "$t: ${runs:-?} executions in ${SECONDS_EACH} s (${rate:-?}/s), ${cov:-no coverage line}, corpus ${files} files"
  if [ $rc -eq 0 ] && [ -z "$runs" ]; then
    rc=1
    echo "$t: FAILED: no final statistics in $log" >&2
  fi
  if [ $rc -ne 0 ]; then
    status=1
    echo "$t: FAILED (exit $rc); the input is in $artifacts/; the report:" >&2
    grep -v '^#\|^INFO\|^stat::\|^Done\|^MERGE' "$log" | tail -60 >&2
  fi
done
exit $status
