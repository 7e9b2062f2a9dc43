// lopt-worker's engine: connects to the learner's WorkService, registers,
// runs the work units it is sent (ELO_PES: truncations of a job's shard,
// with the shard's persistent inner states kept here between units;
// ELO_META_TEST: the meta-test of a job's trained optimizer, as `lopt eval`
// runs it; LHOPT_PPO: PPO episodes with LhoptEpisodeRunner, whose register
// and baseline tables live in make_buffer's buffer under the unit's
// buffer_prefix; LHOPT_YARDSTICK: the job's fixed yardstick scores a policy
// version, its reference runs kept here between the job's versions) and
// streams back one result per unit (LHOPT: with its episodes, the meta-test:
// with its report's files, as a chunked payload), with heartbeats while it
// works. A heartbeat's
// reply can cancel the running unit (its job was cancelled or ended, or the unit
// went to another worker): an ELO unit stops before its next inner step, sends
// no result and the worker takes its next unit. When the learner goes away it
// reconnects with exponential backoff.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "common/elo/elo_shard.h"
#include "common/elo/replay_buffer.h"
#include "common/lhopt/lhopt_episode.h"
#include "common/lhopt/lhopt_yardstick.h"
#include "common/rpc/rpc.h"
#include "common/tasks/task.h"
#include "lopt/v1/work_service.grpc.pb.h"

namespace lopt {

struct WorkerOptions {
  ClientConfig learner;
  std::string name;            // stable across restarts (host or pod name)
  std::string device = "cpu";
  int64_t max_particles = 0;   // 0: no limit
  int64_t memory_bytes = 0;    // reported to the learner for admission (0: none)
  int32_t max_cached_shards = 16;
  int64_t initial_backoff_ms = 200;
  int64_t max_backoff_ms = 5000;
  // Makes the replay buffer a job's shards use (the buffer server's client,
  // or an in-process one); called once per job.
  std::function<std::unique_ptr<ReplayBuffer>()> make_buffer;
};

class Worker {
 public:
  explicit Worker(WorkerOptions options);
  ~Worker();

  // Runs until Stop(): connect, register, serve, reconnect.
  void Run();
  // Thread-safe; Run returns soon after.
  void Stop();

  // Runs one unit here (no learner involved): what Run does with each unit.
  v1::WorkResult RunUnit(const v1::WorkUnit& unit);
  // Runs an LHOPT_PPO or LHOPT_YARDSTICK unit whose payload (the weights) was received as
  // `payload` (or failed to arrive: the result reports the error). The
  // result's payload bytes go to *result_payload (result.payload() says so).
  v1::WorkResult RunLhoptUnit(const v1::WorkUnit& unit,
                              const absl::StatusOr<NamedTensors>& payload,
                              std::string* result_payload);

  // Runs an ELO_META_TEST unit whose payload (the trained theta) was
  // received as `payload` (or failed to arrive: the result reports the
  // error): the meta-test `lopt eval` runs, into a temporary directory whose
  // report files (EncodeMetaTestFiles) are the result's payload, in
  // *result_payload. A cancel by the learner stops it between record windows.
  v1::WorkResult RunMetaTestUnit(const v1::WorkUnit& unit,
                                 const absl::StatusOr<NamedTensors>& payload,
                                 std::string* result_payload);

  int64_t units_done() const { return units_done_.load(); }
  int64_t connections() const { return connections_.load(); }

 private:
  struct Shard {
    std::string job_bytes;  // the spec the unroller was built for
    TaskCache tasks;  // its groups' tasks (and the job's other shards')
    std::shared_ptr<ReplayBuffer> buffer;
    std::unique_ptr<EloShard> unroller;
    uint64_t last_used = 0;
  };
  absl::StatusOr<Shard*> ShardFor(const v1::WorkUnit& unit);
  struct LhoptRunner {
    std::string job_bytes;
    std::shared_ptr<ReplayBuffer> buffer;
    std::unique_ptr<LhoptEpisodeRunner> runner;
  };
  absl::StatusOr<LhoptEpisodeRunner*> LhoptRunnerFor(const v1::WorkUnit& unit);
  // A unit that ran: its result's seconds since t0, the worker's counts and
  // metrics (result "ok", its particle_steps, seconds).
  void CountRun(std::chrono::steady_clock::time_point t0, v1::WorkResult* r);
  struct YardstickHolder {
    std::string job_bytes;
    std::unique_ptr<LhoptYardstick> stick;
  };
  absl::StatusOr<LhoptYardstick*> YardstickFor(const v1::WorkUnit& unit);
  // One connection's life; returns when the stream ends.
  void Serve();
  // Whether the learner cancelled unit `unit_id` (RunUnit asks between inner steps).
  bool Cancelled(uint64_t unit_id) const { return unit_id != 0 && cancelled_unit_.load() == unit_id; }

  WorkerOptions options_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> units_done_{0};
  std::atomic<int64_t> connections_{0};
  // The unit the learner cancelled on this connection (0: none).
  std::atomic<uint64_t> cancelled_unit_{0};
  std::mutex ctx_mu_;
  grpc::ClientContext* ctx_ = nullptr;  // guarded by ctx_mu_: the live stream's
  std::map<std::pair<std::string, int32_t>, Shard> shards_;
  std::map<std::string, std::shared_ptr<ReplayBuffer>> buffers_;  // per job
  std::map<std::string, LhoptRunner> lhopt_;                      // per job
  std::map<std::string, YardstickHolder> sticks_;                 // per job
  uint64_t use_counter_ = 0;
};

}  // namespace lopt
