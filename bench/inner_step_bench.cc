// Inner particle-steps per second of one meta-training inner step (forward,
// backward, small_fc_lopt update) on the 8x8 Fashion-MNIST MLP (64->32->10,
// batch 128): lopt's particle-batched path against a plain loop over P
// separate LibTorch models, each with its own lopt::LearnedOptimizer.
//
//   bench_inner_step [--particles 16,128] [--seconds 5] [--threads N]
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "common/elo/learned_optimizer.h"
#include "common/elo/small_fc_lopt.h"
#include "common/tasks/idx_dataset.h"
#include "common/tasks/task.h"
#include "common/util/runtime.h"
#include "kinds/job_door.h"

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a) {
  return std::chrono::duration<double>(Clock::now() - a).count();
}

struct Timing {
  double steps_per_s = 0;  // inner particle-steps per second
  double ms_loss_grad = 0, ms_lopt = 0;
};

Timing Batched(const lopt::Task& task, const lopt::v1::JobSpec& job, int64_t P, double budget) {
  torch::NoGradGuard no_grad;
  torch::Generator gen = lopt::MakeGenerator(1, 0, 0);
  lopt::TaskState st = task.Init(P / 2, 2, gen);
  lopt::SmallFcLopt lo(job.lopt());
  lopt::LoptState ls = lo.InitState(st.params);
  torch::Tensor theta = lo.InitTheta(gen).unsqueeze(0).repeat({P, 1});
  torch::Tensor step = torch::zeros({P}, torch::kInt64);
  std::vector<torch::Tensor> grads;
  Timing t;
  int64_t n = 0;
  double lg = 0, lu = 0;
  auto start = Clock::now();
  while (Seconds(start) < budget || n < 3) {
    lopt::Batch b = task.SampleBatch(P / 2, gen);
    auto a = Clock::now();
    task.LossAndGrad(st, b, &grads);
    lg += Seconds(a);
    a = Clock::now();
    auto u = lo.Step(st.params, grads, &ls, step, theta);
    for (size_t j = 0; j < u.size(); ++j) st.params[j].sub_(u[j]);
    step += 1;
    lu += Seconds(a);
    ++n;
  }
  t.steps_per_s = double(n * P) / Seconds(start);
  t.ms_loss_grad = 1e3 * lg / n;
  t.ms_lopt = 1e3 * lu / n;
  return t;
}

// The same work as P independent torch::nn models, each with its own
// lopt::LearnedOptimizer (fused kernel), or, with `op_by_op`, its own
// small_fc_lopt step written with LibTorch tensor ops (SmallFcLopt::StepReference):
// what a plain LibTorch implementation without lopt's kernel would run.
double Loop(const lopt::v1::JobSpec& job, int64_t P, double budget, const torch::Tensor& data_x,
            const torch::Tensor& data_y, bool op_by_op) {
  std::vector<torch::nn::Sequential> models;
  std::vector<std::unique_ptr<lopt::LearnedOptimizer>> opts;
  torch::Generator gen = lopt::MakeGenerator(1, 0, 0);
  lopt::SmallFcLopt lo(job.lopt());
  torch::Tensor theta = lo.InitTheta(gen);
  for (int64_t p = 0; p < P; ++p) {
    models.push_back(torch::nn::Sequential(torch::nn::Linear(64, 32), torch::nn::ReLU(),
                                           torch::nn::Linear(32, 10)));
    opts.push_back(std::make_unique<lopt::LearnedOptimizer>(models.back()->parameters(),
                                                            job.lopt(), theta));
  }
  std::vector<lopt::LoptState> states(P);
  int64_t n = 0;
  auto start = Clock::now();
  while (Seconds(start) < budget || n < 3) {
    for (int64_t p = 0; p < P; ++p) {
      torch::Tensor idx = torch::randint(data_x.size(0), {128}, gen, torch::kInt64);
      opts[p]->zero_grad();
      torch::Tensor loss = torch::nn::functional::cross_entropy(
          models[p]->forward(data_x.index_select(0, idx)), data_y.index_select(0, idx));
      loss.backward();
      if (!op_by_op) {
        opts[p]->step();
        continue;
      }
      torch::NoGradGuard no_grad;
      std::vector<torch::Tensor> params, grads;
      for (auto& t : models[p]->parameters()) {
        params.push_back(t.detach().unsqueeze(0));
        grads.push_back(t.grad().unsqueeze(0));
      }
      if (states[p].empty()) states[p] = lo.InitState(params);
      auto u = lo.StepReference(params, grads, &states[p], torch::full({1}, n, torch::kInt64), theta);
      for (size_t j = 0; j < u.size(); ++j) params[j].sub_(u[j]);
    }
    ++n;
  }
  return double(n * P) / Seconds(start);
}

}  // namespace

int main(int argc, char** argv) {
  lopt::ConfigureRuntime(0);  // all cores, for both paths
  std::vector<int64_t> particles = {16, 128};
  double seconds = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--seconds")) seconds = std::atof(argv[i + 1]);
    if (!std::strcmp(argv[i], "--threads")) torch::set_num_threads(std::atoi(argv[i + 1]));
    if (!std::strcmp(argv[i], "--particles")) {
      particles.clear();
      for (char* tok = std::strtok(argv[i + 1], ","); tok; tok = std::strtok(nullptr, ","))
        particles.push_back(std::atoll(tok));
    }
  }
  auto job = lopt::JobFromText(lopt::DefaultJobText(), "<default job>").value();
  auto task = lopt::MakeTask(job.task(), 0);
  if (!task.ok()) {
    std::fprintf(stderr, "%s\n", std::string(task.status().message()).c_str());
    return 1;
  }
  // Data for the loop baseline: the same 8x8 Fashion-MNIST images.
  auto data = lopt::LoadImageDataset(job.task().fmnist_mlp().data_dir(), 8).value();
  torch::Tensor data_x = data->train_x, data_y = data->train_y;
  std::printf("inner step of the 8x8 Fashion-MNIST MLP (64->32->10, batch 128) + small_fc_lopt, "
              "CPU, %d threads, %.0f s a point\n", torch::get_num_threads(), seconds);
  std::printf("inner particle-steps/s; loop: P separate torch::nn models, each with its own optimizer\n");
  std::printf("%-10s %-10s %-18s %-8s %-22s %-8s %s\n", "particles", "batched", "loop (fused LO)",
              "ratio", "loop (op-by-op LO)", "ratio", "batched ms/step: loss+grad, lopt");
  for (int64_t P : particles) {
    Timing b = Batched(**task, job, P, seconds);
    double l = Loop(job, P, seconds, data_x, data_y, false);
    double lr = Loop(job, P, seconds, data_x, data_y, true);
    std::printf("%-10lld %-10.0f %-18.0f %-8.1f %-22.0f %-8.1f %.2f, %.2f\n", (long long)P,
                b.steps_per_s, l, b.steps_per_s / l, lr, b.steps_per_s / lr, b.ms_loss_grad,
                b.ms_lopt);
  }
  return 0;
}
