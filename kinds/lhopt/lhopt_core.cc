// LHOPT's learner core: PPO training of the hyperparameter controller
// (learner/lhopt_job.h), with the fixed yardstick's scores as units of their
// own.
#include "kinds/lhopt/lhopt_kind.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/lhopt/lhopt_wire.h"
#include "common/lhopt/lhopt_yardstick.h"
#include "common/rpc/metrics.h"
#include "common/util/json.h"
#include "common/util/run_files.h"
#include "learner/lhopt_job.h"

namespace lopt {
namespace {

struct LhoptFamilies {
  prometheus::Family<prometheus::Gauge>& reward = GaugeFamily(
      "lopt_lhopt_mean_reward", "LHOPT: mean episode reward of the latest PPO iteration");
  prometheus::Family<prometheus::Gauge>& entropy = GaugeFamily(
      "lopt_lhopt_policy_entropy", "LHOPT: policy entropy of the latest PPO update");
  prometheus::Family<prometheus::Gauge>& kl = GaugeFamily(
      "lopt_lhopt_approx_kl", "LHOPT: approximate KL(old || new) of the latest PPO update");
  prometheus::Family<prometheus::Gauge>& value_loss = GaugeFamily(
      "lopt_lhopt_value_loss", "LHOPT: value loss of the latest PPO update");
  prometheus::Family<prometheus::Gauge>& length = GaugeFamily(
      "lopt_lhopt_episode_length", "LHOPT: mean episode length (decisions) of the latest PPO iteration");
  prometheus::Family<prometheus::Gauge>& yardstick = GaugeFamily(
      "lopt_lhopt_yardstick_score",
      "LHOPT: the latest fixed-yardstick score (mean log speed-up of the greedy policy over "
      "CIAO-constant reference fits on held-out instances; lhopt.yardstick)");
  prometheus::Family<prometheus::Gauge>& yardstick_iteration = GaugeFamily(
      "lopt_lhopt_yardstick_iteration", "LHOPT: the PPO iteration the latest yardstick score is of");
};
LhoptFamilies& LF() {
  static LhoptFamilies* f = new LhoptFamilies();
  return *f;
}

class LhoptCore : public JobCore {
 public:
  explicit LhoptCore(const v1::JobSpec& spec) : job_(spec) {}

  const char* algorithm() const override { return "lhopt_ppo"; }
  int64_t Step() const override { return job_.version(); }
  int64_t Total() const override { return job_.iterations(); }
  // Done once the last iteration is in and every yardstick score due (the
  // last version's included) has come back.
  bool Done() const override {
    return job_.done() && sticks_pending_.empty() && sticks_running_.empty() &&
           !YardstickDueNow();
  }
  int32_t NumShards() const override { return 0; }
  int64_t CheckpointEvery() const override { return job_.spec().lhopt().checkpoint_every(); }
  std::string MetricsCsvHeader() const override { return kLhoptMetricsHeader; }
  // yardstick.csv's row v is version v's score.
  std::vector<std::pair<std::string, int64_t>> RowsRedoneFrom() const override {
    return {{"metrics.csv", Step()}, {"yardstick.csv", sticks_scored_through_ + 1}};
  }
  // The current version's yardstick score, due or out.
  bool Owes() const override {
    return !sticks_pending_.empty() || !sticks_running_.empty() || YardstickDueNow();
  }
  // A past baseline generation's curves are never read again (units name the
  // current one's), nor a unit's restart registers after it.
  bool BufferTableLive(const std::string& table) const override {
    if (table.find("/registers/") != std::string::npos) return false;
    const size_t at = table.rfind("/baseline/g");
    return at == std::string::npos ||
           std::atoll(table.c_str() + at + 11) >= job_.baseline_generation();
  }
  // Mean rewards over the first and last 5 iterations; the yardstick's
  // scores and seconds of this process (NaN, 0 for none).
  std::vector<std::pair<std::string, std::string>> SummaryFields() const override {
    auto [reward_start, reward_end] = StartEndMeans(job_.mean_rewards(), 5);
    return {{"iterations", absl::StrCat(job_.version())},
            {"total_iterations", absl::StrCat(job_.iterations())},
            {"reward_start", JsonNumber(reward_start)},
            {"reward_end", JsonNumber(reward_end)},
            {"yardstick_seconds", JsonNumber(stick_seconds_)},
            {"yardstick_first", JsonNumber(stick_scores_.empty() ? NAN : stick_scores_.front())},
            {"yardstick_last", JsonNumber(stick_scores_.empty() ? NAN : stick_scores_.back())}};
  }
  // LHOPT's status: meta_loss is the latest iteration's mean reward, task_loss
  // its mean final eval loss (job_service.proto); a restored job shows its
  // last reward.
  std::optional<std::pair<double, double>> LastLosses() const override {
    if (job_.mean_rewards().empty()) return std::nullopt;
    return std::make_pair(job_.mean_rewards().back(), 0.0);
  }
  // The job's state, and the last policy version whose yardstick score came
  // back: a restored job scores its current version again unless it had.
  NamedTensors SaveState() const override {
    NamedTensors s = job_.SaveState();
    s.emplace_back(kStickKey, torch::tensor({sticks_scored_through_}, torch::kInt64));
    return s;
  }
  absl::Status LoadState(const NamedTensors& s) override {
    NamedTensors rest;
    bool scored_known = false;
    for (const auto& [name, value] : s) {
      if (name != kStickKey) {
        rest.emplace_back(name, value);
      } else if (value.numel() == 1) {
        sticks_scored_through_ = value.to(torch::kInt64).item<int64_t>();
        scored_known = true;
      }
    }
    if (absl::Status st = job_.LoadState(rest); !st.ok()) return st;
    // A checkpoint of local mode's own driver (before it ran this core)
    // scored its version before it was written.
    if (!scored_known) sticks_scored_through_ = job_.version();
    sticks_pending_.clear();
    sticks_running_.clear();
    sticks_queued_through_ = sticks_scored_through_;
    return absl::OkStatus();
  }

  std::string TrainedFileName(bool partial) const override {
    return partial ? "controller.partial.lhopt" : "controller.lhopt";
  }
  absl::Status WriteTrainedFile(const std::string& path) const override {
    auto file = job_.MakeControllerFile();
    if (!file.ok()) return file.status();
    return SaveControllerFile(path, *file);
  }

  std::optional<CoreUnit> Start(const v1::WorkerInfo&, bool can_take_payload,
                                const std::function<bool(const std::string&)>&) override {
    if (!can_take_payload) return std::nullopt;
    QueueDueYardstick();
    if (!sticks_pending_.empty()) {
      // The yardstick's unit goes first: it is due at most every
      // yardstick.every iterations, and the job cannot end without it.
      auto [version, policy] = std::move(sticks_pending_.front());
      sticks_pending_.pop_front();
      CoreUnit out;
      out.shard = 0;
      out.token = next_stick_token_--;
      out.has_payload = true;
      out.unit.set_algorithm(v1::LHOPT_YARDSTICK);
      out.unit.set_shard(0);
      out.unit.set_theta_version(version);
      out.payload = policy;
      sticks_running_[out.token] = {version, std::move(policy)};
      return out;
    }
    if (!job_.CanStart()) return std::nullopt;
    LhoptUnit lu = job_.Start();
    CoreUnit out;
    out.shard = 0;
    out.token = lu.unit_id;
    out.has_payload = true;
    out.unit.set_algorithm(v1::LHOPT_PPO);
    out.unit.set_shard(0);
    EncodeLhoptUnit(lu, out.unit.mutable_lhopt(), &out.payload);
    return out;
  }

  void Abandon(int32_t, int64_t token, bool) override {
    if (token >= 0) {
      job_.Abandon(token);
      return;
    }
    auto it = sticks_running_.find(token);
    if (it == sticks_running_.end()) return;
    sticks_pending_.push_front(std::move(it->second));  // another worker scores it
    sticks_running_.erase(it);
  }

  CoreVerdict Accept(const v1::WorkResult& r, int64_t token,
                     const absl::StatusOr<NamedTensors>& payload) override {
    if (token < 0) return AcceptYardstick(r, token);
    if (!payload.ok())
      return PayloadUnusableVerdict(payload.status());
    if (!r.has_lhopt())
      return RejectVerdict("invalid", absl::InvalidArgumentError(
                                     "an LHOPT_PPO result must carry lhopt (LhoptResultInfo)"));
    if (r.lhopt().lhopt_unit_id() != token)
      return RejectVerdict("invalid", absl::InvalidArgumentError(absl::StrCat(
                                     "the result is for LHOPT unit ", r.lhopt().lhopt_unit_id(),
                                     " but unit ", token, " was sent")));
    auto res = DecodeLhoptResult(r.lhopt(), *payload);
    if (!res.ok()) return RejectVerdict("bad_payload", res.status());
    LhoptIterationRecord rec;
    auto outcome = job_.Accept(*res, &rec);
    if (!outcome.ok()) return RefusedByJobVerdict(outcome.status());
    CoreVerdict v;
    v.particle_steps = res->inner_particle_steps;
    if (*outcome == LhoptAcceptOutcome::kDroppedStale) {
      v.kind = CoreVerdict::kDroppedStale;
      return v;
    }
    v.kind = CoreVerdict::kAccepted;
    if (*outcome == LhoptAcceptOutcome::kUpdated) {
      v.kind = CoreVerdict::kUpdated;
      v.meta_loss = rec.mean_reward;
      v.task_loss = rec.mean_final_eval_loss;
      if (reward_) {
        reward_->Set(rec.mean_reward);
        entropy_->Set(rec.ppo.entropy);
        kl_->Set(rec.ppo.approx_kl);
        value_loss_->Set(rec.ppo.value_loss);
        length_->Set(rec.mean_episode_length);
      }
      v.metrics_row = LhoptMetricsColumns(rec.MetricsRow());
      v.progress = absl::StrFormat("reward %+.3f len %.1f H %.2f KL %.4f VL %.3f", rec.mean_reward,
                                   rec.mean_episode_length, rec.ppo.entropy, rec.ppo.approx_kl,
                                   rec.ppo.value_loss);
      QueueDueYardstick();
      v.log_message = "PPO iteration";
      v.log_fields = {{"iteration", absl::StrCat(rec.iteration)},
                      {"mean_reward", absl::StrFormat("%.5g", rec.mean_reward)},
                      {"entropy", absl::StrFormat("%.4g", rec.ppo.entropy)},
                      {"approx_kl", absl::StrFormat("%.4g", rec.ppo.approx_kl)},
                      {"episodes", absl::StrCat(rec.episodes)}};
    }
    return v;
  }

  void AddSeries(const std::string& job_id) override {
    std::map<std::string, std::string> l = {{"job_id", job_id}};
    reward_ = &LF().reward.Add(l);
    entropy_ = &LF().entropy.Add(l);
    kl_ = &LF().kl.Add(l);
    value_loss_ = &LF().value_loss.Add(l);
    length_ = &LF().length.Add(l);
    if (job_.spec().lhopt().yardstick().every() > 0) {
      yardstick_ = &LF().yardstick.Add(l);
      yardstick_iteration_ = &LF().yardstick_iteration.Add(l);
      yardstick_->Set(NAN);
      yardstick_iteration_->Set(-1);
    }
  }
  void RemoveSeries() override {
    if (reward_) {
      LF().reward.Remove(reward_);
      LF().entropy.Remove(entropy_);
      LF().kl.Remove(kl_);
      LF().value_loss.Remove(value_loss_);
      LF().length.Remove(length_);
      reward_ = entropy_ = kl_ = value_loss_ = length_ = nullptr;
    }
    if (yardstick_) {
      LF().yardstick.Remove(yardstick_);
      LF().yardstick_iteration.Remove(yardstick_iteration_);
      yardstick_ = yardstick_iteration_ = nullptr;
    }
  }


 private:
  static constexpr const char* kStickKey = "core/yardstick_scored_through";

  // Whether the current version's yardstick is due and not yet queued.
  bool YardstickDueNow() const {
    const int64_t v = job_.version();
    return v > sticks_queued_through_ && YardstickDue(job_.spec().lhopt(), v);
  }
  // Queues the current version's policy for a yardstick unit if it is due.
  void QueueDueYardstick() {
    if (!YardstickDueNow()) return;
    sticks_pending_.emplace_back(job_.version(), job_.ShippedPolicy());
    sticks_queued_through_ = job_.version();
  }

  CoreVerdict AcceptYardstick(const v1::WorkResult& r, int64_t token) {
    auto it = sticks_running_.find(token);
    if (it == sticks_running_.end())
      return RejectVerdict("invalid", absl::InvalidArgumentError("no yardstick unit is out with that id"));
    if (!r.has_yardstick())
      return RejectVerdict("invalid", absl::InvalidArgumentError(
                                     "an LHOPT_YARDSTICK result must carry yardstick (YardstickResultInfo)"));
    const int64_t version = it->second.first;
    if (r.yardstick().iteration() != version)
      return RejectVerdict("invalid", absl::InvalidArgumentError(absl::StrCat(
                                     "the yardstick result scores version ", r.yardstick().iteration(),
                                     " but version ", version, " was sent")));
    auto res = DecodeYardstickResult(r.yardstick(), job_.spec());
    if (!res.ok()) return RejectVerdict("invalid", res.status());
    sticks_running_.erase(it);
    sticks_scored_through_ = std::max(sticks_scored_through_, version);
    if (yardstick_) {
      yardstick_->Set(res->score);
      yardstick_iteration_->Set(double(version));
    }
    CoreVerdict v;
    v.kind = CoreVerdict::kAccepted;
    v.particle_steps = std::max<int64_t>(0, r.particle_steps());
    // yardstick.csv in the job's directory, as local mode writes it.
    v.file_rows.push_back({"yardstick.csv", YardstickCsvHeader(job_.spec()), YardstickCsvRow(*res)});
    stick_seconds_ += res->wall_seconds;
    stick_scores_.push_back(res->score);
    std::string per_task;
    for (double t : res->task_score) absl::StrAppend(&per_task, absl::StrFormat(" %+.3f", t));
    v.note = absl::StrFormat("lhopt yardstick @%d: score %+.4f (per task:%s), %d/%d diverged, %.1f s\n",
                             version, res->score, per_task, res->diverged, res->runs,
                             res->wall_seconds);
    v.log_message = "LHOPT yardstick";
    v.log_fields = {{"iteration", absl::StrCat(version)},
                    {"score", absl::StrFormat("%.4g", res->score)},
                    {"diverged", absl::StrCat(res->diverged, "/", res->runs)},
                    {"seconds", absl::StrFormat("%.1f", res->wall_seconds)}};
    return v;
  }

  LhoptJob job_;
  // Yardstick units: the versions waiting for a worker, those out (by
  // token, negative so as never to meet an LHOPT unit id), the last version
  // queued and the last scored.
  std::deque<std::pair<int64_t, NamedTensors>> sticks_pending_;
  std::map<int64_t, std::pair<int64_t, NamedTensors>> sticks_running_;
  int64_t sticks_queued_through_ = -1, sticks_scored_through_ = -1;
  int64_t next_stick_token_ = -1;
  double stick_seconds_ = 0;          // the yardstick's, in this process
  std::vector<double> stick_scores_;  // in this process
  prometheus::Gauge *reward_ = nullptr, *entropy_ = nullptr, *kl_ = nullptr,
                    *value_loss_ = nullptr, *length_ = nullptr;
  prometheus::Gauge *yardstick_ = nullptr, *yardstick_iteration_ = nullptr;
};

}  // namespace

std::unique_ptr<JobCore> MakeLhoptCore(const v1::JobSpec& spec) {
  return std::make_unique<LhoptCore>(spec);
}

}  // namespace lopt
