"""lopt.LearnedOptimizer: the C++ step from Python, a real torch.optim.Optimizer."""
import copy
import os

import pytest
import torch

import lopt
from conftest import SHIPPED


class Net(torch.nn.Module):
    # A matrix (factored statistics, 2 dims), a vector, a 3-D tensor and a scalar: every
    # kind of tensor small_fc_lopt treats differently.
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(12, 7)
        self.fc2 = torch.nn.Linear(7, 3)
        self.cube = torch.nn.Parameter(torch.randn(2, 3, 4) * 0.1)
        self.scalar = torch.nn.Parameter(torch.tensor(0.3))

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        # The cube is a per-class bias (its middle axis has one entry a class): a sum over every
        # class would shift all logits alike, which cross-entropy ignores, leaving the cube a
        # gradient of rounding noise (about 1e-10) whose pattern differs from device to device.
        return self.fc2(h) * (1 + self.scalar) + self.cube.sum(dim=(0, 2)) * 0.1


def make_net(seed=0):
    torch.manual_seed(seed)
    return Net()


def batch(step):
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randn(16, 12, generator=g), torch.randint(0, 3, (16,), generator=g)


def train(net, opt, steps, start=0, closure_every=0):
    for s in range(start, start + steps):
        x, y = batch(s)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()


def params_of(net):
    return [p.detach().clone() for p in net.parameters()]


def test_steps_equal_the_cpp_optimizer_bit_for_bit():
    a, b = make_net(), make_net()
    py_opt = lopt.LearnedOptimizer(a.parameters(), SHIPPED)
    cpp_opt = lopt._C.CppLearnedOptimizer(list(b.parameters()), str(SHIPPED))
    before = params_of(a)
    for s in range(12):
        for net, opt in ((a, py_opt), (b, cpp_opt)):
            x, y = batch(s)
            net.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        for pa, pb in zip(a.parameters(), b.parameters()):
            assert torch.equal(pa, pb), f"step {s}: {(pa - pb).abs().max().item()}"
    assert py_opt.iteration == cpp_opt.iteration == 12
    # It moved every parameter (a no-op optimizer would pass the comparison above).
    for p0, p in zip(before, a.parameters()):
        assert not torch.equal(p0, p)


def test_uses_the_fused_kernel_and_reads_the_file():
    opt = lopt.LearnedOptimizer(make_net().parameters(), SHIPPED)
    assert opt.options.hidden_size == 32
    assert opt.file.architecture == "small_fc_lopt"
    assert lopt._C.cpu_kernel_isa() in ("avx512", "avx2", "generic")
    with pytest.raises(FileNotFoundError):
        lopt.LearnedOptimizer(make_net().parameters(), "/nonexistent.lopt")


def test_schedule_and_weight_decay_match_cpp():
    # The file's inference schedule (warm-up) needs total_steps, as set_total_steps in C++.
    t = lopt.load_optimizer_file(SHIPPED)
    t.file.options.warmup_fraction = 0.25
    t.file.options.weight_decay = 0.1

    def run(make_opt):
        net = make_net()
        opt = make_opt(net)
        train(net, opt, 6)
        return params_of(net)

    import tempfile, os
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "sched.lopt")
        lopt.save_optimizer_file(path, t)
        py = run(lambda n: lopt.LearnedOptimizer(n.parameters(), path, total_steps=8))

        def cpp(n):
            o = lopt._C.CppLearnedOptimizer(list(n.parameters()), path)
            o.set_total_steps(8)
            return o
        ref = run(cpp)
        plain = run(lambda n: lopt.LearnedOptimizer(n.parameters(), path))
    for p, r in zip(py, ref):
        assert torch.equal(p, r)
    assert any(not torch.equal(p, q) for p, q in zip(py, plain))


def test_update_scale_groups_match_cpps_update_scales():
    # muP: per-group update_scale is lopt::LearnedOptimizer::set_update_scales.
    a, b = make_net(), make_net()
    py_opt = lopt.LearnedOptimizer([{"params": [a.fc1.weight], "update_scale": 0.25},
                                    {"params": [a.fc1.bias, a.fc2.weight, a.fc2.bias, a.cube,
                                                a.scalar]}], SHIPPED)
    cpp_opt = lopt._C.CppLearnedOptimizer([b.fc1.weight, b.fc1.bias, b.fc2.weight, b.fc2.bias,
                                           b.cube, b.scalar], str(SHIPPED))
    cpp_opt.set_update_scales([0.25, 1, 1, 1, 1, 1])
    plain = make_net()
    plain_opt = lopt.LearnedOptimizer(plain.parameters(), SHIPPED)
    for net, opt in ((a, py_opt), (b, cpp_opt), (plain, plain_opt)):
        train(net, opt, 3)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert not torch.equal(a.fc1.weight, plain.fc1.weight)


def test_param_groups_parameters_without_grad_and_zero_grad():
    net = make_net()
    opt = lopt.LearnedOptimizer([{"params": net.fc1.parameters()},
                                 {"params": net.fc2.parameters(), "lr": 0.0},
                                 {"params": [net.cube, net.scalar]}], SHIPPED)
    fc2_before = [p.detach().clone() for p in net.fc2.parameters()]
    fc1_before = [p.detach().clone() for p in net.fc1.parameters()]
    x, y = batch(0)
    torch.nn.functional.cross_entropy(net.fc2(torch.relu(net.fc1(x))), y).backward()
    assert net.cube.grad is None
    opt.step()
    assert len(opt.state) == 4  # only the parameters with a gradient got state
    for p0, p in zip(fc2_before, net.fc2.parameters()):
        assert torch.equal(p0, p)  # lr 0: the group does not move
    for p0, p in zip(fc1_before, net.fc1.parameters()):
        assert not torch.equal(p0, p)
    opt.zero_grad()
    assert all(p.grad is None or not p.grad.any() for p in net.parameters())


def test_state_dict_round_trip_continues_identically():
    a = make_net()
    opt_a = lopt.LearnedOptimizer(a.parameters(), SHIPPED)
    train(a, opt_a, 5)
    saved_net = copy.deepcopy(a.state_dict())
    saved_opt = copy.deepcopy(opt_a.state_dict())
    train(a, opt_a, 5, start=5)

    b = make_net(seed=7)  # other values everywhere, then restored
    b.load_state_dict(saved_net)
    opt_b = lopt.LearnedOptimizer(b.parameters(), SHIPPED)
    opt_b.load_state_dict(saved_opt)
    assert opt_b.iteration == 5
    train(b, opt_b, 5, start=5)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)

    # Without the accumulators the continuation differs: the state matters.
    c = make_net(seed=7)
    c.load_state_dict(saved_net)
    opt_c = lopt.LearnedOptimizer(c.parameters(), SHIPPED)
    opt_c.iteration = 5
    train(c, opt_c, 5, start=5)
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


def test_torch_save_of_state_dict(tmp_path):
    a = make_net()
    opt = lopt.LearnedOptimizer(a.parameters(), SHIPPED)
    train(a, opt, 3)
    torch.save(opt.state_dict(), tmp_path / "opt.pt")
    opt2 = lopt.LearnedOptimizer(a.parameters(), SHIPPED)
    opt2.load_state_dict(torch.load(tmp_path / "opt.pt"))
    for p in a.parameters():
        for k in ("mom", "rms", "fac_a", "fac_b"):
            assert torch.equal(opt.state[p][k], opt2.state[p][k])


def test_lr_scheduler_scales_the_step():
    a, b = make_net(), make_net()
    opt_a = lopt.LearnedOptimizer(a.parameters(), SHIPPED)
    opt_b = lopt.LearnedOptimizer(b.parameters(), SHIPPED)
    sched = torch.optim.lr_scheduler.StepLR(opt_b, step_size=1, gamma=0.25)
    train(a, opt_a, 1)
    train(b, opt_b, 1)
    sched.step()
    assert opt_b.param_groups[0]["lr"] == pytest.approx(0.25)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)  # the first step ran at lr 1
    before = params_of(a)
    train(a, opt_a, 1, start=1)
    train(b, opt_b, 1, start=1)
    for p0, pa, pb in zip(before, a.parameters(), b.parameters()):
        da, db = p0 - pa, p0 - pb
        assert da.abs().max() > 0
        # p0 - p carries p's rounding (an ulp of |p| <= 1 is <= 1.2e-7); the steps are ~1e-3.
        torch.testing.assert_close(db, 0.25 * da, rtol=1e-4, atol=2e-7)
        assert (da - db).abs().max() > 1e-5


def test_cuda_tensors_take_the_cuda_path():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    a, b = make_net(), make_net()
    b.cuda()
    opt_a = lopt.LearnedOptimizer(a.parameters(), SHIPPED)
    opt_b = lopt.LearnedOptimizer(b.parameters(), SHIPPED)
    for s in range(5):
        x, y = batch(s)
        for net, opt, dev in ((a, opt_a, "cpu"), (b, opt_b, "cuda")):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x.to(dev)), y.to(dev)).backward()
            opt.step()
    # Each device computes its own gradients: the tolerance of test_optim_cuda.py's
    # test_cuda_training_follows_cpu_training.
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pb.cpu(), pa, rtol=1e-3, atol=1e-5)


def test_the_cuda_mlp_precision_is_a_setting_with_a_clear_error():
    # The CUDA kernel's MLP precision (tf32 by default) is read and set from Python; a CPU
    # build says "none" and still rejects a mode that does not exist.
    assert lopt.cuda_mlp_precision() == ("tf32" if lopt.WITH_CUDA_KERNEL else "none") or (
        os.environ.get("LOPT_CUDA_MLP") == "fp32" and lopt.cuda_mlp_precision() == "fp32")
    with pytest.raises(ValueError, match="fp32"):
        lopt.set_cuda_mlp_precision("fp16")
    if lopt.WITH_CUDA_KERNEL:
        before = lopt.cuda_mlp_precision()
        for mode in ("fp32", "tf32"):
            lopt.set_cuda_mlp_precision(mode)
            assert lopt.cuda_mlp_precision() == mode
        lopt.set_cuda_mlp_precision(before)
