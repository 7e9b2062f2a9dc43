// lopt-worker's engine: connects to the learner's WorkService, registers,
// runs the work units it is sent and streams back one result per unit (with
// a chunked payload where the kind has one), with heartbeats while it works.
// A unit runs on the runner its kind makes (kinds/job_kind.h: the registry's
// KindOfUnit, then JobKind::MakeRunner, one runner a unit kind, kept for the
// worker's life): ELO_PES truncations of a job's shard, whose inner states
// stay here between units; ELO_META_TEST, the meta-test of a job's trained
// optimizer as `lopt eval` runs it; LHOPT_PPO episodes, whose register and
// baseline tables live in make_buffer's buffer under the unit's
// buffer_prefix; LHOPT_YARDSTICK, the job's fixed yardstick scoring a policy
// version. A heartbeat's reply can cancel the running unit (its job was
// cancelled or ended, or the unit went to another worker): the unit stops
// between its inner steps, sends no result and the worker takes its next
// unit. When the learner goes away it reconnects with exponential backoff.
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
#include "common/elo/replay_buffer.h"
#include "common/rpc/rpc.h"
#include "kinds/job_kind.h"
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

  // Runs one unit here (no learner involved), as Run does each unit it is
  // sent: a unit without a payload, and one whose payload (the chunks after
  // it) was received as `payload` (or failed to arrive: the result reports
  // the error), its result's payload bytes in *result_payload
  // (result.payload() says so).
  v1::WorkResult RunUnit(const v1::WorkUnit& unit);
  v1::WorkResult RunUnit(const v1::WorkUnit& unit, const absl::StatusOr<NamedTensors>& payload,
                         std::string* result_payload);

  int64_t units_done() const { return units_done_.load(); }
  int64_t connections() const { return connections_.load(); }

 private:
  // `payload`: null for a unit sent without one.
  v1::WorkResult RunOne(const v1::WorkUnit& unit, const absl::StatusOr<NamedTensors>* payload,
                        std::string* result_payload);
  // The runner of a unit kind, made by its kind on first use (null: no kind has it).
  UnitRunner* RunnerFor(v1::Algorithm unit_kind);
  // A unit that ran: its result's seconds since t0, the worker's counts and
  // metrics (result "ok", its particle_steps, seconds).
  void CountRun(std::chrono::steady_clock::time_point t0, v1::WorkResult* r);
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
  std::map<std::string, std::shared_ptr<ReplayBuffer>> buffers_;  // per job
  std::map<v1::Algorithm, std::unique_ptr<UnitRunner>> runners_;  // per unit kind
};

}  // namespace lopt
