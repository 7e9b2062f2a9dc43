// The EloUnroller on CUDA: the captured inner step (CUDA graph) against the
// same kernels launched eagerly, from the same seed (same draws): gradients
// and losses must agree to float32 rounding (the LO step's statistics use
// atomics, so not bit for bit), with and without behaviour cloning, through
// resets. Exits non-zero on failure; run by scripts/gpu_run.sh.
#include <cmath>
#include <cstdio>
#include <string>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/job_spec.h"
#include "common/small_fc_lopt.h"
#include "common/task.h"
#include "worker/elo_unroller.h"

int main(int argc, char** argv) {
  std::string data_dir = argc > 1 ? argv[1] : "";
  if (!torch::cuda::is_available()) {
    std::printf("no CUDA device\n");
    return 1;
  }
  int failures = 0;
  for (bool bc : {false, true}) {
    std::string text = absl::StrCat(
        "task { fmnist_mlp { image_size: 8 hidden_sizes: 32 batch_size: 32",
        data_dir.empty() ? "" : absl::StrCat(" data_dir: \"", data_dir, "\""), " } }\n",
        "pes { num_tasks: 4 truncation_length: 10 sigma: 0.01 min_unroll_length: 12 "
        "max_unroll_length: 25 }\n",
        "elo { buffer { enabled: false } behavior_cloning { enabled: ", bc ? "true" : "false",
        " } }\n");
    auto job = lopt::JobFromText(text, "<test>").value();
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
  std::printf(failures ? "FAILED (%d)\n" : "all ok\n", failures);
  return failures ? 1 : 0;
}
