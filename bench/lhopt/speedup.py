#!/usr/bin/env python3
"""Speed-ups of an LHOPT eval's arms over its tuned baselines (the LHOPT paper's Figure 2 measure).

  python3 bench/lhopt/speedup.py EVAL_DIR [EVAL_DIR ...] [--arms schedule,schedule_peak,controller]
  python3 bench/lhopt/speedup.py --self-test

EVAL_DIR is what `lopt eval --schedule/--controller` writes: curves.csv (arm, lr, seed, step,
train_loss: the mean training loss of each window of eval.record_every steps) and report.json.
For each arm family it takes the member with the lowest final train loss (report.json), and so
for the baselines: the best constant AdamW ("adamw") and the best warm-up-free cosine AdamW
("adamw_cosine") of the grid. Curves are averaged over seeds.

The speed-up of an arm A over a baseline B, both run for N steps:
  - if A's curve reaches B's final loss at step t <= N: N / t (>= 1: A gets there t/N as fast);
  - else, if B's curve reaches A's final loss at step t: t / N (< 1);
  - crossings are interpolated linearly between the recorded points (t from 0, where no curve
    is recorded, is not extrapolated: the first recorded point is the earliest crossing).
Prints one row a size (eval dir) and arm: its final loss and the speed-ups over both baselines.
"""
import argparse
import csv
import json
import os
import sys
from collections import defaultdict


def first_step_at_or_below(steps, losses, target):
    """The first (interpolated) step at which the curve is <= target, or None."""
    prev = None
    for s, v in zip(steps, losses):
        if v <= target:
            if prev is None or prev[1] == v:
                return float(s)
            ps, pv = prev
            return ps + (s - ps) * (pv - target) / (pv - v)
        prev = (s, v)
    return None


def speedup(arm, base):
    """arm, base: (steps, mean losses) over the same budget (the last step is N)."""
    n = float(arm[0][-1])
    t = first_step_at_or_below(arm[0], arm[1], base[1][-1])
    if t is not None:
        return n / t
    t = first_step_at_or_below(base[0], base[1], arm[1][-1])
    # Neither reaches the other's final loss: cannot happen with final values (one of the two
    # finals is <= the other); guard anyway.
    return t / n if t is not None else float("nan")


def load(eval_dir):
    curves = defaultdict(lambda: defaultdict(list))  # (arm, lr) -> step -> [loss per seed]
    with open(os.path.join(eval_dir, "curves.csv")) as f:
        for row in csv.DictReader(f):
            key = (row["arm"], row["lr"])
            curves[key][int(row["step"])].append(float(row["train_loss"]))
    mean = {}
    for key, by_step in curves.items():
        steps = sorted(by_step)
        mean[key] = (steps, [sum(by_step[s]) / len(by_step[s]) for s in steps])
    with open(os.path.join(eval_dir, "report.json")) as f:
        report = json.load(f)
    return report, mean


def best(report, family):
    """The (arm, lr) key of the family's member with the lowest final train loss."""
    members = [a for a in report["arms"] if a["arm"] == family]
    if not members:
        return None
    a = min(members, key=lambda a: a["final_train_loss"])
    return (a["arm"], "" if a["lr"] is None else f"{a['lr']:.3g}")


def find_curve(mean, key):
    arm, lr = key
    for (a, l), c in mean.items():
        if a != arm:
            continue
        if lr == "" and l == "":
            return c
        # report.json holds the float32 lr (0.100000001), curves.csv the printed one (0.1).
        if lr != "" and l != "" and abs(float(l) - float(lr)) <= 1e-6 * abs(float(lr)):
            return c
    return None


def table(dirs, families):
    rows = []
    print(f"{'eval':<28} {'arm':<26} {'final loss':>10} {'vs adamw':>20} {'vs adamw_cosine':>24}")
    for d in dirs:
        report, mean = load(d)
        bases = {}
        for fam in ("adamw", "adamw_cosine"):
            k = best(report, fam)
            bases[fam] = (k, find_curve(mean, k) if k else None)
        for fam in families:
            k = best(report, fam)
            if k is None:
                continue
            c = find_curve(mean, k)
            cells = []
            for fam_b in ("adamw", "adamw_cosine"):
                kb, cb = bases[fam_b]
                s = speedup(c, cb) if (c and cb) else float("nan")
                cells.append(f"{s:5.2f}x (lr {kb[1]})")
            name = k[0] + (f" lr={k[1]}" if k[1] != "" else "")
            print(f"{os.path.basename(os.path.normpath(d)):<28} {name:<26} {c[1][-1]:>10.4f} "
                  f"{cells[0]:>20} {cells[1]:>24}")
            rows.append({"eval": d, "arm": name, "final_loss": c[1][-1],
                         "speedup_vs_adamw": speedup(c, bases["adamw"][1]),
                         "speedup_vs_adamw_cosine": speedup(c, bases["adamw_cosine"][1]),
                         "adamw_lr": bases["adamw"][0][1], "adamw_cosine_lr": bases["adamw_cosine"][0][1]})
    return rows


def self_test():
    # A baseline that decays as 1/sqrt(t) over 100 steps, recorded every 10.
    steps = list(range(10, 101, 10))
    base = (steps, [1.0 / (s ** 0.5) for s in steps])
    # An arm that is the baseline run twice as fast: arm(t) = base(2t) reaches base's final at 50.
    fast = (steps, [1.0 / ((2 * s) ** 0.5) for s in steps])
    assert abs(speedup(fast, base) - 2.0) < 1e-9, speedup(fast, base)
    # The reverse: the baseline reaches the slow arm's final loss at step 50: 0.5.
    slow = (steps, [1.0 / ((s / 2) ** 0.5) for s in steps])
    assert abs(speedup(slow, base) - 0.5) < 1e-9, speedup(slow, base)
    # Identical curves: 1.
    assert abs(speedup(base, base) - 1.0) < 1e-12
    # Interpolation between recorded points: linear curves 1 - s/200 and 1 - s/100; the second
    # reaches the first's final (0.5) at step 50 exactly, between no recorded points of its own.
    lin_b = (steps, [1 - s / 200 for s in steps])
    lin_a = ([20, 40, 60, 80, 100], [1 - s / 100 for s in [20, 40, 60, 80, 100]])
    assert abs(speedup(lin_a, lin_b) - 2.0) < 1e-9, speedup(lin_a, lin_b)
    # A crossing before the first recorded point counts from that point, not extrapolated.
    early = (steps, [0.0 for _ in steps])
    assert abs(speedup(early, base) - 10.0) < 1e-9, speedup(early, base)
    print("speedup self-test: ok")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dirs", nargs="*")
    p.add_argument("--arms", default="schedule,schedule_peak,controller")
    p.add_argument("--json", help="also write the rows to this file")
    p.add_argument("--self-test", action="store_true")
    a = p.parse_args()
    if a.self_test:
        self_test()
        return
    if not a.dirs:
        p.error("give one or more eval directories (or --self-test)")
    rows = table(a.dirs, a.arms.split(","))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
