// ELO's learner core: PES meta-training of small_fc_lopt over shards
// (learner/elo_job.h), then the meta-test of the trained optimizer as a unit
// of its own.
#include "kinds/elo/elo_kind.h"

#include <algorithm>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/elo/evaluation_report.h"
#include "common/elo/optimizer_file.h"
#include "common/util/json.h"
#include "common/util/run_files.h"
#include "learner/elo_job.h"

namespace lopt {
namespace {

class EloCore : public JobCore {
 public:
  EloCore(const v1::JobSpec& spec, const JobCoreOptions& options)
      : job_(spec), owner_(job_.num_shards()), meta_test_(options.meta_test) {}

  const char* algorithm() const override { return "elo_pes"; }
  int64_t Step() const override { return job_.outer_step(); }
  int64_t Total() const override { return job_.total_steps(); }
  // Done once the last outer step is applied and, where the job is
  // meta-tested, the trained optimizer's report has come back.
  bool Done() const override { return job_.done() && (!meta_test_ || meta_tested_); }
  int32_t NumShards() const override { return job_.num_shards(); }
  int64_t CheckpointEvery() const override { return job_.spec().budget().checkpoint_every(); }
  int64_t SnapshotEvery() const override { return job_.spec().budget().snapshot_every(); }
  double Alpha() const override { return job_.learner().Alpha(); }
  std::string MetricsCsvHeader() const override { return kEloMetricsHeader; }
  // As local mode's summary.json: means over the first and last 10 steps.
  std::vector<std::pair<std::string, std::string>> SummaryFields() const override {
    auto [meta_start, meta_end] = StartEndMeans(job_.meta_losses(), 10);
    auto [task_start, task_end] = StartEndMeans(job_.task_losses(), 10);
    return {{"outer_steps", absl::StrCat(job_.outer_step())},
            {"total_steps", absl::StrCat(job_.total_steps())},
            {"meta_loss_start", JsonNumber(meta_start)},
            {"meta_loss_end", JsonNumber(meta_end)},
            {"task_loss_start", JsonNumber(task_start)},
            {"task_loss_end", JsonNumber(task_end)},
            {"alpha", JsonNumber(job_.learner().Alpha())}};
  }
  std::optional<std::pair<double, double>> LastLosses() const override {
    if (job_.meta_losses().empty()) return std::nullopt;
    return std::make_pair(job_.meta_losses().back(), job_.task_losses().back());
  }
  // The job's state, and whether the trained optimizer's meta-test report
  // came back: a job restored after its last outer step asks a worker for
  // the meta-test again unless it had.
  NamedTensors SaveState() const override {
    NamedTensors s = job_.SaveState();
    s.emplace_back(kMetaTestedKey, torch::tensor({int64_t(meta_tested_)}, torch::kInt64));
    return s;
  }
  absl::Status LoadState(const NamedTensors& s) override {
    NamedTensors rest;
    meta_tested_ = false;  // a checkpoint from before the key: not meta-tested
    for (const auto& [name, value] : s) {
      if (name != kMetaTestedKey) {
        rest.emplace_back(name, value);
      } else if (value.numel() == 1) {
        meta_tested_ = value.to(torch::kInt64).item<int64_t>() != 0;
      }
    }
    meta_token_ = 0;
    theta_wire_version_ = -1;
    return job_.LoadState(rest);
  }

  std::string TrainedFileName(bool partial) const override {
    return partial ? "optimizer.partial.lopt" : "optimizer.lopt";
  }
  absl::Status WriteTrainedFile(const std::string& path) const override {
    return SaveOptimizerFile(path, job_.learner().MakeOptimizerFile(), job_.learner().theta());
  }

  std::optional<CoreUnit> Start(const v1::WorkerInfo& worker, bool can_take_payload,
                                const std::function<bool(const std::string&)>& connected) override {
    if (MetaTestDue()) {
      // After the last outer step the one unit left is the meta-test of the
      // trained optimizer: out once, and again only if it comes to nothing.
      // Its theta travels as a payload, as LHOPT's weights do.
      if (!can_take_payload || meta_token_ != 0) return std::nullopt;
      CoreUnit out;
      out.shard = 0;
      out.token = meta_token_ = next_meta_token_++;
      out.has_payload = true;
      out.unit.set_algorithm(v1::ELO_META_TEST);
      out.unit.set_shard(0);
      out.unit.set_theta_version(job_.outer_step());
      out.payload.emplace_back("theta", job_.learner().theta().clone());
      return out;
    }
    // A worker may take the shards it owns (their inner states live there)
    // and free ones (unowned, or owned by a worker that is gone). Of those,
    // the shard that has run the fewest truncations goes first, then the
    // lowest index: every shard advances at the same rate whatever the
    // number of workers and results_per_step (one worker on three shards
    // runs 0, 1, 2, 0, ...). The order depends on the counts alone, which
    // the checkpoint keeps, so a resumed job goes on with the shard it would
    // have run (ownership, which is not kept, only says who may take one).
    int32_t pick = -1;
    for (int32_t s = 0; s < job_.num_shards(); ++s) {
      if (!job_.CanStart(s)) continue;
      if (owner_[s] != worker.name() && !owner_[s].empty() && connected(owner_[s])) continue;
      if (pick < 0 || job_.truncations(s) < job_.truncations(pick)) pick = s;
    }
    if (pick < 0) return std::nullopt;
    EloUnit unit = job_.Start(pick, /*copy_theta=*/false);  // encoded below, once a version
    owner_[pick] = worker.name();
    CoreUnit out;
    out.shard = pick;
    v1::WorkUnit& u = out.unit;
    u.set_algorithm(v1::ELO_PES);
    u.set_shard(pick);
    u.set_theta_version(unit.theta_version);
    // Every unit of a theta version carries the same bytes: encoded (and
    // checksummed) once a version, not once a unit.
    if (theta_wire_version_ != unit.theta_version) {
      theta_wire_ = EncodeTensor(job_.learner().theta(), "theta");
      theta_wire_version_ = unit.theta_version;
    }
    v1::EloUnitInfo& elo = *u.mutable_elo();
    *elo.mutable_theta() = theta_wire_;
    elo.set_alpha(unit.alpha);
    elo.set_truncation(unit.truncation);
    return out;
  }

  void Abandon(int32_t shard, int64_t token, bool worker_gone) override {
    if (token > 0) {  // the meta-test's: another worker runs it
      if (token == meta_token_) meta_token_ = 0;
      return;
    }
    job_.Abandon(shard);
    if (worker_gone && shard >= 0 && shard < int32_t(owner_.size())) owner_[shard].clear();
  }

  CoreVerdict Accept(const v1::WorkResult& r, int64_t token,
                     const absl::StatusOr<NamedTensors>& payload) override {
    if (token > 0) return AcceptMetaTest(r, token, payload);
    if (job_.done()) {
      // A truncation that was still out when the last outer step was
      // applied (the job waits for its meta-test now): the budget is spent.
      CoreVerdict v;
      v.kind = CoreVerdict::kDroppedStale;
      v.particle_steps = std::max<int64_t>(0, r.particle_steps());
      return v;
    }
    const v1::EloResultInfo& e = r.elo();
    auto grad = DecodeFloatTensor(e.grad(), {job_.learner().theta().numel()}, "gradient");
    if (!grad.ok()) return RejectVerdict("bad_tensor", grad.status());
    EloShardResult res{r.shard(),     r.theta_version(), *grad,         e.meta_loss(),
                       e.task_loss(), e.bc_loss(),       r.particle_steps(), e.fresh_starts(),
                       e.restores(),  e.pushes()};
    const int64_t staleness = job_.staleness_of(r.theta_version());
    EloStepRecord rec;
    auto outcome = job_.Accept(res, &rec);
    if (!outcome.ok()) return RefusedByJobVerdict(outcome.status());
    CoreVerdict v;
    v.particle_steps = r.particle_steps();
    if (*outcome == EloAcceptOutcome::kDroppedStale) {
      v.kind = CoreVerdict::kDroppedStale;
      return v;
    }
    v.staleness = staleness;
    v.kind = CoreVerdict::kAccepted;
    if (*outcome == EloAcceptOutcome::kStepApplied) {
      v.kind = CoreVerdict::kUpdated;
      v.meta_loss = rec.meta_loss;
      v.task_loss = rec.task_loss;
      v.log_message = "outer step";
      v.log_fields = {{"step", absl::StrCat(rec.outer_step)},
                      {"meta_loss", absl::StrFormat("%.5g", rec.meta_loss)},
                      {"results", absl::StrCat(rec.results)}};
      v.metrics_row = EloMetricsColumns({rec.outer_step, rec.meta_loss, rec.task_loss, rec.bc_loss,
                                         rec.alpha, rec.outer_lr, rec.fresh_starts, rec.restores,
                                         rec.pushes});
      v.progress = absl::StrFormat("meta-loss %.4f task %.3f a=%.2f", rec.meta_loss, rec.task_loss,
                                   rec.alpha);
    }
    return v;
  }

 private:
  static constexpr const char* kMetaTestedKey = "core/meta_tested";

  bool MetaTestDue() const { return meta_test_ && job_.done() && !meta_tested_; }

  // An ELO_META_TEST result: the report's files for the job's eval/, checked
  // (the unit out, the theta version it was sent, the files a report has).
  CoreVerdict AcceptMetaTest(const v1::WorkResult& r, int64_t token,
                             const absl::StatusOr<NamedTensors>& payload) {
    if (token != meta_token_ || !MetaTestDue())
      return RejectVerdict("invalid", absl::InvalidArgumentError("no meta-test unit is out with that id"));
    if (!payload.ok())
      return PayloadUnusableVerdict(payload.status());
    if (!r.has_meta_test())
      return RejectVerdict("invalid", absl::InvalidArgumentError(
                                     "an ELO_META_TEST result must carry meta_test (MetaTestResultInfo)"));
    const int64_t version = job_.outer_step();
    if (r.meta_test().theta_version() != version)
      return RejectVerdict("invalid", absl::InvalidArgumentError(absl::StrCat(
                                     "the meta-test result is of theta version ",
                                     r.meta_test().theta_version(), " but version ", version,
                                     " was sent")));
    auto files = DecodeMetaTestFiles(r.meta_test(), *payload, job_.spec());
    if (!files.ok()) return RejectVerdict("invalid", files.status());
    meta_token_ = 0;
    meta_tested_ = true;
    CoreVerdict v;
    v.kind = CoreVerdict::kAccepted;
    v.particle_steps = std::max<int64_t>(0, r.particle_steps());
    // eval/ in the job's directory, as `lopt train --out` leaves it.
    for (auto& [name, bytes] : *files) v.file_writes.push_back({"eval/" + name, std::move(bytes)});
    v.log_message = "meta-test report";
    v.log_fields = {{"theta_version", absl::StrCat(version)},
                    {"runs", absl::StrCat(r.meta_test().runs())},
                    {"diverged", absl::StrCat(r.meta_test().diverged())},
                    {"files", absl::StrCat(files->size())},
                    {"seconds", absl::StrFormat("%.1f", r.meta_test().wall_seconds())}};
    return v;
  }

  EloJob job_;
  std::vector<std::string> owner_;  // the worker (by name) a shard last ran on
  const bool meta_test_;
  // The meta-test: whether its report came back, the token of its unit
  // while one is out (0: none; PES units have token -1), the next token.
  bool meta_tested_ = false;
  int64_t meta_token_ = 0;
  int64_t next_meta_token_ = 1;
  // Theta as units carry it, of version theta_wire_version_ (-1: none yet).
  v1::TensorProto theta_wire_;
  int64_t theta_wire_version_ = -1;
};

}  // namespace

std::unique_ptr<JobCore> MakeEloCore(const v1::JobSpec& spec, const JobCoreOptions& options) {
  return std::make_unique<EloCore>(spec, options);
}

}  // namespace lopt
