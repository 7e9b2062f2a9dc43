// Snapshots and their meta-validation (`lopt select`): a run keeps theta every
// budget.snapshot_every outer steps; a sweep trains each theta on the same
// seeds as its own meta-test would; the selection keeps the candidate that
// trains best and writes what it measured.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "cli/local_mode.h"
#include "common/elo/evaluation.h"
#include "common/elo/optimizer_file.h"
#include "common/elo/selection.h"
#include "common/elo/small_fc_lopt.h"
#include "common/tasks/task.h"
#include "common/util/files.h"
#include "kinds/job_door.h"

namespace lopt {
namespace {

constexpr char kJob[] = R"(
name: "quad_snapshots"
seed: 3
task { noisy_quadratic { min_dim: 10 max_dim: 10 min_log10_condition: 0 max_log10_condition: 1 noise_stddev: 0.01 } }
lopt { step_mult: 0.01 exp_mult: 0.01 }
pes { num_tasks: 4 truncation_length: 10 min_unroll_length: 20 max_unroll_length: 60 sigma: 0.05 }
elo { buffer { enabled: false } behavior_cloning { enabled: false } }
outer { lr: 0.01 schedule: CONSTANT }
budget { outer_steps: 7 checkpoint_every: 0 snapshot_every: 3 }
eval { steps: 60 }
)";

std::string TestDir(const std::string& name) { return ::testing::TempDir() + "/" + name; }

TEST(Snapshots, KeptEverySnapshotEveryOuterStepsAndAtTheLast) {
  auto job = JobFromText(kJob, "test").value();
  LocalTrainOptions o;
  o.out_dir = TestDir("snapshots_run");
  o.progress = false;
  o.fresh = true;
  auto summary = RunLocalTraining(job, o);
  ASSERT_TRUE(summary.ok()) << summary.status();
  std::vector<torch::Tensor> thetas;
  for (int step : {3, 6, 7}) {
    const std::string path = absl::StrCat(o.out_dir, "/snapshots/step_00000", step, ".lopt");
    auto snap = LoadOptimizerFile(path);
    ASSERT_TRUE(snap.ok()) << path << ": " << snap.status();
    EXPECT_EQ(snap->file.outer_step(), step);
    thetas.push_back(snap->theta);
  }
  for (int step : {1, 2, 4, 5}) EXPECT_FALSE(FileExists(absl::StrCat(o.out_dir, "/snapshots/step_00000", step, ".lopt")));
  // Each is its own step's theta: they differ, and the last is the run's file.
  EXPECT_FALSE(torch::equal(thetas[0], thetas[1]));
  EXPECT_TRUE(torch::equal(thetas[2], LoadOptimizerFile(summary->trained_file).value().theta));
}

TEST(Snapshots, SnapshotEveryMustNotBeNegative) {
  auto job = JobFromText(kJob, "test").value();
  job.mutable_budget()->set_snapshot_every(-1);
  absl::Status s = ValidateJob(job);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(std::string(s.message()).find("budget.snapshot_every"), std::string::npos) << s;
}

MetaTestConfig SweepConfig() {
  MetaTestConfig c;
  c.steps = 60;
  c.seeds = 3;
  c.record_every = 10;
  c.seed = 7;
  return c;
}

// Theta b is theta a with a larger update: a different optimizer on the same seeds.
torch::Tensor Bolder(const torch::Tensor& theta) {
  torch::Tensor b = theta.clone();
  b.narrow(0, b.numel() - 2, 2).add_(1.0);
  return b;
}

TEST(ThetaSweep, EachThetaTrainsTheSeedsItsOwnMetaTestTrains) {
  auto job = JobFromText(kJob, "test").value();
  auto task = MakeTask(job.task(), job.seed()).value();
  const torch::Tensor a = InitialTheta(job), b = Bolder(a);
  auto sweep = RunThetaSweep(*task, SweepConfig(), job.lopt(), {{"a", a}, {"b", b}});
  ASSERT_TRUE(sweep.ok()) << sweep.status();
  ASSERT_EQ(sweep->runs.size(), 6u);
  for (const auto& [name, theta] : {std::pair<std::string, torch::Tensor>{"a", a}, {"b", b}}) {
    MetaTestConfig c = SweepConfig();
    c.adamw_lrs = {1e-3f};
    MetaTestReport alone = RunMetaTest(*task, c, {{name, job.lopt(), theta}});
    int compared = 0;
    for (const MetaTestRun& s : sweep->runs)
      for (const MetaTestRun& r : alone.runs)
        if (s.optimizer == name && r.optimizer == name && s.seed == r.seed) {
          EXPECT_NEAR(s.final_train_loss, r.final_train_loss, 1e-5 * std::abs(r.final_train_loss))
              << name << " seed " << s.seed;
          ++compared;
        }
    EXPECT_EQ(compared, 3) << name;
  }
  // The two thetas train differently (a sweep that gave every particle one
  // theta would not).
  EXPECT_NE(sweep->runs[0].final_train_loss, sweep->runs[3].final_train_loss);
  EXPECT_FALSE(RunThetaSweep(*task, SweepConfig(), job.lopt(), {{"a", a}, {"short", a.narrow(0, 0, 5)}}).ok());
}

TEST(Selection, FewestDivergedThenFewestClimbedBackThenLowestMean) {
  std::vector<SnapshotScore> s(4);
  s[0].mean_loss = 0.10, s[0].climbed = 1;
  s[1].mean_loss = 0.50;
  s[2].mean_loss = 0.01, s[2].diverged = 1;
  s[3].mean_loss = 0.50;  // ties with s[1]: the earlier wins
  EXPECT_EQ(BestSnapshot(s), 1u);
  s[1].climbed = 2;
  EXPECT_EQ(BestSnapshot(s), 3u);
}

TEST(Selection, KeepsTheSnapshotThatTrainsBestAndWritesWhatItMeasured) {
  auto job = JobFromText(kJob, "test").value();
  const std::string run = TestDir("select_run");
  ASSERT_TRUE(MakeDirs(run + "/snapshots").ok());
  // Step 1: updates far too large in one direction; step 2: the untrained
  // optimizer, which trains the quadratic. optimizer.lopt: step 2 again.
  const torch::Tensor good = InitialTheta(job);
  torch::Tensor bad = good.clone();
  bad.narrow(0, bad.numel() - 2, 1).fill_(300.0);
  v1::OptimizerFile file;
  *file.mutable_options() = job.lopt();
  *file.mutable_job() = job;
  file.set_outer_step(1);
  ASSERT_TRUE(SaveOptimizerFile(run + "/snapshots/step_000001.lopt", file, bad).ok());
  file.set_outer_step(2);
  ASSERT_TRUE(SaveOptimizerFile(run + "/snapshots/step_000002.lopt", file, good).ok());
  ASSERT_TRUE(SaveOptimizerFile(run + "/optimizer.lopt", file, good).ok());

  SelectOptions o;
  o.seeds = 3;
  auto out = SelectFromRun(run, o);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->scores.size(), 2u) << "optimizer.lopt repeats step 2's snapshot";
  EXPECT_EQ(out->best, 1u) << out->table;
  EXPECT_EQ(out->scores[1].outer_step, 2);
  EXPECT_GT(out->scores[0].mean_loss, 10 * out->scores[1].mean_loss) << out->table;
  EXPECT_EQ(ReadFile(run + "/optimizer.selected.lopt").value(),
            ReadFile(run + "/snapshots/step_000002.lopt").value());
  std::vector<std::string> rows = absl::StrSplit(ReadFile(run + "/select/selection.csv").value(), '\n',
                                                 absl::SkipEmpty());
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_TRUE(absl::StartsWith(rows[1], "step_000001,1,")) << rows[1];
  EXPECT_TRUE(absl::StartsWith(rows[2], "step_000002,2,")) << rows[2];
  EXPECT_NE(ReadFile(run + "/select/selection.json").value().find("\"selected\": \"step_000002\""),
            std::string::npos);

  // Candidates of other options are refused: one sweep runs one spec.
  v1::OptimizerFile other = file;
  other.mutable_options()->set_step_mult(0.5f);
  ASSERT_TRUE(SaveOptimizerFile(run + "/other.lopt", other, good).ok());
  SelectOptions files = o;
  files.files = {run + "/snapshots/step_000002.lopt", run + "/other.lopt"};
  auto mixed = SelectFromRun(TestDir("select_mixed"), files);
  ASSERT_FALSE(mixed.ok());
  EXPECT_NE(std::string(mixed.status().message()).find("has other options than"), std::string::npos)
      << mixed.status();

  // A run without candidates says how to get them.
  ASSERT_TRUE(MakeDirs(TestDir("select_empty")).ok());
  auto none = SelectFromRun(TestDir("select_empty"), o);
  ASSERT_FALSE(none.ok());
  EXPECT_NE(std::string(none.status().message()).find("snapshot_every"), std::string::npos);
}

}  // namespace
}  // namespace lopt
