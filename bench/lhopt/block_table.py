#!/usr/bin/env python3
"""Per-block table of an LHOPT run: mean training reward (metrics.csv) and
the fixed-yardstick score (yardstick.csv) per block of PPO iterations.

  python3 bench/lhopt/block_table.py RUN_DIR [BLOCK]   (BLOCK: 50 iterations)

The yardstick column is the mean of the yardstick rows whose version falls
in the block's (start, end] (the row at version v scores the policy after
v updates), plus the row at version 0 in the first block's 'start' line.
"""
import csv
import sys


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def mean(xs):
    return sum(xs) / len(xs) if xs else float("nan")


def main():
    run = sys.argv[1]
    block = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    m = rows(f"{run}/metrics.csv")
    try:
        y = rows(f"{run}/yardstick.csv")
    except FileNotFoundError:
        y = []
    tasks = [k[len("score_"):] for k in (y[0].keys() if y else []) if k.startswith("score_")]
    head = "| iterations | mean reward | entropy | yardstick (mean) | " + " | ".join(
        f"yardstick {t}" for t in tasks) + " | " + " | ".join(
        f"final eval loss {t}" for t in tasks) + " | wall (min) |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    if y and int(y[0]["iteration"]) == 0:
        r = y[0]
        print(f"| start (policy at init) | | | {float(r['score']):+.3f} | " +
              " | ".join(f"{float(r['score_' + t]):+.3f}" for t in tasks) + " | " +
              " | ".join(f"{float(r['final_loss_' + t]):.4g}" for t in tasks) + " | 0 |")
        print("| reference (CIAO constant) | | | 0 by construction | " + " | ".join("" for t in tasks) +
              " | " + " | ".join(f"{float(r['reference_final_loss_' + t]):.4g}" for t in tasks) + " | |")
    n = len(m)
    for b in range(0, n, block):
        chunk = m[b:b + block]
        lo, hi = int(chunk[0]["iteration"]), int(chunk[-1]["iteration"])
        ys = [r for r in y if lo + 1 <= int(r["iteration"]) <= hi + 1]
        ysc = mean([float(r["score"]) for r in ys])
        per = [mean([float(r["score_" + t]) for r in ys]) for t in tasks]
        fin = [mean([float(r["final_loss_" + t]) for r in ys]) for t in tasks]
        print(f"| {lo}–{hi} | {mean([float(r['mean_reward']) for r in chunk]):+.3f} | "
              f"{mean([float(r['entropy']) for r in chunk]):.2f} | {ysc:+.3f} ({len(ys)} evals) | " +
              " | ".join(f"{v:+.3f}" for v in per) + " | " + " | ".join(f"{v:.4g}" for v in fin) +
              f" | {float(chunk[-1]['wall_s']) / 60:.1f} |")


if __name__ == "__main__":
    main()
