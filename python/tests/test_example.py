"""examples/python/train_with_lopt.py runs and prints both optimizers' results."""
import os
import re
import subprocess
import sys

from conftest import SOURCE_DIR


def test_example_trains_with_lopt_and_adamw():
    r = subprocess.run([sys.executable, str(SOURCE_DIR / "examples/python/train_with_lopt.py"),
                        str(SOURCE_DIR / "models/fmnist8_elo.lopt"), "500"],
                       capture_output=True, text=True, cwd=SOURCE_DIR, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = re.findall(r"^  (lopt\.LearnedOptimizer|torch\.optim\.AdamW).*train loss \(EMA\) "
                      r"([0-9.]+)  test accuracy ([0-9.]+)%", r.stdout, re.M)
    assert [name for name, _, _ in rows] == ["lopt.LearnedOptimizer", "torch.optim.AdamW"], r.stdout
    for _, loss, acc in rows:
        # Both train: chance is loss 2.30 and 10% accuracy.
        assert float(loss) < 1.5 and float(acc) > 40, r.stdout
