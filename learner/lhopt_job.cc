#include "learner/lhopt_job.h"

#include <algorithm>
#include <cmath>
#include <ctime>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/lhopt/lhopt_actions.h"
#include "common/tasks/task.h"
#include "common/util/checkpoint.h"
#include "common/util/error_kinds.h"

namespace lopt {
namespace {

enum : uint64_t { kStreamUnit = 0x1b01, kStreamInstance = 0x1b02 };

double Uniform(torch::Generator& g) { return torch::rand({1}, g, torch::kFloat64).item<double>(); }

// Pads a segment of t < T steps to T with masked steps that end episodes.
PpoSegment Pad(const PpoSegment& s, int64_t T) {
  const int64_t t = s.rewards.size(0);
  if (t == T) return s;
  auto pad = [&](const torch::Tensor& x, double value) {
    std::vector<int64_t> shape = x.sizes().vec();
    shape[0] = T - t;
    return torch::cat({x, torch::full(shape, value, x.options())});
  };
  PpoSegment p = s;
  p.features = pad(s.features, 0);
  p.value_extra = s.value_extra.defined() ? pad(s.value_extra, 0) : torch::Tensor();
  p.actions = pad(s.actions, 0);
  p.log_probs = pad(s.log_probs, 0);
  p.values = pad(s.values, 0);
  p.rewards = pad(s.rewards, 0);
  p.dones = pad(s.dones, 1);
  p.mask = torch::cat({torch::ones({t}), torch::zeros({T - t})});
  return p;
}

std::string NowRfc3339() {
  char buf[32];
  std::time_t now = std::time(nullptr);
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  return buf;
}

NamedTensors WithPrefix(const NamedTensors& all, const std::string& prefix) {
  NamedTensors out;
  for (const auto& [k, v] : all)
    if (k.rfind(prefix, 0) == 0) out.emplace_back(k.substr(prefix.size()), v);
  return out;
}

PpoOptions PpoOptionsFor(const v1::JobSpec& job) {
  const auto& p = job.lhopt().ppo();
  PpoOptions o;
  o.clip = p.clip();
  o.value_coef = p.value_coef();
  o.entropy_coef = p.entropy_coef();
  o.lr = p.lr();
  o.max_grad_norm = p.max_grad_norm();
  o.gamma = p.gamma();
  o.gae_lambda = p.gae_lambda();
  o.epochs = p.epochs();
  o.max_sample_reuse = p.max_sample_reuse();
  o.minibatch_segments = p.minibatch_episodes();
  o.max_staleness = p.max_staleness();
  o.seed = job.seed();
  return o;
}

}  // namespace

LhoptJob::LhoptJob(const v1::JobSpec& job) : job_(job), normalizer_(kNumLhoptFeatures) {
  torch::manual_seed(job.seed());
  policy_ = LhoptPolicy(LhoptPolicyOptionsFor(job));
  ema_ = LhoptPolicy(LhoptPolicyOptionsFor(job));
  (void)SetPolicyWeights(*ema_, PolicyWeights(*policy_));
  trainer_ = std::make_unique<PpoTrainer>(policy_, PpoOptionsFor(job));
  units_per_iteration_ = job.lhopt().episodes_per_iteration() / job.lhopt().particles();
  snapshot_ = Ship(*ema_, normalizer_);
}

int64_t LhoptJob::baseline_generation() const {
  return version_ / job_.lhopt().baseline_refresh_iterations();
}

NamedTensors LhoptJob::Ship(const LhoptPolicyImpl& p, const EwmaNormalizer& n) const {
  NamedTensors out = PolicyWeights(p, "policy/");
  for (auto& kv : NormalizerTensors(n, "normalizer/")) out.push_back(std::move(kv));
  return out;
}

NamedTensors LhoptJob::ShippedPolicy() const { return Ship(*policy_, normalizer_); }

bool LhoptJob::CanStart() const {
  if (done()) return false;
  if (job_.cluster().max_staleness() > 0) return true;
  const int64_t pending_units = int64_t(pending_.size()) / job_.lhopt().particles();
  return pending_units + int64_t(running_.size()) < units_per_iteration_;
}

LhoptUnit LhoptJob::Start() {
  const auto& l = job_.lhopt();
  LhoptUnit u;
  u.unit_id = units_started_++;
  running_.insert(u.unit_id);
  u.policy_version = version_;
  u.policy = ShippedPolicy();
  u.baseline_generation = snapshot_generation_;
  u.baseline_policy = snapshot_;
  u.particles = l.particles();

  torch::Generator g = MakeGenerator(job_.seed(), kStreamUnit, uint64_t(u.unit_id));
  double total = 0;
  for (const auto& c : l.tasks()) total += c.weight();
  double x = Uniform(g) * total;
  int32_t choice = 0;
  for (; choice + 1 < l.tasks_size(); ++choice) {
    x -= l.tasks(choice).weight();
    if (x < 0 && l.tasks(choice).weight() > 0) break;
  }
  const int64_t instance =
      std::min<int64_t>(l.instances_per_task() - 1, int64_t(Uniform(g) * l.instances_per_task()));
  const uint64_t index =
      (uint64_t(snapshot_generation_) * uint64_t(l.tasks_size()) + uint64_t(choice)) *
          uint64_t(l.instances_per_task()) +
      uint64_t(instance);
  torch::Generator ig = MakeGenerator(job_.seed(), kStreamInstance, index);
  const LhoptInstance in = DrawLhoptInstance(l, choice, ig);
  u.task_index = in.task_index;
  u.task = in.task;
  u.task_seed = in.task_seed;
  u.inner_steps = in.inner_steps;
  u.decisions = in.decisions;
  u.task_key = absl::StrCat("g", snapshot_generation_, "/t", choice, "/i", instance);
  return u;
}

void LhoptJob::Abandon(int64_t unit_id) { running_.erase(unit_id); }

absl::StatusOr<LhoptAcceptOutcome> LhoptJob::Accept(const LhoptUnitResult& r,
                                                    LhoptIterationRecord* record) {
  if (r.unit_id < 0 || r.unit_id >= units_started_)
    return absl::InvalidArgumentError(
        absl::StrCat("unit ", r.unit_id, " is not one this job handed out"));
  if (r.policy_version < 0 || r.policy_version > version_)
    return absl::InvalidArgumentError(absl::StrCat("policy version ", r.policy_version,
                                                   " is not one this job handed out (now ",
                                                   version_, ")"));
  if (r.segments.empty())
    return absl::InvalidArgumentError(absl::StrCat("unit ", r.unit_id, " sent no episodes"));
  const int64_t F = kNumLhoptFeatures, H = kNumActionHeads, E = kLhoptValueExtraSize;
  const int64_t hidden = policy_->options().hidden_size;
  for (size_t i = 0; i < r.segments.size(); ++i) {
    const PpoSegment& s = r.segments[i];
    const int64_t T = s.rewards.defined() && s.rewards.dim() == 1 ? s.rewards.size(0) : 0;
    auto shape_is = [](const torch::Tensor& t, std::vector<int64_t> shape) {
      return t.defined() && t.sizes().vec() == shape;
    };
    if (T < 1 || !shape_is(s.features, {T, F}) || !shape_is(s.actions, {T, H}) ||
        !shape_is(s.log_probs, {T}) || !shape_is(s.values, {T}) || !shape_is(s.dones, {T}) ||
        !shape_is(s.value_extra, {T, E}) || !shape_is(s.initial_state.h, {hidden}) ||
        !shape_is(s.initial_state.c, {hidden}) || s.policy_version != r.policy_version)
      return absl::InvalidArgumentError(
          absl::StrCat("unit ", r.unit_id, " episode ", i, ": malformed segment (T = ", T, ")"));
    if (!torch::isfinite(s.rewards).all().item<bool>() ||
        !torch::isfinite(s.log_probs).all().item<bool>() ||
        !torch::isfinite(s.features).all().item<bool>())
      return NonFiniteError(
          absl::StrCat("unit ", r.unit_id, " episode ", i, ": non-finite rewards or inputs"));
  }
  if (!r.raw_features.defined() || r.raw_features.dim() != 2 || r.raw_features.size(1) != F)
    return absl::InvalidArgumentError(absl::StrCat("unit ", r.unit_id, ": raw features must be [N, ", F, "]"));
  running_.erase(r.unit_id);
  if (version_ - r.policy_version > job_.lhopt().ppo().max_staleness()) {
    dropped_since_update_ += int64_t(r.segments.size());
    return LhoptAcceptOutcome::kDroppedStale;
  }
  for (const auto& s : r.segments) {
    pending_.push_back(s);
    pending_reward_sum_ += s.rewards.sum().item<double>();
    pending_length_sum_ += double(s.rewards.size(0));
  }
  pending_raw_.push_back(r.raw_features);
  if (r.curve.defined() && r.curve.numel() > 0) {
    torch::Tensor last = r.curve[r.curve.size(0) - 1];
    torch::Tensor fin = last.masked_select(torch::isfinite(last));
    pending_eval_sum_ += fin.sum().item<double>();
    pending_eval_count_ += fin.numel();
  }
  auto& p = pending_record_;
  p.baseline_runs += r.baseline_computed ? 1 : 0;
  p.register_saves += r.register_saves;
  p.register_loads += r.register_loads;
  p.inner_particle_steps += r.inner_particle_steps;
  if (int64_t(pending_.size()) < job_.lhopt().episodes_per_iteration())
    return LhoptAcceptOutcome::kAccepted;
  Update(record);
  return LhoptAcceptOutcome::kUpdated;
}

void LhoptJob::Update(LhoptIterationRecord* record) {
  int64_t T = 0;
  for (const auto& s : pending_) T = std::max<int64_t>(T, s.rewards.size(0));
  std::vector<PpoSegment> batch;
  for (const auto& s : pending_) batch.push_back(Pad(s, T));
  LhoptIterationRecord rec = pending_record_;
  rec.iteration = version_;
  rec.episodes = int64_t(pending_.size());
  rec.dropped_stale = dropped_since_update_;
  rec.mean_reward = pending_reward_sum_ / double(rec.episodes);
  rec.mean_episode_length = pending_length_sum_ / double(rec.episodes);
  rec.mean_final_eval_loss = pending_eval_count_ > 0 ? pending_eval_sum_ / pending_eval_count_ : NAN;
  rec.ppo = trainer_->Update(batch, version_);
  normalizer_.Update(torch::cat(pending_raw_));
  PolyakUpdate(*ema_, *policy_, job_.lhopt().baseline_polyak());
  ++version_;
  if (baseline_generation() != snapshot_generation_) {
    snapshot_generation_ = baseline_generation();
    snapshot_ = Ship(*ema_, normalizer_);
  }
  mean_rewards_.push_back(rec.mean_reward);
  units_at_update_ = units_started_;
  pending_.clear();
  pending_raw_.clear();
  pending_record_ = LhoptIterationRecord();
  pending_reward_sum_ = pending_length_sum_ = pending_eval_sum_ = 0;
  pending_eval_count_ = 0;
  dropped_since_update_ = 0;
  if (record) *record = rec;
}

NamedTensors LhoptJob::SaveState() const {
  NamedTensors s = PolicyWeights(*policy_, "lhopt/policy/");
  for (auto& kv : PolicyWeights(*ema_, "lhopt/ema/")) s.push_back(std::move(kv));
  for (const auto& [k, v] : snapshot_) s.emplace_back("lhopt/snapshot/" + k, v);
  for (auto& kv : NormalizerTensors(normalizer_, "lhopt/normalizer/")) s.push_back(std::move(kv));
  std::string adam;
  {
    torch::serialize::OutputArchive ar;
    trainer_->optimizer().save(ar);
    ar.save_to([&](const void* buf, size_t n) {
      adam.append(static_cast<const char*>(buf), n);
      return n;
    });
  }
  s.emplace_back("lhopt/adam", StringTensor(adam));
  s.emplace_back("lhopt/counters",
                 torch::tensor({version_, units_at_update_, snapshot_generation_,
                                int64_t(trainer_->updates())},
                               torch::kInt64));
  s.emplace_back("lhopt/mean_rewards", torch::tensor(mean_rewards_, torch::kFloat64));
  return s;
}

absl::Status LhoptJob::LoadState(const NamedTensors& s) {
  if (absl::Status st = SetPolicyWeights(*policy_, s, "lhopt/policy/"); !st.ok()) return st;
  if (absl::Status st = SetPolicyWeights(*ema_, s, "lhopt/ema/"); !st.ok()) return st;
  if (absl::Status st = SetNormalizer(normalizer_, s, "lhopt/normalizer/"); !st.ok()) return st;
  auto adam = Find(s, "lhopt/adam");
  auto counters = Find(s, "lhopt/counters");
  auto rewards = Find(s, "lhopt/mean_rewards");
  if (!adam.ok() || !counters.ok() || !rewards.ok() || counters->numel() != 4)
    return absl::DataLossError("checkpoint lacks the LHOPT job's state");
  std::string bytes = TensorString(*adam);
  {
    torch::serialize::InputArchive ar;
    ar.load_from(bytes.data(), bytes.size());
    trainer_->optimizer().load(ar);
  }
  torch::Tensor c = counters->contiguous();
  version_ = c[0].item<int64_t>();
  units_at_update_ = units_started_ = c[1].item<int64_t>();
  snapshot_generation_ = c[2].item<int64_t>();
  trainer_->set_updates(uint64_t(c[3].item<int64_t>()));
  snapshot_ = WithPrefix(s, "lhopt/snapshot/");
  torch::Tensor m = rewards->contiguous();
  mean_rewards_.assign(m.data_ptr<double>(), m.data_ptr<double>() + m.numel());
  running_.clear();
  pending_.clear();
  pending_raw_.clear();
  pending_record_ = LhoptIterationRecord();
  pending_reward_sum_ = pending_length_sum_ = pending_eval_sum_ = 0;
  pending_eval_count_ = 0;
  dropped_since_update_ = 0;
  return absl::OkStatus();
}

absl::StatusOr<v1::LhoptControllerFile> LhoptJob::MakeControllerFile() const {
  v1::LhoptControllerFile f;
  const LhoptPolicyOptions& o = policy_->options();
  f.set_format_version(kControllerFormatVersion);
  f.set_architecture(kLhoptArchitecture);
  f.set_input_size(int32_t(o.input_size));
  f.set_hidden_size(int32_t(o.hidden_size));
  f.set_value_extra_size(int32_t(o.value_extra_size));
  for (int64_t n : o.head_sizes) f.add_head_sizes(int32_t(n));
  auto bytes = SerializeTensors(ShippedPolicy());
  if (!bytes.ok()) return bytes.status();
  f.set_weights(*bytes);
  *f.mutable_job() = job_;
  f.set_iteration(version_);
  f.set_mean_reward(mean_rewards_.empty() ? NAN : mean_rewards_.back());
  f.set_created_at(NowRfc3339());
  f.set_lopt_version(LOPT_VERSION);
  return f;
}

absl::Status SaveControllerFile(const std::string& path, const v1::LhoptControllerFile& file) {
  return WriteFileAtomically(path, file.SerializeAsString());
}

absl::StatusOr<LoadedController> LoadControllerFile(const std::string& path) {
  auto bytes = ReadFile(path);
  if (!bytes.ok()) return absl::NotFoundError(absl::StrCat("cannot read controller ", path));
  LoadedController c;
  if (!c.file.ParseFromString(*bytes) || !c.file.has_format_version())
    return absl::DataLossError(absl::StrCat(path, " is not an LHOPT controller file"));
  if (c.file.format_version() > kControllerFormatVersion)
    return absl::FailedPreconditionError(absl::StrCat(path, " has controller format ",
                                                      c.file.format_version(),
                                                      "; this lopt reads up to ",
                                                      kControllerFormatVersion));
  if (c.file.architecture() != kLhoptArchitecture)
    return absl::FailedPreconditionError(
        absl::StrCat(path, " holds architecture '", c.file.architecture(), "', not ",
                     kLhoptArchitecture));
  LhoptPolicyOptions o;
  o.input_size = c.file.input_size();
  o.hidden_size = c.file.hidden_size();
  o.value_extra_size = c.file.value_extra_size();
  for (int32_t n : c.file.head_sizes()) o.head_sizes.push_back(n);
  if (o.input_size != kNumLhoptFeatures || o.head_sizes != ActionHeadSizes())
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": its features or action heads differ from this lopt's"));
  auto weights = DeserializeTensors(c.file.weights());
  if (!weights.ok()) return absl::DataLossError(absl::StrCat(path, ": unreadable weights"));
  c.policy = LhoptPolicy(o);
  if (absl::Status s = SetPolicyWeights(*c.policy, *weights, "policy/"); !s.ok())
    return absl::DataLossError(absl::StrCat(path, ": ", s.message()));
  c.normalizer = std::make_unique<EwmaNormalizer>(kNumLhoptFeatures);
  if (absl::Status s = SetNormalizer(*c.normalizer, *weights, "normalizer/"); !s.ok())
    return absl::DataLossError(absl::StrCat(path, ": ", s.message()));
  c.file.clear_weights();
  return c;
}

}  // namespace lopt
