"""LHOPT from Python: replay a recorded hyperparameter schedule on a PyTorch optimizer, or
run a trained controller online on your own training loop.

Replaying a schedule (`lopt schedule --controller controller.lhopt ... --out DIR` writes
DIR/schedule.json):

    opt = torch.optim.AdamW(model.parameters())
    replay = lopt.ScheduleReplay(opt, "schedule.json", total_steps=1000)
    for step in range(1000):
        opt.zero_grad(); loss_fn(model(x), y).backward(); opt.step()
        replay.step()                       # like an lr_scheduler: after opt.step()

At step t (0-based, before the t-th opt.step()) the values in force are those of the last
point whose progress is <= t / total_steps (lopt::ScheduleAt). What maps onto a torch
optimizer's parameter group (only the keys the group has are set):
    lr               -> group["lr"] (times lr_scale, for a schedule's shape at another peak)
    1 - beta1/beta2  -> group["betas"] = (1 - one_minus_beta1, 1 - one_minus_beta2)
    eps              -> group["eps"]
    weight_decay     -> group["weight_decay"]
    clip_fraction    -> group["clip_fraction"] where a group has it; torch's optimizers have no
                        counterpart of CIAO's clipping at a fraction of the rolling maximum
                        gradient norm, so it is dropped there.
CIAO is AdamW with those values (decoupled weight decay p <- p - lr * wd * p, the same eps
placement), so torch.optim.AdamW replays a schedule as CIAO runs it except for the clipping;
with torch.optim.Adam the weight decay would be an L2 term instead: use AdamW.

Running a controller online (the inner optimizer is CIAO, in C++, as in meta-training):

    opt = lopt.LhoptController(model.parameters(), "controller.lhopt", total_steps=1000,
                               valid_loss_fn=lambda: held_out_loss(model))
    for step in range(1000):
        opt.zero_grad(); loss = loss_fn(model(x), y); loss.backward()
        opt.step(loss=loss.item())          # you report each step's loss
"""
import bisect
import copy
import os
from typing import Callable, Dict, Iterable, List, Optional, Union

import torch

from lopt import _C

HPARAM_NAMES = ("lr", "one_minus_beta1", "one_minus_beta2", "eps", "weight_decay",
                "clip_fraction")


class Schedule:
    """A recorded LHOPT schedule: points (progress, hyperparameters), piecewise constant."""

    def __init__(self, points: List[Dict[str, float]]):
        if not points:
            raise ValueError("schedule has no points")
        self.points = [dict(p) for p in points]
        self._progress = [p["progress"] for p in self.points]

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "Schedule":
        """Reads a schedule.json (`lopt schedule`), validated as the C++ tools validate it:
        ValueError naming the point and field otherwise, FileNotFoundError if missing."""
        from lopt.v1 import optimizer_file_pb2
        s = optimizer_file_pb2.LhoptSchedule.FromString(_C.load_schedule_json(os.fspath(path)))
        return cls([{"progress": p.progress, **{k: getattr(p, k) for k in HPARAM_NAMES}}
                    for p in s.points])

    def at(self, progress: float) -> Dict[str, float]:
        """The hyperparameters in force at `progress` (clamped into [0, 1])."""
        progress = min(1.0, max(0.0, float(progress)))
        i = max(0, bisect.bisect_right(self._progress, progress) - 1)
        return {k: self.points[i][k] for k in HPARAM_NAMES}


def apply_hparams(optimizer: torch.optim.Optimizer, h: Dict[str, float],
                  lr_scale: float = 1.0) -> None:
    """Sets CIAO's hyperparameters `h` on every parameter group of a torch optimizer (the keys
    each group has; see the module's doc)."""
    for group in optimizer.param_groups:
        group["lr"] = h["lr"] * lr_scale
        if "betas" in group:
            group["betas"] = (1.0 - h["one_minus_beta1"], 1.0 - h["one_minus_beta2"])
        if "eps" in group:
            group["eps"] = h["eps"]
        if "weight_decay" in group:
            group["weight_decay"] = h["weight_decay"]
        if "clip_fraction" in group:
            group["clip_fraction"] = h["clip_fraction"]


class ScheduleReplay:
    """A recorded schedule replayed on a torch optimizer, stepped like an lr_scheduler.

    Args:
        optimizer: any torch.optim.Optimizer (AdamW replays CIAO's schedule most faithfully).
        schedule: a Schedule or a schedule.json path.
        total_steps: the run's length; progress at step t is t / total_steps.
        lr_scale: multiplies the recorded lr (e.g. the schedule's shape at another peak).
    """

    def __init__(self, optimizer: torch.optim.Optimizer,
                 schedule: Union["Schedule", str, os.PathLike], total_steps: int,
                 lr_scale: float = 1.0):
        if total_steps <= 0:
            raise ValueError(f"total_steps must be > 0, got {total_steps}")
        self.optimizer = optimizer
        self.schedule = schedule if isinstance(schedule, Schedule) else Schedule.load(schedule)
        self.total_steps = int(total_steps)
        self.lr_scale = float(lr_scale)
        self.last_step = 0
        self._apply()

    def _apply(self):
        self.last_hparams = self.schedule.at(self.last_step / self.total_steps)
        apply_hparams(self.optimizer, self.last_hparams, self.lr_scale)

    def step(self):
        """After optimizer.step(): sets the values in force for the next step."""
        self.last_step += 1
        self._apply()

    def get_last_lr(self) -> List[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self):
        return {"last_step": self.last_step, "total_steps": self.total_steps,
                "lr_scale": self.lr_scale}

    def load_state_dict(self, state):
        self.last_step = int(state["last_step"])
        self.total_steps = int(state["total_steps"])
        self.lr_scale = float(state["lr_scale"])
        self._apply()


class LhoptController(torch.optim.Optimizer):
    """A trained LHOPT controller (`controller.lhopt`) training your model online.

    The inner optimizer is CIAO (lopt's C++ CiaoStep: AdamW with clipping at a fraction of the
    rolling maximum gradient norm), starting from CIAO's defaults (or `initial`); the
    controller's LSTM policy decides `decisions` times over `total_steps` steps, at the same
    steps as `lopt eval --controller` (decision d after 1 + floor(d (N - 1) / D) steps), on the
    features of common/lhopt/lhopt_features.h, greedily, and its actions change the hyperparameters.
    Its restart registers are kept in memory: a "load" replaces the parameters' values (and
    CIAO's moments) by those saved earlier; only the parameters given here are saved and
    restored (not buffers such as batch-norm statistics).

    You report each step's training loss: step(loss=...) or step(closure) (the closure's
    return value). valid_loss_fn, if given, is called at each decision (only then) for a loss
    on data the run does not train on; without it the features use the training loss in its
    place (their train/valid ratio is then 0).

    The hyperparameters in force are `hparams` (a dict), mirrored into the parameter group
    as lr, betas, eps, weight_decay, clip_fraction after each decision (read-only: the
    controller sets them). `decisions_log` lists each decision (step, progress, the
    interval's training loss, hparams, actions, register action, and the 70 features the
    policy decided on, in common/lhopt/lhopt_features.h's order, before normalisation).

    Checkpoints: state_dict() holds everything the run's next steps and decisions depend on
    besides the parameters' values -- CIAO's moments, bias corrections and rolling maximum,
    the hyperparameters in force, the policy's LSTM state and previous actions, the features'
    running statistics, the decision interval's sums, the restart registers with the states
    they hold, the step counts and decisions_log -- as tensors and numbers that torch.save
    writes. Save it with the model's state_dict(); a controller built with the same file,
    total_steps and decisions on the same model, the model's and this state loaded, goes on
    exactly as the saved run would have:

        torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, "ckpt.pt")
        ...
        ckpt = torch.load("ckpt.pt")
        model.load_state_dict(ckpt["model"])
        opt = lopt.LhoptController(model.parameters(), "controller.lhopt", total_steps=1000)
        opt.load_state_dict(ckpt["opt"])
    """

    def __init__(self, params: Iterable, controller: Union[str, os.PathLike], total_steps: int,
                 decisions: int = 32, valid_loss_fn: Optional[Callable[[], float]] = None,
                 initial: Optional[Dict[str, float]] = None):
        super().__init__(params, {})
        flat = [p for g in self.param_groups for p in g["params"]]
        self._c = _C.Controller(flat, os.fspath(controller), int(total_steps), int(decisions),
                                dict(initial or {}))
        self.total_steps = int(total_steps)
        self.valid_loss_fn = valid_loss_fn
        self.decisions_log = []
        self._mirror()

    @property
    def hparams(self) -> Dict[str, float]:
        return self._c.hparams()

    @property
    def decision_steps(self) -> List[int]:
        return list(self._c.decision_steps)

    @property
    def steps(self) -> int:
        return self._c.steps

    def _mirror(self):
        h = self._c.hparams()
        for g in self.param_groups:
            g["lr"] = h["lr"]
            g["betas"] = (1.0 - h["one_minus_beta1"], 1.0 - h["one_minus_beta2"])
            g["eps"] = h["eps"]
            g["weight_decay"] = h["weight_decay"]
            g["clip_fraction"] = h["clip_fraction"]

    @torch.no_grad()
    def step(self, closure=None, loss=None):
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if loss is None:
            raise ValueError("LhoptController.step needs this step's training loss: "
                             "step(loss=loss.item()) or step(closure)")
        self._c.step(float(loss))
        if self._c.decision_due():
            valid = None if self.valid_loss_fn is None else float(self.valid_loss_fn())
            self.decisions_log.append(self._c.decide(valid))
            self._mirror()
        return loss

    def state_dict(self):
        """The run's state (see the class's doc): copies, unchanged by the steps that follow."""
        return {"lhopt_controller": self._c.state_dict(),
                "decisions_log": copy.deepcopy(self.decisions_log)}

    def load_state_dict(self, state_dict):
        """Makes this controller the one whose state_dict() `state_dict` is. ValueError, and
        nothing changed, if it is not an LhoptController's or its run differs from this one
        (total_steps, decisions, the policy's size, the parameters' number and shapes)."""
        if not isinstance(state_dict, dict) or "lhopt_controller" not in state_dict:
            raise ValueError("not an lopt.LhoptController state_dict (no 'lhopt_controller' "
                             "entry); a torch optimizer's state does not load into it")
        log = state_dict.get("decisions_log", [])
        if not isinstance(log, list):
            raise ValueError("LhoptController.load_state_dict: decisions_log must be a list")
        self._c.load_state_dict(state_dict["lhopt_controller"])
        self.decisions_log = copy.deepcopy(log)
        self._mirror()
