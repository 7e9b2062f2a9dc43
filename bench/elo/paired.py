#!/usr/bin/env python3
"""Paired comparison of learned optimizers with AdamW over the same meta-test seeds.

`lopt eval` trains every arm from the same initialisations on the same batches (seed s of one
optimizer's report is seed s of another's when their eval jobs share `seed:`), so the fair test
of "below AdamW" is per seed: the difference of the two arms' final losses on the same
optimizee. This prints, for each learned-optimizer arm (as trained, `lopt`; with the inference
schedule, `lopt_scheduled`), its mean and std over seeds, and against the best constant AdamW
and the best cosine AdamW of the grid report: the mean paired difference, its standard error,
and the seeds it wins.

  bench/elo/paired.py [NAME=]GRID_REPORT [NAME=REPORT ...] [--metric final_train_loss|test_loss]
                      [--markdown]
GRID_REPORT holds the AdamW grid (constant and cosine); each NAME=REPORT is another optimizer's
`lopt eval` report.json over the same seeds (its own AdamW arms are ignored). The best AdamW of
the grid is picked by the mean of the metric over seeds.

  --by-variant   groups NAMEs of the form VARIANT_sN (N a meta-training seed) and prints, per
                 variant and arm, the mean and the median over its meta-training seeds of
                 their mean over meta-test seeds, the seeds' range, the mean paired difference from the best
                 AdamW, and how many meta-training seeds are ahead of it (--dat FILE also writes
                 the per-seed means, one line a variant and arm, for a figure).

  bench/elo/paired.py --self-test
"""
import argparse
import json
import math
import sys


def load_runs(path):
    with open(path) as f:
        return json.load(f)["runs"]


def by_seed(runs, optimizer, lr=None, metric="final_train_loss"):
    out = {}
    for r in runs:
        if r["optimizer"] != optimizer:
            continue
        if lr is not None and (r["lr"] is None or abs(r["lr"] - lr) > 1e-9 * max(1.0, lr)):
            continue
        v = r.get(metric)
        if v is None or r.get("diverged"):
            v = math.inf
        out[r["seed"]] = float(v)
    return out


def mean_std(xs):
    xs = list(xs)
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, 0.0
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def best_adamw(runs, optimizer, metric):
    lrs = sorted({r["lr"] for r in runs if r["optimizer"] == optimizer})
    if not lrs:
        return None, None, None
    scored = [(mean_std(by_seed(runs, optimizer, lr, metric).values())[0], lr) for lr in lrs]
    m, lr = min(scored)
    edge = lr in (lrs[0], lrs[-1]) and len(lrs) > 1
    return lr, by_seed(runs, optimizer, lr, metric), edge


def paired(a, b):
    """Mean and standard error of a[s] - b[s] over shared seeds, and a's wins."""
    seeds = sorted(set(a) & set(b))
    d = [a[s] - b[s] for s in seeds]
    m, sd = mean_std(d)
    return m, sd / math.sqrt(len(d)) if len(d) > 1 else 0.0, sum(x < 0 for x in d), len(d)


def rows(grid_path, others, metric, grid_name="grid"):
    grid = load_runs(grid_path)
    base = {}
    for name in ("adamw", "adamw_cosine"):
        lr, seeds, edge = best_adamw(grid, name, metric)
        if lr is not None:
            base[name] = (lr, seeds, edge)
    out = []
    for name, lr_seeds in (("adamw", base.get("adamw")), ("adamw_cosine", base.get("adamw_cosine"))):
        if lr_seeds:
            m, s = mean_std(lr_seeds[1].values())
            out.append((f"{name} lr={lr_seeds[0]:g} (best{' AT AN EDGE' if lr_seeds[2] else ''})",
                        m, s, len(lr_seeds[1]), None, None))
    for label, path in [(grid_name, grid_path)] + others:
        runs = load_runs(path)
        for arm in ("lopt", "lopt_scheduled"):
            mine = by_seed(runs, arm, None, metric)
            if not mine:
                continue
            m, s = mean_std(mine.values())
            vs = [paired(mine, base[k][1]) if k in base else None for k in ("adamw", "adamw_cosine")]
            out.append((f"{label} {arm}", m, s, len(mine), vs[0], vs[1]))
    return out


def fmt_vs(v):
    if v is None:
        return "-"
    m, se, wins, n = v
    return f"{m:+.4f} ± {se:.4f} ({wins}/{n})"


def print_table(grid_path, others, metric, markdown, grid_name="grid"):
    rs = rows(grid_path, others, metric, grid_name)
    head = ["arm", f"{metric} mean ± std", "seeds", "− best constant AdamW (wins)",
            "− best cosine AdamW (wins)"]
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
    else:
        print("\t".join(head))
    for name, m, s, n, v1, v2 in rs:
        cells = [name, f"{m:.4f} ± {s:.4f}", str(n), fmt_vs(v1), fmt_vs(v2)]
        print(("| " + " | ".join(cells) + " |") if markdown else "\t".join(cells))


def variant_rows(grid_path, others, metric, grid_name="grid"):
    """Per (variant, arm): [(seed label, mean, paired-vs-constant, paired-vs-cosine)]."""
    groups = {}
    for name, m, _, _, v1, v2 in rows(grid_path, others, metric, grid_name):
        label, _, arm = name.partition(" ")
        variant, sep, seed = label.rpartition("_s")
        if not arm.startswith("lopt") or not sep or not seed.isdigit():
            continue
        groups.setdefault((variant, arm), []).append((int(seed), m, v1, v2))
    return {k: sorted(v) for k, v in groups.items()}


def median(xs):
    """The median (the mean of the middle two of an even count): one meta-training seed whose
    optimizer diverges on some meta-test seeds would otherwise decide a variant's figure."""
    ys = sorted(xs)
    k = len(ys) // 2
    return ys[k] if len(ys) % 2 else (ys[k - 1] + ys[k]) / 2


def print_variants(grid_path, others, metric, markdown, grid_name="grid", dat=None):
    head = ["variant", "arm", "meta-training seeds", f"{metric}: mean over seeds", "median", "range",
            "− best constant AdamW", "seeds ahead of it", "− best cosine AdamW", "seeds ahead of it"]
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
    lines = []
    for (variant, arm), seeds in variant_rows(grid_path, others, metric, grid_name).items():
        means = [m for _, m, _, _ in seeds]
        cells = [variant, arm, ",".join(str(s) for s, *_ in seeds), f"{sum(means) / len(means):.4f}",
                 f"{median(means):.4f}", f"{min(means):.4f}–{max(means):.4f}"]
        for k in (2, 3):
            vs = [x[k] for x in seeds if x[k] is not None]
            cells += [f"{sum(v[0] for v in vs) / len(vs):+.4f}", f"{sum(v[0] < 0 for v in vs)}/{len(vs)}"]\
                if vs else ["-", "-"]
        print(("| " + " | ".join(cells) + " |") if markdown else "\t".join(cells))
        lines.append(f"{variant}_{arm} " + " ".join(f"{m:.6f}" for m in means))
    if dat:
        with open(dat, "w") as f:
            f.write(f"# variant_arm, then the {metric} of each meta-training seed (mean over meta-test seeds)\n")
            f.write("\n".join(lines) + "\n")


def self_test():
    import os
    import tempfile

    def report(arms):
        runs = []
        for (opt, lr), vals in arms.items():
            for s, v in enumerate(vals):
                runs.append({"optimizer": opt, "lr": lr, "seed": s, "final_train_loss": v,
                             "test_loss": v + 0.1, "diverged": False})
        return {"runs": runs}

    d = tempfile.mkdtemp()
    g = os.path.join(d, "grid.json")
    o = os.path.join(d, "other.json")
    with open(g, "w") as f:
        json.dump(report({("adamw", 1e-3): [1.0, 2.0, 3.0], ("adamw", 3e-3): [1.5, 2.5, 3.5],
                          ("adamw_cosine", 1e-3): [0.9, 1.9, 2.9],
                          ("lopt", None): [0.8, 2.1, 2.7], ("lopt_scheduled", None): [1.0, 1.0, 1.0]}), f)
    with open(o, "w") as f:
        json.dump(report({("lopt", None): [2.0, 2.0, 2.0]}), f)
    rs = rows(g, [("other", o)], "final_train_loss")
    names = [r[0] for r in rs]
    assert names[0].startswith("adamw lr=0.001 (best AT AN EDGE)"), names
    assert names[1].startswith("adamw_cosine lr=0.001"), names
    lopt = rs[2]
    # lopt - adamw 1e-3 per seed: -0.2, +0.1, -0.3 -> mean -0.1333, two wins of three.
    m, se, wins, n = lopt[4]
    assert abs(m + 0.4 / 3) < 1e-12 and wins == 2 and n == 3, lopt
    exp_sd = math.sqrt(sum((x + 0.4 / 3) ** 2 for x in (-0.2, 0.1, -0.3)) / 2)
    assert abs(se - exp_sd / math.sqrt(3)) < 1e-12
    other = rs[4]
    assert other[0] == "other lopt" and abs(other[1] - 2.0) < 1e-12
    assert abs(other[5][0] - (2.0 - 1.9)) < 1e-12 and other[5][2] == 1  # wins only seed 0
    # A diverged run counts as infinitely bad.
    runs = [{"optimizer": "lopt", "lr": None, "seed": 0, "final_train_loss": 0.1, "diverged": True}]
    assert by_seed(runs, "lopt")[0] == math.inf
    # Variants: meta-training seeds v_s0 (mean 2.0) and v_s1 (mean 1.0) of one variant.
    o1 = os.path.join(d, "other1.json")
    with open(o1, "w") as f:
        json.dump(report({("lopt", None): [1.0, 1.0, 1.0]}), f)
    vr = variant_rows(g, [("v_s0", o), ("v_s1", o1), ("not a variant", o)], "final_train_loss")
    assert set(vr) == {("v", "lopt")}, vr
    (s0, m0, c0, _), (s1, m1, c1, _) = vr[("v", "lopt")]
    assert (s0, s1) == (0, 1) and abs(m0 - 2.0) < 1e-12 and abs(m1 - 1.0) < 1e-12
    assert abs(c0[0] - 0.0) < 1e-12 and abs(c1[0] + 1.0) < 1e-12  # against adamw 1e-3 (mean 2.0)
    assert median([3.0, 1.0, 100.0]) == 3.0 and median([4.0, 1.0, 2.0, 100.0]) == 3.0
    print("paired.py self-test: ok")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("grid", nargs="?")
    ap.add_argument("others", nargs="*", help="NAME=REPORT")
    ap.add_argument("--metric", default="final_train_loss", choices=["final_train_loss", "test_loss"])
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--by-variant", action="store_true")
    ap.add_argument("--dat", help="with --by-variant: the per-seed means, for a figure")
    ap.add_argument("--self-test", action="store_true")
    a = ap.parse_args()
    if a.self_test:
        self_test()
        return
    if not a.grid:
        ap.error("GRID_REPORT is needed")
    others = []
    for o in a.others:
        if "=" not in o:
            ap.error(f"{o}: expected NAME=REPORT")
        others.append(tuple(o.split("=", 1)))
    grid_name, grid = a.grid.split("=", 1) if "=" in a.grid else ("grid", a.grid)
    if a.by_variant:
        print_variants(grid, others, a.metric, a.markdown, grid_name, a.dat)
    else:
        print_table(grid, others, a.metric, a.markdown, grid_name)


if __name__ == "__main__":
    sys.exit(main())
