// A job kind, defined once. Everything the learner, the worker and `lopt
// train` need to know of ELO, of LHOPT or of the next algorithm sits behind
// JobKind, and every kind is registered in one place (kinds/registry.cc, one
// line a kind), so that nothing else asks which kind a job is:
//
//   spec section  section(): the JobSpec field whose presence makes a job of
//                 this kind ("lhopt"), or "" for the one default kind (ELO:
//                 a job that sets no other kind's section). KindOf(spec).
//   validation    ValidateSpec: the checks of its own sections, which the one
//                 door (kinds/job_door.h: ValidateJob, JobFromText,
//                 LoadJobFile) runs after those of the sections every job
//                 has (common/spec/job_spec.h).
//   learner core  MakeCore: the JobCore (learner/job_core.h) the learner's
//                 JobManager drives, and local mode too.
//   unit kinds    unit_kinds(): the WorkUnit algorithms its core issues;
//                 MakeRunner: the worker-side UnitRunner of each. The worker
//                 asks KindOfUnit, never the algorithm's name.
//   exports       the core's trained file, summary and metrics (JobCore), and
//                 PlotMetrics for the run directory's plot.
//   local mode    nothing: `lopt train` runs the kind's core and runners in
//                 one process (kinds/local_driver.h, RunLocal); a kind words
//                 its messages (DescribeLocalRun, step_name, ReportLocalRun),
//                 and its runners save what a resume needs (SaveState).
//
// A kind's parts live in its folder (kinds/elo/, kinds/lhopt/): its core,
// its runners and its definition; README.md's developer section has the
// recipe for adding one.
//
// Layering: kinds/ sits over common/ and lopt_learner (the kinds' learner
// algorithms, learner/elo_job.h, learner/lhopt_job.h) and under the
// processes (learner/job_manager.cc, worker/, cli/lopt_main.cc), which
// dispatch through this header alone; nothing in kinds/ includes worker/ or
// cli/.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/elo/replay_buffer.h"
#include "common/rpc/tensor_codec.h"
#include "common/spec/job_spec.h"
#include "kinds/local_train.h"
#include "learner/job_core.h"
#include "lopt/v1/job.pb.h"
#include "lopt/v1/work_service.pb.h"

namespace lopt {

// What a worker lends the runners it makes.
struct UnitRunnerEnv {
  // --device: where units that honour it run (ELO's meta-test).
  std::string device = "cpu";
  // How many ELO shards (their inner states) a worker keeps between units.
  int32_t max_cached_shards = 16;
  // The replay buffer of a job (one a job, shared by its units of every kind).
  std::function<std::shared_ptr<ReplayBuffer>(const std::string& job_id)> buffer;
};

// Runs a worker's units of one unit kind, keeping between units what it may
// reuse (ELO's shards and their inner states, LHOPT's episode runner, the
// yardstick's reference runs). Called from one thread at a time.
class UnitRunner {
 public:
  virtual ~UnitRunner() = default;

  // Whether the kind's units carry a payload (chunks that follow the unit).
  virtual bool takes_payload() const = 0;

  // Runs `unit`, whose job is of the runner's kind (the caller checked its
  // section). `payload`: what came after it (only where takes_payload();
  // its error where it did not arrive whole, which the caller reports before
  // calling). `*result` comes with its ids and theta_version set; Run fills
  // in the kind's fields (a version of its own too, where it has one), and
  // may put a payload's bytes in *result_payload (result->payload() saying
  // so). `cancelled()` turns true when the learner cancels the unit: Run
  // then stops soon and returns CANCELLED. Any other error: the unit failed
  // (the worker reports it with no payload or result info).
  virtual absl::Status Run(const v1::WorkUnit& unit, const absl::StatusOr<NamedTensors>& payload,
                           const std::function<bool()>& cancelled, v1::WorkResult* result,
                           std::string* result_payload) = 0;

  // Local mode's checkpoint (kinds/local_driver.h), where one process plays
  // the workers of one job: what the runner keeps between that job's units
  // that a resumed run must find again (ELO's shards' inner states), and its
  // restore, before any unit runs. None by default. A worker never calls
  // them: what it keeps is lost with it, and the learner's job does without.
  virtual NamedTensors SaveState() const { return {}; }
  virtual absl::Status LoadState(const NamedTensors& state) {
    (void)state;
    return absl::OkStatus();
  }
};

class JobKind {
 public:
  virtual ~JobKind() = default;

  // Its name in logs and errors: "elo", "lhopt".
  virtual absl::string_view name() const = 0;
  // The JobSpec field (a message) whose presence makes a job of this kind;
  // "" for the default kind, which owns the jobs that set no kind's field.
  virtual absl::string_view section() const = 0;
  // INVALID_ARGUMENT naming the first offending field of the kind's own
  // sections (ELO: "pes.sigma must be > 0, got -1"), of a spec of this kind
  // whose shared sections are valid (ValidateSharedSections). Only the door
  // (kinds/job_door.h) calls it: a spec it passed is valid.
  virtual absl::Status ValidateSpec(const v1::JobSpec& spec, JobUse use) const = 0;
  // The unit kinds its core issues, each with a runner.
  virtual std::vector<v1::Algorithm> unit_kinds() const = 0;

  // The learner core of a validated spec of this kind.
  virtual std::unique_ptr<JobCore> MakeCore(const v1::JobSpec& spec,
                                            const JobCoreOptions& options) const = 0;
  // The worker-side runner of one of unit_kinds().
  virtual std::unique_ptr<UnitRunner> MakeRunner(v1::Algorithm unit_kind,
                                                 const UnitRunnerEnv& env) const = 0;
  // The plot of a run directory's metrics.csv (false without gnuplot or rows).
  virtual bool PlotMetrics(const v1::JobSpec& spec, const std::string& dir) const = 0;

  // Local mode (`lopt train`): the line it prints before the run (stderr),
  // the update a Ctrl-C lets finish ("outer step", "PPO iteration"), what
  // a second Ctrl-C loses ("steps", "iterations") and the word of the step
  // a run resumes or stops at ("outer step", "iteration").
  virtual std::string DescribeLocalRun(const v1::JobSpec& spec, const std::string& out_dir) const = 0;
  virtual absl::string_view update_name() const = 0;
  virtual absl::string_view updates_name() const = 0;
  virtual absl::string_view step_name() const { return update_name(); }
  // The run (or its resume) in options.out_dir: the one local driver
  // (RunLocal, kinds/local_driver.h) and ReportLocalRun of its summary.
  absl::StatusOr<LocalTrainReport> TrainLocal(const v1::JobSpec& spec,
                                              const LocalTrainOptions& options) const;
  // What `lopt train` prints of a run RunLocal ended: by default a message
  // in the kind's words, no evaluation after it (eval_flag empty). A kind
  // that words it otherwise fills LocalReportWords for FormatLocalReport.
  virtual LocalTrainReport ReportLocalRun(const v1::JobSpec& spec,
                                          const LocalRunSummary& summary) const;
  struct LocalReportWords {
    std::string stopped_units;  // a stop's "(this run: N <stopped_units>, ...)"
    std::string trained_units;  // "trained N <trained_units> in ..."
    std::string trained_holds;  // a stop's "<trained file> holds <trained_holds>"
    std::string details;        // lines after "trained N ...", each ending in \n
    // `lopt eval`'s flag for the trained file ("optimizer"), also its label
    // in the message ("trained file" where empty: no evaluation follows).
    std::string eval_flag;
  };
  // The report of `summary` in `words`, with step_name() for the step.
  LocalTrainReport FormatLocalReport(const LocalRunSummary& summary,
                                     const LocalReportWords& words) const;
  // A local checkpoint of `spec` that an older local mode of the kind wrote
  // (its own driver, before the one), rewritten in place in RunLocal's
  // layout; one already in it is left as it is. By default every checkpoint
  // is in it.
  virtual absl::Status UpgradeLocalCheckpoint(const v1::JobSpec& spec,
                                              NamedTensors* checkpoint) const {
    (void)spec, (void)checkpoint;
    return absl::OkStatus();
  }
};

// A set of kinds that do not overlap: what KindOf and KindOfUnit answer from.
class JobKindRegistry {
 public:
  // INVALID_ARGUMENT where two kinds share a name, a section or a unit kind,
  // two kinds have no section, a section is not a message field of JobSpec,
  // or a kind has no unit kinds or makes no runner for one of them.
  static absl::StatusOr<JobKindRegistry> Create(std::vector<const JobKind*> kinds);

  const std::vector<const JobKind*>& kinds() const { return kinds_; }
  // The kind that owns `spec`: the one whose section it sets, else the
  // default kind. INVALID_ARGUMENT when it sets two kinds' sections, or none
  // and there is no default kind.
  absl::StatusOr<const JobKind*> KindOf(const v1::JobSpec& spec) const;
  // The kind whose core issues units of `unit_kind`, or null.
  const JobKind* KindOfUnit(v1::Algorithm unit_kind) const;
  // Every unit kind, for messages: "ELO_PES, ELO_META_TEST, LHOPT_PPO and LHOPT_YARDSTICK".
  std::string UnitKindNames() const;

 private:
  explicit JobKindRegistry(std::vector<const JobKind*> kinds) : kinds_(std::move(kinds)) {}
  std::vector<const JobKind*> kinds_;
};

// Every kind lopt has (kinds/registry.cc).
const JobKindRegistry& JobKinds();

// The core of a validated spec, made by its kind. REQUIRES: a kind owns the
// spec (JobKinds().KindOf(spec) is OK; with ELO the default kind, every
// validated spec is owned).
std::unique_ptr<JobCore> MakeJobCore(const v1::JobSpec& spec, const JobCoreOptions& options = {});

// The plot of a run directory's metrics.csv, by the spec's kind:
// training.png for ELO, rewards.png for LHOPT.
bool PlotRunMetrics(const v1::JobSpec& spec, const std::string& dir);

}  // namespace lopt
