// A short meta-training with a fixed seed, end to end through local mode,
// must clearly improve the optimizer; a resumed run must equal an
// uninterrupted one; local mode runs every shard of a job; a checkpoint of
// ELO's own local driver (before the one driver) still resumes.
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "cli/local_mode.h"
#include "common/elo/evaluation.h"
#include "common/elo/optimizer_file.h"
#include "common/elo/small_fc_lopt.h"
#include "common/tasks/task.h"
#include "common/util/checkpoint.h"
#include "common/util/files.h"
#include "kinds/job_door.h"
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

// A fresh local run into the test's directory `name`, without a progress bar.
LocalTrainOptions FreshRun(const std::string& name) {
  LocalTrainOptions o;
  o.out_dir = ::testing::TempDir() + "/" + name;
  o.progress = false;
  o.fresh = true;
  return o;
}

// `job` run into the test's directory `name`, stopped after outer step
// `stop_after` (with its checkpoint there, as after a crash) and then resumed
// from that checkpoint to the end: the resumed run's summary.
absl::StatusOr<LocalRunSummary> StopAndResume(const v1::JobSpec& job, const std::string& name,
                                              int64_t stop_after) {
  LocalTrainOptions o = FreshRun(name);
  o.stop_after = stop_after;
  auto first = RunLocalTraining(job, o);
  if (!first.ok()) return first.status();
  EXPECT_EQ(first->steps, stop_after);
  o.fresh = false;
  o.stop_after = -1;
  return RunLocalTraining(job, o);
}

// Whether two optimizer files hold the same theta, bit for bit.
::testing::AssertionResult SameTheta(const std::string& a_file, const std::string& b_file) {
  auto a = LoadOptimizerFile(a_file).value();
  auto b = LoadOptimizerFile(b_file).value();
  if (torch::equal(a.theta, b.theta)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "max |diff| " << (a.theta - b.theta).abs().max().item<float>();
}

TEST(MetaTraining, ShortRunClearlyImprovesTheOptimizer) {
  auto job = JobFromText(kJob, "test").value();
  LocalTrainOptions o = FreshRun("meta_training_short");
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
  LocalTrainOptions straight = FreshRun("meta_training_straight");
  ASSERT_TRUE(RunLocalTraining(job, straight).ok());
  auto s = StopAndResume(job, "meta_training_resumed", 7);  // a checkpoint at the stop
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->resumed_from, 7);
  EXPECT_TRUE(SameTheta(straight.out_dir + "/optimizer.lopt", s->trained_file));
  // A checkpoint of another job is refused, not silently mixed in.
  job.set_seed(4);
  LocalTrainOptions resumed = FreshRun("meta_training_resumed");
  resumed.fresh = false;
  EXPECT_EQ(RunLocalTraining(job, resumed).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

// The entries of a checkpoint file by name.
std::map<std::string, torch::Tensor> ReadCheckpoint(const std::string& path) {
  auto all = DeserializeTensors(ReadFile(path).value());
  EXPECT_TRUE(all.ok()) << all.status();
  std::map<std::string, torch::Tensor> out;
  if (all.ok())
    for (auto& [k, v] : *all) out[k] = v;
  return out;
}

// metrics.csv without its last two columns (throughput and wall seconds,
// which vary from run to run).
std::vector<std::string> MetricsWithoutTimes(const std::string& dir) {
  std::vector<std::string> rows;
  std::string csv = ReadFile(dir + "/metrics.csv").value_or("");
  size_t at = 0;
  while (at < csv.size()) {
    size_t end = csv.find('\n', at);
    if (end == std::string::npos) end = csv.size();
    std::string row = csv.substr(at, end - at);
    for (int i = 0; i < 2; ++i) row = row.substr(0, row.rfind(','));
    rows.push_back(row);
    at = end + 1;
  }
  return rows;
}

// Issue 15: local mode runs ELO on the one driver, as one worker that owns
// every shard; the core gives it the shard with the fewest truncations. A
// run of three shards stopped and resumed
// from its checkpoint (the shards' inner states and the RocksDB buffer's
// items in it) ends bit for bit as an uninterrupted one.
TEST(MetaTraining, LocalModeRunsEveryShardAndAResumedRunOfThreeShardsEqualsAnUninterruptedOne) {
  auto job = JobFromText(kJob, "test").value();
  job.mutable_budget()->set_outer_steps(8);
  job.mutable_budget()->set_checkpoint_every(2);
  job.mutable_cluster()->set_shards(3);
  LocalTrainOptions straight = FreshRun("meta_training_shards_straight");
  auto whole = RunLocalTraining(job, straight);
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_EQ(whole->steps, 8);
  // Every shard ran one truncation a step (results_per_step: the shards),
  // and its inner states are in the checkpoint.
  auto ckpt = ReadCheckpoint(whole->checkpoint_path);
  ASSERT_TRUE(ckpt.count("learner/job/truncations"));
  EXPECT_TRUE(torch::equal(ckpt["learner/job/truncations"],
                           torch::tensor({8, 8, 8}, torch::kInt64)))
      << ckpt["learner/job/truncations"];
  for (int s = 0; s < 3; ++s) {
    bool found = false;
    for (const auto& [k, v] : ckpt) found |= k.rfind(absl::StrCat("runner/ELO_PES/", s, "/"), 0) == 0;
    EXPECT_TRUE(found) << "no inner states of shard " << s << " in the checkpoint";
  }
  EXPECT_GT(ckpt["buffer/size"].item<int64_t>(), 0) << "the buffer's items are not checkpointed";

  // The last periodic checkpoint at 4, then a stop at 5.
  auto second = StopAndResume(job, "meta_training_shards_resumed", 5);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->resumed_from, 5);
  EXPECT_EQ(second->steps, 8);
  EXPECT_TRUE(SameTheta(whole->trained_file, second->trained_file));
  EXPECT_EQ(MetricsWithoutTimes(straight.out_dir),
            MetricsWithoutTimes(::testing::TempDir() + "/meta_training_shards_resumed"));
  EXPECT_EQ(MetricsWithoutTimes(straight.out_dir).size(), 1u + 8u);  // the header and 8 steps
}

// Fewer results a step than shards (cluster.results_per_step 1 of 3): the
// shards take turns, one a step, and a run stopped after step 4 (shard 1's
// turn next) and resumed goes on with shard 1, as the uninterrupted run
// does; it used to restart the cycle at shard 0.
TEST(MetaTraining, ALocalRunWithFewerResultsAStepThanShardsResumesTheShardCycle) {
  auto job = JobFromText(kJob, "test").value();
  job.mutable_budget()->set_outer_steps(7);
  job.mutable_budget()->set_checkpoint_every(2);
  job.mutable_cluster()->set_shards(3);
  job.mutable_cluster()->set_results_per_step(1);
  LocalTrainOptions straight = FreshRun("meta_training_cycle_straight");
  auto whole = RunLocalTraining(job, straight);
  ASSERT_TRUE(whole.ok()) << whole.status();
  auto ckpt = ReadCheckpoint(whole->checkpoint_path);
  EXPECT_TRUE(torch::equal(ckpt["learner/job/truncations"],
                           torch::tensor({3, 2, 2}, torch::kInt64)))
      << ckpt["learner/job/truncations"];

  auto second = StopAndResume(job, "meta_training_cycle_resumed", 4);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->resumed_from, 4);
  EXPECT_TRUE(SameTheta(whole->trained_file, second->trained_file));
  EXPECT_EQ(MetricsWithoutTimes(straight.out_dir),
            MetricsWithoutTimes(::testing::TempDir() + "/meta_training_cycle_resumed"));
}

// A checkpoint ELO's own local driver wrote (before the one driver: the
// shards' inner states in "worker/<shard>/", the buffer's items without
// their table's name) resumes: the one driver takes every state it held
// unchanged (ELO's UpgradeLocalCheckpoint) and runs the job to its end.
TEST(MetaTraining, ACheckpointOfTheOldEloLocalDriverStillResumes) {
  const char* src = std::getenv("LOPT_SOURCE_DIR");
  if (!src) GTEST_SKIP() << "LOPT_SOURCE_DIR not set (ctest sets it)";
  const std::string data = std::string(src) + "/tests/data/old_elo_local";
  auto job = LoadJobFile(data + "/job.textproto");
  ASSERT_TRUE(job.ok()) << job.status();
  LocalTrainOptions o = FreshRun("meta_training_old_checkpoint");
  o.fresh = false;  // the old checkpoint is what it resumes
  ASSERT_TRUE(MakeDirs(o.out_dir).ok());
  for (const char* f : {"checkpoint.pt", "metrics.csv"})
    ASSERT_TRUE(WriteFileAtomically(o.out_dir + "/" + f, ReadFile(data + "/" + f).value()).ok());
  // Resumed and checkpointed again at once, in the one driver's layout.
  o.stop_after = 0;
  auto loaded = RunLocalTraining(*job, o);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->resumed_from, 5);
  auto old = ReadCheckpoint(data + "/checkpoint.pt");
  auto now = ReadCheckpoint(o.out_dir + "/checkpoint.pt");
  int learner = 0, shards = 0;
  for (const auto& [k, v] : old) {
    if (k.rfind("learner/", 0) == 0) {
      ++learner;
      ASSERT_TRUE(now.count(k)) << k;
      EXPECT_TRUE(torch::equal(v, now[k])) << k;
    } else if (k.rfind("worker/", 0) == 0) {
      ++shards;
      const std::string upgraded = "runner/ELO_PES/" + k.substr(7);
      ASSERT_TRUE(now.count(upgraded)) << k;
      EXPECT_TRUE(torch::equal(v, now[upgraded])) << k;
    }
  }
  EXPECT_GT(learner, 0);
  EXPECT_GT(shards, 0);
  // The buffer's one table (the job's task): the same items in order, named.
  const int64_t n = old["buffer/size"].item<int64_t>();
  ASSERT_GT(n, 0);
  ASSERT_EQ(now["buffer/size"].item<int64_t>(), n);
  for (int64_t i = 0; i < n; ++i) {
    const std::string before = absl::StrCat("buffer/", i, "/"), after = before;
    EXPECT_EQ(TensorString(now[after + "@table"]).rfind("old_local/", 0), 0u);
    EXPECT_EQ(now[after + "@capacity"].item<int64_t>(), 8);
    for (const auto& [k, v] : old)
      if (k.rfind(before, 0) == 0) {
        ASSERT_TRUE(now.count(k)) << k;
        EXPECT_TRUE(torch::equal(v, now[k])) << k;
      }
  }
  // And on to the end, metrics.csv one row a step.
  o.stop_after = -1;
  auto rest = RunLocalTraining(*job, o);
  ASSERT_TRUE(rest.ok()) << rest.status();
  EXPECT_EQ(rest->resumed_from, 5);
  EXPECT_EQ(rest->steps, 40);
  auto rows = MetricsWithoutTimes(o.out_dir);
  ASSERT_EQ(rows.size(), 41u);
  for (int s = 0; s < 40; ++s) EXPECT_EQ(rows[s + 1].substr(0, rows[s + 1].find(',')), absl::StrCat(s));
  EXPECT_EQ(rows[1], MetricsWithoutTimes(data)[1]) << "the old run's rows are kept";
}

}  // namespace
}  // namespace lopt
