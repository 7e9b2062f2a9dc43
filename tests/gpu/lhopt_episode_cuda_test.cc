// LHOPT episodes on a CUDA device against the same episodes on the CPU
// (issue 14): the same task instance, seeds and policy, run by RunControlled
// and by LhoptEpisodeRunner with each device's tasks. Batches, initial
// weights and sampled actions come from the CPU generators on both, so the
// runs differ only by float rounding: the decisions' actions must agree, the
// curves and rewards to a stated tolerance. Restart registers (a particle's
// state saved to the buffer and loaded back) must round-trip bit for bit on
// the device. Exits non-zero on failure; run by scripts/gpu_run.sh
// (`lhopttest`), with the Fashion-MNIST directory as its argument for the
// MLP case (skipped without it).
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <torch/cuda.h>
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/lhopt/lhopt_actions.h"
#include "common/lhopt/lhopt_episode.h"
#include "kinds/job_door.h"
#include "learner/lhopt_job.h"

namespace {

int failures = 0;

void Check(const std::string& what, bool ok, double value) {
  std::printf("%-64s %.3e %s\n", what.c_str(), value, ok ? "ok" : "FAIL");
  failures += !ok;
}

double RelErr(const torch::Tensor& a, const torch::Tensor& b) {
  auto x = a.cpu().to(torch::kFloat64), y = b.cpu().to(torch::kFloat64);
  return (x - y).norm().item<double>() / (y.norm().item<double>() + 1e-30);
}

lopt::v1::JobSpec Job(const std::string& task) {
  return lopt::JobFromText(absl::StrCat(R"(name: "lhopt_cuda_test" seed: 5
    task { )", task, R"( }
    lhopt { tasks { task { )", task, R"( } }
      min_inner_steps: 200 max_inner_steps: 300 min_decisions: 4 max_decisions: 8
      particles: 4 episodes_per_iteration: 4 iterations: 1 hidden_size: 32
      curve_points: 8 instances_per_task: 1 })"),
                           "<test job>")
      .value();
}

// One sampled controlled run of `task_text` on the CPU and on CUDA.
void CompareRuns(const std::string& label, const std::string& task_text, double tol) {
  const auto job = Job(task_text);
  auto cpu = lopt::MakeTask(job.task(), 3, torch::kCPU).value();
  auto gpu = lopt::MakeTask(job.task(), 3, torch::Device(torch::kCUDA, 0)).value();
  lopt::LhoptPolicy policy(lopt::LhoptPolicyOptionsFor(job));
  lopt::EwmaNormalizer norm(lopt::kNumLhoptFeatures);
  lopt::ControlledRunConfig c;
  c.groups = 4;
  c.inner_steps = 240;
  c.decisions = 8;
  c.curve_points = 8;
  c.task_seed = 11;
  c.action_seed = 12;
  auto a = lopt::RunControlled(*cpu, c, policy.get(), &norm, nullptr, nullptr);
  auto b = lopt::RunControlled(*gpu, c, policy.get(), &norm, nullptr, nullptr);
  if (!a.ok() || !b.ok()) {
    std::printf("%s: %s / %s FAIL\n", label.c_str(), a.status().ToString().c_str(),
                b.status().ToString().c_str());
    ++failures;
    return;
  }
  Check(label + ": every result tensor is on the CPU", b->curve.is_cpu() && b->features.is_cpu() &&
                                                          b->test_loss.is_cpu() && b->hparams.is_cpu(),
        0);
  const double mismatched = (a->actions != b->actions).to(torch::kFloat64).mean().item<double>();
  Check(label + ": share of actions that differ (<= 1/32)", mismatched <= 1.0 / 32, mismatched);
  Check(label + ": first decision's features, rel. err", RelErr(b->features[0], a->features[0]) < tol,
        RelErr(b->features[0], a->features[0]));
  Check(label + ": eval-loss curve, rel. err", RelErr(b->curve, a->curve) < tol, RelErr(b->curve, a->curve));
  Check(label + ": final train loss, rel. err", RelErr(b->final_train_loss, a->final_train_loss) < tol,
        RelErr(b->final_train_loss, a->final_train_loss));
  Check(label + ": hyperparameters in force, rel. err", RelErr(b->hparams, a->hparams) < tol,
        RelErr(b->hparams, a->hparams));
}

// Swap register 0 at every decision: decision 1 loads decision 0's state.
void RegistersRoundTrip(const std::string& task_text) {
  const auto job = Job(task_text);
  auto gpu = lopt::MakeTask(job.task(), 3, torch::Device(torch::kCUDA, 0)).value();
  lopt::LhoptPolicy policy(lopt::LhoptPolicyOptionsFor(job));
  {
    torch::NoGradGuard no_grad;
    auto params = policy->named_parameters();
    const auto heads = lopt::ActionHeads();
    for (int k = 0; k < lopt::kNumActionHeads; ++k) {
      torch::Tensor bias = params[absl::StrCat("head", k, ".bias")];
      bias.zero_();
      bias[k == lopt::kHeadRegisters ? lopt::EncodeRegisterAction({lopt::RegisterOp::kSwap, 0})
                                     : heads[k].keep_choice] = 100.0;
    }
  }
  lopt::EwmaNormalizer norm(lopt::kNumLhoptFeatures);
  lopt::ControlledRunConfig c;
  c.groups = 2;
  c.inner_steps = 30;
  c.decisions = 3;
  c.task_seed = 4;
  c.mode = lopt::ActMode::kGreedy;
  std::vector<std::vector<torch::Tensor>> params_after;
  c.on_decision = [&](int64_t, const lopt::TaskState& s, const lopt::CiaoState&) {
    std::vector<torch::Tensor> p;
    for (const auto& t : s.params) p.push_back(t.clone());
    params_after.push_back(p);
  };
  lopt::InMemoryReplayBuffer buffer;
  lopt::RegisterStore store(&buffer, "regs");
  auto run = lopt::RunControlled(*gpu, c, policy.get(), &norm, nullptr, &store);
  if (!run.ok() || params_after.size() != 3) {
    std::printf("registers: %s FAIL\n", run.status().ToString().c_str());
    ++failures;
    return;
  }
  Check("registers on CUDA: 6 saves, 4 loads", run->register_saves == 6 && run->register_loads == 4,
        double(run->register_saves * 10 + run->register_loads));
  // The swaps released every state but the last one saved: one a group (register 0 of each of
  // the 2 groups, as tests/unit/lhopt_episode_test.cc's CPU run), each in its own table, on the CPU.
  bool cpu_items = store.live().size() == 2;
  for (int64_t id : store.live()) {
    auto items = buffer.Items(store.Table(id));
    cpu_items &= items.ok() && items->size() == 1;
    if (items.ok())
      for (const auto& item : *items)
        for (const auto& t : item) cpu_items &= t.second.is_cpu();
  }
  Check("registers on CUDA: the buffer holds one state a group, on the CPU", cpu_items,
        double(store.live().size()));
  Check("registers on CUDA: a load restores the saved weights bit for bit",
        torch::equal(params_after[1][0], params_after[0][0]), 0);
}

// A whole unit through LhoptEpisodeRunner (baseline run, episodes, rewards).
void CompareUnits(const std::string& task_text, double tol) {
  const auto job = Job(task_text);
  lopt::LhoptJob learner(job);
  const lopt::LhoptUnit unit = learner.Start();
  lopt::InMemoryReplayBuffer cpu_buffer, gpu_buffer;
  lopt::LhoptEpisodeRunner cpu(job, &cpu_buffer, "t", torch::kCPU);
  lopt::LhoptEpisodeRunner gpu(job, &gpu_buffer, "t", torch::Device(torch::kCUDA, 0));
  auto a = cpu.Run(unit);
  auto b = gpu.Run(unit);
  if (!a.ok() || !b.ok()) {
    std::printf("unit: %s / %s FAIL\n", a.status().ToString().c_str(), b.status().ToString().c_str());
    ++failures;
    return;
  }
  Check("unit: both ran their baseline", a->baseline_computed && b->baseline_computed, 0);
  Check("unit: baseline curve, rel. err", RelErr(b->baseline_curve, a->baseline_curve) < tol,
        RelErr(b->baseline_curve, a->baseline_curve));
  Check("unit: episode rewards, abs. err (log speed-up units)",
        (b->episode_rewards - a->episode_rewards).abs().max().item<double>() < 10 * tol,
        (b->episode_rewards - a->episode_rewards).abs().max().item<double>());
  Check("unit: segments' actions equal", a->segments.size() == b->segments.size() &&
                                             torch::equal(a->segments[0].actions, b->segments[0].actions),
        0);
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IONBF, 0);  // every line reaches a pipe, even before an abort
  if (!torch::cuda::is_available()) {
    std::printf("no CUDA device\n");
    return 1;
  }
  const std::string quadratic = "noisy_quadratic { min_dim: 50 max_dim: 50 }";
  CompareRuns("quadratic", quadratic, 1e-3);
  RegistersRoundTrip(quadratic);
  CompareUnits(quadratic, 1e-3);
  if (argc > 1 && argv[1][0] != '\0') {
    const std::string mlp = absl::StrCat(
        "fmnist_mlp { image_size: 8 hidden_sizes: 32 batch_size: 64 data_dir: \"", argv[1], "\" }");
    CompareRuns("mlp 8x8", mlp, 1e-2);
    CompareUnits(mlp, 1e-2);
  } else {
    std::printf("mlp 8x8: skipped (no Fashion-MNIST directory given)\n");
  }
  std::printf("%s\n", failures == 0 ? "all passed" : absl::StrCat(failures, " FAILED").c_str());
  return failures == 0 ? 0 : 1;
}
