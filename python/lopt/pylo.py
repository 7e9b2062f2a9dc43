"""small_fc_lopt weights in PyLO's layout (github.com/Belilovsky-Lab/pylo), both ways.

PyLO's learned optimizers AdafacLO_naive / AdafacLO_cuda, MuLO_naive / MuLO_cuda and
ELO_naive run a `pylo.models.Meta_MLP.MetaMLP(input_size=39, hidden_size=H,
hidden_layers=1)`, loaded with `MetaMLP.from_pretrained(hf_key)` from a Hugging Face hub
directory (`model.safetensors` + `config.json`, huggingface_hub's PyTorchModelHubMixin) or,
for ELO_naive(checkpoint_path=...), from a torch.save'd state_dict. Its state_dict:

    network.input.weight    [H, 39]     network.input.bias    [H]
    network.linear_0.weight [H, H]      network.linear_0.bias [H]
    network.output.weight   [2, H]      network.output.bias   [2]

(torch.nn.Linear's [out, in] layout: x @ W.T + b). lopt's theta is
w0 [39, H], b0 [H], w1 [H, H], b1 [H], w2 [H, 2], b2 [2] used as x @ w + b, so each weight
is transposed and each bias copied; nothing else changes.

What maps exactly:
  * the 39 inputs, in the same order: gradient, parameter, momentum at 3 decays, rms,
    momentum * rsqrt(rms), rsqrt(rms), factored gradient (3), row and column statistics (3
    each), their rsqrt (3 each), factored momentum (3), then the 11 tanh time features
    tanh(t / tau - 1) for tau in {1, 3, 10, ..., 1e5} with t = 0 on the first step; the same
    per-tensor second-moment normalisation, the same Adafactor axes (the two largest);
  * the update p <- p - lr * step_mult * d * exp(exp_mult * m): `step_mult` and `exp_mult`
    are not in PyLO's files but arguments of its optimizers (AdafacLO_naive: step_mult=0.01,
    exp_mult=0.001 by default; ELO_naive: 0.001, 0.001). to_pylo returns the values to pass
    (pylo_kwargs); from_pylo takes them as arguments (default: AdafacLO_naive's);
  * ELO_naive's inference schedule: warmup_fraction, use_lo_cosine_scheduler ->
    step_mult_schedule COSINE, step_mult_min -> min_step_mult, weight_decay (decoupled, scaled
    by the schedule), init_lr must be 0 (lopt warms up from 0). lopt rounds the warm-up to a
    whole number of steps (ELO_naive does not), so the warm-up's last step may differ.

What does not map:
  * decays. lopt's small_fc_lopt uses the fixed decays (0.9, 0.99, 0.999) for momentum and
    Adafactor and 0.999 for rms, as ELO_naive does by default. AdafacLO_naive / MuLO_naive
    add learned offsets in log space (defaults momentum_decays=[0.152, 0.142, 0.068],
    rms_decays=[0.0108], adafactor_decays=[0.186, -0.109, -0.062]: effective momentum decays
    about (0.54, 0.96, 0.998)) that live in the optimizer's arguments, not in the file. A
    checkpoint meta-trained with such offsets (the MuLO checkpoints) runs in lopt with the
    fixed decays, i.e. not as in PyLO; one exported by lopt runs in PyLO as meta-trained
    only with AdafacLO_naive(momentum_decays=[0,0,0], rms_decays=[0],
    adafactor_decays=[0,0,0]) or with ELO_naive (its defaults), as pylo_kwargs says;
  * muP scaling. MuLO_naive divides the lr of each hidden (matrix-like) parameter group by
    its width multiplier (mup's infshape); in lopt that is LearnedOptimizerSpec.parameterization
    MUP in `lopt eval` on a MUP task, or update_scale=1/width_mult on those groups of
    lopt.LearnedOptimizer. The file itself carries no μP information either way: from_pylo's
    `mup=True` records MUP in the options;
  * PyLO's gradient clipping options (max_grad_norm, clip_grad) and ELO_naive's nan_to_num
    of the gradients have no counterpart in lopt's step;
  * MetaMLPs with hidden_layers != 1 or input_size != 39 (small_fc_lopt is 39 -> H -> H -> 2)
    are refused, as are VeLO / Celo checkpoints (other architectures).

Command line (the conversion that lets `lopt eval` evaluate a PyLO checkpoint):
    python3 -m lopt.pylo import DIR_OR_FILE --out x.lopt [--step-mult 0.01] [--exp-mult 0.001] [--mup]
    python3 -m lopt.pylo export x.lopt --out DIR [--pt FILE.pt]
    build/cli/lopt eval --optimizer x.lopt --out runs/pylo_eval
"""
import argparse
import collections
import json
import os
import struct
import sys
from typing import Dict, Mapping, Optional, Union

import torch

from lopt.optim import TrainedOptimizer, load_optimizer_file, save_optimizer_file

NUM_INPUTS = 39
_LAYERS = ("input", "linear_0", "output")

# --- safetensors (the format's spec: an 8-byte little-endian header length, a JSON header
# {name: {dtype, shape, data_offsets}}, then the data; no dependency on the package) -------
_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
              "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32}
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}


def read_safetensors(path: Union[str, os.PathLike]) -> Dict[str, torch.Tensor]:
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: not a safetensors file (too short)")
    (n,) = struct.unpack("<Q", data[:8])
    if 8 + n > len(data):
        raise ValueError(f"{path}: not a safetensors file (header length {n})")
    header = json.loads(data[8:8 + n])
    body = memoryview(data)[8 + n:]
    out = collections.OrderedDict()
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _ST_DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"{path}: {name} has dtype {info['dtype']}, not one lopt reads")
        begin, end = info["data_offsets"]
        raw = bytearray(body[begin:end])
        t = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        out[name] = t.reshape(info["shape"]).clone()
    return out


def write_safetensors(path: Union[str, os.PathLike], tensors: Mapping[str, torch.Tensor],
                      metadata: Optional[Dict[str, str]] = None) -> None:
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().to("cpu").contiguous()
        raw = t.view(torch.uint8).flatten().numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": _ST_NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = dict(metadata)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)  # the data starts 8-byte aligned, as the reference writer does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


# --- the mapping ------------------------------------------------------------------------
def theta_to_state_dict(theta: torch.Tensor, hidden_size: int) -> "collections.OrderedDict":
    """lopt's flat theta -> PyLO MetaMLP state_dict (float32, [out, in] weights)."""
    h = int(hidden_size)
    theta = torch.as_tensor(theta).detach().to("cpu", torch.float32).flatten()
    sizes = [NUM_INPUTS * h, h, h * h, h, h * 2, 2]
    if theta.numel() != sum(sizes):
        raise ValueError(f"theta has {theta.numel()} values; hidden size {h} needs {sum(sizes)}")
    w0, b0, w1, b1, w2, b2 = torch.split(theta, sizes)
    return collections.OrderedDict([
        ("network.input.weight", w0.reshape(NUM_INPUTS, h).t().contiguous()),
        ("network.input.bias", b0.clone()),
        ("network.linear_0.weight", w1.reshape(h, h).t().contiguous()),
        ("network.linear_0.bias", b1.clone()),
        ("network.output.weight", w2.reshape(h, 2).t().contiguous()),
        ("network.output.bias", b2.clone()),
    ])


def state_dict_to_theta(sd: Mapping[str, torch.Tensor]):
    """PyLO MetaMLP state_dict -> (lopt's flat theta, hidden size). Takes the keys with or
    without the 'network.' prefix; refuses other geometries with a ValueError."""
    sd = {k[len("network."):] if k.startswith("network.") else k: v for k, v in sd.items()}
    extra = sorted(k for k in sd if k.split(".")[0] not in _LAYERS)
    if extra:
        raise ValueError(
            f"unexpected entries {extra}: small_fc_lopt is MetaMLP(input_size=39, hidden_layers=1) "
            "(input, linear_0, output)")
    missing = [f"network.{l}.{p}" for l in _LAYERS for p in ("weight", "bias")
               if f"{l}.{p}" not in sd]
    if missing:
        raise ValueError(f"not a PyLO MetaMLP state_dict: missing {missing}")
    w0 = sd["input.weight"]
    if w0.dim() != 2 or w0.shape[1] != NUM_INPUTS:
        raise ValueError(f"network.input.weight is {list(w0.shape)}; small_fc_lopt has "
                         f"{NUM_INPUTS} inputs ([H, {NUM_INPUTS}])")
    h = w0.shape[0]
    want = {"input.bias": [h], "linear_0.weight": [h, h], "linear_0.bias": [h],
            "output.weight": [2, h], "output.bias": [2]}
    for k, shape in want.items():
        if list(sd[k].shape) != shape:
            raise ValueError(f"network.{k} is {list(sd[k].shape)}, expected {shape} for hidden "
                             f"size {h}")
    f = lambda t: t.detach().to("cpu", torch.float32)
    theta = torch.cat([f(sd["input.weight"]).t().flatten(), f(sd["input.bias"]),
                       f(sd["linear_0.weight"]).t().flatten(), f(sd["linear_0.bias"]),
                       f(sd["output.weight"]).t().flatten(), f(sd["output.bias"])])
    return theta.contiguous(), h


def _f32(x: float) -> float:
    # The float32 option as its shortest decimal (0.001, not 0.0010000000474974513).
    import numpy
    return float(str(numpy.float32(x)))


def pylo_kwargs(options) -> Dict[str, dict]:
    """The arguments that make PyLO's optimizers run an exported lopt optimizer as lopt does
    (see the module's doc): for AdafacLO_naive (and its CUDA version) and for ELO_naive."""
    from lopt.v1 import job_pb2
    adafac = dict(step_mult=_f32(options.step_mult), exp_mult=_f32(options.exp_mult),
                  momentum_decays=[0.0, 0.0, 0.0], rms_decays=[0.0],
                  adafactor_decays=[0.0, 0.0, 0.0], hidden_size=options.hidden_size,
                  hidden_layers=1)
    elo = dict(step_mult=_f32(options.step_mult), exp_mult=_f32(options.exp_mult), init_lr=0.0,
               warmup_fraction=_f32(options.warmup_fraction),
               use_lo_cosine_scheduler=options.step_mult_schedule == job_pb2.COSINE,
               step_mult_min=_f32(options.min_step_mult), weight_decay=_f32(options.weight_decay),
               hidden_size=options.hidden_size, hidden_layers=1,
               initial_momentum_decays=[0.9, 0.99, 0.999], initial_rms_decays=[0.999],
               initial_adafactor_decays=[0.9, 0.99, 0.999])
    return {"AdafacLO_naive": adafac, "ELO_naive": elo,
            "mup": options.parameterization == job_pb2.MUP}


def to_pylo(optimizer: Union[str, os.PathLike, TrainedOptimizer]) -> "collections.OrderedDict":
    """A .lopt file (or TrainedOptimizer) as PyLO's MetaMLP state_dict."""
    if not isinstance(optimizer, TrainedOptimizer):
        optimizer = load_optimizer_file(optimizer)
    return theta_to_state_dict(optimizer.theta, optimizer.file.options.hidden_size)


def save_pylo(optimizer: Union[str, os.PathLike, TrainedOptimizer],
              out_dir: Union[str, os.PathLike], pt_path: Optional[str] = None) -> None:
    """Writes a hub directory MetaMLP.from_pretrained(out_dir) loads: model.safetensors and
    config.json, plus pylo_kwargs.json (the optimizer arguments to pass). pt_path: also a
    torch.save'd state_dict (ELO_naive(checkpoint_path=...))."""
    if not isinstance(optimizer, TrainedOptimizer):
        optimizer = load_optimizer_file(optimizer)
    sd = to_pylo(optimizer)
    os.makedirs(out_dir, exist_ok=True)
    write_safetensors(os.path.join(out_dir, "model.safetensors"), sd, {"format": "pt"})
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump({"input_size": NUM_INPUTS, "hidden_size": optimizer.file.options.hidden_size,
                   "hidden_layers": 1}, f, indent=2)
    with open(os.path.join(out_dir, "pylo_kwargs.json"), "w") as f:
        json.dump(pylo_kwargs(optimizer.file.options), f, indent=2)
    if pt_path:
        torch.save(sd, pt_path)


def load_pylo_state_dict(src) -> Mapping[str, torch.Tensor]:
    """A MetaMLP state_dict from a hub directory (model.safetensors or pytorch_model.bin),
    a .safetensors file, a torch.save'd file (.pt/.bin/.pth), or a dict."""
    if isinstance(src, Mapping):
        return src
    path = os.fspath(src)
    if os.path.isdir(path):
        for name in ("model.safetensors", "pytorch_model.bin"):
            if os.path.exists(os.path.join(path, name)):
                return load_pylo_state_dict(os.path.join(path, name))
        raise FileNotFoundError(f"{path} has neither model.safetensors nor pytorch_model.bin")
    if not os.path.exists(path):
        raise FileNotFoundError(f"cannot read {path}: no such file")
    if path.endswith(".safetensors"):
        return read_safetensors(path)
    sd = torch.load(path, map_location="cpu")
    if not isinstance(sd, Mapping):
        raise ValueError(f"{path} holds a {type(sd).__name__}, not a state_dict")
    return sd


def from_pylo(src, step_mult: float = 0.01, exp_mult: float = 0.001, mup: bool = False,
              source: Optional[str] = None) -> TrainedOptimizer:
    """A PyLO MetaMLP checkpoint as a lopt TrainedOptimizer (save it with
    lopt.save_optimizer_file; use it with lopt.LearnedOptimizer or `lopt eval`).
    step_mult / exp_mult: the values the checkpoint is run with in PyLO (AdafacLO_naive's
    defaults 0.01 / 0.001; ELO_naive's 0.001 / 0.001). See the module's doc for what maps."""
    from lopt.v1 import job_pb2, optimizer_file_pb2
    theta, h = state_dict_to_theta(load_pylo_state_dict(src))
    if not torch.isfinite(theta).all():
        raise ValueError("the checkpoint has non-finite weights")
    file = optimizer_file_pb2.OptimizerFile()
    file.format_version = 1
    file.architecture = "small_fc_lopt"
    file.options.hidden_size = h
    file.options.step_mult = step_mult
    file.options.exp_mult = exp_mult
    if mup:
        file.options.parameterization = job_pb2.MUP
    # The job `lopt eval` falls back to without --job: its untrained arm needs these options.
    file.job.lopt.CopyFrom(file.options)
    file.job.name = "pylo:" + (source or (os.fspath(src) if not isinstance(src, Mapping)
                                          else "state_dict"))
    return TrainedOptimizer(file, theta)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m lopt.pylo",
                                description="small_fc_lopt weights between lopt and PyLO")
    sub = p.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("import", help="PyLO MetaMLP checkpoint -> .lopt (for lopt eval)")
    i.add_argument("src", help="hub directory, .safetensors, or torch.save'd state_dict")
    i.add_argument("--out", required=True, help="the .lopt file to write")
    i.add_argument("--step-mult", type=float, default=0.01,
                   help="step_mult the checkpoint runs with (AdafacLO_naive: 0.01, ELO_naive: 0.001)")
    i.add_argument("--exp-mult", type=float, default=0.001)
    i.add_argument("--mup", action="store_true", help="record MUP parameterization (MuLO)")
    e = sub.add_parser("export", help=".lopt -> PyLO hub directory")
    e.add_argument("src", help="a .lopt file")
    e.add_argument("--out", required=True, help="directory for model.safetensors + config.json")
    e.add_argument("--pt", help="also write a torch.save'd state_dict here")
    a = p.parse_args(argv)
    try:
        if a.cmd == "import":
            t = from_pylo(a.src, a.step_mult, a.exp_mult, a.mup)
            save_optimizer_file(a.out, t)
            print(f"wrote {a.out}: small_fc_lopt hidden size {t.file.options.hidden_size}, "
                  f"step_mult {a.step_mult:g}, exp_mult {a.exp_mult:g}. lopt runs it with decays "
                  "(0.9, 0.99, 0.999): a checkpoint meta-trained with AdafacLO/MuLO's learned "
                  "decay offsets behaves differently here (python3 -m pydoc lopt.pylo)")
        else:
            save_pylo(a.src, a.out, a.pt)
            print(f"wrote {a.out}/model.safetensors, config.json, pylo_kwargs.json")
    except (OSError, ValueError) as err:
        print(f"lopt.pylo: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
