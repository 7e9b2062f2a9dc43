"""lopt from Python: lopt's trained optimizers, LHOPT schedules and controllers in
plain PyTorch, a client of the services, and interchange with PyLO.

    import lopt
    opt = lopt.LearnedOptimizer(model.parameters(), "models/fmnist8_elo.lopt")
    for x, y in data:
        opt.zero_grad(); loss_fn(model(x), y).backward(); opt.step()

Modules:
    lopt.optim   LearnedOptimizer (a torch.optim.Optimizer running lopt's C++ step),
                 load_optimizer_file / save_optimizer_file
    lopt.lhopt   Schedule, ScheduleReplay (a recorded schedule on any torch optimizer),
                 LhoptController (a trained controller acting on your training loop)
    lopt.client  Client: submit, list, watch, cancel and export jobs over gRPC
    lopt.pylo    to_pylo / from_pylo: small_fc_lopt weights in PyLO's MetaMLP layout
    lopt.v1      the protobuf messages of proto/lopt/v1 (job_pb2, optimizer_file_pb2, ...)

The package is built by lopt's CMake into build/python (PYTHONPATH=build/python).
"""
from lopt import _C
from lopt.optim import (LearnedOptimizer, TrainedOptimizer, load_optimizer_file,
                        save_optimizer_file)
from lopt.lhopt import LhoptController, Schedule, ScheduleReplay

__all__ = [
    "LearnedOptimizer", "TrainedOptimizer", "load_optimizer_file", "save_optimizer_file",
    "Schedule", "ScheduleReplay", "LhoptController", "cuda_mlp_precision",
    "set_cuda_mlp_precision",
]

# Whether this build runs small_fc_lopt's CUDA kernel on CUDA tensors (a CUDA build
# of lopt); without it CUDA tensors take the reference step (torch ops, same math).
WITH_CUDA_KERNEL = bool(_C.with_cuda)


def cuda_mlp_precision() -> str:
    """The CUDA kernel's MLP precision: "tf32" (tensor cores, the default; about 1e-3 relative
    to float32), "fp32", or "none" without the CUDA kernel. LOPT_CUDA_MLP=fp32|tf32 in the
    environment sets it at start-up."""
    return _C.cuda_mlp_precision()


def set_cuda_mlp_precision(mode: str) -> None:
    """Sets the CUDA kernel's MLP precision for every later step: "fp32" or "tf32"."""
    _C.set_cuda_mlp_precision(mode)
