// ELO's worker-side runners: ELO_PES truncations of a job's shard (the
// shard's persistent inner states kept between units) and ELO_META_TEST, the
// meta-test of the trained optimizer as `lopt eval` runs it.
#include "kinds/elo/elo_kind.h"

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <utility>

#include <torch/torch.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/elo/elo_shard.h"
#include "common/elo/evaluation_report.h"
#include "common/elo/small_fc_lopt.h"
#include "common/lhopt/lhopt_wire.h"  // EncodePayload
#include "common/tasks/task.h"
#include "common/util/log.h"
#include "common/util/remove_tree.h"
#include "kinds/job_door.h"

namespace lopt {
namespace {

// ELO_PES: one truncation of shard unit.shard() with the unit's theta. The
// shards of a job share its tasks (data, on env.device) and its replay
// buffer; the least recently used shard goes beyond env.max_cached_shards.
// Local mode checkpoints the shards' inner states (SaveState, "<shard>/"
// each), and a shard restored (LoadState) takes its state when its first
// unit makes it.
class EloPesRunner : public UnitRunner {
 public:
  explicit EloPesRunner(UnitRunnerEnv env) : env_(std::move(env)) {}

  bool takes_payload() const override { return false; }

  absl::Status Run(const v1::WorkUnit& unit, const absl::StatusOr<NamedTensors>&,
                   const std::function<bool()>& cancelled, v1::WorkResult* r,
                   std::string*) override {
    auto shard = ShardFor(unit);
    if (!shard.ok()) return shard.status();
    SmallFcLopt lopt(unit.job().lopt());
    const v1::EloUnitInfo& elo = unit.elo();
    auto theta = DecodeFloatTensor(elo.theta(), {lopt.theta_size()}, "theta");
    if (!theta.ok()) return theta.status();
    TruncationResult tr;
    (*shard)->unroller->set_cancel_check(cancelled);
    try {
      tr = (*shard)->unroller->RunTruncation(*theta, elo.alpha(), elo.truncation());
    } catch (const std::exception& e) {
      shards_.erase({unit.job_id(), unit.shard()});
      return absl::InternalError(absl::StrCat("truncation failed: ", e.what()));
    }
    if (tr.cancelled) {
      // Its inner states stopped mid-truncation: the shard starts afresh if
      // its job ever sends it again.
      shards_.erase({unit.job_id(), unit.shard()});
      return absl::CancelledError("the truncation stopped between inner steps");
    }
    v1::EloResultInfo& e = *r->mutable_elo();
    *e.mutable_grad() = EncodeTensor(tr.grad, "grad");
    e.set_meta_loss(tr.meta_loss);
    e.set_task_loss(tr.task_loss);
    e.set_bc_loss(tr.bc_loss);
    e.set_fresh_starts(tr.fresh_starts);
    e.set_restores(tr.restores);
    e.set_pushes(tr.pushes);
    r->set_particle_steps(tr.particle_steps);
    if (tr.buffer_failures > 0) {
      r->set_buffer_failures(tr.buffer_failures);
      r->set_buffer_error(tr.buffer_error.substr(0, 1024));
    }
    return absl::OkStatus();
  }

  // The shards of local mode's one job: those cached, and those restored
  // that no unit has made since.
  NamedTensors SaveState() const override {
    NamedTensors out;
    std::map<int32_t, NamedTensors> states = restored_;
    for (const auto& [key, shard] : shards_) states[key.second] = shard.unroller->SaveState();
    for (auto& [shard, state] : states)
      for (auto& [k, v] : state) out.emplace_back(absl::StrCat(shard, "/", k), v);
    return out;
  }
  absl::Status LoadState(const NamedTensors& state) override {
    restored_.clear();
    for (const auto& [name, value] : state) {
      const size_t slash = name.find('/');
      int32_t shard = -1;
      if (slash == std::string::npos || !absl::SimpleAtoi(name.substr(0, slash), &shard) ||
          shard < 0)
        return absl::InvalidArgumentError(
            absl::StrCat("the checkpoint's ELO shard entry '", name, "' names no shard"));
      restored_[shard].emplace_back(name.substr(slash + 1), value);
    }
    return absl::OkStatus();
  }

 private:
  struct Shard {
    std::string job_bytes;  // the spec the unroller was built for
    TaskCache tasks;        // its groups' tasks (and the job's other shards')
    std::shared_ptr<ReplayBuffer> buffer;
    std::unique_ptr<EloShard> unroller;
    uint64_t last_used = 0;
  };

  absl::StatusOr<Shard*> ShardFor(const v1::WorkUnit& unit) {
    auto key = std::make_pair(unit.job_id(), unit.shard());
    std::string bytes = unit.job().SerializeAsString();
    auto it = shards_.find(key);
    if (it != shards_.end() && it->second.job_bytes == bytes) {
      it->second.last_used = ++use_counter_;
      return &it->second;
    }
    v1::JobSpec spec = unit.job();
    FillJobDefaults(&spec);
    if (auto s = ValidateJob(spec); !s.ok()) return s;
    if (unit.shard() < 0 || unit.shard() >= spec.cluster().shards())
      return absl::InvalidArgumentError(absl::StrCat("shard ", unit.shard(), " is out of range"));
    // Shards of one job share its tasks (data) and its buffer client: the
    // cached shards' tasks seed this one's cache.
    TaskCache tasks;
    for (auto& [k, s] : shards_)
      if (k.first == unit.job_id() && s.job_bytes == bytes) tasks.insert(s.tasks.begin(), s.tasks.end());
    auto device = ParseDevice(env_.device);
    if (!device.ok()) return device.status();
    const TaskFactory make_task = CachingTaskFactory(&tasks, *device);
    std::shared_ptr<ReplayBuffer> buffer = env_.buffer(unit.job_id());
    auto elo = EloShard::Create(spec, make_task, buffer.get(), unit.buffer_prefix(),
                                ShardSeed(spec, unit.shard()));
    if (!elo.ok()) return elo.status();
    if (auto restored = restored_.find(unit.shard()); restored != restored_.end()) {
      if (auto s = (*elo)->LoadState(restored->second); !s.ok()) return s;
      restored_.erase(restored);
    }
    // Evict the least recently used shard beyond the cache's size.
    if (it == shards_.end() && int32_t(shards_.size()) >= env_.max_cached_shards) {
      auto lru = shards_.begin();
      for (auto s = shards_.begin(); s != shards_.end(); ++s)
        if (s->second.last_used < lru->second.last_used) lru = s;
      shards_.erase(lru);
    }
    Shard& sh = shards_[key];
    sh.job_bytes = bytes;
    sh.tasks = std::move(tasks);
    sh.buffer = buffer;
    sh.unroller = *std::move(elo);
    sh.last_used = ++use_counter_;
    return &sh;
  }

  const UnitRunnerEnv env_;
  std::map<std::pair<std::string, int32_t>, Shard> shards_;
  uint64_t use_counter_ = 0;
  std::map<int32_t, NamedTensors> restored_;  // by shard: LoadState's, not yet made
};

// Thrown by the meta-test's progress callback when the learner cancels the unit.
struct MetaTestCancelled {};

// ELO_META_TEST: the meta-test `lopt eval` runs of the theta in the unit's
// payload, into a temporary directory whose report files
// (EncodeMetaTestFiles) are the result's payload. A cancel stops it between
// record windows.
class EloMetaTestRunner : public UnitRunner {
 public:
  explicit EloMetaTestRunner(UnitRunnerEnv env) : env_(std::move(env)) {}

  bool takes_payload() const override { return true; }

  absl::Status Run(const v1::WorkUnit& unit, const absl::StatusOr<NamedTensors>& payload,
                   const std::function<bool()>& cancelled, v1::WorkResult* r,
                   std::string* result_payload) override {
    auto t0 = std::chrono::steady_clock::now();
    // The job as `lopt eval --job` checks it: a meta-test trains one
    // optimizee at a time, whatever a PES unit of it would hold.
    v1::JobSpec spec = unit.job();
    FillJobDefaults(&spec);
    if (auto s = ValidateJob(spec, JobUse::kMetaTest); !s.ok()) return s;
    auto theta = Find(*payload, "theta");
    if (!theta.ok()) return absl::InvalidArgumentError("the unit's payload has no theta");
    const int64_t d = SmallFcLopt(spec.lopt()).theta_size();
    if (theta->dim() != 1 || theta->size(0) != d || theta->scalar_type() != torch::kFloat32)
      return absl::InvalidArgumentError(
          absl::StrCat("the unit's theta must be float32 of shape [", d, "]"));
    // The optimizer the job's optimizer.lopt holds: its options and job, and
    // this theta.
    TrainedOptimizer trained;
    *trained.file.mutable_options() = spec.lopt();
    *trained.file.mutable_job() = spec;
    trained.file.set_outer_step(unit.theta_version());
    trained.theta = *theta;
    // The report is written as `lopt eval --out` writes it, into a directory
    // of this worker's that goes once its files are in the result.
    std::string dir = (std::filesystem::temp_directory_path() / "lopt-meta-test-XXXXXX").string();
    if (::mkdtemp(dir.data()) == nullptr)
      return absl::InternalError(
          absl::StrCat("cannot create a directory for the meta-test: ", std::strerror(errno)));
    struct RemoveDir {
      std::string dir;
      ~RemoveDir() {
        lopt::RemoveTree(dir).IgnoreError();
      }
    } remove_dir{dir};
    MetaTestOptions o;
    o.device = env_.device;
    o.progress = [&cancelled](int64_t, int64_t) {
      if (cancelled()) throw MetaTestCancelled();
    };
    absl::StatusOr<MetaTestOutcome> outcome;
    LogInfo("meta-test of the trained optimizer",
            {{"job", unit.job_id()},
             {"theta_version", absl::StrCat(unit.theta_version())},
             {"steps", absl::StrCat(EvalSteps(spec))}});
    try {
      outcome = RunAndWriteMetaTest(spec, trained, dir, o);
    } catch (const MetaTestCancelled&) {
      return absl::CancelledError("the meta-test stopped between record windows");
    } catch (const std::exception& e) {
      return absl::InternalError(absl::StrCat("the meta-test failed: ", e.what()));
    }
    if (!outcome.ok()) return outcome.status();
    NamedTensors files;
    v1::MetaTestResultInfo* info = r->mutable_meta_test();
    if (auto s = EncodeMetaTestFiles(dir, info, &files); !s.ok()) return s;
    info->set_theta_version(unit.theta_version());
    info->set_runs(outcome->runs);
    info->set_diverged(outcome->diverged);
    *r->mutable_payload() = EncodePayload(files, result_payload);
    // One optimizee a run, each for the meta-test's steps.
    r->set_particle_steps(outcome->runs * EvalSteps(spec));
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    info->set_wall_seconds(seconds);
    LogInfo("meta-test run", {{"job", unit.job_id()},
                              {"theta_version", absl::StrCat(unit.theta_version())},
                              {"runs", absl::StrCat(outcome->runs)},
                              {"diverged", absl::StrCat(outcome->diverged)},
                              {"bytes", absl::StrCat(result_payload->size())},
                              {"seconds", absl::StrFormat("%.1f", seconds)}});
    return absl::OkStatus();
  }

 private:
  const UnitRunnerEnv env_;
};

}  // namespace

std::unique_ptr<UnitRunner> MakeEloPesRunner(const UnitRunnerEnv& env) {
  return std::make_unique<EloPesRunner>(env);
}

std::unique_ptr<UnitRunner> MakeEloMetaTestRunner(const UnitRunnerEnv& env) {
  return std::make_unique<EloMetaTestRunner>(env);
}

}  // namespace lopt
