#!/bin/sh
# Prints, one a line, the distribution packages that own the shared libraries
# the given binaries load (as ldd resolves them), so that a runtime stage can
# install exactly those and nothing of the build toolchain:
#
#   docker/runtime-deps.sh [--skip PREFIX]... [--allow-missing SONAME]... BINARY...
#
# --skip PREFIX: libraries under PREFIX are not looked up (they are copied into
#   the image some other way, e.g. LibTorch from a Python wheel).
# --allow-missing SONAME: a library ldd cannot find that the runtime provides
#   (libcuda.so.1 comes from the NVIDIA driver via the container toolkit).
# Fails when a library is missing or no package owns it.
set -eu
skip=""
allow=""
while [ $# -gt 0 ]; do
  case $1 in
    --skip) skip="$skip $2"; shift 2 ;;
    --allow-missing) allow="$allow $2"; shift 2 ;;
    --) shift; break ;;
    -*) echo "runtime-deps: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { echo "usage: runtime-deps.sh [--skip PREFIX] [--allow-missing SONAME] BINARY..." >&2; exit 2; }

owner() {  # dpkg knows a file by the path its package shipped, /lib or /usr/lib
  for p in "$1" "$(readlink -f "$1")"; do
    for q in "$p" "${p#/usr}" "/usr$p"; do
      o=$(dpkg-query -S "$q" 2>/dev/null | head -n1 | cut -d: -f1) && [ -n "$o" ] && { echo "$o"; return 0; }
    done
  done
  return 1
}

for bin in "$@"; do
  libs=$(ldd "$bin") || { echo "runtime-deps: ldd $bin failed" >&2; exit 1; }
  echo "$libs" | while read -r name arrow path rest; do
    if [ "$path" = "not" ]; then
      case " $allow " in *" $name "*) continue ;; esac
      echo "runtime-deps: $bin: $name not found" >&2; exit 1
    fi
    case $path in /*) ;; *) continue ;; esac   # linux-vdso and the like
    for s in $skip; do case $path in "$s"*) continue 2 ;; esac; done
    owner "$path" || { echo "runtime-deps: $bin: no package owns $path" >&2; exit 1; }
  done || exit 1
done > /tmp/runtime-deps.$$ || { rm -f /tmp/runtime-deps.$$; exit 1; }
sort -u /tmp/runtime-deps.$$
rm -f /tmp/runtime-deps.$$
