#!/usr/bin/env python3
"""What meta-validation picked, against what the meta-test says of every candidate.

`lopt select` ranks candidates (a run's snapshots, or several runs' optimizers) by their final
train loss on validation seeds of their own; `lopt eval` measures each on the meta-test's seeds.
This joins the two: per candidate, its validation figures and rank, and its meta-test mean final
train loss and test loss (as trained, `lopt`; and with the inference schedule, `lopt_scheduled`,
where the report has it) with the difference from a baseline's mean (the best constant AdamW
of the grid report). A candidate whose selection is any good ranks where the meta-test ranks it.

  bench/elo/selection_table.py SELECTION_CSV BASELINE_REPORT [CANDIDATE=REPORT ...]
      [--baseline-lr LR] [--group PREFIX ...]

BASELINE_REPORT holds the AdamW arms; the baseline is AdamW at --baseline-lr (default: the
lowest mean final train loss of its constant arms). --group PREFIX also prints, per prefix
(e.g. naive_s, elo_lr1e3_s), the candidate of that prefix the validation picks: selection
among one variant's meta-training seeds.

  bench/elo/selection_table.py --self-test
"""
import argparse
import csv
import json
import math
import sys


def mean(xs):
    return sum(xs) / len(xs) if xs else float("nan")


def arm_means(report, optimizer, lr=None):
    runs = [r for r in report["runs"] if r["optimizer"] == optimizer and (lr is None or abs(r["lr"] - lr) < 1e-12)]
    if not runs:
        return None
    return (mean([r["final_train_loss"] for r in runs]), mean([r["test_loss"] for r in runs]), len(runs))


def best_adamw(report, lr=None):
    lrs = sorted({r["lr"] for r in report["runs"] if r["optimizer"] == "adamw"})
    if lr is not None:
        lrs = [x for x in lrs if abs(x - lr) < 1e-12]
    best = min(lrs, key=lambda x: arm_means(report, "adamw", x)[0])
    return best, arm_means(report, "adamw", best)


def table(rows, reports, baseline, groups):
    blr, (btrain, btest, _) = baseline
    out = ["| candidate | validation mean (rank) | worst seed | meta-test train: as trained (− AdamW) "
           "| test loss (− AdamW) | with schedule: train | test |", "|---|---|---|---|---|---|---|"]
    ranked = sorted(rows, key=lambda r: (int(r["diverged"]), int(r["climbed_back"]), float(r["mean_final_train_loss"])))
    rank = {r["candidate"]: i + 1 for i, r in enumerate(ranked)}
    for r in rows:
        c = r["candidate"]
        cells = [c, "%.4f (%d)" % (float(r["mean_final_train_loss"]), rank[c]), "%.4f" % float(r["worst_final_train_loss"])]
        rep = reports.get(c)
        a = arm_means(rep, "lopt") if rep else None
        s = arm_means(rep, "lopt_scheduled") if rep else None
        cells += ["%.4f (%+.4f)" % (a[0], a[0] - btrain), "%.4f (%+.4f)" % (a[1], a[1] - btest)] if a else ["-", "-"]
        cells += ["%.4f" % s[0], "%.4f" % s[1]] if s else ["-", "-"]
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    out.append("Baseline: AdamW lr=%g, meta-test train %.4f, test %.4f." % (blr, btrain, btest))
    for g in groups:
        members = [r for r in ranked if r["candidate"].startswith(g)]
        if members:
            pick = members[0]["candidate"]
            rep = reports.get(pick)
            a = arm_means(rep, "lopt") if rep else None
            out.append("Validation picks %s among %s: meta-test train %s." % (
                pick, ", ".join(sorted(m["candidate"] for m in members)),
                "%.4f (%+.4f against AdamW)" % (a[0], a[0] - btrain) if a else "not measured"))
    return "\n".join(out) + "\n"


def self_test():
    rows = [{"candidate": "x_s0", "mean_final_train_loss": "0.5", "worst_final_train_loss": "0.6", "diverged": "0", "climbed_back": "0"},
            {"candidate": "x_s1", "mean_final_train_loss": "0.3", "worst_final_train_loss": "0.4", "diverged": "0", "climbed_back": "1"},
            {"candidate": "x_s2", "mean_final_train_loss": "0.4", "worst_final_train_loss": "0.4", "diverged": "0", "climbed_back": "0"}]
    rep = lambda v, t: {"runs": [{"optimizer": "lopt", "lr": None, "final_train_loss": v, "test_loss": t}] * 2}
    base = {"runs": [{"optimizer": "adamw", "lr": 1e-3, "final_train_loss": 0.45, "test_loss": 0.5},
                     {"optimizer": "adamw", "lr": 3e-3, "final_train_loss": 0.40, "test_loss": 0.6}]}
    b = best_adamw(base)
    assert b[0] == 3e-3 and b[1][0] == 0.40, b
    t = table(rows, {"x_s2": rep(0.35, 0.45)}, b, ["x_s"])
    # x_s1 climbed back: ranked last despite the lowest mean; x_s2 is picked.
    assert "| x_s1 | 0.3000 (3) |" in t and "| x_s2 | 0.4000 (1) |" in t, t
    assert "Validation picks x_s2 among x_s0, x_s1, x_s2: meta-test train 0.3500 (-0.0500 against AdamW)." in t, t
    print("selection_table.py self-test: ok")


def main():
    if "--self-test" in sys.argv:
        return self_test()
    p = argparse.ArgumentParser()
    p.add_argument("selection_csv")
    p.add_argument("baseline_report")
    p.add_argument("reports", nargs="*")
    p.add_argument("--baseline-lr", type=float)
    p.add_argument("--group", nargs="*", default=[])
    a = p.parse_args()
    with open(a.selection_csv) as f:
        rows = list(csv.DictReader(f))
    reports = {}
    for spec in a.reports:
        name, path = spec.split("=", 1)
        with open(path) as f:
            reports[name] = json.load(f)
    with open(a.baseline_report) as f:
        baseline = best_adamw(json.load(f), a.baseline_lr)
    sys.stdout.write(table(rows, reports, baseline, a.group))


if __name__ == "__main__":
    main()
