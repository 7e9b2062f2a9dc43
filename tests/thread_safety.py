#!/usr/bin/env python3
"""Clang's -Wthread-safety over the learner (the learner.thread_safety test).

The learner's locking rules are annotations (ABSL_GUARDED_BY,
ABSL_EXCLUSIVE_LOCKS_REQUIRED, ... in learner/job_manager.h); GCC, which
builds lopt, ignores them. This compiles each translation unit under the
given directories that has locking annotations (ABSL_GUARDED_BY and
friends, in itself or in a header of the tree it includes) with clang++
-fsyntax-only -Wthread-safety -Werror=thread-safety, with the flags the build
uses for it (from compile_commands.json), so that a field read without its
lock, or a function called without the lock it requires, fails the test.
Syntax only: no objects, no link, a LibTorch-sized parse a file (~15 s of
CPU each).

  tests/thread_safety.py --build-dir build --clang clang++ --source-dir . learner
"""
import argparse
import concurrent.futures
import json
import os
import re
import shlex
import subprocess
import sys
import time


def clang_command(entry, clang):
    args = shlex.split(entry["command"]) if "command" in entry else list(entry["arguments"])
    # ccache and the compiler itself.
    while args and not args[0].startswith("-") and not args[0].endswith(("c++", "g++", "clang++")):
        args.pop(0)
    args = args[1:]
    out = [clang]
    skip = False
    for i, a in enumerate(args):
        if skip:
            skip = False
            continue
        if a in ("-o", "-MT", "-MF", "-MQ"):
            skip = True
            continue
        if a in ("-c", "-MD", "-MMD", "-Winvalid-pch") or a == entry["file"]:
            continue
        if a == "-include" and i + 1 < len(args) and "cmake_pch" in args[i + 1]:
            # GCC's precompiled header: clang reads its source instead.
            out += ["-include", "torch/torch.h"]
            skip = True
            continue
        out.append(a)
    return out + ["-fsyntax-only", "-Wthread-safety", "-Werror=thread-safety",
                  "-Wno-unknown-warning-option", entry["file"]]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--build-dir", required=True)
    p.add_argument("--source-dir", required=True)
    p.add_argument("--clang", default="clang++")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("dirs", nargs="+", help="source directories whose .cc files are checked")
    a = p.parse_args()
    with open(os.path.join(a.build_dir, "compile_commands.json")) as f:
        db = json.load(f)
    src = os.path.realpath(a.source_dir)
    prefixes = [os.path.join(src, d.rstrip("/")) + "/" for d in a.dirs]
    entries, seen = [], set()
    for e in db:
        path = os.path.realpath(os.path.join(e.get("directory", ""), e["file"]))
        if any(path.startswith(pre) for pre in prefixes) and path not in seen:
            seen.add(path)
            e = dict(e, file=path)
            entries.append(e)
    # Only what has annotations to check: a file that uses them, or that
    # includes a header of the tree that does (directly, or through one).
    annotated = re.compile(r"ABSL_(GUARDED_BY|PT_GUARDED_BY|EXCLUSIVE_LOCKS_REQUIRED|LOCKS_EXCLUDED)")
    include = re.compile(r'^#include "([^"]+)"', re.M)

    def has_annotations(path, depth=0):
        try:
            text = open(path).read()
        except OSError:
            return False
        if annotated.search(text):
            return True
        return depth < 2 and any(has_annotations(os.path.join(src, h), depth + 1)
                                 for h in include.findall(text))

    entries = [e for e in entries if has_annotations(e["file"])]
    if not entries:
        print(f"thread-safety: FAIL no annotated translation unit under {a.dirs} in "
              "compile_commands.json")
        return 1

    def run(e):
        t0 = time.time()
        r = subprocess.run(clang_command(e, a.clang), cwd=e.get("directory", a.build_dir),
                           capture_output=True, text=True)
        return e["file"], r.returncode, r.stderr, time.time() - t0

    t0 = time.time()
    failed = 0
    with concurrent.futures.ThreadPoolExecutor(a.jobs) as pool:
        for path, rc, err, secs in pool.map(run, sorted(entries, key=lambda e: e["file"])):
            rel = os.path.relpath(path, src)
            if rc != 0:
                failed += 1
                print(f"thread-safety: FAILED {rel} ({secs:.0f} s)\n{err}")
            else:
                print(f"thread-safety: ok {rel} ({secs:.0f} s)")
    status = "FAIL" if failed else "PASS"
    print(f"thread-safety: {status} {len(entries) - failed}/{len(entries)} translation units clean "
          f"with clang -Wthread-safety -Werror=thread-safety in {time.time() - t0:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
