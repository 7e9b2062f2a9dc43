#include "cli/select_mode.h"

#include <cstdio>
#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "cli/exit_code.h"
#include "common/elo/selection.h"
#include "common/util/flags.h"
#include "common/util/progress.h"
#include "common/util/runtime.h"
#include "kinds/job_door.h"

namespace lopt {
namespace {

constexpr char kSelectUsage[] = R"(usage:
  lopt select --run DIR [FILE...] [--job FILE] [--steps N] [--seeds N] [--device cpu|cuda[:N]]
              [--lopt-options TEXT] [--threads N] [--no-progress]

Meta-validation of a run's snapshots. A job with budget { snapshot_every: N }
keeps theta every N outer steps as DIR/snapshots/step_NNNNNN.lopt; the last
outer step's is not always the one that trains best past the horizon. Each
candidate (the snapshots and DIR/optimizer.lopt) trains --seeds (4) fresh
optimizees of the job's task for --steps (the job's eval steps: 10x the
meta-training horizon by default), all at once, on validation seeds of their
own (the job's seed + 2000003: neither meta-training's nor lopt eval's). The
best -- fewest diverged seeds, then fewest whose loss climbs back, then the
lowest mean final train loss -- is copied to DIR/optimizer.selected.lopt;
DIR/select/selection.csv and selection.json hold every candidate's figures.
Only training losses decide: the test split stays for lopt eval.

With FILEs (e.g. several meta-training seeds' optimizer.lopt), those are the
candidates instead, and DIR receives select/ and optimizer.selected.lopt; a
candidate is named by its folder where its file is optimizer*.lopt. The
candidates must share their options (lopt inspect shows them).

  --job FILE           the task to validate on (default: the run's job)
  --lopt-options TEXT  options every candidate runs with, as lopt eval's (select
                       under the inference schedule you will use)
)";

int Fail(const absl::Status& s) { return FailCommand("lopt", s); }

}  // namespace

int RunSelectCommand(int argc, char** argv) {
  auto f = ParseFlags(argc, argv, 2, {"run", "job", "steps", "seeds", "device", "lopt-options", "threads"},
                      {"no-progress", "help"});
  if (!f.ok()) return Fail(f.status());
  if (f->Has("help")) return std::printf("%s", kSelectUsage), 0;
  if (!f->Has("run"))
    return Fail(absl::InvalidArgumentError(absl::StrCat("lopt select needs --run DIR\n", kSelectUsage)));
  SelectOptions o;
  auto steps = f->GetInt("steps", 0);
  auto seeds = f->GetInt("seeds", 4);
  auto threads = f->GetInt("threads", 0);
  for (const auto* v : {&steps, &seeds, &threads})
    if (!v->ok()) return Fail(v->status());
  if ((f->Has("steps") && *steps <= 0) || *seeds <= 0 || *seeds > 1024)
    return Fail(absl::InvalidArgumentError("--steps must be > 0 and --seeds in 1..1024"));
  o.steps = *steps;
  o.seeds = *seeds;
  o.device = f->Get("device", "cpu");
  o.lopt_options = f->Get("lopt-options");
  o.files = f->positional;
  if (f->Has("job")) {
    auto job = LoadJobFile(f->Get("job"));
    if (!job.ok()) return Fail(job.status());
    o.job = *job;
  }
  ConfigureRuntime(int(*threads), absl::StartsWith(o.device, "cuda"));
  std::unique_ptr<ProgressBar> bar;
  o.progress = [&](int64_t done, int64_t total) {
    if (!bar) bar = std::make_unique<ProgressBar>("meta-validation", total, !f->Has("no-progress"));
    bar->Update(done, "inner steps");
  };
  auto out = SelectFromRun(f->Get("run"), o);
  if (bar) bar->Finish("");
  if (!out.ok()) return Fail(out.status());
  std::printf("%s", out->table.c_str());
  return 0;
}

}  // namespace lopt
