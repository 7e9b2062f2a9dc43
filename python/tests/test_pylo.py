"""small_fc_lopt weights in PyLO's MetaMLP layout: files written here in that layout (no
download), the mapping both ways, and a step of PyLO's algorithm on the converted weights."""
import json
import os
import struct
import subprocess
import sys
from collections import OrderedDict

import pytest
import torch

import lopt
import lopt.pylo as pylo
from conftest import SHIPPED, binary


def metamlp(hidden=32, hidden_layers=1):
    # PyLO's pylo.models.Meta_MLP.MetaMLP module structure (names as its state_dict has them).
    layers = OrderedDict([("input", torch.nn.Linear(39, hidden)), ("relu_input", torch.nn.ReLU())])
    for i in range(hidden_layers):
        layers[f"linear_{i}"] = torch.nn.Linear(hidden, hidden)
        layers[f"relu_{i}"] = torch.nn.ReLU()
    layers["output"] = torch.nn.Linear(hidden, 2)
    m = torch.nn.Module()
    m.network = torch.nn.Sequential(layers)
    return m


def raw_safetensors_header(path):
    data = open(path, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), 8 + n


def test_export_writes_pylos_hub_layout(tmp_path):
    pylo.save_pylo(SHIPPED, tmp_path / "hub", pt_path=str(tmp_path / "elo.pt"))
    header, start = raw_safetensors_header(tmp_path / "hub" / "model.safetensors")
    shapes = {k: v["shape"] for k, v in header.items() if k != "__metadata__"}
    assert shapes == {"network.input.weight": [32, 39], "network.input.bias": [32],
                      "network.linear_0.weight": [32, 32], "network.linear_0.bias": [32],
                      "network.output.weight": [2, 32], "network.output.bias": [2]}
    assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} == {"F32"}
    assert start % 8 == 0
    assert json.loads((tmp_path / "hub" / "config.json").read_text()) == {
        "input_size": 39, "hidden_size": 32, "hidden_layers": 1}
    kwargs = json.loads((tmp_path / "hub" / "pylo_kwargs.json").read_text())
    assert kwargs["AdafacLO_naive"]["momentum_decays"] == [0.0, 0.0, 0.0]
    trained = lopt.load_optimizer_file(SHIPPED)
    assert kwargs["ELO_naive"]["step_mult"] == pytest.approx(trained.file.options.step_mult)
    # PyLO's module loads it strictly, from either file, with the weights transposed.
    for sd in (pylo.read_safetensors(tmp_path / "hub" / "model.safetensors"),
               torch.load(tmp_path / "elo.pt")):
        m = metamlp()
        m.load_state_dict(sd, strict=True)
        h = 32
        w0 = trained.theta[:39 * h].reshape(39, h)
        assert torch.equal(m.network.input.weight, w0.t())
        assert torch.equal(m.network.output.bias, trained.theta[-2:])


def test_round_trip_is_exact(tmp_path):
    pylo.save_pylo(SHIPPED, tmp_path / "hub")
    back = pylo.from_pylo(tmp_path / "hub", step_mult=0.001)
    assert torch.equal(back.theta, lopt.load_optimizer_file(SHIPPED).theta)
    lopt.save_optimizer_file(tmp_path / "back.lopt", back)
    again = lopt.load_optimizer_file(tmp_path / "back.lopt")
    assert torch.equal(again.theta, back.theta) and again.file.options.hidden_size == 32


def test_import_a_checkpoint_written_by_pylos_module(tmp_path):
    # A MetaMLP with hidden size 16 saved as PyLO saves it (torch.save of its state_dict and
    # the hub's safetensors), imported, must compute the same MLP.
    torch.manual_seed(3)
    m = metamlp(hidden=16)
    torch.save(m.state_dict(), tmp_path / "ckpt.pt")
    pylo.write_safetensors(tmp_path / "model.safetensors", m.state_dict())
    for src in (tmp_path / "ckpt.pt", tmp_path / "model.safetensors", m.state_dict()):
        t = pylo.from_pylo(src, step_mult=0.01)
        assert t.file.options.hidden_size == 16 and t.theta.numel() == 39 * 16 + 16 + 256 + 16 + 34
        x = torch.randn(5, 39)
        h = 16
        th = t.theta
        w0, b0 = th[:39 * h].reshape(39, h), th[39 * h:40 * h]
        w1, b1 = th[40 * h:40 * h + h * h].reshape(h, h), th[40 * h + h * h:41 * h + h * h]
        w2, b2 = th[41 * h + h * h:43 * h + h * h].reshape(h, 2), th[-2:]
        ours = torch.relu(torch.relu(x @ w0 + b0) @ w1 + b1) @ w2 + b2
        torch.testing.assert_close(ours, m.network(x))


def test_refuses_other_geometries(tmp_path):
    with pytest.raises(ValueError, match="linear_1"):
        pylo.from_pylo(metamlp(hidden_layers=2).state_dict())
    sd = metamlp().state_dict()
    sd["network.input.weight"] = torch.zeros(32, 40)
    with pytest.raises(ValueError, match="39 inputs"):
        pylo.from_pylo(sd)
    sd = metamlp().state_dict()
    del sd["network.output.bias"]
    with pytest.raises(ValueError, match="missing"):
        pylo.from_pylo(sd)
    with pytest.raises(FileNotFoundError):
        pylo.from_pylo(tmp_path / "nothing.safetensors")


# --- PyLO's AdafacLO / ELO step with zero decay offsets, written from its published
# algorithm (per tensor: accumulators, the 39 features in its order, second-moment
# normalisation, MetaMLP, p -= lr * d * exp(exp_mult * m) * step_mult). -------------------
def _factored_dims(shape):
    if len(shape) < 2:
        return None
    order = sorted(range(len(shape)), key=lambda i: shape[i])  # stable, as numpy on ties here
    return order[-2], order[-1]


class PyloStyleStep:
    def __init__(self, net, step_mult, exp_mult):
        self.net, self.step_mult, self.exp_mult, self.state, self.t = net, step_mult, exp_mult, {}, 0

    @torch.no_grad()
    def step(self, params):
        beta = torch.tensor([0.9, 0.99, 0.999])
        tau = torch.tensor([1, 3, 10, 30, 100, 300, 1e3, 3e3, 1e4, 3e4, 1e5])
        tfeat = torch.tanh(torch.tensor(float(self.t)) / tau - 1.0)
        for p in params:
            shape = tuple(p.shape)
            g = p.grad.unsqueeze(-1)
            st = self.state.setdefault(p, {})
            f = _factored_dims(shape)
            if not st:
                st["mom"] = torch.zeros(shape + (3,))
                st["rms"] = torch.zeros(shape + (1,))
                if f:
                    d1, d0 = f
                    full = shape + (3,)
                    st["row"] = torch.zeros(tuple(s for i, s in enumerate(full) if i != d0))
                    st["col"] = torch.zeros(tuple(s for i, s in enumerate(full) if i != d1))
                else:
                    st["v"] = torch.zeros(shape + (3,))
            st["mom"].mul_(beta).add_((1 - beta) * g)
            st["rms"].mul_(0.999).add_((1 - torch.tensor([0.999])) * g * g)
            g2 = g.repeat([1] * len(shape) + [3]) ** 2 + 1e-30
            mom, rms = st["mom"], st["rms"]
            rs = torch.rsqrt(rms + 1e-6)
            if f:
                d1, d0 = f
                st["row"] = beta * st["row"] + (1 - beta) * g2.mean(d0)
                st["col"] = beta * st["col"] + (1 - beta) * g2.mean(d1)
                red = d1 - 1 if d1 > d0 else d1
                rf = torch.rsqrt(torch.clamp(st["row"] / (st["row"].mean(red, keepdim=True) + 1e-9), min=1e-9))
                cf = torch.rsqrt(torch.clamp(st["col"], min=1e-9))
                rc = rf.unsqueeze(d0) * cf.unsqueeze(d1)
                row = st["row"].unsqueeze(d0).expand(shape + (3,))
                col = st["col"].unsqueeze(d1).expand(shape + (3,))
                feats = [g, p.unsqueeze(-1), mom, rms, mom * rs, rs, g * rc, row, col,
                         torch.rsqrt(row + 1e-8), torch.rsqrt(col + 1e-8), mom * rc]
            else:
                st["v"] = beta * st["v"] + (1 - beta) * g2
                v = st["v"]
                feats = [g, p.unsqueeze(-1), mom, rms, mom * rs, rs,
                         g * torch.rsqrt(torch.clamp(v + 1e-9, min=1e-9)), v, v,
                         torch.rsqrt(v + 1e-8), torch.rsqrt(v + 1e-8), mom * torch.pow(v + 1e-6, -0.5)]
            x = torch.cat(feats, -1)
            axes = list(range(len(shape)))
            x = x * torch.rsqrt(1e-5 + (x ** 2).mean(dim=axes, keepdim=True)) if axes else \
                x * torch.rsqrt(1e-5 + x ** 2)
            x = torch.cat([x, tfeat.expand(shape + (11,))], -1)
            d, m = self.net(x).split(1, -1)
            p.sub_((d * torch.exp(m * self.exp_mult) * self.step_mult).squeeze(-1))
        self.t += 1


def test_converted_weights_step_as_pylos_algorithm(tmp_path):
    pylo.save_pylo(SHIPPED, tmp_path / "hub")
    m = metamlp()
    m.load_state_dict(pylo.read_safetensors(tmp_path / "hub" / "model.safetensors"))
    options = lopt.load_optimizer_file(SHIPPED).file.options
    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(6, 4)), torch.nn.Parameter(torch.randn(5)),
         torch.nn.Parameter(torch.randn(3, 2, 4))]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    ours = lopt.LearnedOptimizer(a, SHIPPED)
    ref = PyloStyleStep(m.network, options.step_mult, options.exp_mult)
    start = [p.detach().clone() for p in a]
    for s in range(4):
        gen = torch.Generator().manual_seed(s)
        grads = [torch.randn(p.shape, generator=gen) for p in a]
        for ps in (a, b):
            for p, g in zip(ps, grads):
                p.grad = g.clone()
        ours.step()
        ref.step(b)
        for pa, pb, p0 in zip(a, b, start):
            torch.testing.assert_close(pa - p0, pb - p0, rtol=1e-4, atol=1e-7)
    assert all(not torch.equal(p, p0) for p, p0 in zip(a, start))


def test_cli_import_then_lopt_eval(tmp_path):
    torch.manual_seed(5)
    m = metamlp()
    pylo.write_safetensors(tmp_path / "model.safetensors", m.state_dict())
    env = dict(os.environ)
    r = subprocess.run([sys.executable, "-m", "lopt.pylo", "import", str(tmp_path),
                        "--out", str(tmp_path / "pylo.lopt"), "--step-mult", "0.001"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "decays" in r.stdout  # it says what does not map
    job = tmp_path / "job.textproto"
    job.write_text('name: "pylo_eval" seed: 1\n'
                   'task { fmnist_mlp { image_size: 8 hidden_sizes: 16 batch_size: 32 } }\n'
                   'eval { steps: 20 seeds: 1 record_every: 5 adamw_lrs: 0.001 }\n')
    r = subprocess.run([binary("cli", "lopt"), "eval", "--optimizer", str(tmp_path / "pylo.lopt"),
                        "--job", str(job), "--out", str(tmp_path / "eval"), "--threads", "1",
                        "--no-progress"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert {run["optimizer"] for run in report["runs"]} >= {"lopt", "adamw"}
    r = subprocess.run([sys.executable, "-m", "lopt.pylo", "import", str(tmp_path / "none"),
                        "--out", str(tmp_path / "x.lopt")], capture_output=True, text=True)
    assert r.returncode == 1 and "lopt.pylo:" in r.stderr
