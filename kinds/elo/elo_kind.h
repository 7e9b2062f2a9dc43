// ELO as a job kind (kinds/job_kind.h): PES meta-training of a learned
// optimizer. Its spec is the job's top level (pes, lopt, budget, elo, ...):
// the default kind, owning every job that sets no other kind's section. Its
// parts, one file each:
//   elo_core.cc     the learner core (over learner/elo_job.h)
//   elo_runners.cc  the worker's ELO_PES and ELO_META_TEST runners
//   elo_kind.cc     the definition that ties them together
#pragma once

#include <memory>

#include "kinds/job_kind.h"

namespace lopt {

const JobKind& EloKind();

std::unique_ptr<JobCore> MakeEloCore(const v1::JobSpec& spec, const JobCoreOptions& options);
std::unique_ptr<UnitRunner> MakeEloPesRunner(const UnitRunnerEnv& env);
std::unique_ptr<UnitRunner> MakeEloMetaTestRunner(const UnitRunnerEnv& env);

}  // namespace lopt
