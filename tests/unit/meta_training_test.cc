// A short meta-training with a fixed seed, end to end through local mode,
// must clearly improve the optimizer; a resumed run must equal an
// uninterrupted one.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include "cli/local_mode.h"
#include "common/elo/evaluation.h"
#include "common/elo/optimizer_file.h"
#include "common/elo/small_fc_lopt.h"
#include "common/spec/job_spec.h"
#include "common/tasks/task.h"
#include "learner/elo_learner.h"

namespace lopt {
namespace {

constexpr char kJob[] = R"(
name: "quad_test"
seed: 3
task { noisy_quadratic { min_dim: 10 max_dim: 10 min_log10_condition: 0 max_log10_condition: 1 noise_stddev: 0.01 } }
lopt { step_mult: 0.01 exp_mult: 0.01 }
pes { num_tasks: 8 truncation_length: 10 min_unroll_length: 20 max_unroll_length: 60 sigma: 0.05 }
elo { buffer { enabled: true } behavior_cloning { enabled: false } }
outer { lr: 0.01 schedule: CONSTANT }
budget { outer_steps: 120 checkpoint_every: 0 }
)";

// Mean final loss of 8 fresh tasks trained 60 steps by theta.
double MetaTestLoss(const v1::JobSpec& job, const torch::Tensor& theta) {
  auto task = MakeTask(job.task(), job.seed()).value();
  MetaTestConfig c;
  c.steps = 60;
  c.seeds = 8;
  c.record_every = 10;
  c.adamw_lrs = {1e-3f};
  c.seed = 99;
  MetaTestReport r = RunMetaTest(*task, c, {{"lopt", job.lopt(), theta}});
  double sum = 0;
  int n = 0;
  for (const auto& run : r.runs)
    if (run.optimizer == "lopt") sum += run.final_train_loss, ++n;
  return sum / n;
}

TEST(MetaTraining, ShortRunClearlyImprovesTheOptimizer) {
  auto job = JobFromText(kJob, "test").value();
  LocalTrainOptions o;
  o.out_dir = ::testing::TempDir() + "/meta_training_short";
  o.progress = false;
  o.fresh = true;
  auto summary = RunLocalTraining(job, o);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->steps, 120);
  auto trained = LoadOptimizerFile(summary->trained_file);
  ASSERT_TRUE(trained.ok());
  torch::Tensor theta0 = InitialTheta(job);
  double before = MetaTestLoss(job, theta0), after = MetaTestLoss(job, trained->theta);
  EXPECT_LT(after, 0.7 * before) << "meta-test loss " << before << " -> " << after;
  const double start = summary->Number("meta_loss_start"), end = summary->Number("meta_loss_end");
  EXPECT_LT(end, 0.8 * start) << start << " -> " << end;
}

TEST(MetaTraining, ResumedRunEqualsUninterruptedRun) {
  auto job = JobFromText(kJob, "test").value();
  job.mutable_budget()->set_outer_steps(12);
  job.mutable_budget()->set_checkpoint_every(4);
  LocalTrainOptions straight;
  straight.out_dir = ::testing::TempDir() + "/meta_training_straight";
  straight.progress = false;
  straight.fresh = true;
  ASSERT_TRUE(RunLocalTraining(job, straight).ok());
  LocalTrainOptions resumed = straight;
  resumed.out_dir = ::testing::TempDir() + "/meta_training_resumed";
  resumed.stop_after = 7;  // checkpoint at the stop, as after a crash at step 7
  ASSERT_TRUE(RunLocalTraining(job, resumed).ok());
  resumed.fresh = false;
  resumed.stop_after = -1;
  auto s = RunLocalTraining(job, resumed);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->resumed_from, 7);
  auto a = LoadOptimizerFile(straight.out_dir + "/optimizer.lopt").value();
  auto b = LoadOptimizerFile(resumed.out_dir + "/optimizer.lopt").value();
  EXPECT_TRUE(torch::equal(a.theta, b.theta));
  // A checkpoint of another job is refused, not silently mixed in.
  job.set_seed(4);
  resumed.fresh = false;
  EXPECT_EQ(RunLocalTraining(job, resumed).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace lopt
