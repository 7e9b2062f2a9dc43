#!/bin/bash
# Installs what lopt needs on Debian 12 (apt-get), then configures and builds
# it into build/. Safe to run again: it only installs what is missing and the
# build is incremental.
#
#   scripts/bootstrap.sh            install + build
#   scripts/bootstrap.sh --no-build install only
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libtorch-dev libopenblas0-pthread
  libprotobuf-dev protobuf-compiler libgrpc++-dev protobuf-compiler-grpc
  libabsl-dev librocksdb-dev prometheus-cpp-dev zlib1g-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  # tests/fuzz: libFuzzer targets built with clang (its sanitizer and fuzzer runtimes)
  clang libclang-rt-dev
  gnuplot-nox dataset-fashion-mnist fortunes
  # lopt gen-speech (the speech_ctc family's synthetic corpus): text-to-speech, resampling and noise
  espeak-ng sox libsox-fmt-base
  # the Python package (python/, PYTHONPATH=build/python): Debian's torch is the same build as libtorch-dev
  python3-dev python3-torch python3-numpy pybind11-dev python3-grpcio python3-protobuf python3-pytest
  # deploy/check's offline checks (compose config, promtool, Node validators); npm only where no nodejs already brings it (NodeSource's conflicts with Debian's npm)
  docker-compose prometheus nodejs $(command -v npm >/dev/null || echo npm)
)

SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "bootstrap: run as root or install sudo" >&2; exit 1; }
  SUDO=sudo
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}"
  $SUDO apt-get update -qq
  # libopenblas0-pthread replaces the reference BLAS that libtorch-dev pulls in:
  # LibTorch's matrix products are about 8x faster with it.
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

[ "${1:-}" = "--no-build" ] && exit 0
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
echo "bootstrap: built build/cli/lopt"
