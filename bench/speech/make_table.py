#!/usr/bin/env python3
"""The speech_ctc study's table and plot from its lopt eval reports.

  make_table.py OUT    (OUT as bench/speech/run_study.sh leaves it)

Table rows: each shipped optimizer (trained and untrained), AdamW constant
and cosine at each learning rate; mean +- std over seeds of the test CTC loss
(per character), the test CER (greedy decoding) and the final training loss.
The best AdamW of each schedule is the one with the lowest final test CTC
loss: it is tuned on the very metric it is compared on (no separate
validation split), which favours AdamW.

Plot (OUT/validation_ctc.png and .dat): the test CTC loss along the run, the
seed's Figure 6 analogue, for each trained optimizer and the best constant
and cosine AdamW: the mean over seeds, with a band from the lowest to the
highest seed.
"""
import csv
import json
import math
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import shipped_controller  # noqa: E402  (bench/shipped_controller.py)

OPTS = ("fmnist8_elo", "fmnist28_mlp_elo_xi0")


def mean_std(xs):
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    if not xs:
        return float("nan"), float("nan")
    return statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def label(opt, r):
    if r["optimizer"] == "adamw":
        return f"AdamW const lr={r['lr']:g}"
    if r["optimizer"] == "adamw_cosine":
        return f"AdamW cosine lr={r['lr']:g}"
    return f"{opt} ({'trained' if r['optimizer'] == 'lopt' else 'untrained'})"


def main():
    out = sys.argv[1]
    rows = {}    # label -> runs
    curves = {}  # label -> {seed: [(step, test_loss)]}
    order = []
    steps = seeds = None
    for opt in OPTS:
        path = os.path.join(out, opt, "report.json")
        if not os.path.exists(path):
            continue
        report = json.load(open(path))
        steps = report["steps"]
        for r in report["runs"]:
            name = label(opt, r)
            if r["optimizer"] in ("adamw", "adamw_cosine") and opt != OPTS[0]:
                continue  # the first report's AdamW runs are the same numbers
            if name not in rows:
                rows[name] = []
                order.append((name, r["optimizer"], r.get("lr")))
            rows[name].append(r)
        tc = os.path.join(out, opt, "test_curves.csv")
        if os.path.exists(tc):
            for c in csv.DictReader(open(tc)):
                r = {"optimizer": c["optimizer"], "lr": float(c["lr"]) if c["lr"] else None}
                if r["optimizer"] in ("adamw", "adamw_cosine") and opt != OPTS[0]:
                    continue
                curves.setdefault(label(opt, r), {}).setdefault(int(c["seed"]), []).append(
                    (int(c["step"]), float(c["test_loss"])))
    if not rows:
        sys.exit(f"no reports under {out}")
    seeds = len(next(iter(rows.values())))

    def key(item):
        name, o, lr = item
        opt = next((i for i, x in enumerate(OPTS) if name.startswith(x)), len(OPTS))
        return ({"lopt": 0, "lopt_untrained": 1, "adamw": 2, "adamw_cosine": 3}.get(o, 4), opt, -(lr or 0))

    order.sort(key=key)
    best = {}
    for name, o, lr in order:
        if o in ("adamw", "adamw_cosine"):
            tl = mean_std([r["test_loss"] for r in rows[name]])[0]
            if math.isfinite(tl) and (o not in best or tl < best[o][1]):
                best[o] = (name, tl)
    print(f"{steps} steps, {seeds} seeds; mean ± std over seeds; CTC loss per character\n")
    print("| optimizer | test CTC loss | test CER | final train loss |")
    print("|---|---|---|---|")
    for name, o, lr in order:
        runs = rows[name]
        tl = mean_std([r["test_loss"] for r in runs])
        ce = mean_std([r.get("test_cer") for r in runs])
        fl = mean_std([r["final_train_loss"] for r in runs])
        div = sum(r["diverged"] for r in runs)
        note = f" ({div} diverged)" if div else ""
        mark = " (best)" if any(b[0] == name for b in best.values()) else ""
        print(f"| {name}{mark}{note} | {tl[0]:.4f} ± {tl[1]:.4f} | {100 * ce[0]:.2f}% ± {100 * ce[1]:.2f} | "
              f"{fl[0]:.4f} ± {fl[1]:.4f} |")
    print()
    for o, (name, tl) in sorted(best.items()):
        print(f"best {'constant' if o == 'adamw' else 'cosine'} AdamW by final test CTC loss: {name}")
    lhopt_table(out)

    # The plot: trained optimizers and the best AdamW of each schedule.
    shown = [n for n, o, _ in order if o == "lopt"] + [b[0] for _, b in sorted(best.items())]
    shown = [n for n in shown if n in curves]
    if not shown:
        return
    steps_axis = sorted({s for n in shown for run in curves[n].values() for s, _ in run})
    dat = os.path.join(out, "validation_ctc.dat")
    with open(dat, "w") as f:
        f.write("# step" + "".join(f"\t\"{n}\"\tmin\tmax" for n in shown) + "\n")
        for s in steps_axis:
            cells = [str(s)]
            for n in shown:
                vals = [v for run in curves[n].values() for t, v in run if t == s and math.isfinite(v)]
                if vals:
                    cells += [f"{statistics.mean(vals):.6g}", f"{min(vals):.6g}", f"{max(vals):.6g}"]
                else:
                    cells += ["NaN"] * 3
            f.write("\t".join(cells) + "\n")
    colors = ["#000000", "#6a3d9a", "#e69f00", "#0072b2", "#009e73"]
    bands = ", ".join(f"'{dat}' using 1:{3 + 3 * i}:{4 + 3 * i} with filledcurves fc rgb '{colors[i % 5]}' "
                      f"fs transparent solid 0.15 noborder notitle" for i in range(len(shown)))
    lines = ", ".join(f"'{dat}' using 1:{2 + 3 * i} with linespoints lw 3 pt 7 ps 0.6 lc rgb '{colors[i % 5]}' "
                      f"title '{n}'" for i, n in enumerate(shown))
    gp = (f"set terminal pngcairo size 1000,650 noenhanced\nset output '{out}/validation_ctc.png'\n"
          f"set datafile missing 'NaN'\nset grid\nset xlabel 'inner step'\n"
          f"set ylabel 'validation (test split) CTC loss per character'\nset logscale y\n"
          f"set key top right\nset title 'speech_ctc: validation CTC loss over training "
          f"(mean of {seeds} seeds, band: lowest to highest)'\nplot {bands}, {lines}\n")
    try:
        subprocess.run(["gnuplot"], input=gp.encode(), check=True)
        print(f"\nwrote {out}/validation_ctc.png")
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"\n(no plot: {e})")


def lhopt_table(out):
    """The shipped LHOPT controller's rows (bench/shipped_controller.py), if its evals ran."""
    shipped_controller.print_table(out, [
        ("test CTC loss", lambda a: shipped_controller.mean_std(a, "test_loss")),
        ("test CER", lambda a: f"{100 * a.get('test_cer', float('nan')):.2f}%"),
        ("final train loss", lambda a: shipped_controller.mean_std(a, "final_train_loss"))])

if __name__ == "__main__":
    main()
