// lopt: meta-train learned optimizers in local mode and evaluate them.
//
//   lopt train [--job FILE] [--out DIR] ...     meta-train (resumes from DIR's checkpoint)
//   lopt eval --optimizer FILE [--job FILE] ... meta-test against AdamW
//   lopt validate FILE                          check a job file
//   lopt print-default-job                      the embedded default job
#include <cstdio>
#include <iostream>
#include <string>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/flags.h"
#include "cli/local_mode.h"
#include "common/job_spec.h"
#include "common/optimizer_file.h"
#include "common/progress.h"
#include "common/runtime.h"
#include "common/small_fc_lopt.h"
#include "common/task.h"
#include "google/protobuf/text_format.h"
#include "learner/elo_learner.h"
#include "worker/meta_test.h"

namespace lopt {
namespace {

constexpr char kUsage[] = R"(lopt: meta-train learned optimizers (ELO: small_fc_lopt + PES + replay buffer
+ behaviour cloning) on one machine, and compare them with AdamW.

usage:
  lopt train [--job FILE] [--out DIR] [--outer-steps N] [--seed N] [--threads N]
             [--device cpu|cuda[:N]] [--fresh] [--no-eval] [--no-progress]
      Meta-trains the job (default: the embedded job, see print-default-job);
      --device cuda runs the inner loops on a GPU (builds with LOPT_CUDA).
      Writes DIR/optimizer.lopt, DIR/summary.json, DIR/metrics.csv and a
      checkpoint it resumes from; then runs `lopt eval` into DIR/eval.
      DIR defaults to runs/<job name>.
  lopt eval --optimizer FILE [--job FILE] [--out DIR] [--steps N] [--seeds N]
            [--threads N] [--no-progress]
      Meta-test: trains fresh optimizees of the job's task (default: the job
      the optimizer was trained with) with the trained optimizer, the
      untrained one, and AdamW over the learning-rate grid; writes
      report.json, curves.csv, curves.png and prints a table.
  lopt validate FILE         Checks a text-proto job file; prints the filled-in job.
  lopt print-default-job     Prints the embedded default job.
)";

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "lopt: %s\n", std::string(s.message()).c_str());
  return s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

absl::StatusOr<v1::JobSpec> JobFromFlags(const Flags& f) {
  absl::StatusOr<v1::JobSpec> job = f.Has("job") ? LoadJobFile(f.Get("job"))
                                                 : JobFromText(DefaultJobText(), "<default job>");
  if (!job.ok()) return job;
  auto steps = f.GetInt("outer-steps", -1);
  if (!steps.ok()) return steps.status();
  if (*steps >= 0) job->mutable_budget()->set_outer_steps(*steps);
  auto seed = f.GetInt("seed", -1);
  if (!seed.ok()) return seed.status();
  if (*seed >= 0) job->set_seed(*seed);
  if (absl::Status s = ValidateJob(*job); !s.ok()) return s;
  return job;
}

absl::Status SetThreads(const Flags& f) {
  auto threads = f.GetInt("threads", 0);
  if (!threads.ok()) return threads.status();
  ConfigureRuntime(int(*threads));
  return absl::OkStatus();
}

absl::Status Eval(const v1::JobSpec& job_in, const std::string& optimizer_path,
                  const std::string& out_dir, const Flags& f) {
  auto trained = LoadOptimizerFile(optimizer_path);
  if (!trained.ok()) return trained.status();
  v1::JobSpec job = job_in;
  auto steps = f.GetInt("steps", EvalSteps(job));
  auto seeds = f.GetInt("seeds", job.eval().seeds());
  if (!steps.ok()) return steps.status();
  if (!seeds.ok()) return seeds.status();
  if (*steps <= 0 || *seeds <= 0)
    return absl::InvalidArgumentError("--steps and --seeds must be > 0");
  auto task = MakeTask(job.task(), job.seed());
  if (!task.ok()) return task.status();

  MetaTestConfig c;
  c.steps = *steps;
  c.seeds = *seeds;
  c.adamw_lrs.assign(job.eval().adamw_lrs().begin(), job.eval().adamw_lrs().end());
  c.adamw_weight_decay = job.eval().adamw_weight_decay();
  c.record_every = std::min<int64_t>(job.eval().record_every(), c.steps);
  c.seed = job.seed() + 1000003;  // fresh optimizees, not meta-training's

  // The untrained optimizer is the theta meta-training started from.
  std::vector<NamedLopt> lopts = {
      {"lopt", trained->file.options(), trained->theta},
      {"lopt_untrained", trained->file.options(), InitialTheta(trained->file.job())}};
  // RunMetaTest trains every optimizer in turn: (learned optimizers + AdamW) x steps.
  ProgressBar bar("meta-test", c.steps * int64_t(lopts.size() + 1), !f.Has("no-progress"));
  MetaTestReport report = RunMetaTest(**task, c, lopts, [&](int64_t done, int64_t) {
    bar.Update(done, "inner steps");
  });
  bar.Finish("");
  auto table = WriteMetaTestReport(report, out_dir);
  if (!table.ok()) return table.status();
  std::printf("%s", table->c_str());
  return absl::OkStatus();
}

int Main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h" ||
      std::string(argv[1]) == "help") {
    std::printf("%s", kUsage);
    return argc < 2 ? 2 : 0;
  }
  std::string cmd = argv[1];
  if (cmd == "print-default-job") {
    std::printf("%s", DefaultJobText());
    return 0;
  }
  if (cmd == "validate") {
    if (argc != 3) return Fail(absl::InvalidArgumentError("usage: lopt validate FILE"));
    auto job = LoadJobFile(argv[2]);
    if (!job.ok()) return Fail(job.status());
    std::string text;
    google::protobuf::TextFormat::PrintToString(*job, &text);
    std::printf("%s: valid\n%s", argv[2], text.c_str());
    return 0;
  }
  if (cmd == "train") {
    auto f = ParseFlags(argc, argv, 2, {"job", "out", "outer-steps", "seed", "threads", "device"},
                        {"fresh", "no-eval", "no-progress", "help"});
    if (!f.ok()) return Fail(f.status());
    if (f->Has("help")) return std::printf("%s", kUsage), 0;
    if (auto s = SetThreads(*f); !s.ok()) return Fail(s);
    auto job = JobFromFlags(*f);
    if (!job.ok()) return Fail(job.status());
    LocalTrainOptions o;
    o.out_dir = f->Get("out", "runs/" + job->name());
    o.fresh = f->Has("fresh");
    o.progress = !f->Has("no-progress");
    o.device = f->Get("device", "cpu");
    std::fprintf(stderr, "lopt train: job '%s', %d outer steps, %d tasks x 2 particles, truncation %d, out %s\n",
                 job->name().c_str(), job->budget().outer_steps(), job->pes().num_tasks(),
                 job->pes().truncation_length(), o.out_dir.c_str());
    auto summary = RunLocalTraining(*job, o);
    if (!summary.ok()) return Fail(summary.status());
    std::printf("trained %lld outer steps in %s (%.0f inner particle-steps/s)\n"
                "meta-loss %.4f -> %.4f, task loss %.4f -> %.4f\noptimizer: %s\n",
                (long long)summary->outer_steps, FormatDuration(summary->wall_seconds).c_str(),
                summary->particle_steps_per_second, summary->meta_loss_start,
                summary->meta_loss_end, summary->task_loss_start, summary->task_loss_end,
                summary->optimizer_path.c_str());
    if (f->Has("no-eval")) return 0;
    if (auto s = Eval(*job, summary->optimizer_path, o.out_dir + "/eval", *f); !s.ok())
      return Fail(s);
    return 0;
  }
  if (cmd == "eval") {
    auto f = ParseFlags(argc, argv, 2, {"optimizer", "job", "out", "steps", "seeds", "threads"},
                        {"no-progress", "help"});
    if (!f.ok()) return Fail(f.status());
    if (f->Has("help")) return std::printf("%s", kUsage), 0;
    if (!f->Has("optimizer"))
      return Fail(absl::InvalidArgumentError("lopt eval needs --optimizer FILE"));
    if (auto s = SetThreads(*f); !s.ok()) return Fail(s);
    v1::JobSpec job;
    if (f->Has("job")) {
      auto j = LoadJobFile(f->Get("job"));
      if (!j.ok()) return Fail(j.status());
      job = *j;
    } else {
      auto trained = LoadOptimizerFile(f->Get("optimizer"));
      if (!trained.ok()) return Fail(trained.status());
      job = trained->file.job();
      FillJobDefaults(&job);
      if (auto s = ValidateJob(job); !s.ok()) return Fail(s);
    }
    std::string out = f->Get("out", "runs/eval");
    if (auto s = Eval(job, f->Get("optimizer"), out, *f); !s.ok()) return Fail(s);
    return 0;
  }
  return Fail(absl::InvalidArgumentError(absl::StrCat("unknown command '", cmd, "' (see lopt --help)")));
}

}  // namespace
}  // namespace lopt

int main(int argc, char** argv) {
  try {
    return lopt::Main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lopt: internal error: %s\n", e.what());
    return 1;
  }
}
