// The job cores behind the learner's JobManager (learner/job_core.h): which
// kind a spec gets, ELO's shard ownership across workers, LHOPT's units,
// which need a payload and must come back with their own id, LHOPT's
// yardstick units and ELO's meta-test unit.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/elo/evaluation_report.h"
#include "common/elo/small_fc_lopt.h"
#include "common/lhopt/lhopt_wire.h"
#include "common/rpc/tensor_codec.h"
#include "common/util/checkpoint.h"
#include "common/util/error_kinds.h"
#include "kinds/job_door.h"
#include "kinds/job_kind.h"
#include "learner/job_core.h"
#include "worker/worker.h"

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

// An ELO_PES result of `u`: its gradient `grad`, its losses `loss`.
v1::WorkResult EloResult(const CoreUnit& u, const torch::Tensor& grad, double loss = 1.0) {
  v1::WorkResult r;
  r.set_shard(u.shard);
  r.set_theta_version(u.unit.theta_version());
  v1::EloResultInfo& e = *r.mutable_elo();
  *e.mutable_grad() = EncodeTensor(grad, "grad");
  e.set_meta_loss(loss);
  e.set_task_loss(loss);
  return r;
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

// One worker on three shards runs them in turn, whatever results_per_step
// says: with 1 (a step from each result) and with 3 (a step from three
// results, one of each shard). A worker that owned shard 0 used to be given
// shard 0 every time, so shards 1 and 2 never ran.
TEST(JobCore, OneWorkerRunsEveryShardInTurn) {
  for (int per_step : {1, 3}) {
    v1::JobSpec spec = EloSpec();
    spec.mutable_cluster()->set_shards(3);
    spec.mutable_cluster()->set_results_per_step(per_step);
    spec.mutable_budget()->set_outer_steps(6);
    auto core = MakeJobCore(spec);
    auto any = [](const std::string&) { return true; };
    const int64_t d = SmallFcLopt(spec.lopt()).theta_size();
    std::vector<int> order;
    for (int i = 0; i < 6; ++i) {
      auto u = core->Start(Worker("only"), false, any);
      ASSERT_TRUE(u) << "per_step " << per_step << ", unit " << i;
      order.push_back(u->shard);
      EXPECT_EQ(u->unit.elo().truncation(), i / 3) << "the shard's own count";
      EXPECT_NE(core->Accept(EloResult(*u, torch::zeros({d})), u->token, NamedTensors{}).kind,
                CoreVerdict::kRejected);
    }
    EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 0, 1, 2})) << "results_per_step " << per_step;
    EXPECT_EQ(core->Step(), 6 / per_step);
  }
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
  ASSERT_EQ(u->unit.theta_version(), 0);
  auto result = [&](const torch::Tensor& grad, double loss) {
    v1::WorkResult r = EloResult(*u, grad, loss);
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

// An ELO job of 2 outer steps (a result from each of its 2 shards a step)
// whose meta-test is 20 inner steps of 1 seed against one AdamW lr.
v1::JobSpec MetaTestedSpec() {
  v1::JobSpec spec = EloSpec();
  spec.mutable_budget()->set_outer_steps(2);
  spec.mutable_eval()->set_steps(20);
  spec.mutable_eval()->set_seeds(1);
  spec.mutable_eval()->clear_adamw_lrs();
  spec.mutable_eval()->add_adamw_lrs(0.01f);
  return spec;
}

// Runs outer steps of an ELO core to the end of its budget with zero
// gradients, a result from each shard a step.
void RunOuterSteps(JobCore& core, const v1::JobSpec& spec) {
  auto any = [](const std::string&) { return true; };
  const int64_t d = SmallFcLopt(spec.lopt()).theta_size();
  while (core.Step() < core.Total()) {
    std::vector<CoreUnit> units;
    while (auto u = core.Start(Worker("a"), true, any)) {
      ASSERT_EQ(u->unit.algorithm(), v1::ELO_PES) << "no meta-test before the last step";
      units.push_back(*u);
    }
    ASSERT_FALSE(units.empty());
    for (const auto& u : units) {
      CoreVerdict v = core.Accept(EloResult(u, torch::zeros({d})), u.token, NamedTensors{});
      ASSERT_NE(v.kind, CoreVerdict::kRejected) << v.error;
    }
  }
}

// A meta-test result as a worker would send it: its info and its payload's
// files.
struct MetaTestReply {
  v1::WorkResult result;
  NamedTensors files;
};
MetaTestReply GoodMetaTestReply(int64_t version, int64_t steps) {
  MetaTestReply m;
  auto* info = m.result.mutable_meta_test();
  info->set_theta_version(version);
  info->set_runs(2);
  auto add = [&](const std::string& name, const std::string& bytes) {
    info->add_files(name);
    m.files.emplace_back(MetaTestFileTensorName(name), StringTensor(bytes));
  };
  add("report.json", absl::StrCat("{\"task\": \"q\", \"steps\": ", steps,
                                  ", \"runs\": [{\"optimizer\": \"lopt\"}, "
                                  "{\"optimizer\": \"adamw\"}]}\n"));
  add("table.txt", "meta-test: q\n");
  add("curves.csv", "optimizer,lr,seed,step,train_loss\n");
  return m;
}

// ELO's meta-test is a unit a worker runs, after the last outer step: out
// once with the final theta, again after an abandon, its result checked
// (version, files, report), its files for eval/; the job is Done only once
// it is in, and a restored core asks for it again unless it was.
TEST(JobCore, EloMetaTestIsAUnitOfItsOwn) {
  const v1::JobSpec spec = MetaTestedSpec();
  JobCoreOptions on;
  on.meta_test = true;
  auto core = MakeJobCore(spec, on);
  auto any = [](const std::string&) { return true; };
  RunOuterSteps(*core, spec);
  EXPECT_EQ(core->Step(), 2);
  EXPECT_FALSE(core->Done()) << "the meta-test is not in";
  const NamedTensors before_report = core->SaveState();

  EXPECT_FALSE(core->Start(Worker("a"), /*can_take_payload=*/false, any));
  auto m = core->Start(Worker("a"), true, any);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->unit.algorithm(), v1::ELO_META_TEST);
  EXPECT_EQ(m->unit.theta_version(), 2);
  EXPECT_GT(m->token, 0);
  ASSERT_TRUE(m->has_payload);
  auto theta = Find(m->payload, "theta");
  ASSERT_TRUE(theta.ok()) << theta.status();
  EXPECT_EQ(theta->numel(), SmallFcLopt(spec.lopt()).theta_size());
  EXPECT_FALSE(core->Start(Worker("b"), true, any)) << "one meta-test, out once";

  MetaTestReply good = GoodMetaTestReply(2, 20);
  auto refused = [&](const v1::WorkResult& r, const NamedTensors& files, const std::string& why) {
    CoreVerdict v = core->Accept(r, m->token, files);
    EXPECT_EQ(v.kind, CoreVerdict::kRejected) << why;
    EXPECT_EQ(v.error.code(), absl::StatusCode::kInvalidArgument) << v.error;
    EXPECT_NE(std::string(v.error.message()).find(why), std::string::npos) << v.error;
    EXPECT_TRUE(v.file_writes.empty());
    EXPECT_FALSE(core->Done());
  };
  refused(v1::WorkResult(), good.files, "must carry meta_test");
  v1::WorkResult r = good.result;
  r.mutable_meta_test()->set_theta_version(1);
  refused(r, good.files, "of theta version 1 but version 2 was sent");
  // A file missing, a file that is not the report's, a tensor no file names.
  r = good.result;
  r.mutable_meta_test()->mutable_files()->RemoveLast();
  NamedTensors files = good.files;
  files.pop_back();
  refused(r, files, "lacks curves.csv");
  r = good.result;
  r.mutable_meta_test()->add_files("../../checkpoint.pt");
  files = good.files;
  files.emplace_back(MetaTestFileTensorName("../../checkpoint.pt"), StringTensor("x"));
  refused(r, files, "not one of the report's");
  files = good.files;
  files.emplace_back("file/extra", StringTensor("x"));
  refused(good.result, files, "which no file of it names");
  // A report that is not one, or not of the job's meta-test.
  files = good.files;
  files[0].second = StringTensor("{\"task\": ");
  refused(good.result, files, "report.json is not JSON");
  files[0].second = StringTensor("{\"task\": \"q\", \"steps\": 400, \"runs\": [{}, {}]}");
  refused(good.result, files, "of 400 inner steps but the job's meta-test runs 20");
  files[0].second = StringTensor("{\"task\": \"q\", \"steps\": 20, \"runs\": [{}]}");
  refused(good.result, files, "has 1 runs but the result says 2");
  files[0].second = torch::zeros({3}, torch::kFloat32);
  refused(good.result, files, "must be a uint8 vector");
  // A payload that did not arrive whole.
  CoreVerdict v = core->Accept(good.result, m->token, absl::DataLossError("chunk 2 fails its checksum"));
  EXPECT_EQ(v.reason, "corrupt_payload");

  // Abandoned (its worker left): it goes out again, under a new token.
  core->Abandon(m->shard, m->token, /*worker_gone=*/true);
  auto again = core->Start(Worker("c"), true, any);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->unit.algorithm(), v1::ELO_META_TEST);
  EXPECT_EQ(again->unit.theta_version(), 2);
  EXPECT_NE(again->token, m->token);
  EXPECT_EQ(core->Accept(good.result, m->token, good.files).kind, CoreVerdict::kRejected)
      << "the abandoned unit's token";

  v = core->Accept(good.result, again->token, good.files);
  ASSERT_EQ(v.kind, CoreVerdict::kAccepted) << v.error;
  ASSERT_EQ(v.file_writes.size(), 3u);
  EXPECT_EQ(v.file_writes[0].file, "eval/report.json");
  EXPECT_EQ(v.file_writes[1].file, "eval/table.txt");
  EXPECT_EQ(v.file_writes[1].bytes, "meta-test: q\n");
  EXPECT_EQ(v.file_writes[2].file, "eval/curves.csv");
  EXPECT_EQ(v.log_message, "meta-test report");
  EXPECT_EQ(core->Step(), 2) << "a meta-test is no update";
  EXPECT_TRUE(core->Done());
  EXPECT_FALSE(core->Start(Worker("a"), true, any)) << "nothing left to run";
  EXPECT_EQ(core->Accept(good.result, again->token, good.files).kind, CoreVerdict::kRejected)
      << "a second report for the same unit";

  // Restored from a checkpoint after the report: done, nothing to run.
  auto after = MakeJobCore(spec, on);
  ASSERT_TRUE(after->LoadState(core->SaveState()).ok());
  EXPECT_TRUE(after->Done());
  EXPECT_FALSE(after->Start(Worker("a"), true, any));
  // From one after the last step but before the report: asks for it again.
  auto before = MakeJobCore(spec, on);
  ASSERT_TRUE(before->LoadState(before_report).ok());
  EXPECT_EQ(before->Step(), 2);
  EXPECT_FALSE(before->Done());
  auto resent = before->Start(Worker("a"), true, any);
  ASSERT_TRUE(resent);
  EXPECT_EQ(resent->unit.algorithm(), v1::ELO_META_TEST);
  EXPECT_EQ(resent->unit.theta_version(), 2);
}

// Without meta-testing (LearnerOptions::meta_test off: tests, benchmarks) an
// ELO job is done with its last outer step and hands out nothing after it.
TEST(JobCore, EloWithoutMetaTestIsDoneAfterItsLastStep) {
  const v1::JobSpec spec = MetaTestedSpec();
  auto core = MakeJobCore(spec);
  RunOuterSteps(*core, spec);
  EXPECT_TRUE(core->Done());
  EXPECT_FALSE(core->Start(Worker("a"), true, [](const std::string&) { return true; }));
}

// A truncation still out when the last outer step is applied comes back
// while the job waits for its meta-test: dropped as stale, no step beyond
// the budget.
TEST(JobCore, EloTruncationsAfterTheLastStepAreDropped) {
  v1::JobSpec spec = MetaTestedSpec();
  spec.mutable_cluster()->set_results_per_step(1);
  spec.mutable_cluster()->set_max_staleness(4);
  JobCoreOptions on;
  on.meta_test = true;
  auto core = MakeJobCore(spec, on);
  auto any = [](const std::string&) { return true; };
  const int64_t d = SmallFcLopt(spec.lopt()).theta_size();
  auto a = core->Start(Worker("a"), true, any);
  auto b = core->Start(Worker("b"), true, any);
  ASSERT_TRUE(a && b);
  auto result = [&](const CoreUnit& u) { return EloResult(u, torch::zeros({d})); };
  EXPECT_EQ(core->Accept(result(*a), a->token, NamedTensors{}).kind, CoreVerdict::kUpdated);
  auto a2 = core->Start(Worker("a"), true, any);
  ASSERT_TRUE(a2);
  EXPECT_EQ(core->Accept(result(*a2), a2->token, NamedTensors{}).kind, CoreVerdict::kUpdated);
  EXPECT_EQ(core->Step(), 2);
  EXPECT_EQ(core->Accept(result(*b), b->token, NamedTensors{}).kind, CoreVerdict::kDroppedStale);
  EXPECT_EQ(core->Step(), 2);
  auto m = core->Start(Worker("b"), true, any);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->unit.algorithm(), v1::ELO_META_TEST);
}

// The real worker runs the core's meta-test unit (as `lopt eval` would, on a
// small quadratic) and the core takes its result: the two sides agree on the
// wire, and a unit without its theta is refused by the worker.
TEST(JobCore, TheWorkerRunsTheMetaTestUnitAndTheCoreTakesItsFiles) {
  const v1::JobSpec spec = MetaTestedSpec();
  JobCoreOptions on;
  on.meta_test = true;
  auto core = MakeJobCore(spec, on);
  RunOuterSteps(*core, spec);
  auto m = core->Start(Worker("a"), true, [](const std::string&) { return true; });
  ASSERT_TRUE(m);
  v1::WorkUnit unit = m->unit;
  unit.set_unit_id(7);
  unit.set_job_id("core-job");
  *unit.mutable_job() = spec;
  // Over the wire: the payload's bytes and back.
  std::string bytes;
  *unit.mutable_payload() = EncodePayload(m->payload, &bytes);
  auto receiver = PayloadReceiver::Create(unit.payload());
  ASSERT_TRUE(receiver.ok()) << receiver.status();
  for (auto& c : MakeChunks(bytes, kChunkBytes)) ASSERT_TRUE(receiver->Add(c).ok());
  auto payload = receiver->Finish();
  ASSERT_TRUE(payload.ok()) << payload.status();

  WorkerOptions wo;
  wo.name = "meta-tester";
  lopt::Worker worker(wo);
  std::string result_bytes;
  v1::WorkResult r = worker.RunUnit(unit, *payload, &result_bytes);
  ASSERT_TRUE(r.error().empty()) << r.error();
  EXPECT_EQ(r.unit_id(), 7u);
  EXPECT_EQ(r.meta_test().theta_version(), 2);
  EXPECT_EQ(r.meta_test().runs(), 3);  // lopt, lopt_untrained and AdamW, one seed each
  EXPECT_EQ(r.particle_steps(), 3 * 20);
  ASSERT_TRUE(r.has_payload());
  auto back = PayloadReceiver::Create(r.payload());
  ASSERT_TRUE(back.ok()) << back.status();
  for (auto& c : MakeChunks(result_bytes, kChunkBytes)) ASSERT_TRUE(back->Add(c).ok());
  auto files = back->Finish();
  ASSERT_TRUE(files.ok()) << files.status();

  CoreVerdict v = core->Accept(r, m->token, *files);
  ASSERT_EQ(v.kind, CoreVerdict::kAccepted) << v.error;
  EXPECT_TRUE(core->Done());
  std::map<std::string, std::string> written;
  for (const auto& w : v.file_writes) written[w.file] = w.bytes;
  ASSERT_TRUE(written.count("eval/report.json"));
  EXPECT_NE(written["eval/report.json"].find("\"optimizer\": \"lopt_untrained\""), std::string::npos);
  ASSERT_TRUE(written.count("eval/table.txt"));
  // The table names the files where the job's directory keeps them, not
  // where the worker wrote them.
  EXPECT_NE(written["eval/table.txt"].find("wrote eval/report.json"), std::string::npos)
      << written["eval/table.txt"];
  EXPECT_EQ(written["eval/table.txt"].find("/tmp"), std::string::npos) << written["eval/table.txt"];
  EXPECT_TRUE(written.count("eval/curves.csv"));

  // The worker refuses a unit without its theta, with a reason.
  v1::WorkResult bad = worker.RunUnit(unit, NamedTensors{}, &result_bytes);
  EXPECT_NE(bad.error().find("has no theta"), std::string::npos) << bad.error();
  EXPECT_FALSE(bad.has_payload());
}

}  // namespace
}  // namespace lopt
