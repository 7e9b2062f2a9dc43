// The job cores behind the learner's JobManager (learner/job_core.h): which
// kind a spec gets, ELO's shard ownership across workers, LHOPT's units,
// which need a payload and must come back with their own id, and LHOPT's
// yardstick units.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <set>
#include <string>

#include <torch/torch.h>

#include "common/elo/small_fc_lopt.h"
#include "common/rpc/tensor_codec.h"
#include "common/spec/job_spec.h"
#include "common/util/error_kinds.h"
#include "learner/job_core.h"

namespace lopt {
namespace {

v1::JobSpec EloSpec() {
  auto job = JobFromText(
      "name: \"core\" task { noisy_quadratic { min_dim: 4 max_dim: 4 } }\n"
      "pes { num_tasks: 2 truncation_length: 2 min_unroll_length: 2 max_unroll_length: 4 }\n"
      "cluster { shards: 2 }\n budget { outer_steps: 5 }",
      "test");
  EXPECT_TRUE(job.ok()) << job.status();
  return *job;
}

v1::JobSpec LhoptSpec() {
  auto job = JobFromText(
      "name: \"core\" task { noisy_quadratic { min_dim: 5 max_dim: 10 } }\n"
      "lhopt { tasks { task { noisy_quadratic { min_dim: 5 max_dim: 10 } } weight: 1 }\n"
      "  min_inner_steps: 20 max_inner_steps: 30 min_decisions: 2 max_decisions: 4\n"
      "  particles: 2 episodes_per_iteration: 2 iterations: 2 hidden_size: 8 }",
      "test");
  EXPECT_TRUE(job.ok()) << job.status();
  return *job;
}

v1::WorkerInfo Worker(const std::string& name) {
  v1::WorkerInfo w;
  w.set_name(name);
  return w;
}

TEST(JobCore, TheSpecPicksTheKind) {
  auto elo = MakeJobCore(EloSpec());
  auto lhopt = MakeJobCore(LhoptSpec());
  EXPECT_STREQ(elo->algorithm(), "elo_pes");
  EXPECT_STREQ(lhopt->algorithm(), "lhopt_ppo");
  EXPECT_EQ(elo->NumShards(), 2);
  EXPECT_EQ(elo->Total(), 5);
  EXPECT_EQ(lhopt->Total(), 2);
  EXPECT_EQ(elo->TrainedFileName(false), "optimizer.lopt");
  EXPECT_EQ(lhopt->TrainedFileName(true), "controller.partial.lhopt");
  EXPECT_FALSE(elo->LastLosses().has_value());
}

// A shard stays with the worker that ran it (its inner states live there)
// while that worker is connected; a rejected result does not free it, a
// worker that is gone does.
TEST(JobCore, EloShardsStayWithTheirWorkerUntilItIsGone) {
  auto core = MakeJobCore(EloSpec());
  std::set<std::string> disconnected;
  auto connected = [&](const std::string& name) { return disconnected.count(name) == 0; };
  auto a = core->Start(Worker("a"), false, connected);
  auto b = core->Start(Worker("b"), false, connected);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->shard, 0);
  EXPECT_EQ(b->shard, 1);
  EXPECT_EQ(a->unit.algorithm(), v1::ELO_PES);
  EXPECT_EQ(a->unit.shard(), 0);
  EXPECT_FALSE(a->has_payload);
  EXPECT_FALSE(core->Start(Worker("c"), false, connected)) << "both shards are running";

  core->Abandon(a->shard, a->token, /*worker_gone=*/false);  // a's result was rejected
  EXPECT_FALSE(core->Start(Worker("c"), false, connected)) << "shard 0 is still a's";
  auto again = core->Start(Worker("a"), false, connected);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->shard, 0);

  core->Abandon(again->shard, again->token, /*worker_gone=*/true);
  auto c = core->Start(Worker("c"), false, connected);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->shard, 0) << "a is gone: its shard is free";

  core->Abandon(c->shard, c->token, false);
  EXPECT_FALSE(core->Start(Worker("d"), false, connected)) << "shard 0 is c's";
  disconnected.insert("c");  // its owner no longer connected: free again
  auto d = core->Start(Worker("d"), false, connected);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->shard, 0);
}

// A result holding NaN or Inf is refused as "non_finite" (a worker whose
// numerics went bad), other malformed results as "bad_tensor" or "invalid":
// the reason comes from the error's kind, not from a word of its message.
TEST(JobCore, NonFiniteResultsHaveTheirOwnReason) {
  const v1::JobSpec spec = EloSpec();
  auto core = MakeJobCore(spec);
  auto any = [](const std::string&) { return true; };
  auto u = core->Start(Worker("a"), false, any);
  ASSERT_TRUE(u);
  const int64_t d = SmallFcLopt(spec.lopt()).theta_size();
  auto result = [&](const torch::Tensor& grad, double loss) {
    v1::WorkResult r;
    r.set_shard(u->shard);
    r.set_theta_version(0);
    *r.mutable_grad() = EncodeTensor(grad, "grad");
    r.set_meta_loss(loss);
    r.set_task_loss(loss);
    r.set_particle_steps(8);
    return r;
  };
  CoreVerdict v = core->Accept(result(torch::zeros({d}), std::nan("")), u->token, NamedTensors{});
  EXPECT_EQ(v.kind, CoreVerdict::kRejected);
  EXPECT_EQ(v.reason, "non_finite") << v.error;
  torch::Tensor inf = torch::zeros({d});
  inf[3] = std::numeric_limits<float>::infinity();
  v = core->Accept(result(inf, 1.0), u->token, NamedTensors{});
  EXPECT_EQ(v.reason, "non_finite") << v.error;
  v = core->Accept(result(torch::zeros({d + 1}), 1.0), u->token, NamedTensors{});
  EXPECT_EQ(v.reason, "bad_tensor") << v.error;
  v1::WorkResult future = result(torch::zeros({d}), 1.0);
  future.set_theta_version(7);  // a version this job never handed out
  v = core->Accept(future, u->token, NamedTensors{});
  EXPECT_EQ(v.reason, "invalid") << v.error;
  v = core->Accept(result(torch::zeros({d}), 1.0), u->token, NamedTensors{});
  EXPECT_NE(v.kind, CoreVerdict::kRejected) << v.error;

  // The kind travels with the status, whatever its message says.
  EXPECT_TRUE(IsNonFiniteError(NonFiniteError("rewards hold NaN")));
  EXPECT_FALSE(IsNonFiniteError(absl::InvalidArgumentError("non-finite, says the text only")));
}

// LHOPT units carry a payload; a caller that cannot send one gets none; a
// result must name the unit it was sent, or it is rejected as invalid and
// the unit can be handed out again.
TEST(JobCore, LhoptUnitsNeedAPayloadAndTheirOwnId) {
  auto core = MakeJobCore(LhoptSpec());
  auto any = [](const std::string&) { return true; };
  EXPECT_FALSE(core->Start(Worker("a"), /*can_take_payload=*/false, any));
  auto u = core->Start(Worker("a"), true, any);
  ASSERT_TRUE(u);
  EXPECT_EQ(u->unit.algorithm(), v1::LHOPT_PPO);
  EXPECT_TRUE(u->has_payload);
  EXPECT_FALSE(u->payload.empty());
  EXPECT_GE(u->token, 0);

  v1::WorkResult r;
  r.mutable_lhopt()->set_lhopt_unit_id(u->token + 1);
  CoreVerdict v = core->Accept(r, u->token, NamedTensors{});
  EXPECT_EQ(v.kind, CoreVerdict::kRejected);
  EXPECT_EQ(v.reason, "invalid");
  EXPECT_EQ(v.error.code(), absl::StatusCode::kInvalidArgument);

  v = core->Accept(r, u->token, absl::DataLossError("chunk 2 fails its checksum"));
  EXPECT_EQ(v.kind, CoreVerdict::kRejected);
  EXPECT_EQ(v.reason, "corrupt_payload");
  EXPECT_EQ(core->Step(), 0);
}

// LHOPT's fixed yardstick is a unit a worker runs: the version due goes out
// first with the shipped policy, comes back as a yardstick.csv row, goes to
// another worker when abandoned, and a restored core knows it was scored.
TEST(JobCore, LhoptYardstickIsAUnitOfItsOwn) {
  v1::JobSpec spec = LhoptSpec();
  spec.mutable_lhopt()->mutable_yardstick()->set_every(1);
  spec.mutable_lhopt()->mutable_yardstick()->set_instances_per_task(1);
  auto core = MakeJobCore(spec);
  auto any = [](const std::string&) { return true; };
  auto y = core->Start(Worker("a"), true, any);
  ASSERT_TRUE(y);
  EXPECT_EQ(y->unit.algorithm(), v1::LHOPT_YARDSTICK);
  EXPECT_EQ(y->unit.theta_version(), 0);
  EXPECT_LT(y->token, 0);
  ASSERT_TRUE(y->has_payload);
  bool has_policy = false;
  for (const auto& [name, value] : y->payload) has_policy |= name.rfind("policy/", 0) == 0;
  EXPECT_TRUE(has_policy);
  // Training goes on beside it: the next unit is PPO's.
  auto u = core->Start(Worker("b"), true, any);
  ASSERT_TRUE(u);
  EXPECT_EQ(u->unit.algorithm(), v1::LHOPT_PPO);
  EXPECT_GE(u->token, 0);

  v1::WorkResult r;
  CoreVerdict v = core->Accept(r, y->token, NamedTensors{});
  EXPECT_EQ(v.kind, CoreVerdict::kRejected);  // no YardstickResultInfo
  auto* info = r.mutable_yardstick();
  info->set_iteration(1);
  info->add_task_score(0.1);
  info->add_task_final_loss(0.5);
  info->add_task_reference_final_loss(0.6);
  info->set_runs(2);
  v = core->Accept(r, y->token, NamedTensors{});
  EXPECT_EQ(v.kind, CoreVerdict::kRejected);  // version 1 was not sent
  EXPECT_NE(v.error.message().find("version 0 was sent"), std::string::npos) << v.error;
  info->set_iteration(0);
  info->add_task_score(0.2);  // two scores for one mixture entry
  v = core->Accept(r, y->token, NamedTensors{});
  EXPECT_EQ(v.kind, CoreVerdict::kRejected);
  info->mutable_task_score()->RemoveLast();

  // Abandoned (its worker left): the same version goes out again.
  core->Abandon(0, y->token, true);
  auto y2 = core->Start(Worker("c"), true, any);
  ASSERT_TRUE(y2);
  EXPECT_EQ(y2->unit.algorithm(), v1::LHOPT_YARDSTICK);
  EXPECT_EQ(y2->unit.theta_version(), 0);
  EXPECT_NE(y2->token, y->token);
  EXPECT_EQ(core->Accept(r, y->token, NamedTensors{}).kind, CoreVerdict::kRejected);  // stale token

  info->set_score(0.25);
  v = core->Accept(r, y2->token, NamedTensors{});
  ASSERT_EQ(v.kind, CoreVerdict::kAccepted) << v.error;
  ASSERT_EQ(v.file_rows.size(), 1u);
  EXPECT_EQ(v.file_rows[0].file, "yardstick.csv");
  EXPECT_EQ(v.file_rows[0].header.rfind("iteration,score,score_t0_noisy_quadratic,", 0), 0u);
  EXPECT_EQ(v.file_rows[0].row.rfind("0,0.25,0.1,0.5,0.6,2,0,", 0), 0u) << v.file_rows[0].row;
  EXPECT_EQ(core->Step(), 0);  // a score is no update
  EXPECT_FALSE(core->Done());

  // Restored from its state, the core does not score version 0 again.
  auto restored = MakeJobCore(spec);
  ASSERT_TRUE(restored->LoadState(core->SaveState()).ok());
  auto next = restored->Start(Worker("a"), true, any);
  ASSERT_TRUE(next);
  EXPECT_EQ(next->unit.algorithm(), v1::LHOPT_PPO);
  // A core restored from a state saved before the score does.
  auto fresh = MakeJobCore(spec);
  auto before = MakeJobCore(spec);
  ASSERT_TRUE(before->LoadState(fresh->SaveState()).ok());
  auto again = before->Start(Worker("a"), true, any);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->unit.algorithm(), v1::LHOPT_YARDSTICK);
}

}  // namespace
}  // namespace lopt
