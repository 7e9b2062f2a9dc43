"""Train a small PyTorch model with a trained lopt optimizer and with AdamW, side by side.

    PYTHONPATH=build/python python3 examples/python/train_with_lopt.py [OPTIMIZER.lopt] [STEPS]
    (default: models/fmnist8_elo.lopt, 2000 steps)

The model is an ordinary torch.nn module (Fashion-MNIST at 8x8, 64 -> 32 -> 10, the task the
shipped optimizer was meta-trained on); nothing about it is lopt-specific. The only change
from an AdamW script is the optimizer's constructor. The same initial weights and the same
batches for both optimizers. examples/train_with_lopt.cc is the same in C++.
"""
import gzip
import os
import struct
import sys

import torch
import torch.nn.functional as F

import lopt

DATA = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist


def read_idx(name):
    with gzip.open(os.path.join(DATA, name), "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return torch.frombuffer(bytearray(data[4 + 4 * ndim:]), dtype=torch.uint8).reshape(dims)


def load(split, size=8):
    x = read_idx(f"{split}-images-idx3-ubyte.gz").float().div_(255).unsqueeze(1)
    x = F.adaptive_avg_pool2d(x, (size, size)).flatten(1)  # as lopt's tasks downsample
    return x, read_idx(f"{split}-labels-idx1-ubyte.gz").long()


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(64, 32)
        self.fc2 = torch.nn.Linear(32, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def train(net, opt, train_x, train_y, steps):
    gen = torch.Generator().manual_seed(1)  # the same batches for both optimizers
    recent = 0.0
    for s in range(steps):
        idx = torch.randint(train_x.shape[0], (128,), generator=gen)
        opt.zero_grad()
        loss = F.cross_entropy(net(train_x[idx]), train_y[idx])
        loss.backward()
        opt.step()
        recent = loss.item() if s == 0 else 0.98 * recent + 0.02 * loss.item()
        if (s + 1) % 500 == 0:
            print(f"  step {s + 1:5d}  train loss (EMA) {recent:.4f}")
    return recent


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "models/fmnist8_elo.lopt"
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    torch.set_num_threads(1)
    train_x, train_y = load("train")
    test_x, test_y = load("t10k")
    torch.manual_seed(0)
    a = Net()
    b = Net()
    b.load_state_dict(a.state_dict())  # the same initialisation

    results = {}
    for name, net, opt in (
            (f"lopt.LearnedOptimizer ({path})", a, lopt.LearnedOptimizer(a.parameters(), path)),
            ("torch.optim.AdamW (lr 1e-3)", b, torch.optim.AdamW(b.parameters(), lr=1e-3))):
        print(name + ":")
        loss = train(net, opt, train_x, train_y, steps)
        with torch.no_grad():
            acc = (net(test_x).argmax(1) == test_y).float().mean().item()
        results[name] = (loss, acc)
    print(f"after {steps} steps:")
    for name, (loss, acc) in results.items():
        print(f"  {name:45s} train loss (EMA) {loss:.4f}  test accuracy {100 * acc:.2f}%")


if __name__ == "__main__":
    main()
