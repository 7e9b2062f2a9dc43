// The EloUnroller on CUDA: the captured inner step (CUDA graph) against the
// same kernels launched eagerly, from the same seed (same draws): gradients
// and losses must agree to float32 rounding (the LO step's statistics use
// atomics, so not bit for bit), with and without behaviour cloning, through
// resets. Exits non-zero on failure; run by scripts/gpu_run.sh.
#include <cmath>
#include <cstdio>
#include <string>
#include <utility>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/elo/elo_unroller.h"
#include "common/elo/replay_buffer.h"
#include "common/elo/small_fc_lopt.h"
#include "common/tasks/task.h"
#include "kernels/lopt_step_cuda.h"
#include "kinds/job_door.h"

namespace {

// The 8x8 MLP task, 4 PES pairs, truncations of 10; BC on or off, the replay
// buffer off or on (the embedded job's settings: 4 states, fresh starts 20%).
lopt::v1::JobSpec Job(const std::string& data_dir, int batch, bool bc, bool buffer = false) {
  std::string text = absl::StrCat(
      "task { fmnist_mlp { image_size: 8 hidden_sizes: 32 batch_size: ", batch,
      data_dir.empty() ? "" : absl::StrCat(" data_dir: \"", data_dir, "\""), " } }\n",
      "pes { num_tasks: 4 truncation_length: 10 sigma: 0.01 min_unroll_length: 12 "
      "max_unroll_length: 25 }\n",
      "elo { buffer { enabled: ", buffer ? "true capacity: 4 fresh_start_probability: 0.2" : "false",
      " } behavior_cloning { enabled: ", bc ? "true" : "false",
      " } }\n");
  return lopt::JobFromText(text, "<test>").value();
}

}  // namespace

int main(int argc, char** argv) {
  std::string data_dir = argc > 1 ? argv[1] : "";
  if (!torch::cuda::is_available()) {
    std::printf("no CUDA device\n");
    return 1;
  }
  int failures = 0;
  for (bool bc : {false, true}) {
    auto job = Job(data_dir, 32, bc);
    auto task = lopt::MakeTask(job.task(), 0, torch::Device(torch::kCUDA, 0)).value();
    lopt::EloUnroller graph(job, task.get(), nullptr, "t", 5), eager(job, task.get(), nullptr, "t", 5);
    eager.set_use_cuda_graph(false);
    graph.set_cuda_graph_steps(4);  // 4 steps a replay where no reset falls in them
    torch::Generator gen = lopt::MakeGenerator(1, 2, 3);
    torch::Tensor theta = lopt::SmallFcLopt(job.lopt()).InitTheta(gen);
    int64_t restarts = 0;
    for (int64_t s = 0; s < 6; ++s) {
      auto a = graph.RunTruncation(theta, 0.3, s);
      auto b = eager.RunTruncation(theta, 0.3, s);
      restarts += a.fresh_starts;
      double rel = (a.grad - b.grad).norm().item<double>() / (b.grad.norm().item<double>() + 1e-30);
      double dl = std::abs(a.meta_loss - b.meta_loss);
      bool ok = a.grad.device().is_cpu() && std::isfinite(rel) && rel < 1e-3 && dl < 1e-4 &&
                a.fresh_starts == b.fresh_starts && b.grad.norm().item<double>() > 0;
      std::printf("bc %d truncation %lld: |g_graph - g_eager|/|g_eager| %.2e, meta-loss %.6f vs "
                  "%.6f, fresh starts %lld %s\n", int(bc), (long long)s, rel, a.meta_loss,
                  b.meta_loss, (long long)a.fresh_starts, ok ? "ok" : "FAIL");
      failures += !ok;
      theta = theta - 1e-3 * a.grad;
    }
    std::printf("bc %d: captured inner step has %lld kernel launches (%lld nodes), the 4-step "
                "graph %lld nodes; %lld restarts\n",
                int(bc), (long long)graph.graph_kernel_nodes(), (long long)graph.graph_nodes(),
                (long long)graph.chunk_graph_nodes(), (long long)restarts);
    if (graph.graph_kernel_nodes() <= 0 || graph.chunk_graph_nodes() <= 0 || restarts == 0)
      ++failures;
  }
  // The CUDA unroller (fused task step, fused LO step in FP32, fused BC and
  // PES bookkeeping, captured) against the CPU unroller from the same seed:
  // the same draws, so the losses must agree to float rounding accumulated
  // over the truncation, and the PES gradient (a difference of nearby losses)
  // loosely. A kernel that drops a term (the BC mix, a bias gradient, the
  // reset split) is off by far more. The third case adds the replay buffer
  // (pushes of device state, restores into the captured buffers): both must
  // push and restore the same states at the same steps.
  lopt::kernels::LoptCudaMlpSetting() = lopt::kernels::LoptCudaMlp::kFp32;
  for (auto [bc, buffered] : {std::pair{false, false}, {true, false}, {true, true}}) {
    auto job = Job(data_dir, 64, bc, buffered);
    auto cpu_task = lopt::MakeTask(job.task(), 0, torch::kCPU).value();
    auto gpu_task = lopt::MakeTask(job.task(), 0, torch::Device(torch::kCUDA, 0)).value();
    lopt::InMemoryReplayBuffer cpu_buffer, gpu_buffer;
    lopt::EloUnroller on_cpu(job, cpu_task.get(), buffered ? &cpu_buffer : nullptr, "t", 5);
    lopt::EloUnroller on_gpu(job, gpu_task.get(), buffered ? &gpu_buffer : nullptr, "t", 5);
    torch::Generator gen = lopt::MakeGenerator(1, 2, 3);
    torch::Tensor theta = lopt::SmallFcLopt(job.lopt()).InitTheta(gen);
    int64_t restores = 0;
    for (int64_t s = 0; s < (buffered ? 8 : 4); ++s) {
      auto a = on_gpu.RunTruncation(theta, 0.3, s);
      auto b = on_cpu.RunTruncation(theta, 0.3, s);
      double rel = (a.grad - b.grad).norm().item<double>() / (b.grad.norm().item<double>() + 1e-30);
      auto close = [](double x, double y) { return std::abs(x - y) <= 1e-4 * (1 + std::abs(y)); };
      bool ok = close(a.meta_loss, b.meta_loss) && close(a.task_loss, b.task_loss) &&
                close(a.bc_loss, b.bc_loss) && std::isfinite(rel) && rel < 0.1 &&
                (!bc || b.bc_loss > 0) && a.pushes == b.pushes && a.restores == b.restores &&
                a.fresh_starts == b.fresh_starts;
      restores += b.restores;
      std::printf("cpu vs cuda, bc %d buffer %d truncation %lld: meta %.6f/%.6f task %.6f/%.6f "
                  "bc %.3e/%.3e |g_cuda - g_cpu|/|g_cpu| %.2e pushes %lld/%lld restores "
                  "%lld/%lld %s\n", int(bc), int(buffered), (long long)s, a.meta_loss,
                  b.meta_loss, a.task_loss, b.task_loss, a.bc_loss, b.bc_loss, rel,
                  (long long)a.pushes, (long long)b.pushes, (long long)a.restores,
                  (long long)b.restores, ok ? "ok" : "FAIL");
      failures += !ok;
      theta = theta - 1e-3 * b.grad;
    }
    if (buffered && restores == 0) {
      std::printf("cpu vs cuda, buffer on: no restore in 8 truncations, FAIL\n");
      ++failures;
    }
  }
  std::printf(failures ? "FAILED (%d)\n" : "all ok\n", failures);
  return failures ? 1 : 0;
}
