// Local mode's side of a job kind (JobKind::TrainLocal): what `lopt train`
// asks of a run in one process, and what it prints of it.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/elo/replay_buffer.h"
#include "lopt/v1/job.pb.h"

namespace lopt {

struct LocalTrainOptions {
  std::string out_dir;        // checkpoint, the trained file, summary.json, metrics.csv
  bool progress = true;       // draw the progress bar on stderr
  bool fresh = false;         // ignore an existing checkpoint
  int64_t stop_after = -1;    // stop (with a checkpoint) after this many updates; -1: run to the end
  std::string device = "cpu"; // where the inner loops run: cpu, cuda, cuda:N
  // Set (e.g. by a SIGINT/SIGTERM handler): stop after the update under
  // way, checkpoint, and write the trained file and summary.json of what was
  // trained, so that a stopped run is usable and resumes where it stopped.
  const std::atomic<bool>* stop = nullptr;
  // Opens the replay buffer a run keeps in directory `dir` of its run
  // directory (`lopt train` keeps it in RocksDB, as the buffer server does;
  // cli/local_mode.h), which the driver empties first: the checkpoint holds
  // the items a resume needs. Unset: one in memory.
  std::function<absl::StatusOr<std::unique_ptr<ReplayBuffer>>(const std::string& dir)> open_buffer;
};

// What `lopt train` prints of a local run, and what it evaluates after it.
struct LocalTrainReport {
  // stdout: what was trained ("trained 6 outer steps in ...").
  std::string message;
  // stderr, after the message (a note on a stopped run), or empty.
  std::string note;
  bool stopped_early = false;
  // The trained file in the run directory, and the `lopt eval` flag that
  // takes it ("optimizer", "controller").
  std::string trained_file;
  std::string eval_flag;
};

// What the local driver (kinds/local_driver.h) did, for the kind's report.
struct LocalRunSummary {
  int64_t steps = 0;           // updates done (core Step()), including before a resume
  int64_t total = 0;           // the job's budget of them
  int64_t resumed_from = 0;    // the step the run resumed from (0: fresh)
  int64_t steps_this_run = 0;  // steps - resumed_from
  double wall_seconds = 0;        // this run's
  double total_wall_seconds = 0;  // every run's of this job (checkpointed)
  double particle_steps_per_second = 0;  // this run's, every unit's inner steps
  std::string trained_file;       // the path of the core's trained file
  std::string checkpoint_path;
  bool stopped_early = false;     // options.stop ended it before the budget
  // The last update's status losses (JobCore::LastLosses), if any.
  double meta_loss = 0, task_loss = 0;
  // The core's summary.json entries (JobCore::SummaryFields: key, JSON value).
  std::vector<std::pair<std::string, std::string>> fields;
  // The number of field `key` (NaN where it is missing or not a number).
  double Number(const std::string& key) const;
};

// What every kind's local mode does alike with its checkpoint (a file of
// named tensors: "job", the spec it belongs to, and the kind's own state).
// The checkpoint at `path` of a run of `spec`: none where there is no file or
// `fresh` ignores it; FAILED_PRECONDITION where it belongs to another spec.
absl::StatusOr<std::optional<NamedTensors>> ReadLocalCheckpoint(const std::string& path,
                                                                 const v1::JobSpec& spec,
                                                                 bool fresh);
// The entries of `all` named `prefix`..., without the prefix.
NamedTensors WithPrefix(const NamedTensors& all, const std::string& prefix);

}  // namespace lopt
