// The learner's state: every job (its core, learner/job_core.h: ELO's or
// LHOPT's algorithm; its status and checkpoint file), every connected worker,
// and which worker runs which unit. The gRPC
// services (learner/learner_services.h: JobService, WorkService) are thin doors
// onto it.
//
// Thread-safe, and no job's slow work stalls the others or the doors. Two
// kinds of lock (absl::Mutex, learner/mutex.h; clang's -Wthread-safety
// checks the annotations: the learner.thread_safety test):
// - mu_, the manager's: the job table (each job's slot: its last published
//   status, a count of the threads busy with it, units of gone workers to
//   hand back), the workers and their units, the queues. Held only for
//   short bookkeeping: heartbeats, NextUnit, Get, List and Watch take only
//   this one (NextUnit also the lock of a job nobody else is busy with).
// - Job::mu, each job's own: its core (the algorithm) and everything it
//   counts. Its slow work (a PPO update in Accept, writing and fsyncing a
//   checkpoint or trained file, an export) runs under this lock alone, in
//   a "section" that the slot counts as busy: NextUnit passes over a busy
//   job instead of waiting for it (the section's end wakes it), and a
//   status change is published to the slot when the section ends, so Watch
//   and Get never wait for a job's work either.
// Order: mu_ before Job::mu, and never mu_ while holding a Job::mu (what a
// section does under mu_ -- queue outputs, release its workers' units,
// publish its status -- it leaves in Job::fx for the section's end). A
// holder of mu_ takes a Job::mu only when the slot says nobody is busy with
// the job, so it never waits for it.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <set>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "common/elo/replay_buffer.h"
#include "common/rpc/rpc.h"
#include "learner/job_core.h"
#include "learner/mutex.h"
#include "lopt/v1/job_service.pb.h"
#include "lopt/v1/work_service.pb.h"

namespace prometheus {
class Counter;
class Gauge;
}  // namespace prometheus


namespace lopt {

struct LearnerOptions {
  // Jobs' checkpoints and trained optimizers: <state_dir>/jobs/<job_id>/.
  std::string state_dir = "/var/lib/lopt/learner";
  // A worker silent (no heartbeat, no result) for this long loses its unit.
  int64_t worker_timeout_ms = 30000;
  // What workers are told to send at least this often.
  int32_t heartbeat_interval_ms = 1000;
  // The buffer server, to delete a job's tables when it ends (empty: none).
  ClientConfig buffer;
  // A finished job's labelled series stay this long, so a last scrape sees them.
  int64_t metrics_retention_ms = 600000;
  // An ELO job's last outer step is followed by its meta-test (as `lopt eval`
  // runs it), an ELO_META_TEST unit that a worker runs; the job succeeds once
  // the report is in <state_dir>/jobs/<job_id>/eval/. The learner itself
  // trains no optimizee. lopt-learner turns it on (--meta-test); in-process
  // uses (tests, benchmarks) leave it off: a job succeeds after its last step.
  bool meta_test = false;
};

class JobManager {
 public:
  // Loads every job under options.state_dir; unfinished ones resume from
  // their last checkpoint.
  static absl::StatusOr<std::unique_ptr<JobManager>> Create(const LearnerOptions& options);
  ~JobManager();

  // --- JobService ---
  // REQUIRES: `job` has passed ValidateJob. Returns the job id; the job is
  // checkpointed before this returns.
  absl::StatusOr<std::string> Submit(const v1::JobSpec& job) ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<v1::JobStatus> Get(const std::string& job_id, bool with_spec) const ABSL_LOCKS_EXCLUDED(mu_);
  std::vector<v1::JobStatus> List() const ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<v1::JobStatus> Cancel(const std::string& job_id) ABSL_LOCKS_EXCLUDED(mu_);
  // Waits until the job's status changed since *version (or `timeout`), then
  // returns it and updates *version. NOT_FOUND for an unknown job.
  absl::StatusOr<v1::JobStatus> WaitForChange(const std::string& job_id, int64_t* version,
                                              std::chrono::milliseconds timeout) const;
  // The optimizer file's bytes: the trained one, or theta so far while it
  // runs. LHOPT jobs: the controller file (controller.lhopt), likewise.
  absl::StatusOr<std::string> ExportOptimizer(const std::string& job_id);
  // Another file of the job's directory (ExportOptimizerRequest.file's list:
  // job.textproto, summary.json, metrics.csv, training.png, rewards.png,
  // eval/report.json, ...).
  // INVALID_ARGUMENT for a name not on it, NOT_FOUND while it does not exist.
  absl::StatusOr<std::string> ExportFile(const std::string& job_id, const std::string& file);

  // --- WorkService ---
  // Returns the worker's id.
  std::string RegisterWorker(const v1::WorkerInfo& info) ABSL_LOCKS_EXCLUDED(mu_);
  // Waits up to `timeout` for a unit for the worker. NOT_FOUND when the
  // worker is gone (timed out or disconnected) or the manager shuts down;
  // an empty optional when there is no work yet. A unit with a payload
  // (LHOPT_PPO, LHOPT_YARDSTICK, ELO_META_TEST: unit.payload() set) has its bytes in *payload, which the
  // caller sends as Chunks after the unit; with payload null, only units
  // without one are handed out.
  absl::StatusOr<std::optional<v1::WorkUnit>> NextUnit(const std::string& worker_id,
                                                       std::chrono::milliseconds timeout,
                                                       std::string* payload = nullptr);
  // `payload`: the tensors of the payload the result announced (the error
  // of receiving or decoding them: the result is rejected with it).
  v1::ResultAck HandleResult(const std::string& worker_id, const v1::WorkResult& result,
                             const absl::StatusOr<NamedTensors>& payload = NamedTensors{});
  // A heartbeat naming the unit the worker runs (0: idle). Returns why that
  // unit is no longer the worker's (its job ended, or it was reassigned):
  // the caller tells the worker to stop it. Empty while it still is.
  std::string Heartbeat(const std::string& worker_id, uint64_t unit_id = 0)
      ABSL_LOCKS_EXCLUDED(mu_);
  // The worker's stream ended: its running unit goes back to the pool.
  void DisconnectWorker(const std::string& worker_id) ABSL_LOCKS_EXCLUDED(mu_);
  int ConnectedWorkers() const ABSL_LOCKS_EXCLUDED(mu_);

  // Wakes every waiter; NextUnit returns NOT_FOUND from now on.
  void Shutdown() ABSL_LOCKS_EXCLUDED(mu_);

  // Checkpoints every unfinished job at its current step (a learner told to
  // stop does this, so that a restart loses none of its steps).
  void SaveAll() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct OutputsRequest {
    std::string job_id;
    v1::JobSpec spec;
    // The job has ended: once these outputs are drawn its directory is final,
    // and the log says so ("run directory complete").
    bool ended = false;
  };
  // What a job's section leaves for the manager (Job::fx, then TakeEffects):
  // applied under mu_ by Apply.
  struct Effects {
    int64_t section = 0;  // the job's count of sections: a later one's status wins
    int64_t touches = 0;  // the job's count of Touch calls: the status version
    v1::JobStatus status;
    bool unsaved = false;  // the janitor's retries
    std::chrono::steady_clock::time_point next_save;
    bool state_changed = false;  // lopt_jobs by state
    bool release_units = false;  // the job ended: its workers' units are over
    std::string ended_state;     // and how (for the heartbeats' replies)
    bool finished = false;       // Finished: its buffer tables go, its series later
    bool outputs = false;
  };
  // A job (shared with the threads busy with it); its lock guards all but
  // its id and spec.
  struct Job {
    Job(std::string id, v1::JobSpec spec) : id(std::move(id)), spec(std::move(spec)) {}
    const std::string id;
    const v1::JobSpec spec;
    Mutex mu;
    std::unique_ptr<JobCore> core ABSL_GUARDED_BY(mu);  // the algorithm: MakeJobCore(spec)
    v1::JobState state ABSL_GUARDED_BY(mu) = v1::QUEUED;
    std::string error ABSL_GUARDED_BY(mu);
    int64_t submitted_ms ABSL_GUARDED_BY(mu) = 0;
    int64_t updated_ms ABSL_GUARDED_BY(mu) = 0;
    int64_t touches ABSL_GUARDED_BY(mu) = 0;   // bumped on every status change
    int64_t sections ABSL_GUARDED_BY(mu) = 0;  // bumped at the end of every section
    int64_t accepted ABSL_GUARDED_BY(mu) = 0;
    int64_t dropped_stale ABSL_GUARDED_BY(mu) = 0;
    int64_t rejected ABSL_GUARDED_BY(mu) = 0;
    int consecutive_worker_errors ABSL_GUARDED_BY(mu) = 0;
    int64_t buffer_failures ABSL_GUARDED_BY(mu) = 0;  // reported by the workers' results
    std::string buffer_error ABSL_GUARDED_BY(mu);     // the last of them
    // The latest update's (CoreVerdict).
    double last_meta ABSL_GUARDED_BY(mu) = 0;
    double last_task ABSL_GUARDED_BY(mu) = 0;
    // (time, particle steps), and the sum of their steps (the rate's, kept
    // as entries come and go: not a pass over 30 s of results each result).
    std::deque<std::pair<std::chrono::steady_clock::time_point, int64_t>> recent ABSL_GUARDED_BY(mu);
    int64_t recent_steps ABSL_GUARDED_BY(mu) = 0;
    double rate ABSL_GUARDED_BY(mu) = 0;
    bool series_removed ABSL_GUARDED_BY(mu) = false;
    // Its steps are done; it is SUCCEEDED once its trained file and a
    // checkpoint that says so are on disk (until then RUNNING).
    bool finishing ABSL_GUARDED_BY(mu) = false;
    // The last write of its checkpoint or trained file failed: save_error says
    // why (shown in its status), and the janitor retries at next_save.
    bool unsaved ABSL_GUARDED_BY(mu) = false;
    std::string save_error ABSL_GUARDED_BY(mu);
    std::chrono::steady_clock::time_point next_save ABSL_GUARDED_BY(mu);
    // Files of accepted results (CoreVerdict::file_writes) not written yet
    // (a full disk): each save writes them before its checkpoint.
    std::vector<RunFileWrite> unwritten ABSL_GUARDED_BY(mu);
    // What this section leaves for the manager (TakeEffects).
    Effects fx ABSL_GUARDED_BY(mu);
    // Metrics series of this job (the core adds its own).
    prometheus::Counter* m_outer ABSL_GUARDED_BY(mu) = nullptr;
    prometheus::Counter* m_inner ABSL_GUARDED_BY(mu) = nullptr;
    prometheus::Counter* m_accepted ABSL_GUARDED_BY(mu) = nullptr;
    prometheus::Counter* m_stale ABSL_GUARDED_BY(mu) = nullptr;
    prometheus::Gauge* m_meta ABSL_GUARDED_BY(mu) = nullptr;
    prometheus::Gauge* m_task ABSL_GUARDED_BY(mu) = nullptr;
    prometheus::Gauge* m_step ABSL_GUARDED_BY(mu) = nullptr;
    prometheus::Gauge* m_rate ABSL_GUARDED_BY(mu) = nullptr;
    prometheus::Gauge* m_budget ABSL_GUARDED_BY(mu) = nullptr;
    std::map<std::string, prometheus::Counter*> m_rejected ABSL_GUARDED_BY(mu);

    void AddSeries() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);
    prometheus::Counter& Rejected(const std::string& reason) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);
    void RemoveSeries() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);
  };

  struct Worker;
  // NextUnit but the unit's spec (the job the unit is of: *job_out).
  absl::StatusOr<std::optional<v1::WorkUnit>> WaitForUnit(const std::string& worker_id,
                                                          std::chrono::milliseconds timeout,
                                                          std::string* payload,
                                                          std::shared_ptr<Job>* job_out)
      ABSL_LOCKS_EXCLUDED(mu_);
  // The manager's view of a job (guarded by mu_, as jobs_ is).
  struct Slot {
    std::shared_ptr<Job> job;
    // Threads between Enter and Leave: NextUnit leaves the job alone while
    // any is, and only then may a holder of mu_ take the job's lock (it is
    // free: nothing else holds it).
    int busy = 0;
    v1::JobStatus status;  // the last published (workers: 0)
    int64_t section = -1;
    int64_t version = 0;   // the status's touches: what WaitForChange compares
    bool unsaved = false;
    std::chrono::steady_clock::time_point next_save, finished_at;
    bool series_removed = false;
    // Units (shard, token) of workers gone while the job was busy: given
    // back (JobCore::Abandon) once it is not.
    std::vector<std::pair<int32_t, int64_t>> abandons;
  };

  explicit JobManager(const LearnerOptions& options);
  absl::Status LoadAll();
  // What every job's core is made with (LearnerOptions::meta_test).
  JobCoreOptions CoreOptions() const;

  // --- a job's section (its lock held: Job::mu) ---
  // Enter counts the thread busy with the job (under mu_) and returns it
  // (null for an unknown id); the caller then locks its mu, works, takes
  // its effects (TakeEffects) and unlocks it, and Leave applies them
  // under mu_ and ends the busy count.
  std::shared_ptr<Job> Enter(const std::string& id) ABSL_LOCKS_EXCLUDED(mu_);
  Effects TakeEffects(Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(job.mu);
  void Leave(Job& job, Effects fx) ABSL_LOCKS_EXCLUDED(mu_);
  void LeaveLocked(Job& job, Effects fx) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // What a section left, applied: its status published to the slot,
  // gauges, queues, its workers' units released.
  // `wake_idle`: whether the workers waiting for a unit look again (where
  // the job is free).
  void Apply(Slot& slot, Effects& fx, bool wake_idle = true) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Units of gone workers given back to a job nobody is busy with.
  void DrainAbandons(Slot& slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Status Checkpoint(Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(job.mu);
  void Finish(Job& job, v1::JobState state, const std::string& error)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(job.mu);
  // The end of Finish once the job's final state is set (and, for SUCCEEDED,
  // durable): summary.json, logs, gauges, the buffer's tables.
  void Finished(Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(job.mu) ABSL_LOCKS_EXCLUDED(mu_);
  // <job dir>/summary.json of an ended job, as `lopt train` leaves one: its
  // state, updates and budget, losses (rewards) at the start and the end,
  // results, wall seconds. A small file written in the job's section (its
  // lock), never under mu_; a failure is logged.
  void WriteSummary(const Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(job.mu) ABSL_LOCKS_EXCLUDED(mu_);
  // Writes the job's checkpoint (a finishing job: its trained file, then a
  // checkpoint that says SUCCEEDED, then Finished). A failure is counted in
  // lopt_checkpoint_failures_total, shown in the job's status and retried
  // by the janitor until a write succeeds.
  void Save(Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(job.mu);
  // The job's status as its slot publishes it (workers: 0; ClientStatus
  // counts them).
  v1::JobStatus StatusOf(const Job& job) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(job.mu);
  v1::JobStatus ClientStatus(const Slot& slot) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Why no connected worker can run a unit of `spec` (WhyWorkerCannotHold for
  // each), or "" when one can or none is connected (workers may yet come).
  std::string WhyNoWorkerCanHold(const v1::JobSpec& spec) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Touch(Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(job.mu);
  void RecordParticleSteps(Job& job, int64_t steps) ABSL_EXCLUSIVE_LOCKS_REQUIRED(job.mu);
  v1::ResultAck HandleResultLocked(Job& job, const std::string& worker_id,
                                   const v1::WorkResult& result, bool unit_ok, int64_t token,
                                   const absl::StatusOr<NamedTensors>& payload)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(job.mu);
  void DropWorker(Worker& w, const std::string& why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int ConnectedWorkersLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UpdateJobGauges() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Wakes the waiters on cv_ and (SignalIdleWorkers) NextUnit's of the
  // workers that may take a unit now (none running, or gone); a worker that
  // runs one waits for its end alone (its unit's end, its drop and shutdown
  // signal it).
  void SignalAll() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SignalIdleWorkers() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void JanitorLoop() ABSL_LOCKS_EXCLUDED(mu_);
  std::string JobDir(const std::string& id) const;
  // What a run directory holds beside the checkpoint, as `lopt train` leaves
  // it: metrics.csv a row an update (AppendMetricsRow), the files results
  // bring (a yardstick.csv row, an ELO job's meta-test report in eval/, which
  // a worker ran), and, by outputs_thread_ outside every lock, training.png
  // at each checkpoint and at the end (QueueOutputs asks for it through
  // Job::fx; EnqueueOutputs queues it).
  void AppendMetricsRow(Job& job, const std::string& row) ABSL_EXCLUSIVE_LOCKS_REQUIRED(job.mu);
  // A result's row of another CSV file of the job's directory (CoreVerdict::file_rows).
  void AppendRunFileRow(Job& job, const RunFileRow& row) ABSL_EXCLUSIVE_LOCKS_REQUIRED(job.mu);
  // A result's whole files (CoreVerdict::file_writes), each written
  // atomically; what cannot be written now waits in Job::unwritten for the
  // job's next save (FlushRunFiles), which fails until it is written.
  void WriteRunFiles(Job& job, std::vector<RunFileWrite> files) ABSL_EXCLUSIVE_LOCKS_REQUIRED(job.mu);
  absl::Status FlushRunFiles(Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(job.mu);
  void QueueOutputs(Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(job.mu);
  void EnqueueOutputs(const Job& job, bool ended) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OutputsLoop() ABSL_LOCKS_EXCLUDED(mu_);

  const LearnerOptions options_;
  mutable Mutex mu_;
  // Signalled (under mu_, by SignalAll) on every change a waiter may wait
  // for: a unit released, a job's section ended, a status published.
  mutable CondVar cv_;
  // The janitor's and the outputs thread's own: signalled where they have
  // something new to do (a job ended, a save failed, outputs queued) and on
  // shutdown, not by every result (their waits on cv_ woke them each time).
  CondVar janitor_cv_;
  CondVar outputs_cv_;
  std::map<std::string, Slot> jobs_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> reserved_ids_ ABSL_GUARDED_BY(mu_);  // jobs being submitted
  // Shared: NextUnit keeps its worker while it waits on the worker's CondVar.
  std::map<std::string, std::shared_ptr<Worker>> workers_ ABSL_GUARDED_BY(mu_);
  std::string rr_cursor_ ABSL_GUARDED_BY(mu_);
  uint64_t next_unit_id_ ABSL_GUARDED_BY(mu_);
  uint64_t next_worker_ ABSL_GUARDED_BY(mu_) = 1;
  std::vector<std::string> cleanup_prefixes_ ABSL_GUARDED_BY(mu_);
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  std::thread janitor_;
  std::deque<OutputsRequest> outputs_queue_ ABSL_GUARDED_BY(mu_);
  std::thread outputs_thread_;
};

}  // namespace lopt
