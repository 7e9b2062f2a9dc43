"""lopt.LearnedOptimizer: a trained small_fc_lopt (a `.lopt` file) as a torch.optim.Optimizer.

The step is lopt's C++ one (lopt_common's SmallFcLopt::Step through lopt._C): the fused CPU
kernel for CPU float32 tensors, the CUDA kernel for CUDA float32 tensors in a CUDA build of
lopt, otherwise the reference step (torch ops, same math). The Python code only keeps the
per-parameter state and applies the updates, exactly as lopt::LearnedOptimizer does, so a
step here equals a step of the C++ optimizer on the same tensors bit for bit.

What `lr` means: small_fc_lopt has no learning rate; its update is
    u = step_mult * d * exp(exp_mult * m)        (d, m: the MLP's two outputs)
and a step is p <- p - lr * u. `lr` (default 1.0) is a multiplier on the learned step, per
parameter group, so torch.optim.lr_scheduler schedules (warm-up, decay, ...) scale it as they
scale AdamW's lr; lr=1 is the optimizer as meta-trained. It is LearnedOptimizerOptions.lr_scale
of the C++ optimizer.

`update_scale` (per group, default 1.0) multiplies the update before lr, as
lopt::LearnedOptimizer::set_update_scales does: for muP (μLO), 1 / width multiplier on hidden
matrices. `total_steps` turns on the file's inference schedule of step_mult (warmup_fraction,
COSINE, weight_decay; LearnedOptimizerSpec), which needs the run's length.
"""
import collections
import os
from typing import Iterable, Optional, Union

import torch

from lopt import _C

_STATE_KEYS = ("mom", "rms", "fac_a", "fac_b")

TrainedOptimizer = collections.namedtuple("TrainedOptimizer", ["file", "theta"])
TrainedOptimizer.__doc__ = """A trained small_fc_lopt: `file` the lopt.v1.OptimizerFile
(options and provenance; its theta field left empty) and `theta` the [D] float32 tensor."""


def _optimizer_file_pb2():
    from lopt.v1 import optimizer_file_pb2  # generated at build time from proto/
    return optimizer_file_pb2


def load_optimizer_file(path: Union[str, os.PathLike]) -> TrainedOptimizer:
    """Reads a .lopt file, checked as the C++ tools check it (format version,
    architecture, theta's size and finiteness). FileNotFoundError / ValueError otherwise."""
    file_bytes, theta = _C.load_optimizer_file(os.fspath(path))
    return TrainedOptimizer(_optimizer_file_pb2().OptimizerFile.FromString(file_bytes), theta)


def save_optimizer_file(path: Union[str, os.PathLike], trained: TrainedOptimizer) -> None:
    """Writes a .lopt file that `lopt eval --optimizer` and lopt::LearnedOptimizer read."""
    file = _optimizer_file_pb2().OptimizerFile()
    file.CopyFrom(trained.file)
    del file.theta[:]
    theta = torch.as_tensor(trained.theta).detach().to("cpu", torch.float32).contiguous()
    _C.save_optimizer_file(os.fspath(path), file.SerializeToString(), theta)


class LearnedOptimizer(torch.optim.Optimizer):
    """A trained small_fc_lopt as a torch.optim.Optimizer.

    Args:
        params: parameters or parameter groups (dicts; each may set lr and update_scale).
        optimizer: a .lopt path or a TrainedOptimizer (lopt.load_optimizer_file,
            lopt.pylo.from_pylo).
        lr: multiplier on the learned step (see the module's doc); default 1.0.
        update_scale: multiplier on the update before lr (muP); default 1.0.
        total_steps: the run's length, for the file's step_mult schedule (0: none).
    """

    def __init__(self, params: Iterable, optimizer: Union[str, os.PathLike, TrainedOptimizer],
                 lr: float = 1.0, update_scale: float = 1.0, total_steps: int = 0):
        if not isinstance(optimizer, TrainedOptimizer):
            optimizer = load_optimizer_file(optimizer)
        if lr < 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        super().__init__(params, dict(lr=lr, update_scale=update_scale))
        self.file = optimizer.file
        self._lopt = _C.SmallFcLopt(optimizer.file.options.SerializeToString())
        theta = torch.as_tensor(optimizer.theta).detach().to("cpu", torch.float32).flatten()
        if theta.numel() != self._lopt.theta_size:
            raise ValueError(f"theta has {theta.numel()} values, small_fc_lopt with hidden size "
                             f"{optimizer.file.options.hidden_size} needs {self._lopt.theta_size}")
        self._theta = theta
        self._theta_here = {}  # (device, dtype) -> theta there, copied once
        self.total_steps = int(total_steps)
        self.iteration = 0  # steps taken (the time feature's t)

    @property
    def options(self):
        """The file's LearnedOptimizerSpec (hidden size, step_mult, exp_mult, schedule)."""
        return self.file.options

    def _theta_on(self, like: torch.Tensor) -> torch.Tensor:
        key = (like.device, like.dtype)
        if key not in self._theta_here:
            self._theta_here[key] = self._theta.to(like.device, like.dtype)
        return self._theta_here[key]

    @torch.no_grad()
    def step(self, closure=None):
        """One step over every parameter with a gradient; the others keep their value and
        state. The time feature counts steps that updated something, as the C++ optimizer."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # One C++ call per (device, dtype): small_fc_lopt's features are per tensor, so
        # splitting the parameters changes nothing but lets a model span devices.
        batches = collections.OrderedDict()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("lopt.LearnedOptimizer does not take sparse gradients")
                state = self.state[p]
                if not state:
                    state.update(zip(_STATE_KEYS, self._lopt.init_state(p)))
                batches.setdefault((p.device, p.dtype), []).append((p, group))
        if not batches:
            return loss
        for entries in batches.values():
            params = [p for p, _ in entries]
            grads = [p.grad for p in params]
            states = [[self.state[p][k] for k in _STATE_KEYS] for p in params]
            scales = [float(g["update_scale"]) for _, g in entries]
            if all(s == 1.0 for s in scales):
                scales = []  # as the C++ optimizer without set_update_scales
            updates, new_states = self._lopt.step(params, grads, states, self.iteration,
                                                  self.total_steps, self._theta_on(params[0]),
                                                  scales)
            for (p, group), u, st in zip(entries, updates, new_states):
                self.state[p].update(zip(_STATE_KEYS, st))
                p.sub_(u, alpha=group["lr"])
        self.iteration += 1
        return loss

    def state_dict(self):
        sd = super().state_dict()
        sd["lopt"] = {"iteration": self.iteration, "total_steps": self.total_steps}
        return sd

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        extra = state_dict.pop("lopt", None)
        if extra is None:
            raise ValueError("not a lopt.LearnedOptimizer state_dict (no 'lopt' entry)")
        super().load_state_dict(state_dict)
        self.iteration = int(extra["iteration"])
        self.total_steps = int(extra["total_steps"])
