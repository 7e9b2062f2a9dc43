// LHOPT's worker-side runners: LHOPT_PPO episodes with LhoptEpisodeRunner
// (its register and baseline tables in the job's replay buffer under the
// unit's buffer_prefix) and LHOPT_YARDSTICK, the job's fixed yardstick
// scoring a policy version (its reference runs kept between the job's
// versions).
#include "kinds/job_door.h"
#include "kinds/lhopt/lhopt_kind.h"

#include <chrono>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/lhopt/lhopt_episode.h"
#include "common/lhopt/lhopt_wire.h"
#include "common/lhopt/lhopt_yardstick.h"
#include "common/tasks/task.h"
#include "common/util/log.h"

namespace lopt {
namespace {

// The job of an LHOPT_PPO or LHOPT_YARDSTICK unit (an LHOPT job: the worker
// checked its kind), with its defaults, validated.
absl::StatusOr<v1::JobSpec> LhoptJobOf(const v1::WorkUnit& unit) {
  v1::JobSpec spec = unit.job();
  FillJobDefaults(&spec);
  if (auto s = ValidateJob(spec); !s.ok()) return s;
  return spec;
}

// How many jobs' runners a worker keeps: beyond it, the jobs are long gone.
constexpr size_t kJobsKept = 4;

class LhoptPpoRunner : public UnitRunner {
 public:
  explicit LhoptPpoRunner(UnitRunnerEnv env) : env_(std::move(env)) {}

  bool takes_payload() const override { return true; }

  absl::Status Run(const v1::WorkUnit& unit, const absl::StatusOr<NamedTensors>& payload,
                   const std::function<bool()>& cancelled, v1::WorkResult* r,
                   std::string* result_payload) override {
    r->set_theta_version(unit.lhopt().policy_version());
    auto lu = DecodeLhoptUnit(unit.lhopt(), *payload);
    if (!lu.ok()) return lu.status();
    auto runner = RunnerFor(unit);
    if (!runner.ok()) return runner.status();
    absl::StatusOr<LhoptUnitResult> res;
    (*runner)->set_cancel_check(cancelled);
    try {
      res = (*runner)->Run(*lu);
    } catch (const std::exception& e) {
      runners_.erase(unit.job_id());
      return absl::InternalError(absl::StrCat("LHOPT episodes failed: ", e.what()));
    }
    if (!res.ok()) return res.status();
    NamedTensors tensors;
    EncodeLhoptResult(*res, r->mutable_lhopt(), &tensors);
    *r->mutable_payload() = EncodePayload(tensors, result_payload);
    r->set_particle_steps(res->inner_particle_steps);
    return absl::OkStatus();
  }

 private:
  struct Held {
    std::string job_bytes;
    std::shared_ptr<ReplayBuffer> buffer;
    std::unique_ptr<LhoptEpisodeRunner> runner;
  };

  absl::StatusOr<LhoptEpisodeRunner*> RunnerFor(const v1::WorkUnit& unit) {
    std::string bytes = unit.job().SerializeAsString();
    auto it = runners_.find(unit.job_id());
    if (it != runners_.end() && it->second.job_bytes == bytes) return it->second.runner.get();
    auto job = LhoptJobOf(unit);
    if (!job.ok()) return job.status();
    auto device = ParseDevice(env_.device);
    if (!device.ok()) return device.status();
    if (it == runners_.end() && runners_.size() >= kJobsKept) runners_.clear();
    Held& h = runners_[unit.job_id()];
    h.job_bytes = bytes;
    h.buffer = env_.buffer(unit.job_id());
    // Tables "<job_id>/lhopt/baseline/..." and "<job_id>/lhopt/registers/...":
    // shared by the job's workers, deleted with the job's prefix.
    h.runner = std::make_unique<LhoptEpisodeRunner>(*job, h.buffer.get(),
                                                    unit.buffer_prefix() + "lhopt", *device);
    return h.runner.get();
  }

  const UnitRunnerEnv env_;
  std::map<std::string, Held> runners_;  // per job
};

class LhoptYardstickRunner : public UnitRunner {
 public:
  explicit LhoptYardstickRunner(UnitRunnerEnv env) : env_(std::move(env)) {}

  bool takes_payload() const override { return true; }

  absl::Status Run(const v1::WorkUnit& unit, const absl::StatusOr<NamedTensors>& payload,
                   const std::function<bool()>&, v1::WorkResult* r, std::string*) override {
    auto t0 = std::chrono::steady_clock::now();
    auto stick = YardstickFor(unit);
    if (!stick.ok()) return stick.status();
    absl::StatusOr<YardstickResult> ys;
    try {
      ys = (*stick)->EvaluateShipped(*payload, unit.theta_version());
    } catch (const std::exception& e) {
      sticks_.erase(unit.job_id());
      return absl::InternalError(absl::StrCat("the LHOPT yardstick failed: ", e.what()));
    }
    if (!ys.ok()) return ys.status();
    EncodeYardstickResult(*ys, r->mutable_yardstick());
    r->set_particle_steps(ys->inner_particle_steps);
    LogInfo("LHOPT yardstick scored",
            {{"job", unit.job_id()},
             {"iteration", absl::StrCat(ys->iteration)},
             {"score", absl::StrFormat("%.4g", ys->score)},
             {"seconds", absl::StrFormat("%.1f", std::chrono::duration<double>(
                                                     std::chrono::steady_clock::now() - t0)
                                                     .count())}});
    return absl::OkStatus();
  }

 private:
  struct Held {
    std::string job_bytes;
    std::unique_ptr<LhoptYardstick> stick;
  };

  absl::StatusOr<LhoptYardstick*> YardstickFor(const v1::WorkUnit& unit) {
    std::string bytes = unit.job().SerializeAsString();
    auto it = sticks_.find(unit.job_id());
    if (it != sticks_.end() && it->second.job_bytes == bytes) return it->second.stick.get();
    auto job = LhoptJobOf(unit);
    if (!job.ok()) return job.status();
    if (job->lhopt().yardstick().every() <= 0)
      return absl::InvalidArgumentError(
          "an LHOPT_YARDSTICK unit's job has no lhopt.yardstick with every > 0");
    auto device = ParseDevice(env_.device);
    if (!device.ok()) return device.status();
    if (it == sticks_.end() && sticks_.size() >= kJobsKept) sticks_.clear();
    Held& h = sticks_[unit.job_id()];
    h.job_bytes = bytes;
    // Its reference runs are done once and kept for the job's later versions.
    h.stick = std::make_unique<LhoptYardstick>(*job, *device);
    return h.stick.get();
  }

  const UnitRunnerEnv env_;
  std::map<std::string, Held> sticks_;  // per job
};

}  // namespace

std::unique_ptr<UnitRunner> MakeLhoptPpoRunner(const UnitRunnerEnv& env) {
  return std::make_unique<LhoptPpoRunner>(env);
}

std::unique_ptr<UnitRunner> MakeLhoptYardstickRunner(const UnitRunnerEnv& env) {
  return std::make_unique<LhoptYardstickRunner>(env);
}

}  // namespace lopt
