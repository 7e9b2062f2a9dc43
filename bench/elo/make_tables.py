#!/usr/bin/env python3
"""Tables and figures of bench/elo/README.md from the study's result files.

    bench/elo/make_tables.py RESULTS_DIR > RESULTS_DIR/tables.md

RESULTS_DIR holds one folder a meta-training run (<variant>_s<seed>, as
bench/elo/run_study.sh writes them) with summary.json, metrics.csv, the
meta-tests eval_warmup/ and eval_cosine/ (report.json, curves.csv,
test_curves.csv), evallarge_<width>/report.json, and optionally the CPU
out-of-distribution meta-tests ood_<task>/report.json. Figures (PNG, gnuplot)
are written into RESULTS_DIR.
"""
import csv
import glob
import gzip
import json
import math
import os
import statistics
import subprocess
import sys

VARIANTS = [
    ("naive", "naive LO (log-uniform, fresh starts, no BC)"),
    ("uniform", "+ uniform unroll lengths"),
    ("bc", "+ behaviour cloning"),
    ("elo", "ELO (+ replay buffer)"),
    ("elo_xi0", "ELO, PES accumulator reset at restores"),
    ("elo_ramp", "ELO, accumulator reset, alpha = 1 from half of meta-training"),
    ("elo_ramp_p05", "the same with P_th = 0.05"),
    ("elo_t16", "ELO, accumulator reset, 16 PES tasks, alpha = 1 from half-way"),
    ("elo_lr1e3", "ELO, accumulator reset, outer lr 1e-3"),
    ("elo_lr1e3_5k", "the same, a 5,000-step budget (stopped at the deadline)"),
    ("curriculum", "LO (curriculum 1k to 10k)"),
    ("mulo", "muLO (ELO in muP over widths 128/512/1024)"),
    ("mulo_ramp", "muLO, 1,000 outer steps, alpha = 1 from half-way"),
]
HORIZON = 1000
# The in-distribution meta-tests: folder, the learned optimizer's inference schedule.
EVALS = (("eval_warmup", "warm-up 5% then constant"),
         ("eval_cosine", "warm-up 5% then cosine to 0.1×"),
         ("eval_cosine_6seeds", "warm-up 5% then cosine to 0.1× (6 meta-test seeds)"))


def load(path):
    with open(path) as f:
        return json.load(f)


def mean_std(xs):
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    if not xs:
        return float("nan"), float("nan")
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def fmt(m, s, digits=4):
    if math.isnan(m):
        return "diverged"
    if abs(m) >= 1e3:  # a loss that blew up: its size, not four decimals of it
        return f"diverged ({m:.1e})"
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def cells(runs, train_note=""):
    """The table cells 'train loss | test loss | test accuracy %' of runs (mean ± std)."""
    m, s = mean_std([r["final_train_loss"] for r in runs])
    tm, ts = mean_std([r["test_loss"] for r in runs])
    am, as_ = mean_std([100 * r["test_accuracy"] for r in runs])
    return f"{fmt(m, s)}{train_note} | {fmt(tm, ts)} | {fmt(am, as_, 2)}"


def runs_of(root, variant):
    return sorted(d for d in glob.glob(os.path.join(root, f"{variant}_s*")) if os.path.isdir(d))


def adamw_groups(report, arm="adamw"):
    """AdamW's runs by lr: arm "adamw" (constant) or "adamw_cosine" (warm-up, cosine)."""
    by_lr = {}
    for r in report["runs"]:
        if r["optimizer"] == arm:
            by_lr.setdefault(r["lr"], []).append(r)
    return by_lr


def best_adamw(report, arm="adamw"):
    """The AdamW learning rate with the lowest mean final train loss (None if the arm was not run)."""
    groups = adamw_groups(report, arm)
    if not groups:
        return None
    best = min(groups, key=lambda lr: mean_std([r["final_train_loss"] for r in groups[lr]])[0])
    lrs = sorted(groups)
    return best, groups[best], best in (lrs[0], lrs[-1]), lrs


def lopt_runs(report, name):
    return [r for r in report["runs"] if r["optimizer"] == name]


def table_rows(path):
    """(optimizer, 'train | test | acc') rows of a `lopt eval` table.txt, as printed
    (mean +- std over its seeds); none if there is no such file."""
    if not os.path.exists(path):
        return []
    rows = []
    for line in open(path):
        parts = line.split()
        if len(parts) == 10 and parts[2] == "+-" and parts[5] == "+-" and parts[8] == "+-":
            rows.append((parts[0], f"{parts[1]} ± {parts[3]} | {parts[4]} ± {parts[6]} | "
                                   f"{parts[7].rstrip('%')} ± {parts[9]}"))
    return rows


def gpu_name(root):
    """The device the study ran on: device.txt (run_study.sh's pack writes the GPU's name; a
    CPU run's folder holds "CPU ..."), else H100."""
    try:
        with open(os.path.join(root, "device.txt")) as f:
            name = f.readline().strip()
    except OSError:
        return "H100"
    for short in ("H100", "H200", "A100"):
        if short in name:
            return short
    return name or "H100"


def main():
    root = sys.argv[1]
    gpu = gpu_name(root)
    out = []
    p = out.append

    # --- Meta-training: wall time and where it ended.
    flag = "cpu" if gpu.startswith("CPU") else "cuda"
    p(f"### Meta-training ({gpu}, `lopt train --device {flag}`)\n")
    p("| variant | seed | outer steps | wall s | inner particle-steps/s | task loss, first 10 → last 10 steps |")
    p("|---|---|---|---|---|---|")
    for v, label in VARIANTS:
        for d in runs_of(root, v):
            f = os.path.join(d, "summary.json")
            if not os.path.exists(f):
                m = os.path.join(d, "metrics.csv")
                if os.path.exists(m):  # stopped without a summary: where its metrics end
                    last = list(csv.DictReader(open(m)))[-1]
                    p(f"| {v} | {d.rsplit('_s', 1)[1]} | {last['outer_step']} (no summary, no optimizer) | "
                      f"{float(last['wall_s']):.0f} | | |")
                continue  # else meta-trained in another folder
            s = load(f)
            p(f"| {v} | {d.rsplit('_s', 1)[1]} | {s['outer_steps']} | {s['wall_seconds']:.0f} | "
              f"{s['inner_particle_steps_per_second']:.0f} | {s['task_loss_start']:.3f} → {s['task_loss_end']:.3f} |")
    p("")

    # --- Table 1 analogue, in distribution.
    for ev, title in EVALS:
        reports = [load(os.path.join(d, ev, "report.json")) for v, _ in VARIANTS for d in runs_of(root, v)
                   if os.path.exists(os.path.join(d, ev, "report.json"))]
        if not reports:
            continue
        # The AdamW rows come from the report with the widest grid.
        any_report = max(reports, key=lambda r: len(adamw_groups(r)))
        best_lr, best_runs, at_edge, lrs = best_adamw(any_report)
        steps = any_report["steps"]
        p(f"### In distribution: {any_report['task']}, {steps} steps (10× the horizon); "
          f"learned optimizers with ELO's inference schedule: {title}\n")
        seeds = len(best_runs)
        p(f"One row a meta-training run (`s0`, `s1`: its seed); mean ± std over the {seeds} "
          "meta-test seeds. Final train loss = mean batch loss over the last 50 steps.\n")
        p("| optimizer | schedule | final train loss | test loss | test accuracy % |")
        p("|---|---|---|---|---|")
        p(f"| **AdamW, best of grid (lr {best_lr:g}{', AT THE GRID EDGE' if at_edge else ''})** | — | "
          f"{cells(best_runs)} |")
        cos = best_adamw(any_report, "adamw_cosine")
        if cos:
            p(f"| **AdamW, warm-up 5% then cosine to 0.1×, best of grid (peak lr {cos[0]:g}"
              f"{', AT THE GRID EDGE' if cos[2] else ''})** | warm-up, cosine | {cells(cos[1])} |")
        for v, label in VARIANTS:
          for d in runs_of(root, v):
            f = os.path.join(d, ev, "report.json")
            if not os.path.exists(f):
                # Where a device call returned the printed table but not the
                # report (its file count limit), the table's own mean ± std.
                for name, cols in table_rows(os.path.join(d, ev, "table.txt")):
                    if name in ("lopt", "lopt_scheduled"):
                        sched = ("warm-up, " + title.split(" then ")[1].split(" (")[0]) if name == "lopt_scheduled" else "none"
                        p(f"| {label} ({d.rsplit('_', 1)[1]}) | {sched} | {cols} (table.txt) |")
                continue
            rep = load(f)
            seed = d.rsplit("_", 1)[1]
            for name, sched in (("lopt", "none"), ("lopt_scheduled", title.split(" then ")[1].split(" (")[0] if ev else "")):
                rs = lopt_runs(rep, name)
                if not rs:
                    continue
                div = sum(1 for r in rs if r.get("diverged"))
                note = f" ({div}/{len(rs)} diverged)" if div else ""
                p(f"| {label} ({seed}) | {'warm-up, ' + sched if name == 'lopt_scheduled' else 'none'} | "
                  f"{cells(rs, note)} |")
        grid = ", ".join(f"{lr:g}" for lr in lrs)
        p(f"\nAdamW grid (weight decay 1e-4): {grid}; its final train loss per lr: " +
          ", ".join(f"{lr:g}: {mean_std([r['final_train_loss'] for r in g])[0]:.4f}"
                    for lr, g in sorted(adamw_groups(any_report).items())) +
          ("; with warm-up and cosine: " +
           ", ".join(f"{lr:g}: {mean_std([r['final_train_loss'] for r in g])[0]:.4f}"
                     for lr, g in sorted(adamw_groups(any_report, "adamw_cosine").items()))
           if cos else "") + "\n")

    # --- Out of distribution (CPU meta-tests, if run).
    ood = sorted(glob.glob(os.path.join(root, "*_s*", "ood_*", "report.json")))
    if ood:
        p("### Out of distribution\n")
        p("| task | steps × seeds | optimizer | final train loss | test loss | test accuracy % | "
          "best AdamW (lr): train / test |")
        p("|---|---|---|---|---|---|---|")
        for f in ood:
            rep = load(f)
            run = f.split(os.sep)[-3]
            lr, g, edge, _ = best_adamw(rep)
            bm = mean_std([r["final_train_loss"] for r in g])[0]
            bt = mean_std([r["test_loss"] for r in g])[0]
            cos = best_adamw(rep, "adamw_cosine")
            cos_cell = ""
            if cos:
                cm = mean_std([r["final_train_loss"] for r in cos[1]])[0]
                ct = mean_std([r["test_loss"] for r in cos[1]])[0]
                cos_cell = f"; cosine {cm:.4f} / {ct:.4f} ({cos[0]:g}{', edge' if cos[2] else ''})"
            for name in ("lopt", "lopt_scheduled"):
                rs = lopt_runs(rep, name)
                if not rs:
                    continue
                p(f"| {rep['task']} | {rep['steps']} × {len(rs)} | {run} {name} | {cells(rs)} | "
                  f"{bm:.4f} / {bt:.4f} ({lr:g}{', edge' if edge else ''}){cos_cell} |")
        p("")

    # --- Width generalisation (eval-large).
    large = sorted(glob.glob(os.path.join(root, "*_s*", "evallarge_*", "report.json")))
    if large:
        p(f"### Wide MLPs (`lopt eval-large`, {gpu})\n")
        p("| optimizer file | MLP | steps | arm | final train loss | test loss | test acc % | ms/step |")
        p("|---|---|---|---|---|---|---|---|")
        for f in large:
            rep = load(f)
            run = f.split(os.sep)[-3]
            mlp = "784-" + "-".join(str(h) for h in rep["hidden"]) + "-10"
            for a in rep["arms"]:
                tl = "diverged" if a["diverged"] else f"{a['final_train_loss']:.4f}"
                p(f"| {run} | {mlp} | {rep['steps']} | {a['name']} | {tl} | {a['test_loss']:.4f} | "
                  f"{100 * a['test_accuracy']:.2f} | {a['ms_per_step']:.2f} |")
        p("")
    print("\n".join(out))
    plots(root, gpu)


def plots(root, gpu):
    """Train/test curves with the horizon marked, the ablation bars, meta-training curves."""
    if subprocess.run(["which", "gnuplot"], capture_output=True).returncode != 0:
        return
    # The figures draw one meta-test: warm-up, else the one with more seeds, else cosine.
    evs = [e for e in ("eval_warmup", "eval_cosine_6seeds", "eval_cosine")
           if glob.glob(os.path.join(root, "*_s*", e, "report.json"))]
    if not evs:
        return
    ev = evs[0]
    cosine = ev != "eval_warmup"  # then the scheduled arm and cosine AdamW are drawn too
    series = []  # (label, steps, train mean, test steps, test mean)
    ref = None
    for v, label in VARIANTS:
        for d in runs_of(root, v):
            if not os.path.exists(os.path.join(d, ev, "report.json")):
                continue
            rep = load(os.path.join(d, ev, "report.json"))
            if ref is None or len(adamw_groups(rep)) > len(adamw_groups(ref[1])):
                ref = (d, rep)  # the AdamW curves from the widest grid
            tag = f"{v} {d.rsplit('_', 1)[1]}"
            series.append((tag, curve(os.path.join(d, ev, "curves.csv"), "lopt"),
                           curve(os.path.join(d, ev, "test_curves.csv"), "lopt", "test_loss")))
            if cosine:
                series.append((tag + " + cosine", curve(os.path.join(d, ev, "curves.csv"), "lopt_scheduled"),
                               curve(os.path.join(d, ev, "test_curves.csv"), "lopt_scheduled", "test_loss")))
    if ref is None:
        return
    d, rep = ref
    lr, _, _, _ = best_adamw(rep)
    series.insert(0, (f"AdamW lr {lr:g} (best of grid)", curve(os.path.join(d, ev, "curves.csv"), "adamw", lr=lr),
                      curve(os.path.join(d, ev, "test_curves.csv"), "adamw", "test_loss", lr=lr)))
    cos = best_adamw(rep, "adamw_cosine") if cosine else None
    if cos:
        series.insert(1, (f"AdamW cosine, peak lr {cos[0]:g} (best of grid)",
                          curve(os.path.join(d, ev, "curves.csv"), "adamw_cosine", lr=cos[0]),
                          curve(os.path.join(d, ev, "test_curves.csv"), "adamw_cosine", "test_loss", lr=cos[0])))
    for which, idx, fname, ylabel in (("train", 1, "curves_train.png", "train loss (mean of seeds, 10-step windows)"),
                                      ("test", 2, "curves_test.png", "test loss (mean of seeds)")):
        dat = os.path.join(root, f"curves_{which}.dat")
        with open(dat, "w") as f:
            for label, *cs in series:
                c = cs[idx - 1]
                f.write(f'"{label}"\n')
                for step, val in c:
                    f.write(f"{step} {val}\n")
                f.write("\n\n")
        gp = (f"set terminal pngcairo size 1000,600 noenhanced; set output '{os.path.join(root, fname)}';"
              f"set logscale y; set xlabel 'inner step'; set ylabel '{ylabel}';"
              f"set arrow from {HORIZON}, graph 0 to {HORIZON}, graph 1 nohead dt 2 lc rgb 'gray';"
              f"set label 'meta-training horizon' at {HORIZON}, graph 0.95 offset 0.5,0;"
              f"set key top right; set title '{rep['task']}: {which} loss, ELO study ({gpu}, {ev})';"
              f"plot for [i=0:{len(series) - 1}] '{dat}' index i using 1:2 with lines lw 2 title columnheader(1)")
        subprocess.run(["gnuplot", "-e", gp], check=False)
    # Ablation bars: final train loss per variant (mean over runs, lopt with warm-up).
    bars = os.path.join(root, "ablation.dat")
    with open(bars, "w") as f:
        adam = mean_std([r["final_train_loss"] for r in best_adamw(rep)[1]])[0]
        f.write(f'"AdamW (best lr)" {adam}\n')
        for v, label in VARIANTS:
            for d in runs_of(root, v):
                if not os.path.exists(os.path.join(d, ev, "report.json")):
                    continue
                rs = lopt_runs(load(os.path.join(d, ev, "report.json")), "lopt_scheduled")
                m = mean_std([r["final_train_loss"] for r in rs])[0]
                f.write(f'"{v} {d.rsplit("_", 1)[1]}" {m if math.isfinite(m) else 5}\n')
    gp = (f"set terminal pngcairo size 900,500 noenhanced; set output '{os.path.join(root, 'ablation.png')}';"
          "set style fill solid 0.6; set boxwidth 0.6; set ylabel 'final train loss at 10k steps';"
          f"set title 'ELO ablation (in distribution, {rep['task']})'; unset key; set yrange [0:*];"
          f"plot '{bars}' using 0:2:xtic(1) with boxes")
    subprocess.run(["gnuplot", "-e", gp], check=False)
    # Meta-training: task loss over outer steps.
    mt = []
    for v, _ in VARIANTS:
        for d in runs_of(root, v):
            f = os.path.join(d, "metrics.csv")
            if os.path.exists(f):
                mt.append((os.path.basename(d), f))
    if mt:
        plot = ", ".join(f"'{f}' every ::1 using 1:3 with lines smooth bezier title '{n}'" for n, f in mt)
        gp = (f"set terminal pngcairo size 1000,600 noenhanced; set output '{os.path.join(root, 'meta_training.png')}';"
              "set datafile separator ','; set xlabel 'outer step'; set ylabel 'task loss (normalised, smoothed)';"
              f"set title 'meta-training ({gpu})'; set key top right; plot {plot}")
        subprocess.run(["gnuplot", "-e", gp], check=False)


def curve(path, name, col="train_loss", lr=None):
    opener = open
    if not os.path.exists(path) and os.path.exists(path + ".gz"):
        path, opener = path + ".gz", lambda p: gzip.open(p, "rt")
    if not os.path.exists(path):
        return []
    acc = {}
    with opener(path) as f:
        for row in csv.DictReader(f):
            if row["optimizer"] != name:
                continue
            if lr is not None and abs(float(row["lr"]) - lr) > 1e-6 * lr:
                continue
            acc.setdefault(int(row["step"]), []).append(float(row[col]))
    return [(s, statistics.mean(v)) for s, v in sorted(acc.items())]


if __name__ == "__main__":
    main()
