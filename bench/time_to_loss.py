#!/usr/bin/env python3
"""Time to the same loss: two or more `lopt train` runs of one ELO job.

  python3 bench/time_to_loss.py REF/metrics.csv OTHER/metrics.csv [...]   (.csv or .csv.gz)

Reads each run's metrics.csv (outer_step, meta_loss, task_loss, ..., wall_s;
wall_s is cumulative over a run's resumes) and smooths task_loss with a trailing mean over --window outer steps. The
target is the first run's final smoothed task loss (the loss its full
budget reaches), plus any --at values. For every run it prints the first
outer step and wall second at which the smoothed loss is at or below each
target ("-" where it never is), and the speed-up over the first run.

ELO's meta-loss mixes the behaviour-cloning loss with the task loss by the
alpha schedule and so rises as alpha goes from 0 to 1; the task loss (the
inner training loss under the perturbed learned optimizer) is the quantity
both runs drive down, and at a given outer step both mix it the same way.
"""
import argparse
import csv
import gzip
import sys


def load(path, window):
    steps, wall, loss = [], [], []
    with (gzip.open(path, "rt") if path.endswith(".gz") else open(path)) as f:
        for row in csv.DictReader(f):
            if "wall_s" not in row or row["wall_s"] in (None, ""):
                sys.exit(f"{path}: no wall_s column (written by lopt train since this script)")
            step = int(row["outer_step"])
            # One row an outer step, in order: lopt train before issue 13
            # appended a resumed run's rows after the ones it redid.
            if steps and step <= steps[-1]:
                sys.exit(f"{path}: outer_step {step} follows {steps[-1]}: repeated or "
                         f"out-of-order rows (a run resumed by an older lopt train?)")
            steps.append(step)
            wall.append(float(row["wall_s"]))
            loss.append(float(row["task_loss"]))
    if not steps:
        sys.exit(f"{path}: no rows")
    smooth, acc = [], 0.0
    for i, v in enumerate(loss):
        acc += v
        if i >= window:
            acc -= loss[i - window]
        smooth.append(acc / min(i + 1, window))
    return steps, wall, smooth


def first_at_or_below(run, target, window):
    steps, wall, smooth = run
    for i in range(window - 1, len(smooth)):
        if smooth[i] <= target:
            return steps[i], wall[i]
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="metrics.csv files; the first is the reference")
    ap.add_argument("--names", help="comma-separated labels (default: the paths)")
    ap.add_argument("--window", type=int, default=100)
    ap.add_argument("--at", type=float, action="append", default=[],
                    help="another task-loss target (repeatable)")
    a = ap.parse_args()
    names = a.names.split(",") if a.names else a.runs
    if len(names) != len(a.runs):
        sys.exit("--names needs one label a run")
    runs = [load(p, a.window) for p in a.runs]
    ref_final = runs[0][2][-1]
    targets = sorted(set(a.at), reverse=True) + [ref_final]
    print(f"task loss, trailing mean over {a.window} outer steps; "
          f"reference {names[0]} ends at {ref_final:.4f} after {runs[0][1][-1]:.1f} s")
    print(f"{'target':>8}  " + "  ".join(f"{n:>28}" for n in names))
    for t in targets:
        cells, ref_wall = [], None
        for j, r in enumerate(runs):
            hit = first_at_or_below(r, t, a.window)
            if hit is None:
                cells.append(f"{'-':>28}")
                continue
            step, wall = hit
            if j == 0:
                ref_wall = wall
            sp = f" ({ref_wall / wall:.1f}x)" if j > 0 and ref_wall and wall > 0 else ""
            cells.append(f"{f'step {step}, {wall:.1f} s{sp}':>28}")
        label = f"{t:.4f}" + ("*" if t == ref_final else "")
        print(f"{label:>8}  " + "  ".join(cells))
    print("* the reference's final loss")
    for n, r in zip(names, runs):
        # outer_step counts from 0: the last row's + 1 steps were done.
        print(f"{n}: {r[0][-1] + 1} outer steps in {r[1][-1]:.1f} s, final smoothed task loss {r[2][-1]:.4f}")


if __name__ == "__main__":
    main()
