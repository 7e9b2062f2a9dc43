// LHOPT as a job kind (kinds/job_kind.h): PPO training of a hyperparameter
// controller. Its spec section is JobSpec.lhopt. Its parts, one file each:
//   lhopt_core.cc     the learner core (over learner/lhopt_job.h)
//   lhopt_runners.cc  the worker's LHOPT_PPO and LHOPT_YARDSTICK runners
//   lhopt_kind.cc     the definition that ties them together (and words
//                     local mode's messages: kinds/local_driver.h runs it)
#pragma once

#include <memory>

#include "kinds/job_kind.h"

namespace lopt {

const JobKind& LhoptKind();

std::unique_ptr<JobCore> MakeLhoptCore(const v1::JobSpec& spec);
std::unique_ptr<UnitRunner> MakeLhoptPpoRunner(const UnitRunnerEnv& env);
std::unique_ptr<UnitRunner> MakeLhoptYardstickRunner(const UnitRunnerEnv& env);

}  // namespace lopt
