// A job's algorithm as the learner's JobManager sees it: its progress, its
// state for checkpoints, the units it hands to workers, what it makes of their
// results, the file it exports and its own metrics. One implementation a kind
// of job, made by its JobKind (kinds/job_kind.h: MakeJobCore): ELO
// meta-training with PES (kinds/elo/elo_core.cc over EloJob, whose meta-test
// of the trained optimizer is a unit kind of its own that workers run) and
// LHOPT's PPO (kinds/lhopt/lhopt_core.cc over LhoptJob, whose fixed yardstick
// is one too). JobManager does what every kind shares (workers, statuses,
// checkpoint files, the common metrics, logging) and never asks which kind a
// job is.
//
// Not thread-safe: JobManager calls it under the job's own lock (Job::mu).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/rpc/tensor_codec.h"
#include "lopt/v1/job.pb.h"
#include "lopt/v1/work_service.pb.h"

namespace lopt {

// A unit for a worker. JobManager sets its unit id, job id, spec and buffer
// prefix, and sends `payload` (when `has_payload`) as chunks after it.
struct CoreUnit {
  v1::WorkUnit unit;
  bool has_payload = false;
  NamedTensors payload;
  int32_t shard = -1;  // the shard the result must name (0 where there are none)
  int64_t token = -1;  // the core's own id of the unit, handed back with its result
};

// A row a result adds to a CSV file of the job's directory (the header
// first where the file is new).
struct RunFileRow {
  std::string file;  // relative to the job's directory
  std::string header, row;
};

// A whole file a result writes into the job's directory (replacing it;
// the manager writes it atomically).
struct RunFileWrite {
  std::string file;  // relative to the job's directory, e.g. "eval/report.json"
  std::string bytes;
};

// What a result did.
struct CoreVerdict {
  enum Kind { kRejected, kDroppedStale, kAccepted, kUpdated };
  Kind kind = kRejected;
  // kRejected: the lopt_results_rejected_total reason and the error.
  std::string reason;
  absl::Status error;
  // Not kRejected: the inner particle-steps the result did.
  int64_t particle_steps = 0;
  // kAccepted and kUpdated on an ELO job: the result's staleness (-1: none).
  int64_t staleness = -1;
  // kUpdated: the job's update (an outer step, a PPO iteration), its status
  // losses; kUpdated and kAccepted: the log line's message (none where empty)
  // and fields.
  double meta_loss = 0, task_loss = 0;
  std::string log_message;
  std::vector<std::pair<std::string, std::string>> log_fields;
  // kUpdated: the job's metrics.csv row but its last two columns
  // (throughput, wall seconds: the manager's), as local mode writes it.
  std::string metrics_row;
  // Not kRejected: rows for other files of the job's directory (LHOPT's
  // yardstick.csv), and whole files (ELO's meta-test report in eval/).
  std::vector<RunFileRow> file_rows;
  std::vector<RunFileWrite> file_writes;
  // What local mode (kinds/local_driver.h) shows of it: kUpdated, the
  // progress bar's text; any, a line for stderr (LHOPT's yardstick score).
  std::string progress;
  std::string note;
};

class JobCore {
 public:
  virtual ~JobCore() = default;

  // The "algorithm" log label: elo_pes, lhopt_ppo.
  virtual const char* algorithm() const = 0;
  // Updates done (outer steps, PPO iterations) and the budget of them.
  virtual int64_t Step() const = 0;
  virtual int64_t Total() const = 0;
  // Every update is applied and every result the job waits for after its
  // last one is in (LHOPT's final yardstick score, ELO's meta-test report):
  // the job may succeed.
  virtual bool Done() const = 0;
  virtual int32_t NumShards() const = 0;
  // The job's checkpoint period in updates (0: none but at the end).
  virtual int64_t CheckpointEvery() const = 0;
  // Keep the trained file every this many updates, and at the last, as
  // snapshots/step_NNNNNN<ext> in the job's directory (0: none; SnapshotPath).
  virtual int64_t SnapshotEvery() const { return 0; }
  // The header of the metrics.csv that updates' metrics_row fill (empty: none).
  virtual std::string MetricsCsvHeader() const { return ""; }
  // The CSV files of the job's directory whose rows a restored job makes
  // again, each with the first value (first column) that is not covered by
  // the state it restored: metrics.csv from Step(), and any file of
  // CoreVerdict::file_rows (LHOPT's yardstick.csv from the version after the
  // last one scored).
  virtual std::vector<std::pair<std::string, int64_t>> RowsRedoneFrom() const {
    return {{"metrics.csv", Step()}};
  }
  // Whether units are owed for the updates already applied (LHOPT's
  // yardstick score of the current version): local mode runs them before it
  // checkpoints or stops, so that a resume does not run them again.
  virtual bool Owes() const { return false; }
  // Whether a replay-buffer table (the full name, the job's prefix in) can
  // still be read by a later unit: local mode drops the others before it
  // checkpoints its buffer (LHOPT: a past baseline generation's curves, a
  // unit's restart registers).
  virtual bool BufferTableLive(const std::string& table) const {
    (void)table;
    return true;
  }
  // The kind's own entries of the summary.json a job leaves when it ends
  // (key, JSON value), with the keys `lopt train` writes: the updates done
  // and the budget, the losses (rewards) at the start and at the end.
  virtual std::vector<std::pair<std::string, std::string>> SummaryFields() const = 0;
  // ELO's alpha_t for the status (0 where it has none).
  virtual double Alpha() const { return 0; }
  // The latest update's status losses (meta, task), if there was one: what a
  // job restored from its checkpoint shows before its next update.
  virtual std::optional<std::pair<double, double>> LastLosses() const = 0;

  virtual NamedTensors SaveState() const = 0;
  virtual absl::Status LoadState(const NamedTensors& state) = 0;

  // The trained file in the job's directory ("optimizer.lopt",
  // "controller.lhopt"), its name while the job runs, and writing it.
  virtual std::string TrainedFileName(bool partial) const = 0;
  virtual absl::Status WriteTrainedFile(const std::string& path) const = 0;

  // A unit for the worker, or none. `can_take_payload`: the caller can send
  // payload chunks. `connected`: whether a worker of that name is connected.
  virtual std::optional<CoreUnit> Start(const v1::WorkerInfo& worker, bool can_take_payload,
                                        const std::function<bool(const std::string&)>& connected) = 0;
  // The unit (shard, token) will not return a result: rejected, or its worker
  // gone (`worker_gone`: it loses what it owned too).
  virtual void Abandon(int32_t shard, int64_t token, bool worker_gone) = 0;
  // The result of unit (result.shard(), token), with the payload its message
  // announced (or the error of receiving it).
  virtual CoreVerdict Accept(const v1::WorkResult& result, int64_t token,
                             const absl::StatusOr<NamedTensors>& payload) = 0;

  // The kind's own metrics series (beside the common ones), labelled job_id.
  virtual void AddSeries(const std::string& job_id) { (void)job_id; }
  virtual void RemoveSeries() {}

};

struct JobCoreOptions {
  // ELO: once the last outer step is applied, the job asks a worker for its
  // meta-test (an ELO_META_TEST unit) and is Done only when the report is
  // in (LearnerOptions::meta_test). Off: Done after the last outer step.
  bool meta_test = false;
};

// The verdicts every core gives alike. A rejection with its
// lopt_results_rejected_total reason and error; a result whose payload could
// not be received or decoded ("corrupt_payload" where its checksum failed,
// DATA_LOSS; "bad_payload" otherwise); a result the job's Accept refused
// ("non_finite" for non-finite values, "invalid" otherwise).
CoreVerdict RejectVerdict(std::string reason, absl::Status error);
CoreVerdict PayloadUnusableVerdict(const absl::Status& s);
CoreVerdict RefusedByJobVerdict(const absl::Status& s);

// Appends `row` to its file in directory `dir`, its header first where the
// file is new (the learner's job directories and local mode's run directory).
absl::Status AppendRunFileRow(const std::string& dir, const RunFileRow& row);
// Writes `file` into directory `dir` atomically, making its folders (ELO's
// meta-test report under eval/); an error names the file.
absl::Status WriteRunFile(const std::string& dir, const RunFileWrite& file);

// Where the core's trained file of update `step` is kept in a job's
// directory: "snapshots/step_000250.lopt" (the trained file's extension).
std::string SnapshotFile(const JobCore& core, int64_t step);
// After an update: writes the core's trained file as its snapshot in `dir`
// where SnapshotEvery() divides Step() or the update was the last. Both
// drivers (local mode, the learner) call it after every update.
absl::Status WriteSnapshotIfDue(const JobCore& core, const std::string& dir);

}  // namespace lopt
