// Local mode for every job kind: `lopt train` runs a job in one process with
// the parts the services run it with, and no gRPC. The kind's JobCore (as
// the learner's JobManager drives it) hands out units, the kind's
// UnitRunners (as a worker runs them) run them one at a time, and the core
// takes their results; the process plays one worker that owns every shard
// (the core says which runs next: ELO's shards take turns). The driver
// keeps the run directory:
//
//   job.textproto   the job as it runs
//   metrics.csv     the core's update rows (CoreVerdict::metrics_row) with
//                   throughput and wall_s (cumulative over resumes), as the
//                   learner writes them; other CSVs of the core's file_rows
//                   (LHOPT's yardstick.csv) and its file_writes
//   checkpoint.pt   "job" (the spec), run/wall_seconds, "learner/" the
//                   core's SaveState, "runner/<unit kind>/" each runner's
//                   (UnitRunner::SaveState: ELO's shards' inner states),
//                   "buffer/" the items of the run's replay buffer in the
//                   tables later units can still read
//                   (JobCore::BufferTableLive); every CheckpointEvery()
//                   updates and at the end
//   buffer/         the replay buffer's store where options.open_buffer
//                   opens one (`lopt train`: RocksDB), emptied at the start
//                   and refilled from the checkpoint (else in memory)
//   the trained file (JobCore::TrainedFileName) at each checkpoint and at
//                   the end; summary.json; the kind's plot (PlotMetrics)
//
// A resume loads the checkpoint (one an older local mode of the kind wrote
// after JobKind::UpgradeLocalCheckpoint), cuts the CSVs back to it
// (JobCore::RowsRedoneFrom) and goes on; options.stop (Ctrl-C) and
// options.stop_after end the run after an update and the units it owes
// (JobCore::Owes: LHOPT's yardstick of that version), with a checkpoint.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kinds/job_kind.h"
#include "kinds/local_train.h"
#include "lopt/v1/job.pb.h"

namespace lopt {

// RunLocal's checkpoint layout, for a kind's UpgradeLocalCheckpoint: a
// runner's entries are "runner/<unit kind>/..." (LocalRunnerPrefix), and the
// replay buffer's tables "buffer/<n>/..." an item (AddLocalBufferTables).
std::string LocalRunnerPrefix(v1::Algorithm unit_kind);
struct LocalBufferTable {
  std::string name;
  int64_t capacity = 1;
  std::vector<NamedTensors> items;  // oldest first
};
void AddLocalBufferTables(const std::vector<LocalBufferTable>& tables, NamedTensors* checkpoint);

// Runs (or resumes) `spec`, a validated job of `kind`, in options.out_dir.
// options.stop_after counts updates. A unit that fails, a result the core
// rejects or a replay buffer that fails stops the run with that error (the
// last checkpoint resumes it).
absl::StatusOr<LocalRunSummary> RunLocal(const JobKind& kind, const v1::JobSpec& spec,
                                         const LocalTrainOptions& options);

}  // namespace lopt
