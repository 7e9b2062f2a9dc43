// EloJob: the learner core both wirings share — shards, results per step,
// the staleness bound, validation of results, checkpoints.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "kinds/job_door.h"
#include "learner/elo_job.h"

namespace lopt {
namespace {

v1::JobSpec Job(int shards, int per_step, int staleness, int steps = 5) {
  auto job = JobFromText(absl::StrCat(
                             "name: \"j\"\nbudget { outer_steps: ", steps, " }\n",
                             "cluster { shards: ", shards, " results_per_step: ", per_step,
                             " max_staleness: ", staleness, " }\n"),
                         "test");
  EXPECT_TRUE(job.ok()) << job.status();
  return *job;
}

EloShardResult Result(const EloUnit& u, float g, double loss = 1.0) {
  EloShardResult r;
  r.shard = u.shard;
  r.theta_version = u.theta_version;
  r.grad = torch::full({u.theta.numel()}, g);
  r.meta_loss = loss;
  r.task_loss = loss;
  r.particle_steps = 10;
  return r;
}

TEST(EloJob, OneStepAveragesOneResultPerShard) {
  EloJob job(Job(2, 0, 0));
  EXPECT_EQ(job.results_per_step(), 2);
  ASSERT_TRUE(job.CanStart(0));
  EloUnit a = job.Start(0);
  EXPECT_FALSE(job.CanStart(0));  // running
  ASSERT_TRUE(job.CanStart(1));
  EloUnit b = job.Start(1);
  torch::Tensor before = job.learner().theta().clone();
  EXPECT_EQ(*job.Accept(Result(a, 1.0f, 2.0)), EloAcceptOutcome::kAccepted);
  EXPECT_TRUE(torch::equal(before, job.learner().theta()));
  // Staleness 0: shard 0 may not start again until the step is applied.
  EXPECT_FALSE(job.CanStart(0));
  EloStepRecord rec;
  EXPECT_EQ(*job.Accept(Result(b, 3.0f, 4.0), &rec), EloAcceptOutcome::kStepApplied);
  EXPECT_EQ(job.outer_step(), 1);
  EXPECT_DOUBLE_EQ(rec.meta_loss, 3.0);  // mean of 2 and 4
  EXPECT_EQ(rec.results, 2);
  EXPECT_EQ(rec.particle_steps, 20);
  // Same update as one result with the mean gradient.
  EloJob ref(Job(1, 0, 0));
  EloUnit r = ref.Start(0);
  ASSERT_TRUE(ref.Accept(Result(r, 2.0f, 3.0)).ok());
  EXPECT_TRUE(torch::allclose(ref.learner().theta(), job.learner().theta()));
  EXPECT_TRUE(job.CanStart(0));
  EXPECT_EQ(job.Start(0).truncation, 1);  // the shard's random stream moves on
}

TEST(EloJob, DropsResultsBeyondTheStalenessBound) {
  EloJob job(Job(2, 1, 1));
  EloUnit a = job.Start(0);
  EloUnit b = job.Start(1);  // staleness > 0: shards run freely
  ASSERT_EQ(*job.Accept(Result(a, 1.0f)), EloAcceptOutcome::kStepApplied);
  EloUnit a2 = job.Start(0);
  ASSERT_EQ(*job.Accept(Result(a2, 1.0f)), EloAcceptOutcome::kStepApplied);
  // b was computed at version 0; now at 2: staleness 2 > 1.
  EXPECT_EQ(*job.Accept(Result(b, 1.0f)), EloAcceptOutcome::kDroppedStale);
  EXPECT_EQ(job.outer_step(), 2);
  EXPECT_TRUE(job.CanStart(1));  // dropping freed the shard
  EloUnit b2 = job.Start(1);
  EloUnit a3 = job.Start(0);
  ASSERT_EQ(*job.Accept(Result(a3, 1.0f)), EloAcceptOutcome::kStepApplied);
  EXPECT_EQ(*job.Accept(Result(b2, 1.0f)), EloAcceptOutcome::kStepApplied);  // staleness 1: kept
}

TEST(EloJob, RefusesMalformedResultsWithoutChangingAnything) {
  EloJob job(Job(1, 0, 0));
  EloUnit u = job.Start(0);
  torch::Tensor before = job.learner().theta().clone();
  EloShardResult r = Result(u, 1.0f);
  r.grad = torch::ones({7});
  auto s = job.Accept(r);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.status().message().find("shape [7]"), std::string::npos) << s.status();
  r = Result(u, 1.0f);
  r.grad[5] = NAN;
  EXPECT_EQ(job.Accept(r).status().code(), absl::StatusCode::kInvalidArgument);
  r = Result(u, 1.0f, NAN);
  EXPECT_NE(job.Accept(r).status().message().find("non-finite"), std::string::npos);
  r = Result(u, 1.0f);
  r.shard = 4;
  EXPECT_EQ(job.Accept(r).status().code(), absl::StatusCode::kInvalidArgument);
  r = Result(u, 1.0f);
  r.theta_version = 9;  // from the future
  EXPECT_EQ(job.Accept(r).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(torch::equal(before, job.learner().theta()));
  EXPECT_EQ(job.outer_step(), 0);
  // The shard is still running: Abandon gives it back.
  EXPECT_FALSE(job.CanStart(0));
  job.Abandon(0);
  EXPECT_TRUE(job.CanStart(0));
}

TEST(EloJob, CheckpointRestoresThetaCountersAndHistory) {
  EloJob job(Job(2, 0, 0));
  for (int step = 0; step < 2; ++step) {
    EloUnit a = job.Start(0), b = job.Start(1);
    ASSERT_TRUE(job.Accept(Result(a, 0.5f, 1.0 + step)).ok());
    ASSERT_TRUE(job.Accept(Result(b, -0.25f, 2.0 + step)).ok());
  }
  EloJob copy(Job(2, 0, 0));
  ASSERT_TRUE(copy.LoadState(job.SaveState()).ok());
  EXPECT_EQ(copy.outer_step(), 2);
  EXPECT_TRUE(torch::equal(copy.learner().theta(), job.learner().theta()));
  EXPECT_EQ(copy.meta_losses(), job.meta_losses());
  EXPECT_EQ(copy.Start(1).truncation, 2);
  EloJob other(Job(3, 0, 0));
  EXPECT_FALSE(other.LoadState(job.SaveState()).ok());  // shard count differs
}

}  // namespace
}  // namespace lopt
