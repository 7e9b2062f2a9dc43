// The job-kind registry (kinds/job_kind.h): kinds that overlap are refused,
// every unit kind of the proto has a runner, a spec no kind owns is an
// INVALID_ARGUMENT that says so, and the learner, the worker and local mode
// pick a job's kind from its spec and a unit's from its algorithm.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "common/spec/job_spec.h"
#include "google/protobuf/descriptor.h"
#include "kinds/elo/elo_kind.h"
#include "kinds/job_kind.h"
#include "kinds/lhopt/lhopt_kind.h"
#include "worker/worker.h"

namespace lopt {
namespace {

v1::JobSpec EloSpec() { return JobFromText("", "elo").value(); }

v1::JobSpec LhoptSpec() {
  auto job = JobFromText(
      "name: \"kinds\" task { noisy_quadratic { min_dim: 5 max_dim: 10 } }\n"
      "lhopt { tasks { task { noisy_quadratic { min_dim: 5 max_dim: 10 } } weight: 1 }\n"
      "  min_inner_steps: 20 max_inner_steps: 30 min_decisions: 2 max_decisions: 4\n"
      "  particles: 2 episodes_per_iteration: 2 iterations: 2 hidden_size: 8 }",
      "lhopt");
  EXPECT_TRUE(job.ok()) << job.status();
  return *job;
}

bool Contains(const absl::Status& s, const std::string& text) {
  return std::string(s.message()).find(text) != std::string::npos;
}

TEST(JobKinds, TwoKindsClaimingOneSpecAreRefused) {
  // Two kinds of one section: a job with it set would have two owners.
  auto same_section = JobKindRegistry::Create({&LhoptKind(), &LhoptKind()});
  ASSERT_EQ(same_section.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(same_section.status(), "two job kinds claim the spec section 'lhopt'"))
      << same_section.status();
  // Two default kinds: a job that sets no section would have two owners.
  auto two_defaults = JobKindRegistry::Create({&EloKind(), &EloKind()});
  ASSERT_EQ(two_defaults.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(two_defaults.status(), "one default kind at most")) << two_defaults.status();
  // lopt's own kinds do not overlap.
  EXPECT_TRUE(JobKindRegistry::Create({&EloKind(), &LhoptKind()}).ok());
  EXPECT_EQ(JobKinds().kinds().size(), 2u);
}

TEST(JobKinds, EveryUnitKindOfTheProtoHasARunner) {
  const auto* algorithms = v1::Algorithm_descriptor();
  UnitRunnerEnv env;
  for (int i = 0; i < algorithms->value_count(); ++i) {
    const auto a = static_cast<v1::Algorithm>(algorithms->value(i)->number());
    if (a == v1::ALGORITHM_UNSPECIFIED) continue;
    const JobKind* kind = JobKinds().KindOfUnit(a);
    ASSERT_NE(kind, nullptr) << v1::Algorithm_Name(a) << " has no kind";
    EXPECT_NE(kind->MakeRunner(a, env), nullptr) << v1::Algorithm_Name(a) << " has no runner";
  }
  EXPECT_EQ(JobKinds().KindOfUnit(v1::ALGORITHM_UNSPECIFIED), nullptr);
  EXPECT_EQ(JobKinds().UnitKindNames(), "ELO_PES, ELO_META_TEST, LHOPT_PPO and LHOPT_YARDSTICK");
}

TEST(JobKinds, ASpecNoKindOwnsIsInvalidArgument) {
  // Without its default kind, nothing owns a job that sets no section.
  auto lhopt_only = JobKindRegistry::Create({&LhoptKind()});
  ASSERT_TRUE(lhopt_only.ok()) << lhopt_only.status();
  auto kind = lhopt_only->KindOf(EloSpec());
  ASSERT_EQ(kind.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(kind.status(), "no job kind owns this job")) << kind.status();
  EXPECT_TRUE(Contains(kind.status(), "lhopt")) << kind.status();
  ASSERT_TRUE(lhopt_only->KindOf(LhoptSpec()).ok());
  EXPECT_EQ(*lhopt_only->KindOf(LhoptSpec()), &LhoptKind());
}

TEST(JobKinds, TheSpecPicksTheKindEverywhere) {
  // The registry agrees with the spec's own test of its section.
  for (const v1::JobSpec& spec : {EloSpec(), LhoptSpec()}) {
    auto kind = JobKinds().KindOf(spec);
    ASSERT_TRUE(kind.ok()) << kind.status();
    EXPECT_EQ(*kind, IsLhoptJob(spec) ? &LhoptKind() : &EloKind());
  }
  // The learner's core, by the kind.
  EXPECT_STREQ(MakeJobCore(EloSpec())->algorithm(), "elo_pes");
  EXPECT_STREQ(MakeJobCore(LhoptSpec())->algorithm(), "lhopt_ppo");
  // The units a kind's core issues are the kind's.
  EXPECT_EQ(JobKinds().KindOfUnit(v1::ELO_PES), &EloKind());
  EXPECT_EQ(JobKinds().KindOfUnit(v1::ELO_META_TEST), &EloKind());
  EXPECT_EQ(JobKinds().KindOfUnit(v1::LHOPT_PPO), &LhoptKind());
  EXPECT_EQ(JobKinds().KindOfUnit(v1::LHOPT_YARDSTICK), &LhoptKind());
  for (const v1::JobSpec& spec : {EloSpec(), LhoptSpec()}) {
    auto core = MakeJobCore(spec);
    v1::WorkerInfo w;
    w.set_name("w");
    auto unit = core->Start(w, /*can_take_payload=*/true, [](const std::string&) { return true; });
    ASSERT_TRUE(unit.has_value());
    EXPECT_EQ(JobKinds().KindOfUnit(unit->unit.algorithm()), *JobKinds().KindOf(spec))
        << v1::Algorithm_Name(unit->unit.algorithm());
  }
}

TEST(JobKinds, TheWorkerRunsAUnitByItsKindsRunner) {
  WorkerOptions o;
  o.name = "kinds";
  lopt::Worker worker(o);
  // An algorithm no kind issues: the worker names those it runs.
  v1::WorkUnit unknown;
  unknown.set_unit_id(1);
  unknown.set_algorithm(static_cast<v1::Algorithm>(99));
  v1::WorkResult r = worker.RunUnit(unknown);
  EXPECT_EQ(r.error(),
            "this worker runs ELO_PES, ELO_META_TEST, LHOPT_PPO and LHOPT_YARDSTICK units, not "
            "algorithm 99");
  // A unit whose runner takes a payload, sent without one, and the reverse.
  v1::WorkUnit lhopt;
  lhopt.set_unit_id(2);
  lhopt.set_algorithm(v1::LHOPT_PPO);
  *lhopt.mutable_job() = LhoptSpec();
  EXPECT_EQ(worker.RunUnit(lhopt).error(), "an LHOPT_PPO unit needs its payload");
  v1::WorkUnit elo;
  elo.set_unit_id(3);
  elo.set_algorithm(v1::ELO_PES);
  *elo.mutable_job() = EloSpec();
  std::string bytes;
  EXPECT_EQ(worker.RunUnit(elo, NamedTensors{}, &bytes).error(),
            "an ELO_PES unit carries no payload");
  // A unit whose job is of another kind than the unit's.
  v1::WorkUnit stick;
  stick.set_unit_id(4);
  stick.set_algorithm(v1::LHOPT_YARDSTICK);
  *stick.mutable_job() = EloSpec();
  EXPECT_EQ(worker.RunUnit(stick, NamedTensors{}, &bytes).error(),
            "an LHOPT_YARDSTICK unit's job is of kind 'elo', not 'lhopt'");
  // A payload that did not arrive: the error, before any runner is asked.
  EXPECT_EQ(worker.RunUnit(lhopt, absl::DataLossError("checksum mismatch"), &bytes).error(),
            "the unit's payload: checksum mismatch");
  EXPECT_EQ(worker.units_done(), 0);
}

}  // namespace
}  // namespace lopt
