#!/usr/bin/env python3
"""The neumf study's table from its lopt eval reports, plus a popularity baseline.

  make_table.py OUT    (OUT as bench/neumf/run_study.sh leaves it)

Rows: each shipped optimizer (trained and untrained), AdamW at each learning
rate; mean +- std over seeds of HR@10, NDCG@10, the final training loss and
the test loss. The popularity baseline ranks each user's held-out item among
100 unrated items by training popularity, with the family's rules
(leave-one-out by timestamp, ties count against the held-out item), on
negatives drawn here (not the task's draw: same distribution, other items).
"""
import json
import math
import os
import random
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import shipped_controller  # noqa: E402  (bench/shipped_controller.py)


def mean_std(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return float("nan"), float("nan")
    return statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def popularity_baseline(path, negatives=100, seed=0):
    by_user = {}
    with open(path) as f:
        for n, line in enumerate(f):
            u, i, _, t = line.strip().split("::")
            by_user.setdefault(u, []).append((int(t), n, i))
    items = sorted({i for rs in by_user.values() for _, _, i in rs})
    pop = {i: 0 for i in items}
    test = {}
    rated = {}
    for u, rs in by_user.items():
        rs.sort()
        test[u] = rs[-1][2]
        rated[u] = {i for _, _, i in rs}
        for _, _, i in rs[:-1]:
            pop[i] += 1
    rng = random.Random(seed)
    hits = gains = 0.0
    for u in by_user:
        negs = set()
        while len(negs) < negatives:
            i = items[rng.randrange(len(items))]
            if i not in rated[u]:
                negs.add(i)
        s = pop[test[u]]
        rank = sum(1 for i in negs if pop[i] >= s)
        if rank < 10:
            hits += 1
            gains += 1 / math.log2(rank + 2)
    return hits / len(by_user), gains / len(by_user)


def main():
    out = sys.argv[1]
    rows = []
    seen_adamw = set()
    for opt in ("fmnist8_elo", "fmnist28_mlp_elo_xi0"):
        path = os.path.join(out, opt, "report.json")
        if not os.path.exists(path):
            continue
        report = json.load(open(path))
        groups = {}
        for r in report["runs"]:
            if r["optimizer"] == "adamw":
                key = ("AdamW", r["lr"])
            else:
                key = (f"{opt} ({'trained' if r['optimizer'] == 'lopt' else r['optimizer']})", None)
            groups.setdefault(key, []).append(r)
        for (name, lr), runs in groups.items():
            if name == "AdamW":
                if lr in seen_adamw:
                    continue
                seen_adamw.add(lr)
            rows.append((name if lr is None else f"AdamW lr={lr:g}", runs, lr))
        steps = report["steps"]
        seeds = len(next(iter(groups.values())))
    rows.sort(key=lambda r: (r[2] is not None, -(r[2] or 0)))
    print(f"{steps} steps, {seeds} seeds; mean +- std over seeds\n")
    print("| optimizer | HR@10 | NDCG@10 | final train loss | test loss |")
    print("|---|---|---|---|---|")
    best = None
    for name, runs, lr in rows:
        hr = mean_std([r.get("test_hit_rate") for r in runs])
        nd = mean_std([r.get("test_ndcg") for r in runs])
        fl = mean_std([r["final_train_loss"] if not r["diverged"] else None for r in runs])
        tl = mean_std([r["test_loss"] if not r["diverged"] else None for r in runs])
        div = sum(r["diverged"] for r in runs)
        note = f" ({div} diverged)" if div else ""
        print(f"| {name}{note} | {hr[0]:.4f} ± {hr[1]:.4f} | {nd[0]:.4f} ± {nd[1]:.4f} | "
              f"{fl[0]:.4f} ± {fl[1]:.4f} | {tl[0]:.4f} ± {tl[1]:.4f} |")
        if lr is not None and (best is None or hr[0] > best[1]):
            best = (name, hr[0])
    data = os.path.join(out, "data", "ratings.dat")
    if os.path.exists(data):
        hr, nd = popularity_baseline(data)
        print(f"| popularity (no training) | {hr:.4f} | {nd:.4f} | | |")
    if best:
        print(f"\nbest AdamW by HR@10: {best[0]}")
    lhopt_table(out)


def lhopt_table(out):
    """The shipped LHOPT controller's rows (bench/shipped_controller.py), if its evals ran."""
    shipped_controller.print_table(out, [
        ("HR@10", lambda a: f"{a.get('test_hit_rate', float('nan')):.4f}"),
        ("NDCG@10", lambda a: f"{a.get('test_ndcg', float('nan')):.4f}"),
        ("final train loss", lambda a: shipped_controller.mean_std(a, "final_train_loss")),
        ("test loss", lambda a: shipped_controller.mean_std(a, "test_loss"))])

if __name__ == "__main__":
    main()
