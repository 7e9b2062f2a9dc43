// The fixed yardstick of LHOPT training (common/lhopt/lhopt_yardstick.h) and its
// yardstick.csv in local mode.
#include "common/lhopt/lhopt_yardstick.h"

#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <sstream>

#include <torch/torch.h>

#include "cli/lhopt_mode.h"
#include "kinds/job_door.h"
#include "kinds/lhopt/lhopt_kind.h"
#include "kinds/local_driver.h"
#include "common/lhopt/lhopt_actions.h"
#include "common/lhopt/lhopt_unit.h"
#include "learner/lhopt_job.h"

namespace lopt {
namespace {

constexpr char kJob[] = R"(
    name: "lhopt_yardstick_test" seed: 5
    task { noisy_quadratic { min_dim: 5 max_dim: 10 } }
    lhopt {
      tasks { task { noisy_quadratic { min_dim: 5 max_dim: 10 } } weight: 1 }
      tasks { task { noisy_quadratic { min_dim: 20 max_dim: 30 } } weight: 1 }
      min_inner_steps: 20 max_inner_steps: 30 min_decisions: 2 max_decisions: 6
      particles: 2 episodes_per_iteration: 4 iterations: 2 hidden_size: 16
      curve_points: 4 baseline_refresh_iterations: 1 instances_per_task: 2
      checkpoint_every: 1
      yardstick { every: 1 instances_per_task: 2 particles: 3 }
    })";

v1::JobSpec Job() {
  auto job = JobFromText(kJob, "test");
  EXPECT_TRUE(job.ok()) << job.status();
  return *job;
}

// A policy whose greedy choice is `choice[k]` on head k whatever it sees:
// zero head weights, a large bias on the chosen logit.
LhoptPolicy FixedPolicy(const v1::JobSpec& job, const std::vector<int64_t>& choice) {
  LhoptPolicy p(LhoptPolicyOptionsFor(job));
  torch::NoGradGuard g;
  for (auto& kv : p->named_parameters()) {
    const std::string& name = kv.key();
    if (name.rfind("head", 0) != 0) continue;
    const int k = std::stoi(name.substr(4, name.find('.') - 4));
    kv.value().zero_();
    if (name.find("bias") != std::string::npos) kv.value()[choice[k]] = 10.0;
  }
  return p;
}

std::vector<int64_t> KeepChoices() {
  torch::Tensor keep = KeepActions(1)[0];
  std::vector<int64_t> c;
  for (int64_t k = 0; k < keep.size(0); ++k) c.push_back(keep[k].item<int64_t>());
  return c;
}

TEST(LhoptYardstick, InstancesAreFixedAndHeldOutFromTraining) {
  v1::JobSpec spec = Job();
  auto a = YardstickInstances(spec);
  auto b = YardstickInstances(spec);
  ASSERT_EQ(a.size(), 4u);  // 2 entries x 2 instances
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].task_seed, b[i].task_seed);
    EXPECT_EQ(a[i].inner_steps, b[i].inner_steps);
    EXPECT_EQ(a[i].decisions, b[i].decisions);
    EXPECT_EQ(a[i].task_index, int32_t(i / 2));
    EXPECT_GE(a[i].inner_steps, 20);
    EXPECT_LE(a[i].inner_steps, 30);
    EXPECT_GE(a[i].decisions, 2);
    EXPECT_LE(a[i].decisions, 6);
  }
  // No training instance (any generation) is a yardstick instance.
  std::set<uint64_t> held_out;
  for (const auto& y : a) held_out.insert(y.task_seed);
  EXPECT_EQ(held_out.size(), a.size());
  LhoptJob job(spec);
  for (int i = 0; i < 2; ++i) {
    LhoptUnit u = job.Start();
    EXPECT_EQ(held_out.count(u.task_seed), 0u) << "unit " << i;
  }
  EXPECT_EQ(YardstickTaskNames(spec),
            (std::vector<std::string>{"t0_noisy_quadratic", "t1_noisy_quadratic"}));
}

TEST(LhoptYardstick, DueAtZeroEveryAndTheLastIteration) {
  v1::JobSpec spec = Job();
  spec.mutable_lhopt()->set_iterations(7);
  spec.mutable_lhopt()->mutable_yardstick()->set_every(3);
  LhoptYardstick y(spec);
  std::vector<int64_t> due;
  for (int64_t v = 0; v <= 7; ++v)
    if (y.Due(v)) due.push_back(v);
  EXPECT_EQ(due, (std::vector<int64_t>{0, 3, 6, 7}));
  spec.mutable_lhopt()->mutable_yardstick()->set_every(0);
  LhoptYardstick off(spec);
  EXPECT_FALSE(off.enabled());
  EXPECT_FALSE(off.Due(0));
}

TEST(LhoptYardstick, KeepPolicyRunsAreTheReferenceAndTheReferenceIsFixed) {
  v1::JobSpec spec = Job();
  LhoptYardstick y(spec);
  EwmaNormalizer norm(kNumLhoptFeatures);
  LhoptPolicy keep = FixedPolicy(spec, KeepChoices());
  std::vector<int64_t> up = KeepChoices();
  up[kHeadLr] = ActionHeads()[kHeadLr].num_choices - 1;  // the largest lr factor
  LhoptPolicy faster = FixedPolicy(spec, up);

  auto k1 = y.Evaluate(*keep, norm, 0);
  ASSERT_TRUE(k1.ok()) << k1.status();
  EXPECT_EQ(y.reference_runs(), 4);
  EXPECT_EQ(k1->runs, 12);
  ASSERT_EQ(k1->instances.size(), 4u);
  ASSERT_EQ(k1->task_score.size(), 2u);
  double total = 0;
  for (const auto& r : k1->instances) {
    // Keeping every hyperparameter is the reference run, step for step.
    EXPECT_TRUE(torch::equal(r.curve, r.reference_curve));
    // Each score is RunReward of the run's curve over the reference fit.
    std::vector<double> t(r.curve_steps.begin(), r.curve_steps.end());
    for (int64_t p = 0; p < 3; ++p) {
      std::vector<double> loss;
      for (int64_t c = 0; c < r.curve.size(0); ++c) loss.push_back(r.curve[c][p].item<double>());
      const double s = RunReward(r.reference_fits[p], t, loss, spec.lhopt().reward_clip());
      EXPECT_DOUBLE_EQ(r.scores[p].item<double>(), s);
      total += s;
    }
  }
  EXPECT_NEAR(k1->score, total / 12, 1e-12);
  EXPECT_NEAR(k1->score, 0.0, 0.5);  // the reference against its own fit

  // Another policy: other runs, the same references (not recomputed).
  auto f = y.Evaluate(*faster, norm, 1);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(y.reference_runs(), 4);
  bool differs = false;
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_TRUE(torch::equal(f->instances[i].reference_curve, k1->instances[i].reference_curve));
    differs = differs || !torch::equal(f->instances[i].curve, f->instances[i].reference_curve);
  }
  EXPECT_TRUE(differs);
  EXPECT_NE(f->score, k1->score);
  // A policy's score does not depend on what was evaluated before it.
  auto k2 = y.Evaluate(*keep, norm, 2);
  ASSERT_TRUE(k2.ok());
  EXPECT_EQ(k2->score, k1->score);
}

TEST(LhoptYardstick, LocalModeWritesOneRowPerDueVersionAcrossAResume) {
  v1::JobSpec spec = Job();
  spec.mutable_lhopt()->set_iterations(3);
  spec.mutable_lhopt()->mutable_yardstick()->set_every(2);
  spec.mutable_lhopt()->mutable_yardstick()->set_instances_per_task(1);
  spec.mutable_lhopt()->mutable_yardstick()->set_particles(1);
  LocalTrainOptions o;
  o.out_dir = ::testing::TempDir() + "/lhopt_yardstick_local";
  o.progress = false;
  o.fresh = true;
  o.stop_after = 2;
  auto a = RunLocal(LhoptKind(), spec, o);
  ASSERT_TRUE(a.ok()) << a.status();
  // Rows a killed run wrote after its last checkpoint (version 2) are
  // recomputed on resume, not repeated.
  std::ofstream(o.out_dir + "/yardstick.csv", std::ios::app) << "3,9,9,9,9,9,9,9,1,0,0.0\n";
  std::ofstream(o.out_dir + "/metrics.csv", std::ios::app) << "2,9\n";
  o.fresh = false;
  o.stop_after = -1;
  auto b = RunLocal(LhoptKind(), spec, o);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->resumed_from, 2);
  std::ifstream in(o.out_dir + "/yardstick.csv");
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, YardstickCsvHeader(spec).substr(0, YardstickCsvHeader(spec).size() - 1));
  std::vector<int64_t> iterations;
  while (std::getline(in, line)) iterations.push_back(std::stoll(line.substr(0, line.find(','))));
  EXPECT_EQ(iterations, (std::vector<int64_t>{0, 2, 3}));
  std::ifstream m(o.out_dir + "/metrics.csv");
  std::vector<int64_t> updates;
  std::getline(m, line);
  while (std::getline(m, line)) updates.push_back(std::stoll(line.substr(0, line.find(','))));
  EXPECT_EQ(updates, (std::vector<int64_t>{0, 1, 2}));
}

}  // namespace
}  // namespace lopt
