// The bar of the ELO issues, as a test (label: slow, about 10 minutes on
// 2 cores): the embedded default job, meta-trained from scratch, gives an
// optimizer that beats its untrained self, Adam at lr 1e-3 (the BC teacher)
// and the best constant AdamW of a grid around AdamW's optimum in final
// training loss at 10x its meta-training horizon, without diverging.
#include <gtest/gtest.h>

#include <map>

#include "cli/local_mode.h"
#include "common/elo/evaluation.h"
#include "common/elo/optimizer_file.h"
#include "common/elo/small_fc_lopt.h"
#include "common/tasks/task.h"
#include "common/util/runtime.h"
#include "kinds/job_door.h"
#include "learner/elo_learner.h"

namespace lopt {
namespace {

TEST(DefaultJob, TrainedOptimizerBeatsUntrainedTeacherAndBestConstantAdamWAtTenTimesTheHorizon) {
  ConfigureRuntime();
  auto job = JobFromText(DefaultJobText(), "<default job>").value();
  LocalTrainOptions o;
  o.out_dir = ::testing::TempDir() + "/default_job_bar";
  o.fresh = true;
  auto summary = RunLocalTraining(job, o);
  ASSERT_TRUE(summary.ok()) << summary.status();
  auto trained = LoadOptimizerFile(summary->trained_file).value();

  auto task = MakeTask(job.task(), job.seed()).value();
  MetaTestConfig c;
  c.steps = EvalSteps(job);
  c.seeds = 3;
  c.adamw_lrs = {3e-2f, 2e-2f, 1e-2f, 7e-3f, 1e-3f};
  c.seed = job.seed() + kMetaTestSeedOffset;
  MetaTestReport r = RunMetaTest(*task, c,
                                 {{"lopt", job.lopt(), trained.theta},
                                  {"lopt_untrained", job.lopt(), InitialTheta(job)}});
  std::map<std::string, double> mean;  // by optimizer, and AdamW's by lr
  for (const auto& run : r.runs) {
    EXPECT_FALSE(run.diverged) << run.optimizer;
    const std::string key =
        run.optimizer == "adamw" ? "adamw " + std::to_string(run.lr) : run.optimizer;
    mean[key] += run.final_train_loss / c.seeds;
  }
  EXPECT_LT(mean["lopt"], mean["lopt_untrained"]);
  for (const auto& [key, loss] : mean)
    if (key.rfind("adamw ", 0) == 0) EXPECT_LT(mean["lopt"], loss) << "lopt vs " << key;
}

}  // namespace
}  // namespace lopt
