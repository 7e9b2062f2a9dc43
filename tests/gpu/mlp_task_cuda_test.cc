// The fused one-hidden-layer MLP step (kernels/mlp_task_cuda.cu) against the
// CPU task's forward/backward on the same parameters and batch: loss and every
// gradient must agree to float32 rounding, for each activation, with one and
// with several batch slices a particle (atomics), with a batch that the slices
// do not divide, and with replicas sharing a group's batch. Also checks that a
// shape with no fused path (two hidden layers) still gives the same numbers.
// Exits non-zero on failure; run by scripts/gpu_run.sh.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <google/protobuf/text_format.h>
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/tasks/task.h"

namespace {

double RelErr(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.cpu() - b.cpu()).norm().item<double>() / (b.norm().item<double>() + 1e-30);
}

}  // namespace

int main(int argc, char** argv) {
  std::string data_dir = argc > 1 ? argv[1] : "";
  if (!torch::cuda::is_available()) {
    std::printf("no CUDA device\n");
    return 1;
  }
  struct Case {
    const char* act;
    const char* hidden;
    int batch;
    int groups, replicas;
  };
  const Case cases[] = {
      {"RELU", "32", 128, 8, 2},     {"TANH", "32", 128, 8, 2},   {"SIGMOID", "32", 128, 8, 2},
      {"RELU", "32", 100, 4, 2},     {"RELU", "32", 128, 256, 2}, {"TANH", "64", 64, 3, 1},
      {"RELU", "32 hidden_sizes: 16", 128, 8, 2},
  };
  int failures = 0;
  for (const Case& c : cases) {
    lopt::v1::TaskSpec spec;
    std::string text = absl::StrCat("fmnist_mlp { image_size: 8 hidden_sizes: ", c.hidden,
                                    " batch_size: ", c.batch, " activation: ", c.act,
                                    data_dir.empty() ? "" : absl::StrCat(" data_dir: \"", data_dir, "\""),
                                    " }");
    if (!google::protobuf::TextFormat::ParseFromString(text, &spec)) {
      std::printf("bad spec %s\n", text.c_str());
      return 1;
    }
    auto cpu = lopt::MakeTask(spec, 0, torch::kCPU).value();
    auto gpu = lopt::MakeTask(spec, 0, torch::Device(torch::kCUDA, 0)).value();
    torch::Generator gen = lopt::MakeGenerator(7, 1, 2);
    lopt::TaskState s = cpu->Init(c.groups, c.replicas, gen);
    // Make the replicas differ, as PES's perturbed particles do.
    for (auto& p : s.params) p.add_(torch::randn(p.sizes(), gen).mul_(0.05));
    lopt::Batch b = cpu->SampleBatch(c.groups, gen);
    lopt::TaskState sg = s;
    for (auto& p : sg.params) p = p.cuda();
    lopt::Batch bg{b.x.cuda(), b.y.cuda()};
    std::vector<torch::Tensor> g_cpu, g_gpu;
    torch::Tensor l_cpu = cpu->LossAndGrad(s, b, &g_cpu);
    torch::Tensor l_gpu = gpu->LossAndGrad(sg, bg, &g_gpu);
    torch::Tensor l_only = gpu->LossAndGrad(sg, bg, nullptr);
    double worst = std::max(RelErr(l_gpu, l_cpu), RelErr(l_only, l_cpu));
    bool ok = g_gpu.size() == g_cpu.size();
    for (size_t i = 0; ok && i < g_cpu.size(); ++i) {
      ok = g_gpu[i].sizes() == g_cpu[i].sizes();
      if (ok) worst = std::max(worst, RelErr(g_gpu[i], g_cpu[i]));
    }
    ok = ok && std::isfinite(worst) && worst < 1e-4 && g_cpu[0].norm().item<double>() > 0;
    std::printf("%-8s hidden %-20s B %3d P %3d: max rel. err %.2e %s\n", c.act, c.hidden, c.batch,
                c.groups * c.replicas, worst, ok ? "ok" : "FAIL");
    failures += !ok;
  }
  std::printf(failures ? "FAILED (%d)\n" : "all ok\n", failures);
  return failures ? 1 : 0;
}
