// The neumf family on a CUDA device against the same task on the CPU: the
// same batches (drawn on the CPU generators), losses and gradients to
// float32 rounding, the same test metrics, and a short AdamW meta-test that
// trains. Writes a small synthetic MovieLens set into a temporary directory.
// Exits non-zero on failure; run by scripts/gpu_run.sh.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "common/elo/evaluation.h"
#include "common/tasks/movielens.h"
#include "common/tasks/task.h"
#include "common/util/remove_tree.h"

namespace {

double RelErr(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.cpu().to(torch::kFloat64) - b.cpu().to(torch::kFloat64)).norm().item<double>() /
         (b.cpu().to(torch::kFloat64).norm().item<double>() + 1e-30);
}

}  // namespace

int main() {
  if (!torch::cuda::is_available()) {
    std::printf("no CUDA device\n");
    return 1;
  }
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("lopt_neumf_cuda_" + std::to_string(::getpid()));
  lopt::MovieLensGenOptions o;
  o.users = 500;
  o.items = 300;
  o.interactions = 20000;
  o.seed = 3;
  auto written = lopt::WriteMovieLensRatings(o, dir.string());
  if (!written.ok()) {
    std::printf("gen-movielens: %s\n", std::string(written.status().message()).c_str());
    return 1;
  }
  lopt::v1::TaskSpec spec;
  auto* n = spec.mutable_neumf();
  n->set_data_path(dir.string());
  n->set_num_users(500);
  n->set_num_items(300);
  n->set_batch_size(64);
  for (int w : {32, 16, 8}) n->add_mlp_layers(w);
  auto cpu = lopt::MakeTask(spec, 0, torch::kCPU).value();
  auto gpu = lopt::MakeTask(spec, 0, torch::Device(torch::kCUDA, 0)).value();
  int failures = 0;
  auto check = [&](const char* what, bool ok, double err) {
    std::printf("%-40s %.2e %s\n", what, err, ok ? "ok" : "FAIL");
    failures += !ok;
  };

  torch::Generator gc = lopt::MakeGenerator(7, 1, 2), gg = lopt::MakeGenerator(7, 1, 2);
  lopt::TaskState s = cpu->Init(4, 2, gc);
  lopt::TaskState sg = gpu->Init(4, 2, gg);
  double init_err = 0;
  for (size_t i = 0; i < s.params.size(); ++i) {
    s.params[i].add_(torch::randn(s.params[i].sizes(), gc).mul_(0.05));
    sg.params[i] = s.params[i].cuda();
    init_err = std::max(init_err, RelErr(sg.params[i], s.params[i]));
  }
  check("state on the device", sg.params[0].is_cuda(), init_err);
  // Fresh generators of one seed: the CUDA task must draw the CPU task's batch.
  torch::Generator bc = lopt::MakeGenerator(8, 1, 2), bgen = lopt::MakeGenerator(8, 1, 2);
  lopt::Batch b = cpu->SampleBatch(4, bc);
  lopt::Batch bg = gpu->SampleBatch(4, bgen);
  check("same batch drawn (CPU generators)",
        bg.x.is_cuda() && torch::equal(bg.x.cpu(), b.x) && torch::equal(bg.y.cpu(), b.y), 0);
  std::vector<torch::Tensor> g_cpu, g_gpu;
  torch::Tensor l_cpu = cpu->LossAndGrad(s, b, &g_cpu);
  torch::Tensor l_gpu = gpu->LossAndGrad(sg, bg, &g_gpu);
  double worst = RelErr(l_gpu, l_cpu);
  for (size_t i = 0; i < g_cpu.size(); ++i) worst = std::max(worst, RelErr(g_gpu[i], g_cpu[i]));
  check("loss and gradients", std::isfinite(worst) && worst < 1e-4, worst);
  lopt::EvalResult e_cpu = cpu->Evaluate(s), e_gpu = gpu->Evaluate(sg);
  const double eval_err = std::max({RelErr(e_gpu.loss, e_cpu.loss), RelErr(e_gpu.hit_rate, e_cpu.hit_rate),
                                    RelErr(e_gpu.ndcg, e_cpu.ndcg)});
  check("test loss, HR@10, NDCG@10", eval_err < 1e-3, eval_err);

  lopt::MetaTestConfig c;
  c.steps = 200;
  c.seeds = 2;
  c.adamw_lrs = {1e-2};
  c.record_every = 50;
  lopt::MetaTestReport r = lopt::RunMetaTest(*gpu, c, {});
  for (const auto& run : r.runs) {
    const bool ok = std::isfinite(run.final_train_loss) && run.final_train_loss < run.curve.front() &&
                    run.test_hit_rate > 0;
    std::printf("AdamW on CUDA, seed %lld: train loss %.4f -> %.4f, HR@10 %.4f, NDCG@10 %.4f %s\n",
                (long long)run.seed, run.curve.front(), run.final_train_loss, run.test_hit_rate,
                run.test_ndcg, ok ? "ok" : "FAIL");
    failures += !ok;
  }
  lopt::RemoveTree(dir).IgnoreError();
  std::printf(failures ? "FAILED (%d)\n" : "all ok\n", failures);
  return failures ? 1 : 0;
}
