// The job-kind registry (kinds/job_kind.h): kinds that overlap are refused,
// every unit kind of the proto has a runner, a spec no kind owns is an
// INVALID_ARGUMENT that says so, the learner, the worker and local mode
// pick a job's kind from its spec and a unit's from its algorithm, and the
// one door (kinds/job_door.h) has each job's own sections checked by its
// kind, the one the registry finds.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <set>
#include <string>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "common/util/files.h"
#include "google/protobuf/descriptor.h"
#include "kinds/elo/elo_kind.h"
#include "kinds/job_door.h"
#include "kinds/job_kind.h"
#include "kinds/lhopt/lhopt_kind.h"
#include "worker/worker.h"

namespace lopt {
namespace {

v1::JobSpec EloSpec() { return JobFromText("", "elo").value(); }

// An LHOPT job's text, `lhopt_extra` added to its lhopt section.
std::string LhoptText(const std::string& lhopt_extra = "") {
  return "name: \"kinds\" task { noisy_quadratic { min_dim: 5 max_dim: 10 } }\n"
         "lhopt { tasks { task { noisy_quadratic { min_dim: 5 max_dim: 10 } } weight: 1 }\n"
         "  min_inner_steps: 20 max_inner_steps: 30 min_decisions: 2 max_decisions: 4\n"
         "  particles: 2 episodes_per_iteration: 2 iterations: 2 hidden_size: 8 " +
         lhopt_extra + "}";
}

v1::JobSpec LhoptSpec() {
  auto job = JobFromText(LhoptText(), "lhopt");
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

// A parsed spec with its defaults, not validated: what the door is given.
v1::JobSpec Unvalidated(const std::string& text) {
  auto job = ParseJobText(text, "unvalidated");
  EXPECT_TRUE(job.ok()) << job.status();
  FillJobDefaults(&*job);
  return *job;
}

// A kind's own section is checked by the kind: the shared checks let the bad
// field through, the kind's ValidateSpec names it, and every door a job
// comes in by (a job file, job text, a spec, a worker's unit) gives the
// kind's message, the same for ELO and for LHOPT.
TEST(JobKinds, EachKindValidatesItsOwnSectionThroughTheOneDoor) {
  const std::string elo_text = "name: \"kinds\" elo { buffer { enabled: true capacity: 0 } }";
  const std::string elo_error = "elo.buffer.capacity must be in [1, 1.04858e+06], got 0";
  const std::string lhopt_text = LhoptText("ppo { clip: 1.5 } ");
  const std::string lhopt_error = "lhopt.ppo.clip must be in (0, 1), got 1.5";
  for (const auto& [text, kind, error] :
       {std::make_tuple(elo_text, &EloKind(), elo_error),
        std::make_tuple(lhopt_text, &LhoptKind(), lhopt_error)}) {
    const v1::JobSpec spec = Unvalidated(text);
    ASSERT_EQ(*JobKinds().KindOf(spec), kind);
    EXPECT_TRUE(ValidateSharedSections(spec).ok()) << ValidateSharedSections(spec);
    EXPECT_EQ(kind->ValidateSpec(spec, JobUse::kMetaTrain), absl::InvalidArgumentError(error));
    EXPECT_EQ(ValidateJob(spec), absl::InvalidArgumentError(error));
    EXPECT_EQ(ValidateJob(spec, JobUse::kMetaTest), absl::InvalidArgumentError(error));
    EXPECT_EQ(JobFromText(text, "job.textproto").status(),
              absl::InvalidArgumentError("job.textproto: " + error));
    const std::string path = absl::StrCat(::testing::TempDir(), "job_kinds_door_", getpid(), "_",
                                          kind->name(), ".textproto");
    ASSERT_TRUE(WriteFileAtomically(path, text).ok());
    EXPECT_EQ(LoadJobFile(path).status(), absl::InvalidArgumentError(path + ": " + error));
    std::remove(path.c_str());
  }
  // A worker checks a unit's job at the same door.
  WorkerOptions o;
  o.name = "door";
  lopt::Worker worker(o);
  v1::WorkUnit elo;
  elo.set_unit_id(1);
  elo.set_job_id("j");
  elo.set_algorithm(v1::ELO_PES);
  *elo.mutable_job() = Unvalidated(elo_text);
  EXPECT_EQ(worker.RunUnit(elo).error(), elo_error);
  // ELO's sections are ELO's: an LHOPT job, which has no use for them, is
  // not held to them.
  EXPECT_TRUE(JobFromText(LhoptText() + " elo { buffer { enabled: true capacity: 0 } }", "j").ok());
}

// The door asks the registry which kind validates a job: a registry without
// LHOPT leaves the lhopt section to no kind (the ELO default owns the job,
// and ELO does not read it), one without the default kind owns no ELO job.
TEST(JobKinds, TheDoorAsksTheRegistryWhichKindValidates) {
  const v1::JobSpec bad_lhopt = Unvalidated(LhoptText("ppo { clip: 1.5 } "));
  auto elo_only = JobKindRegistry::Create({&EloKind()});
  auto lhopt_only = JobKindRegistry::Create({&LhoptKind()});
  auto both = JobKindRegistry::Create({&EloKind(), &LhoptKind()});
  ASSERT_TRUE(elo_only.ok() && lhopt_only.ok() && both.ok());
  EXPECT_EQ(ValidateJob(bad_lhopt, JobUse::kMetaTrain, *both).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateJob(bad_lhopt, JobUse::kMetaTrain, *lhopt_only).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(ValidateJob(bad_lhopt, JobUse::kMetaTrain, *elo_only).ok());
  EXPECT_TRUE(ValidateJob(EloSpec(), JobUse::kMetaTrain, *both).ok());
  const absl::Status unowned = ValidateJob(EloSpec(), JobUse::kMetaTrain, *lhopt_only);
  EXPECT_EQ(unowned.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(unowned, "no job kind owns this job")) << unowned;
}

}  // namespace
}  // namespace lopt
