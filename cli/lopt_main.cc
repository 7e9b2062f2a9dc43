// lopt: meta-train learned optimizers in local mode and evaluate them.
//
//   lopt train [--job FILE] [--out DIR] ...     meta-train (resumes from DIR's checkpoint)
//   lopt eval --optimizer FILE [--job FILE] ... meta-test against AdamW
//   lopt schedule --controller FILE --job FILE  export an LHOPT schedule
//   lopt eval --schedule|--controller FILE --job FILE   LHOPT against AdamW, cosine
//   lopt validate FILE                          check a job file
//   lopt gen-movielens --out DIR                synthetic MovieLens-1M for neumf
//   lopt gen-speech --out DIR                   synthetic spoken corpus for speech_ctc
//   lopt print-default-job                      the embedded default job
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <string>

#include <torch/torch.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/exit_code.h"
#include "cli/inspect_compare.h"
#include "cli/large_eval_mode.h"
#include "cli/select_mode.h"
#include "cli/lhopt_mode.h"
#include "cli/local_mode.h"
#include "common/elo/evaluation.h"
#include "common/elo/optimizer_file.h"
#include "common/elo/small_fc_lopt.h"
#include "common/lhopt/lhopt_schedule.h"
#include "common/tasks/movielens.h"
#include "common/tasks/task.h"
#include "common/util/checkpoint.h"
#include "common/util/flags.h"
#include "common/util/progress.h"
#include "common/util/runtime.h"
#include "common/tasks/speech_corpus.h"
#include "google/protobuf/text_format.h"
#include "kinds/job_door.h"
#include "kinds/job_kind.h"
#include "learner/elo_learner.h"
#include "learner/lhopt_job.h"

namespace lopt {
namespace {

constexpr char kUsage[] = R"(lopt: meta-train learned optimizers (ELO: small_fc_lopt + PES + replay buffer
+ behaviour cloning) on one machine, and compare them with AdamW.

usage:
  lopt train [--job FILE] [--out DIR] [--outer-steps N] [--seed N] [--threads N]
             [--device cpu|cuda[:N]] [--fresh] [--no-eval] [--no-progress]
      Meta-trains the job (default: the embedded job, see print-default-job);
      --device cuda runs the inner loops on a GPU (builds with LOPT_CUDA).
      Writes DIR/job.textproto, optimizer.lopt, summary.json, metrics.csv,
      training.png and a checkpoint it resumes from (the same command
      resumes; Ctrl-C stops with a checkpoint); then runs `lopt eval` into
      DIR/eval.
      DIR defaults to runs/<job name>.
  lopt eval --optimizer FILE [--job FILE] [--out DIR] [--steps N] [--seeds N]
            [--threads N] [--device cpu|cuda[:N]] [--lopt-options TEXT] [--no-progress]
      Meta-test: trains fresh optimizees of the job's task (default: the job
      the optimizer was trained with) with the trained optimizer, the
      untrained one, and AdamW over the learning-rate grid; writes
      report.json, curves.csv, curves.png and prints a table.
      --lopt-options 'warmup_fraction: 0.05 step_mult_schedule: COSINE'
      (a text LearnedOptimizerSpec merged into the file's) adds the trained
      optimizer with those options as "lopt_scheduled": ELO's step-multiplier
      schedule and weight decay at inference.
  lopt train --job LHOPT_JOB [--out DIR] [--iterations N] ...
      A job with an `lhopt` section trains an LHOPT controller with PPO:
      DIR/controller.lhopt, job.textproto, metrics.csv, rewards.png,
      summary.json, a checkpoint it resumes from (the same command resumes;
      Ctrl-C stops after the PPO iteration under way, with a checkpoint);
      then evaluates the controller into DIR/eval. --device cuda runs the
      episodes' inner training (tasks, CIAO) on the GPU; PPO stays on the CPU.
  lopt schedule --controller FILE --job FILE --out DIR [--steps N] [--decisions N] [--device D]
      Runs the controller greedily on the job's `task` and writes its
      hyperparameters over normalised progress: schedule.csv/json/png.
  lopt eval --schedule schedule.json --job FILE [--out DIR] [--steps N] [--seeds N]
  lopt eval --controller FILE --job FILE [--out DIR] [--steps N] [--seeds N] [--device D]
      Replays the schedule with CIAO (or runs the controller, and its untrained
      policy) on the job's `task` against CIAO's defaults and AdamW, constant
      and cosine-decayed, over the job's eval.adamw_lrs at the same budget.
  lopt eval-large --optimizer FILE [--gpus N] [--hidden 4096,4096] [--batch 1024] ...
      Meta-test on one big MLP, on one device or data-parallel over N GPUs
      (NCCL); see lopt eval-large --help.
  lopt select --run DIR [--steps N] [--seeds N] [--device D] [--lopt-options TEXT]
      Meta-validates the run's snapshots (budget.snapshot_every) on seeds of
      their own at 10x the horizon and keeps the best as
      DIR/optimizer.selected.lopt; see lopt select --help.
  lopt inspect FILE [--job]  What a .lopt or .lhopt file holds: architecture,
                             options, provenance (job, outer step, meta-loss).
  lopt compare RUN... [--names A,B] [--out DIR]
      Several runs' meta-test reports (RUN/eval/report.json) side by side:
      a table and DIR/compare.png.
  lopt gen-movielens --out DIR [--seed N] [--users 6040] [--items 3706]
                    [--interactions 1000209] [--rank 8]
      Writes DIR/ratings.dat, a synthetic set of MovieLens-1M's size in
      MovieLens' format (UserID::MovieID::Rating::Timestamp) for the neumf
      task family (task.neumf.data_path): a low-rank preference model with a
      Zipf-like item popularity, heavy-tailed user activity and timestamps.
      The same flags write the same bytes.
  lopt gen-speech --out DIR [--seed N] [--utterances 300] [--max-words 3]
                  [--sample-rate 16000]
      Writes a synthetic spoken digits-and-words corpus for the speech_ctc
      task family (task.speech_ctc.data_path) in LibriSpeech's layout:
      DIR/{train,test}/SPEAKER/CHAPTER/*.wav and *.trans.txt, spoken by
      espeak-ng (several voices, speeds and pitches) with sox for resampling
      and noise; the test split's speakers are unseen. Needs espeak-ng and
      sox on PATH. The same flags write the same bytes.
  lopt validate [--meta-test] FILE
                             Checks a text-proto job file (and that its data
                             paths exist here); prints the filled-in job.
                             --meta-test: as lopt eval loads it (no limit on
                             a meta-training unit's memory).
  lopt print-default-job     Prints the embedded default job.

--threads N sets LibTorch's CPU threads; without it a command uses one a core,
or at most 4 with --device cuda (its process mostly waits on the GPU, and
several such processes on one host would otherwise crowd the cores).
)";

int Fail(const absl::Status& s) { return FailCommand("lopt", s); }

// LoadControllerFile with errors a user can act on: why the file cannot be
// read, and --optimizer for a learned optimizer.
absl::StatusOr<LoadedController> LoadController(const std::string& path) {
  if (auto bytes = ReadFile(path, "controller file"); !bytes.ok()) return bytes.status();
  auto c = LoadControllerFile(path);
  if (!c.ok() && std::string(c.status().message()).find(kSmallFcLoptArchitecture) != std::string::npos)
    return absl::InvalidArgumentError(absl::StrCat(
        path, " is a learned optimizer (small_fc_lopt), not an LHOPT controller: pass it with "
              "--optimizer (lopt eval --optimizer ", path, ")"));
  return c;
}

absl::StatusOr<v1::JobSpec> JobFromFlags(const Flags& f) {
  absl::StatusOr<v1::JobSpec> job = f.Has("job") ? LoadJobFile(f.Get("job"))
                                                 : JobFromText(DefaultJobText(), "<default job>");
  if (!job.ok()) return job;
  auto steps = f.GetInt("outer-steps", -1);
  if (!steps.ok()) return steps.status();
  if (*steps >= 0) job->mutable_budget()->set_outer_steps(*steps);
  auto iters = f.GetInt("iterations", -1);
  if (!iters.ok()) return iters.status();
  if (*iters >= 0) {
    if (!job->has_lhopt()) return absl::InvalidArgumentError("--iterations applies to LHOPT jobs");
    job->mutable_lhopt()->set_iterations(*iters);
  }
  auto seed = f.GetInt("seed", -1);
  if (!seed.ok()) return seed.status();
  if (*seed >= 0) job->set_seed(*seed);
  if (absl::Status s = ValidateJob(*job); !s.ok()) return s;
  return job;
}

// --threads, else one a core on the CPU and a few for --device cuda (runtime.h).
absl::Status SetThreads(const Flags& f) {
  auto threads = f.GetInt("threads", 0);
  if (!threads.ok()) return threads.status();
  ConfigureRuntime(int(*threads), absl::StartsWith(f.Get("device", "cpu"), "cuda"));
  return absl::OkStatus();
}

absl::Status Eval(const v1::JobSpec& job, const std::string& optimizer_path,
                  const std::string& out_dir, const Flags& f) {
  MetaTestOptions o;
  auto steps = f.GetInt("steps", 0);
  auto seeds = f.GetInt("seeds", 0);
  if (!steps.ok()) return steps.status();
  if (!seeds.ok()) return seeds.status();
  if ((f.Has("steps") && *steps <= 0) || (f.Has("seeds") && *seeds <= 0))
    return absl::InvalidArgumentError("--steps and --seeds must be > 0");
  o.steps = *steps;
  o.seeds = *seeds;
  o.device = f.Get("device", "cpu");
  o.lopt_options = f.Get("lopt-options");
  std::unique_ptr<ProgressBar> bar;
  o.progress = [&](int64_t done, int64_t total) {
    if (!bar) bar = std::make_unique<ProgressBar>("meta-test", total, !f.Has("no-progress"));
    bar->Update(done, "inner steps");
  };
  auto table = RunAndWriteMetaTest(job, optimizer_path, out_dir, o);
  if (bar) bar->Finish("");
  if (!table.ok()) return table.status();
  std::printf("%s", table->c_str());
  return absl::OkStatus();
}

absl::Status EvalLhopt(const v1::JobSpec& job, const std::string& controller_path,
                       const std::string& schedule_path, const std::string& out_dir,
                       const Flags& f) {
  auto steps = f.GetInt("steps", EvalSteps(job));
  auto seeds = f.GetInt("seeds", job.eval().seeds());
  if (!steps.ok()) return steps.status();
  if (!seeds.ok()) return seeds.status();
  if (*steps <= 1 || *seeds <= 0)
    return absl::InvalidArgumentError("--steps must be > 1 and --seeds > 0");
  auto device = ParseDevice(f.Get("device", "cpu"));
  if (!device.ok()) return device.status();
  auto task = MakeTask(job.task(), job.seed(), *device);
  if (!task.ok()) return task.status();
  HparamEvalConfig c;
  c.steps = *steps;
  c.seeds = *seeds;
  c.record_every = std::min<int64_t>(job.eval().record_every(), c.steps);
  c.seed = job.seed() + kMetaTestSeedOffset;
  c.adamw_lrs.assign(job.eval().adamw_lrs().begin(), job.eval().adamw_lrs().end());
  c.adamw_weight_decay = job.eval().adamw_weight_decay();
  std::vector<NamedController> controllers;
  LoadedController trained;
  std::unique_ptr<LhoptJob> untrained;
  if (!controller_path.empty()) {
    auto loaded = LoadController(controller_path);
    if (!loaded.ok()) return loaded.status();
    trained = std::move(*loaded);
    c.controller_decisions = trained.file.job().lhopt().schedule_decisions();
    controllers.push_back({"controller", trained.policy.get(), trained.normalizer.get()});
    // The policy that training started from (same seed, same architecture),
    // acting with the trained input normaliser.
    v1::JobSpec tj = trained.file.job();
    FillJobDefaults(&tj);
    untrained = std::make_unique<LhoptJob>(tj);
    controllers.push_back({"controller_untrained", untrained->policy().get(), trained.normalizer.get()});
  }
  std::unique_ptr<v1::LhoptSchedule> schedule;
  if (!schedule_path.empty()) {
    auto s = LoadScheduleJson(schedule_path);
    if (!s.ok()) return s.status();
    schedule = std::make_unique<v1::LhoptSchedule>(*s);
  }
  std::fprintf(stderr, "lopt eval: %s, %lld steps x %lld seeds ...\n", (*task)->name().c_str(),
               (long long)c.steps, (long long)c.seeds);
  auto report = RunHparamEval(**task, c, controllers, schedule.get());
  if (!report.ok()) return report.status();
  auto table = WriteHparamEvalReport(*report, out_dir);
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
    constexpr char kValidateUsage[] =
        "usage: lopt validate [--meta-test] FILE\n"
        "  Checks a text-proto job file as lopt train and the learner do (errors name the\n"
        "  field, or the line and column), and that the data paths it names exist on\n"
        "  this host; prints the job with its defaults filled in. --meta-test checks it\n"
        "  as lopt eval and lopt schedule do: one optimizee at a time, so without the\n"
        "  limit on a meta-training unit's memory.\n";
    auto f = ParseFlags(argc, argv, 2, {}, {"help", "meta-test"});
    if (!f.ok()) return Fail(f.status());
    if (f->Has("help")) return std::printf("%s", kValidateUsage), 0;
    if (f->positional.size() != 1)
      return Fail(absl::InvalidArgumentError(absl::StrCat("lopt validate takes one FILE\n",
                                                          kValidateUsage)));
    const std::string path = f->positional[0];
    auto job = LoadJobFile(path, f->Has("meta-test") ? JobUse::kMetaTest : JobUse::kMetaTrain);
    if (!job.ok()) return Fail(job.status());
    if (auto s = CheckDataPathsExist(*job); !s.ok())
      return Fail(absl::NotFoundError(absl::StrCat(path, ": ", s.message())));
    std::string text;
    google::protobuf::TextFormat::PrintToString(*job, &text);
    std::printf("%s: valid\n%s", path.c_str(), text.c_str());
    return 0;
  }
  if (cmd == "train") {
    auto f = ParseFlags(argc, argv, 2, {"job", "out", "outer-steps", "iterations", "seed", "threads", "device"},
                        {"fresh", "no-eval", "no-progress", "help"});
    if (!f.ok()) return Fail(f.status());
    if (f->Has("help")) return std::printf("%s", kUsage), 0;
    if (auto s = SetThreads(*f); !s.ok()) return Fail(s);
    auto job = JobFromFlags(*f);
    if (!job.ok()) return Fail(job.status());
    // The job's kind runs it (kinds/job_kind.h), with the replay buffer of
    // the run's directory in RocksDB.
    auto kind = JobKinds().KindOf(*job);
    if (!kind.ok()) return Fail(kind.status());
    LocalTrainOptions o;
    o.out_dir = f->Get("out", "runs/" + job->name());
    o.fresh = f->Has("fresh");
    o.progress = !f->Has("no-progress");
    o.device = f->Get("device", "cpu");
    o = WithLocalBuffer(std::move(o));
    // Ctrl-C or SIGTERM stops after the update under way (an outer step, a
    // PPO iteration), with a checkpoint and a usable trained file; the same
    // command resumes.
    static std::atomic<bool> stop{false};
    static std::string stop_message;
    stop_message = absl::StrCat(
        "\nlopt train: stopping after the ", (*kind)->update_name(),
        " under way, with a checkpoint (again to quit now, losing the ", (*kind)->updates_name(),
        " since the last checkpoint)\n");
    o.stop = &stop;
    // A second one quits at once: the next run resumes from the last
    // periodic checkpoint. A repeat within a second is the same request
    // delivered twice: `timeout` and `kill -- -PGID` signal the process and
    // then its process group, and the second copy used to quit the run.
    static std::atomic<int64_t> first_signal_ns{0};
    auto on_signal = [](int) {
      timespec ts;
      clock_gettime(CLOCK_MONOTONIC, &ts);  // async-signal-safe
      const int64_t now = int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
      int64_t none = 0;
      if (first_signal_ns.compare_exchange_strong(none, now)) {
        stop.store(true);
        (void)!write(STDERR_FILENO, stop_message.data(), stop_message.size());
        return;
      }
      if (now - first_signal_ns.load() >= 1000000000) _exit(130);
    };
    std::fprintf(stderr, "%s", (*kind)->DescribeLocalRun(*job, o.out_dir).c_str());
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    auto report = (*kind)->TrainLocal(*job, o);
    // After the run: the default action again, unless a stop was asked for,
    // whose second copy may still be on its way (the run can end first).
    if (!stop.load()) {
      std::signal(SIGINT, SIG_DFL);
      std::signal(SIGTERM, SIG_DFL);
    }
    if (!report.ok()) return Fail(report.status());
    std::printf("%s", report->message.c_str());
    if (!report->note.empty()) std::fprintf(stderr, "%s", report->note.c_str());
    // A kind without a meta-test of its trained file says so (no eval_flag).
    if (report->stopped_early || f->Has("no-eval") || report->eval_flag.empty()) return 0;
    // The trained file's meta-test, as `lopt eval --optimizer/--controller` runs it.
    const std::string eval_dir = o.out_dir + "/eval";
    absl::Status s =
        report->eval_flag == "controller"
            ? EvalLhopt(*job, report->trained_file, "", eval_dir, *f)
            : Eval(*job, report->trained_file, eval_dir, *f);
    if (!s.ok()) return Fail(s);
    return 0;
  }
  if (cmd == "schedule") {
    auto f = ParseFlags(argc, argv, 2, {"controller", "job", "out", "steps", "decisions", "threads", "device"},
                        {"help"});
    if (!f.ok()) return Fail(f.status());
    if (f->Has("help")) return std::printf("%s", kUsage), 0;
    if (!f->Has("controller") || !f->Has("job"))
      return Fail(absl::InvalidArgumentError("lopt schedule needs --controller FILE and --job FILE"));
    if (auto s = SetThreads(*f); !s.ok()) return Fail(s);
    auto job = LoadJobFile(f->Get("job"), JobUse::kMetaTest);
    if (!job.ok()) return Fail(job.status());
    auto c = LoadController(f->Get("controller"));
    if (!c.ok()) return Fail(c.status());
    auto steps = f->GetInt("steps", EvalSteps(*job));
    auto decisions = f->GetInt("decisions", c->file.job().lhopt().schedule_decisions());
    if (!steps.ok()) return Fail(steps.status());
    if (!decisions.ok()) return Fail(decisions.status());
    if (*steps <= 1 || *decisions < 1)
      return Fail(absl::InvalidArgumentError("--steps must be > 1 and --decisions >= 1"));
    auto device = ParseDevice(f->Get("device", "cpu"));
    if (!device.ok()) return Fail(device.status());
    auto task = MakeTask(job->task(), job->seed(), *device);
    if (!task.ok()) return Fail(task.status());
    auto sched = RecordSchedule(**task, *c->policy, *c->normalizer, *steps, *decisions,
                                job->seed() + kMetaTestSeedOffset);
    if (!sched.ok()) return Fail(sched.status());
    sched->set_controller(f->Get("controller"));
    sched->set_created_at(c->file.created_at());
    std::string out = f->Get("out", "runs/schedule");
    if (auto s = WriteScheduleOutputs(*sched, out); !s.ok()) return Fail(s);
    std::printf("%s", ScheduleCsv(*sched).c_str());
    std::printf("wrote %s/schedule.json, schedule.csv, schedule.png\n", out.c_str());
    return 0;
  }
  if (cmd == "gen-movielens") {
    auto f = ParseFlags(argc, argv, 2, {"out", "seed", "users", "items", "interactions", "rank"},
                        {"help"});
    if (!f.ok()) return Fail(f.status());
    if (f->Has("help")) return std::printf("%s", kUsage), 0;
    if (!f->Has("out"))
      return Fail(absl::InvalidArgumentError("lopt gen-movielens needs --out DIR"));
    MovieLensGenOptions o;
    for (auto [name, field] : {std::pair<const char*, int64_t*>{"users", &o.users},
                               {"items", &o.items},
                               {"interactions", &o.interactions},
                               {"rank", &o.rank}}) {
      auto v = f->GetInt(name, *field);
      if (!v.ok()) return Fail(v.status());
      *field = *v;
    }
    auto seed = f->GetInt("seed", 0);
    if (!seed.ok()) return Fail(seed.status());
    if (*seed < 0) return Fail(absl::InvalidArgumentError("--seed must be >= 0"));
    o.seed = uint64_t(*seed);
    auto path = WriteMovieLensRatings(o, f->Get("out"));
    if (!path.ok()) return Fail(path.status());
    std::printf("wrote %s: %lld users, %lld items, %lld ratings (seed %llu)\n", path->c_str(),
                (long long)o.users, (long long)o.items, (long long)o.interactions,
                (unsigned long long)o.seed);
    return 0;
  }
  if (cmd == "gen-speech") {
    auto f = ParseFlags(argc, argv, 2, {"out", "seed", "utterances", "max-words", "sample-rate"},
                        {"help"});
    if (!f.ok()) return Fail(f.status());
    if (f->Has("help")) return std::printf("%s", kUsage), 0;
    if (!f->Has("out")) return Fail(absl::InvalidArgumentError("lopt gen-speech needs --out DIR"));
    SpeechGenOptions o;
    auto utterances = f->GetInt("utterances", o.utterances);
    auto max_words = f->GetInt("max-words", o.max_words);
    auto rate = f->GetInt("sample-rate", o.sample_rate);
    auto seed = f->GetInt("seed", 0);
    for (const auto* v : {&utterances, &max_words, &rate, &seed})
      if (!v->ok()) return Fail(v->status());
    if (*seed < 0) return Fail(absl::InvalidArgumentError("--seed must be >= 0"));
    o.utterances = *utterances;
    o.max_words = *max_words;
    o.sample_rate = int32_t(std::clamp<int64_t>(*rate, 0, 1 << 30));
    o.seed = uint64_t(*seed);
    auto sum = GenerateSpeechCorpus(o, f->Get("out"));
    if (!sum.ok()) return Fail(sum.status());
    std::printf("wrote %s: %lld training and %lld test utterances, %lld speakers, %.1f s of audio "
                "at %d Hz (seed %llu)\n",
                f->Get("out").c_str(), (long long)sum->train_utterances,
                (long long)sum->test_utterances, (long long)sum->speakers, sum->seconds,
                o.sample_rate, (unsigned long long)o.seed);
    return 0;
  }
  if (cmd == "eval-large") return RunEvalLargeCommand(argc, argv);
  if (cmd == "inspect") return RunInspectCommand(argc, argv);
  if (cmd == "select") return RunSelectCommand(argc, argv);
  if (cmd == "compare") return RunCompareCommand(argc, argv);
  if (cmd == "eval") {
    auto f = ParseFlags(argc, argv, 2,
                        {"optimizer", "schedule", "controller", "job", "out", "steps", "seeds", "threads",
                         "device", "lopt-options"},
                        {"no-progress", "help"});
    if (!f.ok()) return Fail(f.status());
    if (f->Has("help")) return std::printf("%s", kUsage), 0;
    if (f->Has("schedule") || f->Has("controller")) {
      if (!f->Has("job"))
        return Fail(absl::InvalidArgumentError("lopt eval --schedule/--controller needs --job FILE"));
      if (auto s = SetThreads(*f); !s.ok()) return Fail(s);
      auto job = LoadJobFile(f->Get("job"), JobUse::kMetaTest);
      if (!job.ok()) return Fail(job.status());
      if (auto s = EvalLhopt(*job, f->Get("controller"), f->Get("schedule"),
                             f->Get("out", "runs/eval"), *f);
          !s.ok())
        return Fail(s);
      return 0;
    }
    if (!f->Has("optimizer"))
      return Fail(absl::InvalidArgumentError("lopt eval needs --optimizer FILE"));
    if (auto s = SetThreads(*f); !s.ok()) return Fail(s);
    v1::JobSpec job;
    if (f->Has("job")) {
      auto j = LoadJobFile(f->Get("job"), JobUse::kMetaTest);
      if (!j.ok()) return Fail(j.status());
      job = *j;
    } else {
      auto trained = LoadOptimizerFile(f->Get("optimizer"));
      if (!trained.ok()) return Fail(trained.status());
      job = trained->file.job();
      FillJobDefaults(&job);
      if (auto s = ValidateJob(job, JobUse::kMetaTest); !s.ok()) return Fail(s);
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
