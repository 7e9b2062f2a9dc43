#!/bin/bash
# Builds the Debian images of docker/ (learner, buffer, ctl, CPU worker) with buildah and runs a
# small ELO job across processes started inside them, so that a library or a data set missing
# from an image fails a test (ctest label images; slow, not in CI's run).
#
#   tests/images/build_and_run.sh SOURCE_DIR WORK_DIR
#
# No Docker engine is needed: Debian's buildah builds the Dockerfiles (vfs storage, chroot
# isolation), on a Debian 12 base image made here with debootstrap and imported with podman
# (debian:12-slim, also tagged debian:12) the first time. `podman run` is refused on these
# machines (setrlimit), so the processes run with `buildah run --isolation chroot`, which
# shares the host's network: the services talk on 127.0.0.1.
#
# The images are built from a snapshot of SOURCE_DIR's git files (tracked and untracked, not
# ignored), so that edits made while it builds do not change the context half way. The four
# build stages are the same (docker/Dockerfile.*): the first image compiles the project, the
# others hit buildah's layer cache (--layers). Each image's build time is printed.
#
# Environment: LOPT_IMAGES_STORAGE (buildah/podman storage root, default
# /var/lib/containers/storage: the base image and the layer cache stay there between runs),
# LOPT_IMAGES_SKIP_BUILD=1 (run the job on the images built before), LOPT_IMAGES_BUILD="learner"
# (build only these of learner, buffer, ctl, worker-cpu; the job runs on all four).
# Disk: vfs copies the whole root file system for each layer and keeps each step's working
# container until the build ends (a stopped build leaves them: buildah containers, rm --all):
# the store holds 25 GB with the base image, the build cache and the four images, and a build
# needs up to ~25 GB more while it runs, even from the cache. Check `df` first on a shared machine.
# The layer cache is hit only by the same tree (docker/README.md, "The cache and the context").
# Prints PASS or FAIL; exits 77 (ctest: skipped) when buildah, podman or debootstrap is missing.
set -uo pipefail
src=$(cd "${1:?usage: build_and_run.sh SOURCE_DIR WORK_DIR}" && pwd)
work=${2:?usage: build_and_run.sh SOURCE_DIR WORK_DIR}
storage=${LOPT_IMAGES_STORAGE:-/var/lib/containers/storage}
mkdir -p "$work"
work=$(cd "$work" && pwd)

for tool in buildah podman debootstrap; do
  command -v "$tool" >/dev/null || {
    echo "SKIP: $tool not found (sudo apt-get install -y buildah podman debootstrap)"; exit 77; }
done
if [ "$(id -u)" != 0 ]; then
  echo "SKIP: buildah with vfs storage and chroot isolation needs root here"; exit 77
fi

B=(buildah --root "$storage" --storage-driver vfs)
P=(podman --root "$storage" --storage-driver vfs)
pids=()
ctrs=()
fail() {
  echo "FAIL: $*"
  exit 1
}
cleanup() {
  for p in "${pids[@]}"; do kill -TERM -- "-$p" 2>/dev/null; done
  sleep 1
  for p in "${pids[@]}"; do kill -KILL -- "-$p" 2>/dev/null; done
  for c in "${ctrs[@]}"; do "${B[@]}" rm "$c" >/dev/null 2>&1; done
}
trap cleanup EXIT
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", b - a }'; }

# --- the base image ---------------------------------------------------------------------------
if ! "${B[@]}" inspect --type image debian:12-slim >/dev/null 2>&1; then
  echo "== base image: debootstrap --variant=minbase bookworm"
  t0=$(now)
  root="$work/debian-root"
  rm -rf "$root"
  nice -n 10 debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian \
    > "$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log"; fail "debootstrap failed"; }
  tar -C "$root" -c . | "${P[@]}" import - debian:12-slim >/dev/null || fail "podman import failed"
  "${P[@]}" tag debian:12-slim debian:12 || fail "podman tag failed"
  rm -rf "$root"
  echo "base image: $(secs "$t0" "$(now)") s"
fi

# --- the images -------------------------------------------------------------------------------
images=(learner buffer ctl worker-cpu)
if [ "${LOPT_IMAGES_SKIP_BUILD:-0}" != 1 ]; then
  ctx="$work/context"
  umask 022
  rm -rf "$ctx"
  mkdir -p "$ctx"
  # buildah's layer cache keys COPY . . on a digest of the context that ignores times but not
  # modes or owners, so the snapshot's modes are those of git archive (664, 775 if executable;
  # directories 755) and its owner root, whatever the checkout's umask: a checkout made with
  # umask 022 (644) missed the cache of one made with 002 and compiled the project again.
  (cd "$src" && git ls-files -co --exclude-standard -z |
     tar --null -T - -c --mode=g+w,o-w --owner=0 --group=0 --numeric-owner) | tar -C "$ctx" -x \
    || fail "cannot snapshot $src (a git work tree is needed)"
  echo "== context: $(cd "$src" && git rev-parse --short HEAD 2>/dev/null)$(cd "$src" && git diff --quiet HEAD 2>/dev/null || echo '+changes'), $(du -sh "$ctx" | cut -f1)"
  for img in ${LOPT_IMAGES_BUILD:-${images[*]}}; do
    t0=$(now)
    (cd "$ctx" && nice -n 10 "${B[@]}" bud --layers --isolation chroot --pull-never \
        -f "docker/Dockerfile.$img" -t "lopt-$img" .) > "$work/build-$img.log" 2>&1
    rc=$?
    t=$(secs "$t0" "$(now)")
    if [ $rc != 0 ]; then
      tail -30 "$work/build-$img.log"
      fail "building lopt-$img failed after $t s (log: $work/build-$img.log)"
    fi
    cached=$(grep -c "Using cache" "$work/build-$img.log")
    echo "image lopt-$img: built in $t s ($cached steps from the layer cache)"
  done
fi

# --- a job across the images ------------------------------------------------------------------
# Each process runs in its own container of its image, as uid 10001 (the images' USER), in
# its own process group so that cleanup ends it.
free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
run_dir="$work/run"
rm -rf "$run_dir"
mkdir -p "$run_dir/shared"
chmod 777 "$run_dir/shared"
start() {  # start NAME IMAGE CMD... : a container of IMAGE running CMD in the background
  local name=$1 image=$2
  shift 2
  local c
  c=$("${B[@]}" from --pull=never --name "lopt-test-$name-$$" "lopt-$image") || fail "buildah from lopt-$image"
  ctrs+=("$c")
  setsid "${B[@]}" run --isolation chroot --network host --user 10001:10001 \
    -v "$run_dir/shared:/shared" "$c" -- lopt-entrypoint "$@" > "$run_dir/$name.log" 2>&1 &
  pids+=($!)
}
# loptctl's container is made here, in the script's own shell: made on first use inside ctl(),
# it was made in the subshell of out=$(ctl submit ...), so the script never saw its name (watch
# ran in a container named "") and cleanup never removed it.
ctl_ctr=$("${B[@]}" from --pull=never --name "lopt-test-ctl-$$" lopt-ctl) || fail "buildah from lopt-ctl"
ctrs+=("$ctl_ctr")
ctl() {  # loptctl in the ctl image
  "${B[@]}" run --isolation chroot --network host --user 10001:10001 \
    -v "$run_dir/shared:/shared" "$ctl_ctr" -- loptctl --learner "127.0.0.1:$lport" "$@"
}
wait_line() {  # wait_line FILE REGEX SECONDS
  for _ in $(seq 1 "$(($3 * 5))"); do
    grep -qsE "$2" "$1" && return 0  # -s: the log may not exist yet
    sleep 0.2
  done
  return 1
}
metric() {  # metric PORT NAME: the value of an unlabelled series
  curl -fsS "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m { print $2 }'
}

bport=$(free_port); bmport=$(free_port); lport=$(free_port); lmport=$(free_port); wmport=$(free_port)
t_run=$(now)
start buffer buffer lopt-buffer --listen "127.0.0.1:$bport" --metrics-listen "127.0.0.1:$bmport" \
  --db-path /var/lib/lopt/buffer
wait_line "$run_dir/buffer.log" 'msg=serving' 60 || { cat "$run_dir/buffer.log"; fail "lopt-buffer did not start in its image"; }
start learner learner lopt-learner --listen "127.0.0.1:$lport" --metrics-listen "127.0.0.1:$lmport" \
  --state-dir /var/lib/lopt/learner --buffer "127.0.0.1:$bport" --worker-timeout-ms 30000
wait_line "$run_dir/learner.log" 'msg=serving' 60 || { cat "$run_dir/learner.log"; fail "lopt-learner did not start in its image"; }
start worker worker-cpu lopt-worker --learner "127.0.0.1:$lport" --buffer "127.0.0.1:$bport" \
  --metrics-listen "127.0.0.1:$wmport" --device cpu --name image-worker --threads 1
wait_line "$run_dir/worker.log" 'msg=connected' 60 || { cat "$run_dir/worker.log"; fail "lopt-worker did not connect from its image"; }

# A small ELO job on the 8x8 Fashion-MNIST MLP (the data the worker image carries), with the
# replay buffer on, so that every service and the data set take part.
steps=8
cat > "$run_dir/shared/job.textproto" <<EOF
name: "images"
seed: 3
task { fmnist_mlp { image_size: 8 hidden_sizes: 16 batch_size: 32 } }
pes { num_tasks: 2 truncation_length: 10 min_unroll_length: 20 max_unroll_length: 40 }
budget { outer_steps: $steps checkpoint_every: 4 }
cluster { shards: 1 }
EOF
out=$(ctl submit /shared/job.textproto 2>&1) || { echo "$out"; fail "loptctl submit (ctl image) failed"; }
id=$(echo "$out" | head -n1 | awk '{print $1}')
echo "== job $id submitted from the ctl image"
watch_out=$(timeout 600 "${B[@]}" run --isolation chroot --network host --user 10001:10001 \
  "$ctl_ctr" -- loptctl --learner "127.0.0.1:$lport" watch "$id" 2>&1)
watch_rc=$?
echo "$watch_out" | tail -3
# loptctl watch exits 0 only when the job succeeded and ends with "job ID succeeded at outer
# step N/N" (the state in lower case: the script's earlier grep for SUCCEEDED never matched).
[ "$watch_rc" = 0 ] && echo "$watch_out" | grep -q "job $id succeeded at outer step" || {
  tail -20 "$run_dir/learner.log"; tail -20 "$run_dir/worker.log"
  fail "job $id did not succeed: $(echo "$watch_out" | tail -1)"; }
t_job=$(secs "$t_run" "$(now)")
puts=$(metric "$bmport" lopt_buffer_puts_total)
inner=$(metric "$wmport" lopt_worker_inner_steps_total)
echo "buffer puts: ${puts:-?}; worker inner particle-steps: ${inner:-?}"
awk -v p="${puts:-0}" 'BEGIN { exit !(p > 0) }' || fail "the worker put nothing into the buffer (lopt_buffer_puts_total=${puts:-absent})"

# The job's files through loptctl export --all: the trained optimizer and its meta-test, which
# the CPU worker ran (an ELO_META_TEST unit, reading the task's data set inside the worker's
# image) before the job succeeded; the learner trains no optimizee.
grep -q 'msg="meta-test run"' "$run_dir/worker.log" || { tail -20 "$run_dir/worker.log"; fail "the worker did not run the job's meta-test"; }
grep -q 'msg="meta-test report"' "$run_dir/learner.log" || { tail -20 "$run_dir/learner.log"; fail "the learner took no meta-test report"; }
mkdir -p "$run_dir/shared/export" && chmod 777 "$run_dir/shared/export"
ctl export "$id" --all --out /shared/export/job > "$run_dir/export.log" 2>&1 \
  || { cat "$run_dir/export.log"; fail "loptctl export --all failed"; }
[ -s "$run_dir/shared/export/job/optimizer.lopt" ] || fail "export has no optimizer.lopt: $(ls -R "$run_dir/shared/export")"
[ -s "$run_dir/shared/export/job/eval/report.json" ] || fail "export has no eval/report.json: $(ls -R "$run_dir/shared/export/job")"
echo "job $id: SUCCEEDED, $steps outer steps, $(secs "$t_run" "$(now)") s from the first process's start to the exported meta-test ($t_job s to success, the meta-test included)"
echo "exported: $(cd "$run_dir/shared/export/job" && find . -type f | sort | tr '\n' ' ')"
echo PASS
