"""lopt.LearnedOptimizer on CUDA tensors: the same steps as on the CPU.

Skipped where torch.cuda.is_available() is False (CPU machines, CI); run on a GPU machine with
ctest -L python (or pytest python/tests/test_optim_cuda.py). In a CUDA build of lopt
(lopt._C.with_cuda) the step is lopt's CUDA kernel, otherwise the reference step (torch ops)
on the device; the CPU runs the fused CPU kernel. They are the same math in another order of
float32 operations, so the comparisons have tolerances, not bit equality.
"""
import os
import tempfile

import pytest
import torch

import lopt
from conftest import SHIPPED
from test_optim import batch, make_net, params_of

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device (torch.cuda.is_available() is False)")

STATE_KEYS = ("mom", "rms", "fac_a", "fac_b")


# The CUDA kernel's MLP precision and the tolerance it is checked to, relative to the tensor's
# largest update: tests/gpu/lopt_step_cuda_test.cc's. fp32 is the CPU kernel's arithmetic in
# another order; tf32 (the default: tensor cores, operands rounded to a 10-bit mantissa) is
# about 1e-3 off, and on the shipped optimizer 1.7e-4 (H100, 2026-12-07).
PRECISIONS = [("fp32", 1e-4), ("tf32", 2e-2)]


@pytest.fixture
def cuda_mlp_precision(request):
    before = lopt.cuda_mlp_precision()
    lopt.set_cuda_mlp_precision(request.param)
    yield request.param
    lopt.set_cuda_mlp_precision(before)


@pytest.mark.parametrize("cuda_mlp_precision,rel_tol", PRECISIONS,
                         indirect=["cuda_mlp_precision"])
def test_cuda_steps_equal_cpu_steps_on_the_same_gradients(cuda_mlp_precision, rel_tol):
    # The optimizer alone: identical parameters, state and gradients every step, so that the
    # only difference is the step's arithmetic. Every kind of tensor (matrix, vector, 3-D,
    # scalar), with the file's warm-up schedule on (total_steps).
    torch.manual_seed(0)
    shapes = [(7, 12), (7,), (2, 3, 4), ()]
    cpu = [torch.nn.Parameter(torch.randn(s) * 0.1) for s in shapes]
    gpu = [torch.nn.Parameter(p.detach().clone().cuda()) for p in cpu]
    t = lopt.load_optimizer_file(SHIPPED)
    t.file.options.warmup_fraction = 0.25
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "sched.lopt")
        lopt.save_optimizer_file(path, t)
        cpu_opt = lopt.LearnedOptimizer(cpu, path, total_steps=12)
        gpu_opt = lopt.LearnedOptimizer(gpu, path, total_steps=12)
    start = [p.detach().clone() for p in cpu]
    g = torch.Generator().manual_seed(1)
    for step in range(12):
        before = [pc.detach().clone() for pc in cpu]
        for pc, pg in zip(cpu, gpu):
            grad = torch.randn(pc.shape, generator=g) * 0.01
            pc.grad = grad
            pg.grad = grad.cuda()
        cpu_opt.step()
        gpu_opt.step()
        for i, (pc, pg) in enumerate(zip(cpu, gpu)):
            assert pg.is_cuda
            # The step's update, to the C++ check's tolerance for this precision (PRECISIONS).
            uc = before[i] - pc.detach()
            ug = before[i] - pg.detach().cpu()
            tol = rel_tol * float(uc.abs().max()) + 1e-12
            assert float((ug - uc).abs().max()) <= tol, (
                f"step {step}, parameter {i}: updates differ by {float((ug - uc).abs().max()):.3e}"
                f" > {tol:.3e} ({cuda_mlp_precision})")
            for k in STATE_KEYS:
                sg, sc = gpu_opt.state[pg][k], cpu_opt.state[pc][k]
                assert sg.is_cuda, f"{k} of parameter {i} left the device"
                torch.testing.assert_close(sg.cpu(), sc, rtol=1e-5, atol=1e-7,
                                           msg=lambda m: f"step {step}, {k} of {i}: {m}")
        with torch.no_grad():  # the next step starts from the same parameters again
            for pc, pg in zip(cpu, gpu):
                pg.copy_(pc)
    assert gpu_opt.iteration == cpu_opt.iteration == 12
    for p0, p in zip(start, cpu):
        assert not torch.equal(p0, p.detach()), "the optimizer did not move a parameter"


def test_cuda_training_follows_cpu_training():
    # A model trained on the GPU and on the CPU from the same values on the same batches: the
    # gradients differ in rounding too, so the tolerance is looser and the losses must agree.
    cpu_net, gpu_net = make_net(), make_net().cuda()
    cpu_opt = lopt.LearnedOptimizer(cpu_net.parameters(), SHIPPED)
    gpu_opt = lopt.LearnedOptimizer(gpu_net.parameters(), SHIPPED)
    before = params_of(cpu_net)
    losses = {"cpu": [], "cuda": []}
    for s in range(20):
        x, y = batch(s)
        for net, opt, dev in ((cpu_net, cpu_opt, "cpu"), (gpu_net, gpu_opt, "cuda")):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(x.to(dev)), y.to(dev))
            loss.backward()
            opt.step()
            losses[dev].append(loss.item())
    for pc, pg in zip(cpu_net.parameters(), gpu_net.parameters()):
        assert pg.is_cuda
        torch.testing.assert_close(pg.detach().cpu(), pc.detach(), rtol=1e-3, atol=1e-5)
    assert losses["cuda"] == pytest.approx(losses["cpu"], rel=1e-4, abs=1e-6)
    assert losses["cpu"][-1] < losses["cpu"][0], "20 steps did not lower the training loss"
    for p0, p in zip(before, cpu_net.parameters()):
        assert not torch.equal(p0, p)


def test_a_cuda_checkpoint_resumes_on_the_cpu():
    # torch.optim.Optimizer.load_state_dict moves the state to the parameters' device: a run
    # checkpointed on the GPU goes on on the CPU as it would have on the GPU.
    gpu_net = make_net().cuda()
    gpu_opt = lopt.LearnedOptimizer(gpu_net.parameters(), SHIPPED)
    for s in range(5):
        x, y = batch(s)
        gpu_opt.zero_grad()
        torch.nn.functional.cross_entropy(gpu_net(x.cuda()), y.cuda()).backward()
        gpu_opt.step()
    cpu_net = make_net(seed=7)
    cpu_net.load_state_dict({k: v.cpu() for k, v in gpu_net.state_dict().items()})
    # The same weights with a fresh optimizer: what a resume that lost the state would do.
    fresh_net = make_net(seed=7)
    fresh_net.load_state_dict(cpu_net.state_dict())
    fresh_opt = lopt.LearnedOptimizer(fresh_net.parameters(), SHIPPED)
    cpu_opt = lopt.LearnedOptimizer(cpu_net.parameters(), SHIPPED)
    cpu_opt.load_state_dict(gpu_opt.state_dict())
    assert cpu_opt.iteration == 5
    for p in cpu_net.parameters():
        assert all(not cpu_opt.state[p][k].is_cuda for k in STATE_KEYS)
    for s in range(5, 8):
        x, y = batch(s)
        for net, opt, dev in ((cpu_net, cpu_opt, "cpu"), (gpu_net, gpu_opt, "cuda"),
                              (fresh_net, fresh_opt, "cpu")):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x.to(dev)), y.to(dev)).backward()
            opt.step()
    # Each device computes its own gradients, so the runs differ by rounding as in
    # test_cuda_training_follows_cpu_training, and by its tolerance; a resume without the
    # state differs by far more.
    resumed_err = fresh_err = 0.0
    for pc, pg, pf in zip(cpu_net.parameters(), gpu_net.parameters(), fresh_net.parameters()):
        torch.testing.assert_close(pc.detach(), pg.detach().cpu(), rtol=1e-3, atol=1e-5)
        resumed_err = max(resumed_err, float((pc.detach() - pg.detach().cpu()).abs().max()))
        fresh_err = max(fresh_err, float((pf.detach() - pg.detach().cpu()).abs().max()))
    assert fresh_err > 10 * resumed_err, (fresh_err, resumed_err)
