"""LHOPT from Python: schedule replay on torch optimizers, a controller online."""
import copy
import json
import math

import pytest
import torch

import lopt
from lopt import _C

POINTS = [
    {"progress": 0.0, "lr": 1e-3, "one_minus_beta1": 0.1, "one_minus_beta2": 0.01,
     "eps": 1e-6, "weight_decay": 0.01, "clip_fraction": 0.8},
    {"progress": 0.3, "lr": 3e-3, "one_minus_beta1": 0.05, "one_minus_beta2": 0.001,
     "eps": 1e-7, "weight_decay": 0.02, "clip_fraction": 0.5},
    {"progress": 0.75, "lr": 2e-4, "one_minus_beta1": 0.2, "one_minus_beta2": 0.02,
     "eps": 1e-8, "weight_decay": 0.005, "clip_fraction": 0.9},
]


def write_schedule(path, points, version=1):
    # schedule.json as `lopt schedule` writes it: LhoptSchedule in protobuf's JSON mapping.
    path.write_text(json.dumps({"format_version": version, "points": points}))
    return path


def in_force(t, n):
    return [p for p in POINTS if p["progress"] <= t / n][-1]


def test_replay_sets_the_recorded_hyperparameters_on_adamw(tmp_path):
    path = write_schedule(tmp_path / "schedule.json", POINTS)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.AdamW(model.parameters())
    n = 20
    replay = lopt.ScheduleReplay(opt, path, total_steps=n)
    seen = []
    for t in range(n):
        g = opt.param_groups[0]
        want = in_force(t, n)
        assert g["lr"] == want["lr"]
        assert g["betas"] == (1 - want["one_minus_beta1"], 1 - want["one_minus_beta2"])
        assert g["eps"] == want["eps"]
        assert g["weight_decay"] == want["weight_decay"]
        seen.append(g["lr"])
        model(torch.randn(3, 4)).sum().backward()
        opt.step()
        opt.zero_grad()
        replay.step()
    # Every point came into force, at steps 0, 6 and 15 of 20.
    assert seen.index(3e-3) == 6 and seen.index(2e-4) == 15
    assert replay.get_last_lr() == [2e-4]


def test_replay_lr_scale_state_and_sgd(tmp_path):
    path = write_schedule(tmp_path / "schedule.json", POINTS)
    model = torch.nn.Linear(4, 2)
    sgd = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.9)
    replay = lopt.ScheduleReplay(sgd, path, total_steps=10, lr_scale=10.0)
    assert sgd.param_groups[0]["lr"] == pytest.approx(1e-2)
    for _ in range(4):
        replay.step()
    assert sgd.param_groups[0]["lr"] == pytest.approx(3e-2)
    assert sgd.param_groups[0]["momentum"] == 0.9  # nothing SGD lacks a counterpart for
    state = replay.state_dict()
    other = lopt.ScheduleReplay(torch.optim.AdamW(model.parameters()), path, total_steps=10)
    other.load_state_dict(state)
    assert other.last_step == 4 and other.optimizer.param_groups[0]["lr"] == pytest.approx(3e-2)


def test_schedule_is_validated_as_in_cpp(tmp_path):
    bad = [dict(POINTS[0], progress=0.1)] + POINTS[1:]
    with pytest.raises(ValueError, match=r"points\[0\]\.progress must be 0"):
        lopt.Schedule.load(write_schedule(tmp_path / "a.json", bad))
    bad = POINTS[:1] + [dict(POINTS[1], eps=-1.0)]
    with pytest.raises(ValueError, match=r"points\[1\]\.eps must be > 0"):
        lopt.Schedule.load(write_schedule(tmp_path / "b.json", bad))
    with pytest.raises(ValueError, match="newer|format"):
        lopt.Schedule.load(write_schedule(tmp_path / "c.json", POINTS, version=99))
    with pytest.raises(FileNotFoundError):
        lopt.Schedule.load(tmp_path / "missing.json")
    s = lopt.Schedule.load(write_schedule(tmp_path / "ok.json", POINTS))
    assert s.at(0.2999)["lr"] == 1e-3 and s.at(0.3)["lr"] == 3e-3 and s.at(5)["lr"] == 2e-4


JOB = """
name: "py_lhopt" seed: 3
task { noisy_quadratic { min_dim: 10 max_dim: 20 } }
lhopt { tasks { task { noisy_quadratic { min_dim: 10 max_dim: 20 } } weight: 1 }
        min_inner_steps: 40 max_inner_steps: 40 min_decisions: 4 max_decisions: 4
        particles: 2 episodes_per_iteration: 2 iterations: 1 hidden_size: 32 }
"""

LR_FACTORS = [0.5, 0.707, 0.9, 1.0, 1.1, 1.414, 2.0]  # head 0 (common/lhopt/lhopt_actions.h)


@pytest.fixture
def controller(tmp_path):
    path = str(tmp_path / "controller.lhopt")
    _C.write_initial_controller(path, JOB)
    return path


def run_controlled(controller, steps=60, decisions=6, valid=True):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    x, y = torch.randn(64, 8), torch.randn(64, 1)
    xv, yv = torch.randn(64, 8), torch.randn(64, 1)
    valid_fn = (lambda: torch.nn.functional.mse_loss(model(xv), yv).item()) if valid else None
    opt = lopt.LhoptController(model.parameters(), controller, total_steps=steps,
                               decisions=decisions, valid_loss_fn=valid_fn)
    lrs = []
    for t in range(steps):
        lrs.append(opt.hparams["lr"])
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step(loss=loss.item())
    return opt, model, lrs


def test_controller_decides_at_the_decision_steps(controller):
    opt, model, lrs = run_controlled(controller)
    d_steps = [1 + d * 59 // 6 for d in range(6)]
    assert opt.decision_steps == d_steps
    assert [d["step"] for d in opt.decisions_log] == d_steps
    # The hyperparameters change only at decisions, by the chosen action's factor.
    prev = 1e-3  # CIAO's default lr
    for t in range(60):
        if t in d_steps:
            d = opt.decisions_log[d_steps.index(t)]
            factor = LR_FACTORS[d["actions"][0]]
            assert d["hparams"]["lr"] == pytest.approx(min(1.0, max(1e-8, prev * factor)))
            prev = d["hparams"]["lr"]
    # lrs[t] is the lr of step t: it changes only right after a decision.
    for t in range(1, 60):
        if lrs[t] != lrs[t - 1]:
            assert t in d_steps, f"lr changed at step {t}, not a decision"
    assert lrs[0] == 1e-3
    for k, t in enumerate(d_steps):
        assert lrs[t] == pytest.approx(opt.decisions_log[k]["hparams"]["lr"])
    assert opt.param_groups[0]["lr"] == opt.hparams["lr"]
    # Deterministic: the same run decides the same.
    again, _, lrs2 = run_controlled(controller)
    assert [d["actions"] for d in again.decisions_log] == [d["actions"] for d in opt.decisions_log]
    assert lrs2 == lrs


def test_controller_first_step_is_ciao_as_adamw_with_clipping(controller):
    # Before the first decision the run is CIAO at its defaults: AdamW (betas 0.9, 0.99,
    # eps 1e-6, wd 1e-2, lr 1e-3) on the gradient clipped to 0.8 of the rolling max, which
    # on the first step is the gradient's own norm.
    torch.manual_seed(1)
    a = torch.nn.Linear(5, 3)
    b = torch.nn.Linear(5, 3)
    b.load_state_dict(a.state_dict())
    start = [p.detach().clone() for p in a.parameters()]
    x, y = torch.randn(10, 5), torch.randn(10, 3)
    opt = lopt.LhoptController(a.parameters(), controller, total_steps=10, decisions=2)
    loss = torch.nn.functional.mse_loss(a(x), y)
    loss.backward()
    opt.step(loss=loss.item())
    ref = torch.optim.AdamW(b.parameters(), lr=1e-3, betas=(0.9, 0.99), eps=1e-6,
                            weight_decay=1e-2)
    torch.nn.functional.mse_loss(b(x), y).backward()
    norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in b.parameters())).item()
    for p in b.parameters():
        p.grad.mul_(min(1.0, 0.8 * norm / (norm + 1e-6)))
    ref.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-7)
    assert all(not torch.equal(p0, p) for p0, p in zip(start, a.parameters()))


def test_controller_needs_the_loss_and_a_controller_file(controller, tmp_path):
    model = torch.nn.Linear(2, 1)
    opt = lopt.LhoptController(model.parameters(), controller, total_steps=10, decisions=2)
    model(torch.ones(1, 2)).sum().backward()
    with pytest.raises(ValueError, match="loss"):
        opt.step()
    with pytest.raises(ValueError, match="decisions"):
        lopt.LhoptController(model.parameters(), controller, total_steps=10, decisions=10)
    not_a_controller = tmp_path / "x.lhopt"
    not_a_controller.write_bytes(b"\x08\x01garbage")
    with pytest.raises(ValueError, match="not an LHOPT controller"):
        lopt.LhoptController(model.parameters(), str(not_a_controller), total_steps=10, decisions=2)
    with pytest.raises(FileNotFoundError):
        lopt.LhoptController(model.parameters(), str(tmp_path / "none.lhopt"), total_steps=10,
                              decisions=2)


# Checkpoints of a controlled run (LhoptController.state_dict / load_state_dict).

def ckpt_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


def ckpt_batch(t):
    g = torch.Generator().manual_seed(100 + t)
    return torch.randn(32, 8, generator=g), torch.randn(32, 1, generator=g)


def ckpt_controller(model, controller, steps=60, decisions=6):
    g = torch.Generator().manual_seed(7)
    xv, yv = torch.randn(32, 8, generator=g), torch.randn(32, 1, generator=g)
    return lopt.LhoptController(
        model.parameters(), controller, total_steps=steps, decisions=decisions,
        valid_loss_fn=lambda: torch.nn.functional.mse_loss(model(xv), yv).item())


def ckpt_run(model, opt, steps):
    """Steps `steps` (each with its own batch); per step: the hparams in force and the
    parameters after it."""
    trace = []
    for t in steps:
        x, y = ckpt_batch(t)
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step(loss=loss.item())
        trace.append((dict(opt.hparams), [p.detach().clone() for p in model.parameters()]))
    return trace


def assert_same_trace(a, b):
    assert len(a) == len(b)
    for t, ((ha, pa), (hb, pb)) in enumerate(zip(a, b)):
        assert ha == hb, f"step {t}: hparams {ha} != {hb}"
        for x, y in zip(pa, pb):
            assert torch.equal(x, y), f"step {t}: parameters differ by {(x - y).abs().max()}"


def test_controller_state_dict_resumes_the_run_exactly(controller, tmp_path):
    # Decisions after steps 1, 10, 20, 30, 40, 50: the cut at 25 is inside an interval, so
    # the interval's sums, the LSTM state, the CDF history and CIAO's state all count.
    a_model = ckpt_model()
    a = ckpt_controller(a_model, controller)
    ckpt_run(a_model, a, range(25))
    assert len(a.decisions_log) == 3
    state = a.state_dict()
    cut_hparams = dict(a.hparams)
    torch.save({"model": a_model.state_dict(), "opt": state}, tmp_path / "ckpt.pt")
    rest = ckpt_run(a_model, a, range(25, 60))
    assert len(a.decisions_log) == 6 and a.steps == 60
    # Each decision shows the features it was made on; comparing them checks every piece of
    # the state that feeds them (the interval's sums, the CDF history, the registers), also
    # where the greedy actions would not change.
    assert all(len(d["features"]) == 70 for d in a.decisions_log)

    # From the file, into a fresh controller on a model of other initial values.
    b_model = ckpt_model(seed=1)
    b = ckpt_controller(b_model, controller)
    ckpt = torch.load(tmp_path / "ckpt.pt")
    b_model.load_state_dict(ckpt["model"])
    b.load_state_dict(ckpt["opt"])
    assert b.steps == 25 and b.hparams == cut_hparams
    assert b.param_groups[0]["lr"] == b.hparams["lr"]
    assert b.decisions_log == a.decisions_log[:3]
    assert_same_trace(ckpt_run(b_model, b, range(25, 60)), rest)
    assert b.decisions_log == a.decisions_log
    assert b.steps == 60

    # The in-memory state_dict was a copy: the 35 steps `a` took after it left it as it was.
    c_model = ckpt_model(seed=2)
    c = ckpt_controller(c_model, controller)
    c_model.load_state_dict(ckpt["model"])
    c.load_state_dict(state)
    assert_same_trace(ckpt_run(c_model, c, range(25, 60)), rest)

    # The model's values alone do not resume the run: a controller without the state
    # (CIAO's moments at zero, its own step count) goes elsewhere at once.
    d_model = ckpt_model(seed=3)
    d_model.load_state_dict(ckpt["model"])
    d = ckpt_controller(d_model, controller)
    other = ckpt_run(d_model, d, range(25, 26))
    assert any(not torch.equal(x, y) for x, y in zip(other[0][1], rest[0][1]))


def test_controller_state_dict_refuses_what_does_not_fit(controller):
    model = ckpt_model()
    opt = ckpt_controller(model, controller)
    ckpt_run(model, opt, range(12))
    good = opt.state_dict()
    before = opt.state_dict()

    def unchanged():
        now = opt.state_dict()["lhopt_controller"]
        was = before["lhopt_controller"]
        assert now["steps"] == was["steps"] == 12
        assert torch.equal(now["policy_h"], was["policy_h"])
        assert all(torch.equal(x, y) for x, y in zip(now["ciao"]["m"], was["ciao"]["m"]))
        assert opt.decisions_log == before["decisions_log"]

    fresh = ckpt_controller(ckpt_model(), controller, steps=50)
    with pytest.raises(ValueError, match=r"total_steps=60 and decisions=6, this controller has 50"):
        fresh.load_state_dict(good)
    with pytest.raises(ValueError, match="not an lopt.LhoptController state_dict"):
        opt.load_state_dict(torch.optim.AdamW(model.parameters()).state_dict())
    broken = copy.deepcopy(good)
    del broken["lhopt_controller"]["ciao"]
    with pytest.raises(ValueError, match="no 'ciao'"):
        opt.load_state_dict(broken)
    broken = copy.deepcopy(good)
    broken["lhopt_controller"]["policy_h"] = torch.zeros(1, 3)
    with pytest.raises(ValueError, match=r"policy_h has shape \[1, 3\], this run's \[1, 32\]"):
        opt.load_state_dict(broken)
    broken = copy.deepcopy(good)
    broken["lhopt_controller"]["steps"] = "many"
    with pytest.raises(ValueError, match="'steps' has the wrong type"):
        opt.load_state_dict(broken)
    broken = copy.deepcopy(good)
    broken["lhopt_controller"]["format_version"] = 99
    with pytest.raises(ValueError, match="format_version 99"):
        opt.load_state_dict(broken)
    unchanged()
    # Another model's parameters: CIAO's moments do not fit them.
    small = torch.nn.Linear(8, 1)
    other = lopt.LhoptController(small.parameters(), controller, total_steps=60, decisions=6)
    with pytest.raises(ValueError, match="CIAO's state has 4 parameters, this run 2"):
        other.load_state_dict(good)
    # A state before any step loads too (an empty interval).
    start = ckpt_controller(ckpt_model(), controller).state_dict()
    opt.load_state_dict(start)
    assert opt.steps == 0 and opt.decisions_log == []
