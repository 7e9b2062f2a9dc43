"""The shipped LHOPT controller's arms in a study folder, for the studies' table scripts
(bench/neumf/make_table.py, bench/speech/make_table.py).

bench/shipped_controller.sh writes OUT/lhopt_mlp_quadratic/ (lopt eval --controller) and
OUT/lhopt_mlp_quadratic_schedule/ (lopt eval --schedule of the schedule it records). Their
reports hold each arm's means and the loss mean +- std over the seeds.
"""
import json
import os

TITLE = ("The shipped LHOPT controller (`models/lhopt_mlp_quadratic.lhopt`), its own evals "
         "(CIAO as the inner optimizer; the AdamW rows are those evals' own runs):")


def arms(out):
    """[(row name, arm dict)]: the controller online, CIAO's defaults and that eval's AdamW, then
    the replayed schedule and its shape at each peak lr. Empty if neither eval ran."""
    rows = []
    for sub, label in (("lhopt_mlp_quadratic", "controller (online)"),
                       ("lhopt_mlp_quadratic_schedule", "its schedule, replayed")):
        path = os.path.join(out, sub, "report.json")
        if not os.path.exists(path):
            continue
        for a in json.load(open(path))["arms"]:
            name = a["arm"]
            if name == "controller_untrained" or (sub.endswith("schedule") and name != "schedule"
                                                 and not name.startswith("schedule_peak")):
                continue  # CIAO's defaults and AdamW: once, from the controller's report
            if name in ("controller", "schedule"):
                name = label
            elif name == "schedule_peak":
                name = f"its schedule's shape, peak lr={a['lr']:g}"
            elif a.get("lr") is not None:
                name = f"{name} lr={a['lr']:g} (this eval's)"
            rows.append((name, a))
    return rows


def mean_std(arm, key):
    """An arm's loss as "mean ± std" over the seeds (its report's key and key_std)."""
    return f"{arm[key]:.4f} ± {arm[key + '_std']:.4f}"


def print_table(out, columns):
    """Prints the arms (above) as a markdown table under TITLE, if the evals ran. columns:
    [(header, cell)], where cell(arm dict) is the column's text for that arm."""
    rows = arms(out)
    if not rows:
        return
    print("\n" + TITLE + "\n")
    print("| arm | " + " | ".join(header for header, _ in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name, a in rows:
        print(f"| {name} | " + " | ".join(cell(a) for _, cell in columns) + " |")
