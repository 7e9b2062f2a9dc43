// The learner's state: every job (its core, learner/job_core.h: ELO's or
// LHOPT's algorithm; its status and checkpoint file), every connected worker,
// and which worker runs which unit. The gRPC
// services (learner/job_service.h, learner/work_service.h) are thin doors
// onto it.
//
// Thread-safe: one mutex guards everything; a condition variable wakes
// workers waiting for units and clients watching jobs.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "common/rpc.h"
#include "common/replay_buffer.h"
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
  // When an ELO job succeeds, run its meta-test (as `lopt eval` does) into
  // <state_dir>/jobs/<job_id>/eval/, in a background thread. lopt-learner
  // turns it on (--meta-test); in-process uses (tests, benchmarks) leave it off.
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
  absl::StatusOr<std::string> Submit(const v1::JobSpec& job);
  absl::StatusOr<v1::JobStatus> Get(const std::string& job_id, bool with_spec) const;
  std::vector<v1::JobStatus> List() const;
  absl::StatusOr<v1::JobStatus> Cancel(const std::string& job_id);
  // Waits until the job's status changed since *version (or `timeout`), then
  // returns it and updates *version. NOT_FOUND for an unknown job.
  absl::StatusOr<v1::JobStatus> WaitForChange(const std::string& job_id, int64_t* version,
                                              std::chrono::milliseconds timeout) const;
  // The optimizer file's bytes: the trained one, or theta so far while it
  // runs. LHOPT jobs: the controller file (controller.lhopt), likewise.
  absl::StatusOr<std::string> ExportOptimizer(const std::string& job_id);
  // Another file of the job's directory (ExportOptimizerRequest.file's list:
  // job.textproto, metrics.csv, training.png, eval/report.json, ...).
  // INVALID_ARGUMENT for a name not on it, NOT_FOUND while it does not exist.
  absl::StatusOr<std::string> ExportFile(const std::string& job_id, const std::string& file);

  // --- WorkService ---
  // Returns the worker's id.
  std::string RegisterWorker(const v1::WorkerInfo& info);
  // Waits up to `timeout` for a unit for the worker. NOT_FOUND when the
  // worker is gone (timed out or disconnected) or the manager shuts down;
  // an empty optional when there is no work yet. A unit with a payload
  // (LHOPT_PPO: unit.payload() set) has its bytes in *payload, which the
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
  std::string Heartbeat(const std::string& worker_id, uint64_t unit_id = 0);
  // The worker's stream ended: its running unit goes back to the pool.
  void DisconnectWorker(const std::string& worker_id);
  int ConnectedWorkers() const;

  // Wakes every waiter; NextUnit returns NOT_FOUND from now on.
  void Shutdown();

  // Checkpoints every unfinished job at its current step (a learner told to
  // stop does this, so that a restart loses none of its steps).
  void SaveAll();

 private:
  struct Job;
  struct Worker;
  explicit JobManager(const LearnerOptions& options);
  absl::Status LoadAll();
  absl::Status Checkpoint(Job& job);                 // REQUIRES mu_
  void Finish(Job& job, v1::JobState state, const std::string& error);  // REQUIRES mu_
  // The end of Finish once the job's final state is set (and, for SUCCEEDED,
  // durable): logs, gauges, the buffer's tables. REQUIRES mu_
  void Finished(Job& job);
  // Writes the job's checkpoint (a finishing job: its trained file, then a
  // checkpoint that says SUCCEEDED, then Finished). A failure is counted in
  // lopt_checkpoint_failures_total, shown in the job's status and retried
  // by the janitor until a write succeeds. REQUIRES mu_
  void Save(Job& job);
  v1::JobStatus StatusOf(const Job& job) const;      // REQUIRES mu_
  void Touch(Job& job);                              // REQUIRES mu_
  void RecordParticleSteps(Job& job, int64_t steps);  // REQUIRES mu_
  void DropWorker(Worker& w, const std::string& why);  // REQUIRES mu_
  void UpdateJobGauges();                            // REQUIRES mu_
  void JanitorLoop();
  // LHOPT jobs with lhopt.yardstick.every > 0: the policy's weights at each
  // due version are queued (REQUIRES mu_) and scored by yardstick_thread_,
  // which sets lopt_lhopt_yardstick_score and appends to the job's
  // yardstick.csv. A request in flight delays the manager's destruction
  // until its evaluation ends.
  void QueueYardstick(Job& job);
  void YardstickLoop();
  struct YardstickRequest {
    std::string job_id;
    v1::JobSpec spec;
    int64_t version = 0;
    NamedTensors policy;
  };
  std::string JobDir(const std::string& id) const;
  // What a run directory holds beside the checkpoint, as `lopt train` leaves
  // it: metrics.csv a row an update (AppendMetricsRow, REQUIRES mu_), and,
  // by outputs_thread_ outside mu_, training.png at each checkpoint and at
  // the end, and a succeeded ELO job's meta-test in eval/ (QueueOutputs,
  // REQUIRES mu_). Shutdown abandons a meta-test under way.
  void AppendMetricsRow(Job& job, const std::string& row);
  void QueueOutputs(Job& job, bool meta_test);
  void OutputsLoop();
  struct OutputsRequest {
    std::string job_id;
    v1::JobSpec spec;
    bool meta_test = false;
  };

  const LearnerOptions options_;
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::map<std::string, std::unique_ptr<Job>> jobs_;       // guarded by mu_
  std::map<std::string, std::unique_ptr<Worker>> workers_; // guarded by mu_
  std::string rr_cursor_;                                  // guarded by mu_
  uint64_t next_unit_id_;                                  // guarded by mu_
  uint64_t next_worker_ = 1;                               // guarded by mu_
  std::vector<std::string> cleanup_prefixes_;              // guarded by mu_
  bool shutdown_ = false;                                  // guarded by mu_
  std::thread janitor_;
  std::deque<YardstickRequest> yardstick_queue_;           // guarded by mu_
  std::thread yardstick_thread_;
  std::deque<OutputsRequest> outputs_queue_;               // guarded by mu_
  std::thread outputs_thread_;
  std::atomic<bool> stop_outputs_{false};
};

}  // namespace lopt
