#!/usr/bin/env python3
"""Every command the READMEs show is run by a test.

Extracts the commands of lopt's own programs from README.md and
deploy/README.md (fenced and indented code blocks, and inline code spans
that start with a path such as build/cli/ or carry flags) and checks them
against tests/readme_commands.txt, a hand-kept list that names, for each
command, how it is run:

  run            this script runs it (cheap: validate, inspect, --help, ...)
  loptctl        this script runs it against no learner: it must fail only
                 for want of one (a usage error, exit 2, fails the test)
  test NAME...   the ctest(s) that run it or the same command on a smaller job
  gpu [NAME...]  a CUDA build's command (scripts/gpu_run.sh); its flags are checked
(run and loptctl may name ctests after them too; each named ctest must exist)

A README command missing from the list, a list entry no README shows any
more, a named ctest that does not exist, or a --flag the program's --help
does not know fails the test. So does a `run` or `loptctl` command that
fails.

  readme_commands.py --source DIR --lopt BIN --loptctl BIN --ctest-dir BUILD
  readme_commands.py --source DIR --print     (the commands, to update the list)
"""
import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile

READMES = ["README.md", "deploy/README.md"]
PROGRAMS = {"lopt", "loptctl", "lopt-learner", "lopt-worker", "lopt-buffer", "bench_inner_step",
            "bench_services", "bench_buffer", "bench_pes_throughput", "train_with_lopt",
            "bench_lopt_step_gpu"}
# What a command may be wrapped in, dropped before the program's name.
WRAPPERS = [r"^docker compose exec learner\s+", r"^kubectl -n lopt exec \S+ --\s+",
            r"^python3\s+(?=bench/)"]


def program_of(words):
    if not words:
        return None
    name = os.path.basename(words[0])
    if name in PROGRAMS or words[0].startswith("bench/") and name.endswith(".py"):
        return name
    return None


def normalise(line):
    line = line.strip()
    line = re.sub(r"\s+#(?=\s).*$", "", line)  # a trailing comment
    line = re.sub(r"\s*&$", "", line).strip()
    for w in WRAPPERS:
        line = re.sub(w, "", line)
    return line


def commands_in(text):
    """(command, how it was shown) for each command of lopt's programs."""
    out = []
    lines = text.split("\n")
    in_fence = False
    for i, raw in enumerate(lines):
        if raw.lstrip().startswith("```"):
            in_fence = not in_fence
            continue
        block = in_fence or (raw.startswith("    ") and raw.strip() and
                             (i == 0 or not lines[i - 1].strip() or lines[i - 1].startswith("    ")))
        if block:
            for part in raw.split("&&"):
                cmd = normalise(part)
                try:
                    words = shlex.split(cmd)
                except ValueError:
                    continue
                if program_of(words):
                    out.append(cmd)
            continue
        for span in re.findall(r"`([^`]+)`", raw):
            cmd = normalise(span)
            try:
                words = shlex.split(cmd)
            except ValueError:
                continue
            # Inline code counts as a command when it is one to type: a path
            # to a binary, or a program with flags or arguments.
            flag_with_value = any(w.startswith("--") and not v.startswith("--")
                                  for w, v in zip(words, words[1:]))
            if program_of(words) and (words[0].startswith(("build", "bench/")) or flag_with_value):
                out.append(cmd)
    return out


def load_list(path):
    entries = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                continue
            if "\t" not in line:
                sys.exit(f"{path}:{n}: want COMMAND<TAB>HOW")
            cmd, how = line.split("\t", 1)
            entries[cmd.strip()] = how.strip()
    return entries


def help_text(binary, sub=None):
    args = [binary] + ([sub] if sub else []) + ["--help"]
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return p.stdout + p.stderr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", required=True)
    ap.add_argument("--lopt")
    ap.add_argument("--loptctl")
    ap.add_argument("--ctest-dir")
    ap.add_argument("--print", action="store_true")
    a = ap.parse_args()
    found = {}
    for readme in READMES:
        with open(os.path.join(a.source, readme)) as f:
            for cmd in commands_in(f.read()):
                found.setdefault(cmd, readme)
    if a.print:
        for cmd, readme in found.items():
            print(f"{cmd}\t# {readme}")
        return 0
    listed = load_list(os.path.join(a.source, "tests", "readme_commands.txt"))
    errors = []
    for cmd, readme in found.items():
        if cmd not in listed:
            errors.append(f"{readme} shows `{cmd}`, which tests/readme_commands.txt does not list "
                          f"(add it with the test that runs it)")
    for cmd in listed:
        if cmd not in found:
            errors.append(f"tests/readme_commands.txt lists `{cmd}`, which no README shows any more")

    ctests = ""
    if a.ctest_dir:
        ctests = subprocess.run(["ctest", "--test-dir", a.ctest_dir, "-N"], capture_output=True,
                                text=True).stdout
    build = os.path.dirname(os.path.dirname(a.lopt)) if a.lopt else ""
    binaries = {"lopt": a.lopt, "loptctl": a.loptctl,
                "lopt-learner": os.path.join(build, "learner", "lopt-learner"),
                "lopt-worker": os.path.join(build, "worker", "lopt-worker"),
                "lopt-buffer": os.path.join(build, "buffer_server", "lopt-buffer")}
    helps = {}
    work = tempfile.mkdtemp(prefix="lopt_readme_")
    default_job = os.path.join(work, "my_job.textproto")
    subprocess.run([a.lopt, "print-default-job"], stdout=open(default_job, "w"), check=True)
    ran = 0
    for cmd, how in listed.items():
        if cmd not in found:
            continue
        words = shlex.split(cmd)
        prog = program_of(words)
        # Flags: each --flag must be one the program's --help names.
        binary = binaries.get(prog)
        if binary and os.path.exists(binary):
            sub = words[1] if prog == "lopt" and len(words) > 1 and words[1] == "eval-large" else None
            key = (prog, sub)
            if key not in helps:
                helps[key] = help_text(binary, sub) or ""
            for w in words[1:]:
                if w.startswith("--"):
                    flag = w.split("=", 1)[0]
                    if not re.search(re.escape(flag) + r"\b", helps[key]):
                        errors.append(f"`{cmd}`: {prog} --help does not know {flag}")
        kind = how.split()[0] if how else ""
        for name in how.split()[1:]:  # the ctests that run it (too)
            if a.ctest_dir and not re.search(r"Test\s+#\d+: " + re.escape(name) + r"\s*$", ctests, re.M):
                errors.append(f"`{cmd}`: no ctest named {name}")
        if kind in ("test", "gpu"):
            pass  # gpu: on a CUDA build only (scripts/gpu_run.sh); no GPU here
        elif kind in ("run", "loptctl"):
            argv = [binaries.get(prog) or words[0]] + words[1:]
            # The README writes ID, JOB_ID and my_job.textproto where a user puts their own,
            # and a deployed machine's paths: here they become a job no learner has, the
            # default job, and this checkout's and a scratch directory's files.
            subst = {"ID": "no_such_job", "JOB_ID": "no_such_job", "my_job.textproto": default_job,
                     "/etc/lopt/jobs/": os.path.join(a.source, "deploy", "jobs") + "/"}
            fixed = []
            for w in argv[1:]:
                for k, v in subst.items():
                    w = w.replace(k, v) if k.endswith("/") else (v if w == k else w.replace(k + ".", v + "."))
                if w.startswith(("/var/lib/lopt/", "runs/", "trained.lopt")):
                    w = os.path.join(work, w.lstrip("/"))
                fixed.append(w)
            argv = [argv[0]] + fixed
            if kind == "loptctl":
                if "--learner" in argv:
                    argv[argv.index("--learner") + 1] = "127.0.0.1:1"
                else:
                    argv[1:1] = ["--learner", "127.0.0.1:1"]
            p = subprocess.run(argv, cwd=a.source, capture_output=True, text=True, timeout=60)
            ran += 1
            if kind == "run" and p.returncode != 0:
                errors.append(f"`{cmd}` exited {p.returncode}: {p.stderr.strip()[-400:]}")
            if kind == "loptctl" and "cannot reach a learner at 127.0.0.1:1" not in p.stderr:
                errors.append(f"`{cmd}` fails for another reason than the missing learner "
                              f"(exit {p.returncode}): {p.stderr.strip()[-400:]}")
        else:
            errors.append(f"tests/readme_commands.txt: `{cmd}`: unknown kind '{how}'")
    for e in errors:
        print("FAIL:", e)
    print(f"{len(found)} README commands, {ran} run here, {len(errors)} problems")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
