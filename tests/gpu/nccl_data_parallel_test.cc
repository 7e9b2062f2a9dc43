// The NCCL data-parallel path (cli/data_parallel.h) on every GPU of the
// host, one process a GPU. Run without --rank it is the launcher: it starts
// itself once per rank (fork + exec, so no CUDA state crosses the fork), rank
// 0 writes the NCCL unique id to a file the others read, and it exits non-zero
// if any rank fails. Each rank:
//  1. builds the same MLP and the same batch (same seeds), takes rank 0's
//     parameters by broadcast, computes the gradient of the mean loss on its
//     1/world of the batch and averages it with NCCL; that must equal the
//     gradient of the whole batch computed in one process:
//     max|g_dp - g_ref| <= 1e-5 * max|g_ref| + 1e-8 for every tensor (FP32;
//     only the order of the sums differs);
//  2. trains --steps steps with lopt::LearnedOptimizer (its CUDA fused step),
//     averaging gradients before each step, beside a single-process replica
//     trained on the whole batch; at the end the ranks' parameters must agree
//     within 1e-5 * max|p| (checked against rank 0's by broadcast; the LO
//     step's float atomics may differ in the last bits: on 2 H200s rank 1 was
//     1.9e-8 off, 4e-7 of max|p|; it prints whether they were bit-identical) and within 1e-3 * max|p| of the single-process replica;
//  3. with --bench-vit, times averaging a ViT-B/16-shaped gradient list
//     (86.6M FP32 values, 152 tensors) bucketed (64 MiB) and one collective
//     per tensor.
//
//   nccl_data_parallel_test [--world N] [--steps 20] [--hidden 1024] [--batch 512] [--bench-vit]

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include <c10/cuda/CUDAFunctions.h>
#include <torch/torch.h>

#include "cli/data_parallel.h"
#include "cli/rank_launch.h"
#include "common/elo/learned_optimizer.h"
#include "common/elo/small_fc_lopt.h"
#include "kernels/lopt_step_cuda.h"

namespace {

struct Args {
  int rank = -1, world = 0, steps = 20, hidden = 1024, batch = 512;
  bool bench_vit = false;
  std::string id_file;
};

Args Parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (k == "--rank") a.rank = std::stoi(next());
    else if (k == "--world") a.world = std::stoi(next());
    else if (k == "--steps") a.steps = std::stoi(next());
    else if (k == "--hidden") a.hidden = std::stoi(next());
    else if (k == "--batch") a.batch = std::stoi(next());
    else if (k == "--id-file") a.id_file = next();
    else if (k == "--bench-vit") a.bench_vit = true;
    else { std::fprintf(stderr, "unknown flag %s\n", k.c_str()); std::exit(2); }
  }
  return a;
}

#define CHECK_OK(expr)                                                             \
  do {                                                                             \
    auto s_ = (expr);                                                              \
    if (!s_.ok()) {                                                                \
      std::fprintf(stderr, "[rank %d] %s: %s\n", rank, #expr, s_.ToString().c_str()); \
      return 1;                                                                    \
    }                                                                              \
  } while (0)

torch::nn::Sequential MakeModel(int hidden, torch::Device dev) {
  torch::manual_seed(1234);
  torch::nn::Sequential m(torch::nn::Linear(784, hidden), torch::nn::Tanh(),
                          torch::nn::Linear(hidden, hidden), torch::nn::ReLU(),
                          torch::nn::Linear(hidden, 10));
  m->to(dev);
  return m;
}

// The batch of step `step`: the same on every rank.
std::pair<torch::Tensor, torch::Tensor> Batch(int step, int batch, torch::Device dev) {
  torch::manual_seed(100 + step);
  auto x = torch::randn({batch, 784});
  auto y = torch::randint(0, 10, {batch}, torch::kLong);
  return {x.to(dev), y.to(dev)};
}

torch::Tensor Loss(torch::nn::Sequential& m, const torch::Tensor& x, const torch::Tensor& y) {
  return torch::nn::functional::cross_entropy(m->forward(x), y);
}

double MaxAbs(const torch::Tensor& t) { return t.abs().max().item<double>(); }

int Rank(const Args& a) {
  const int rank = a.rank, world = a.world;
  std::string id;
  if (rank == 0) {
    auto made = lopt::NcclCommunicator::NewUniqueId();
    CHECK_OK(made.status());
    id = *made;
    CHECK_OK(lopt::PublishRankId(a.id_file, id));
  } else {
    auto got = lopt::WaitForRankId(a.id_file);
    CHECK_OK(got.status());
    id = *got;
  }
  auto t_init = std::chrono::steady_clock::now();
  auto comm_or = lopt::NcclCommunicator::Create(id, rank, world, rank);
  CHECK_OK(comm_or.status());
  auto& comm = **comm_or;
  const double init_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t_init).count();
  torch::Device dev(torch::kCUDA, rank);
  const int shard = a.batch / world;
  if (shard * world != a.batch) {
    std::fprintf(stderr, "batch %d not divisible by world %d\n", a.batch, world);
    return 1;
  }
  bool ok = true;

  // 1. One gradient: data-parallel against one process.
  auto model = MakeModel(a.hidden, dev);
  auto ref = MakeModel(a.hidden, dev);
  auto params = model->parameters();
  auto ref_params = ref->parameters();
  if (rank != 0) {  // make the broadcast do something: perturb, rank 0 restores
    torch::NoGradGuard ng;
    for (auto& p : params) p.add_(1.0);
  }
  CHECK_OK(comm.Broadcast(params, 0));
  int64_t n = 0;
  for (auto& p : params) n += p.numel();
  {
    auto [x, y] = Batch(0, a.batch, dev);
    Loss(ref, x, y).backward();
    Loss(model, x.narrow(0, rank * shard, shard), y.narrow(0, rank * shard, shard)).backward();
    CHECK_OK(comm.AverageGradients(params));
    double worst = 0;
    for (size_t i = 0; i < params.size(); ++i) {
      const double d = MaxAbs(params[i].grad() - ref_params[i].grad());
      const double scale = MaxAbs(ref_params[i].grad());
      const double tol = 1e-5 * scale + 1e-8;
      worst = std::max(worst, d / (scale + 1e-30));
      if (!(d <= tol)) {
        std::fprintf(stderr, "[rank %d] grad %zu: max|diff| %.3g > tol %.3g\n", rank, i, d, tol);
        ok = false;
      }
      const double pd = MaxAbs(params[i] - ref_params[i]);
      if (pd != 0) {
        std::fprintf(stderr, "[rank %d] param %zu differs after broadcast by %.3g\n", rank, i, pd);
        ok = false;
      }
    }
    std::printf("[rank %d] world %d, %lld params, batch %d (shard %d): all-reduced gradient vs "
                "whole-batch gradient: max|diff|/max|g| = %.3g (tol 1e-5) %s; comm init %.2f s\n",
                rank, world, static_cast<long long>(n), a.batch, shard, worst,
                ok ? "OK" : "FAIL", init_s);
  }

  // 2. Training with the learned optimizer.
  // The spec's defaults (step_mult 0.001): an untrained theta with larger
  // steps makes this MLP diverge (loss 2.3 -> 185 in 20 steps at step_mult
  // 0.01), and a diverging run amplifies the LO step's last-bit differences
  // past any tolerance, even between two single-process runs.
  // FP32 MLP in the LO step: with TF32 (the default) a last-bit difference
  // from the atomics can flip a TF32 rounding, and 20 steps of that moved the
  // single-process comparison 3e-4 (7x the tolerance) on an H100 even at
  // world 1; what is tested here is the data parallelism, not TF32.
  lopt::kernels::LoptCudaMlpSetting() = lopt::kernels::LoptCudaMlp::kFp32;
  lopt::v1::LearnedOptimizerSpec spec;
  spec.set_hidden_size(32);
  lopt::SmallFcLopt lo(spec);
  auto gen = at::detail::createCPUGenerator(7);
  torch::Tensor theta = lo.InitTheta(gen);
  lopt::LearnedOptimizer opt(params, spec, theta), ref_opt(ref_params, spec, theta);
  double step_ms = 0;
  for (int s = 1; s <= a.steps; ++s) {
    auto [x, y] = Batch(s, a.batch, dev);
    ref_opt.zero_grad();
    auto ref_loss = Loss(ref, x, y);
    ref_loss.backward();
    ref_opt.step();
    c10::cuda::device_synchronize();
    auto t0 = std::chrono::steady_clock::now();
    opt.zero_grad();
    auto loss = Loss(model, x.narrow(0, rank * shard, shard), y.narrow(0, rank * shard, shard));
    loss.backward();
    CHECK_OK(comm.AverageGradients(params));
    opt.step();
    c10::cuda::device_synchronize();
    if (s > 2) step_ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    auto mean_loss = loss.detach().clone();
    CHECK_OK(comm.AllReduceMean({mean_loss}));
    if (rank == 0 && (s == 1 || s == a.steps || s % 5 == 0))
      std::printf("[rank 0] step %d: loss (mean of shards) %.6f, whole-batch replica %.6f\n", s,
                  mean_loss.item<double>(), ref_loss.item<double>());
  }
  double replica_diff = 0, single_diff = 0, pmax = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    auto p0 = params[i].detach().clone();
    CHECK_OK(comm.Broadcast({p0}, 0));
    replica_diff = std::max(replica_diff, MaxAbs(params[i].detach() - p0));
    single_diff = std::max(single_diff, MaxAbs(params[i].detach() - ref_params[i].detach()));
    pmax = std::max(pmax, MaxAbs(params[i].detach()));
  }
  // The fused LO step sums its row/column accumulators with float atomics, so
  // the replicas agree to rounding, not necessarily bit for bit.
  const bool train_ok = replica_diff <= 1e-5 * pmax && single_diff <= 1e-3 * pmax;
  ok = ok && train_ok;
  std::printf("[rank %d] after %d learned-optimizer steps: max|p - p_rank0| = %.3g (tol %.3g%s), "
              "max|p - p_single_process| = %.3g (tol %.3g) %s; %.3f ms/step (fwd+bwd+allreduce+LO step, "
              "steps 3..%d)\n",
              rank, a.steps, replica_diff, 1e-5 * pmax, replica_diff == 0 ? ", bit-identical" : "",
              single_diff, 1e-3 * pmax, train_ok ? "OK" : "FAIL",
              step_ms / std::max(1, a.steps - 2), a.steps);

  // 3. All-reduce of a ViT-B/16-shaped gradient list.
  if (a.bench_vit) {
    std::vector<std::vector<int64_t>> shapes = {{768, 3, 16, 16}, {768}, {1, 1, 768}, {1, 197, 768}};
    for (int b = 0; b < 12; ++b) {
      for (auto s : std::vector<std::vector<int64_t>>{{768}, {768}, {2304, 768}, {2304}, {768, 768},
                                                     {768}, {768}, {768}, {3072, 768}, {3072},
                                                     {768, 3072}, {768}})
        shapes.push_back(s);
    }
    for (auto s : std::vector<std::vector<int64_t>>{{768}, {768}, {1000, 768}, {1000}}) shapes.push_back(s);
    std::vector<torch::Tensor> grads;
    int64_t total = 0;
    for (auto& s : shapes) {
      grads.push_back(torch::randn(s, torch::TensorOptions().device(dev)));
      total += grads.back().numel();
    }
    for (int64_t bucket : {int64_t{64} << 20, int64_t{0}}) {
      comm.set_bucket_bytes(bucket);
      for (int i = 0; i < 3; ++i) CHECK_OK(comm.AllReduceMean(grads));
      c10::cuda::device_synchronize();
      const int iters = 20;
      auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < iters; ++i) CHECK_OK(comm.AllReduceMean(grads));
      c10::cuda::device_synchronize();
      const double ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / iters;
      const double bytes = 4.0 * total;
      const double busbw = world > 1 ? 2.0 * (world - 1) / world * bytes / (ms * 1e-3) / 1e9 : 0;
      if (rank == 0)
        std::printf("[rank 0] ViT-B/16 gradient all-reduce (%lld floats, %zu tensors, %s): %.3f ms, "
                    "bus bandwidth %.1f GB/s\n",
                    static_cast<long long>(total), grads.size(),
                    bucket ? "64 MiB buckets" : "one collective per tensor", ms, busbw);
    }
    comm.set_bucket_bytes(int64_t{64} << 20);
  }
  std::fflush(stdout);
  return ok ? 0 : 1;
}

int Launch(Args a, const char* self) {
  const int gpus = static_cast<int>(torch::cuda::device_count());
  if (a.world <= 0) a.world = gpus;
  if (a.world < 1 || a.world > gpus) {
    std::fprintf(stderr, "world %d, %d GPU(s): one process a GPU\n", a.world, gpus);
    return 1;
  }
  std::vector<std::string> av = {self, "--steps", std::to_string(a.steps), "--hidden",
                                 std::to_string(a.hidden), "--batch", std::to_string(a.batch)};
  if (a.bench_vit) av.push_back("--bench-vit");
  absl::Status s = lopt::LaunchRanks(av, a.world);  // adds --rank, --world, --id-file
  std::printf("nccl_data_parallel_test: world %d, %s\n", a.world,
              s.ok() ? "all ranks passed" : ("FAILED: " + s.ToString()).c_str());
  return s.ok() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Args a = Parse(argc, argv);
  if (a.rank < 0) return Launch(a, argv[0]);
  return Rank(a);
}
