#include "common/lhopt/lhopt_episode.h"

#include <algorithm>
#include <cmath>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/lhopt/lhopt_actions.h"

namespace lopt {
namespace {

// Random streams of one run, all derived from its task seed (or action seed).
enum : uint64_t {
  kStreamInit = 0x1a01,
  kStreamData = 0x1a02,
  kStreamValid = 0x1a03,
  kStreamHparams = 0x1a04,
  kStreamActions = 0x1a05,
};

torch::Tensor HparamRow(const CiaoHparamTensors& h) {
  return torch::stack({h.lr, h.one_minus_beta1, h.one_minus_beta2, h.eps, h.weight_decay,
                       h.clip_fraction},
                      1)
      .to(torch::kFloat64);
}

// Rows `p` of everything a restart restores: the weights and CIAO's moments,
// bias corrections and rolling max (not the hyperparameters, not the step:
// the budget keeps running). Copied to the CPU, what a replay buffer keeps (as
// ELO's items): a CUDA run's registers hold no GPU memory and cross the wire as they are.
NamedTensors ParticleState(const TaskState& s, const CiaoState& cs, int64_t p) {
  auto copy = [](const torch::Tensor& row) { return row.is_cpu() ? row.clone() : row.cpu(); };
  NamedTensors out;
  for (size_t i = 0; i < s.params.size(); ++i) {
    out.emplace_back(absl::StrCat("param/", i), copy(s.params[i][p]));
    out.emplace_back(absl::StrCat("m/", i), copy(cs.m[i][p]));
    out.emplace_back(absl::StrCat("v/", i), copy(cs.v[i][p]));
  }
  out.emplace_back("bc1", copy(cs.bias_correction1[p]));
  out.emplace_back("bc2", copy(cs.bias_correction2[p]));
  out.emplace_back("rolling_max", copy(cs.rolling_max[p]));
  return out;
}

absl::Status LoadParticleState(const NamedTensors& item, int64_t p, TaskState* s,
                               CiaoState* cs) {
  auto row = [&](const std::string& name, torch::Tensor& dst) -> absl::Status {
    auto t = Find(item, name);
    if (!t.ok()) return t.status();
    if (t->sizes() != dst[p].sizes())
      return absl::DataLossError(absl::StrCat("register state ", name, " has the wrong shape"));
    dst[p].copy_(*t);
    return absl::OkStatus();
  };
  for (size_t i = 0; i < s->params.size(); ++i) {
    for (auto [name, dst] : {std::pair<std::string, torch::Tensor*>{absl::StrCat("param/", i), &s->params[i]},
                             {absl::StrCat("m/", i), &cs->m[i]},
                             {absl::StrCat("v/", i), &cs->v[i]}})
      if (absl::Status st = row(name, *dst); !st.ok()) return st;
  }
  if (absl::Status st = row("bc1", cs->bias_correction1); !st.ok()) return st;
  if (absl::Status st = row("bc2", cs->bias_correction2); !st.ok()) return st;
  return row("rolling_max", cs->rolling_max);
}

}  // namespace

// ---------------------------------------------------------------------------
RegisterStore::RegisterStore(ReplayBuffer* buffer, std::string prefix)
    : buffer_(buffer), prefix_(std::move(prefix)) {}

std::string RegisterStore::Table(int64_t id) const { return absl::StrCat(prefix_, "/", id); }

absl::Status RegisterStore::Put(int64_t id, NamedTensors state) {
  // A table of one: a second Put under an id replaces its state.
  if (absl::Status s = buffer_->Put(Table(id), 1, std::move(state)); !s.ok()) return s;
  live_.insert(id);
  return absl::OkStatus();
}

absl::StatusOr<NamedTensors> RegisterStore::Get(int64_t id) {
  if (!live_.count(id))
    return absl::FailedPreconditionError(absl::StrCat("register state ", id, " is not held"));
  return buffer_->Sample(Table(id), 0.0);
}

absl::Status RegisterStore::Release(int64_t id) {
  live_.erase(id);
  return buffer_->DeleteTable(Table(id));
}

absl::Status RegisterStore::ReleaseAll() {
  std::vector<int64_t> ids(live_.begin(), live_.end());
  for (int64_t id : ids)
    if (absl::Status s = Release(id); !s.ok()) return s;
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
std::vector<int64_t> DecisionSteps(int64_t steps, int64_t decisions) {
  TORCH_CHECK(decisions >= 1 && decisions < steps, "need 1 <= decisions < steps, got ",
              decisions, " and ", steps);
  std::vector<int64_t> out;
  for (int64_t d = 0; d < decisions; ++d) out.push_back(1 + d * (steps - 1) / decisions);
  return out;
}

std::vector<int64_t> CurveSteps(int64_t steps, int64_t points) {
  std::vector<int64_t> out;
  for (int64_t c = 1; c <= points; ++c) {
    int64_t t = std::max<int64_t>(1, std::llround(double(steps) * c / points));
    if (out.empty() || t > out.back()) out.push_back(t);
  }
  return out;
}

torch::Tensor DecisionRewards(const std::vector<PowerLawFit>& fits,
                              const std::vector<int64_t>& decision_steps,
                              const std::vector<int64_t>& curve_steps, const torch::Tensor& curve,
                              double clip) {
  const int64_t D = decision_steps.size(), C = curve_steps.size(), P = curve.size(1);
  TORCH_CHECK(curve.size(0) == C && int64_t(fits.size()) == P, "DecisionRewards: shapes");
  torch::Tensor r = torch::zeros({D, P}, torch::kFloat64);
  torch::Tensor lc = curve.to(torch::kFloat64).contiguous();
  auto L = lc.accessor<double, 2>();
  auto R = r.accessor<double, 2>();
  for (int64_t c = 0; c < C; ++c) {
    const int64_t t = curve_steps[c];
    int64_t d = 0;
    while (d + 1 < D && decision_steps[d + 1] < t) ++d;
    for (int64_t p = 0; p < P; ++p)
      R[d][p] += LogSpeedup(fits[p], double(t), L[c][p], clip) / double(C);
  }
  return r;
}

std::vector<PowerLawFit> FitCurves(const std::vector<int64_t>& curve_steps,
                                   const torch::Tensor& curve, double max_loss) {
  const int64_t P = curve.size(1);
  std::vector<double> t(curve_steps.begin(), curve_steps.end());
  torch::Tensor lc = curve.to(torch::kFloat64).contiguous();
  std::vector<PowerLawFit> fits;
  for (int64_t p = 0; p < P; ++p) {
    torch::Tensor col = lc.select(1, p).contiguous();
    std::vector<double> loss(col.data_ptr<double>(), col.data_ptr<double>() + col.numel());
    auto fit = FitPowerLaw(t, loss);
    if (fit.ok()) {
      fits.push_back(*fit);
    } else {
      PowerLawFit flat;
      flat.a = 0;
      flat.b = 1;
      flat.c = max_loss;
      fits.push_back(flat);
    }
  }
  return fits;
}

// ---------------------------------------------------------------------------
absl::StatusOr<ControlledRunResult> RunControlled(const Task& task, const ControlledRunConfig& c,
                                                  LhoptPolicyImpl* policy,
                                                  const EwmaNormalizer* normalizer,
                                                  const std::vector<PowerLawFit>* fits,
                                                  RegisterStore* registers) {
  torch::NoGradGuard no_grad;
  const int64_t G = c.groups, P = c.groups * c.replicas, N = c.inner_steps;
  const bool controlled = c.decisions > 0;
  TORCH_CHECK(!controlled || (policy != nullptr && normalizer != nullptr),
              "a controlled run needs a policy and a normalizer");
  TORCH_CHECK(fits == nullptr || int64_t(fits->size()) == P, "one fit per particle");
  InMemoryReplayBuffer own_buffer;
  RegisterStore own_store(&own_buffer, "registers");
  RegisterStore* store = registers ? registers : &own_store;

  torch::Generator init_gen = MakeGenerator(c.task_seed, kStreamInit, 0);
  torch::Generator data_gen = MakeGenerator(c.task_seed, kStreamData, 0);
  torch::Generator valid_gen = MakeGenerator(c.task_seed, kStreamValid, 0);
  torch::Generator act_gen = MakeGenerator(c.action_seed, kStreamActions, 0);
  TaskState state = task.Init(G, c.replicas, init_gen);
  // The task's device (a CUDA task on a GPU worker): the inner step, CIAO and
  // the per-step loss sums stay there; decisions and curve points read what
  // they need back to the CPU (the policy, the features and the register
  // bookkeeping run there), and every tensor of the result is on the CPU.
  const torch::Device dev = state.params.at(0).device();
  const auto f64_dev = torch::TensorOptions(torch::kFloat64).device(dev);
  auto cpu64 = [](const torch::Tensor& t) { return t.to(torch::kCPU, torch::kFloat64); };
  CiaoState cs = InitCiaoState(state.params);
  CiaoHparamTensors h;
  if (c.random_initial_hparams) {
    torch::Generator hg = MakeGenerator(c.task_seed, kStreamHparams, 0);
    h = RandomInitialHparams(P, hg);
  } else {
    h = CiaoHparamTensors::Fill(P, c.initial_hparams);
  }

  ControlledRunResult out;
  out.decision_steps = controlled ? DecisionSteps(N, c.decisions) : std::vector<int64_t>{};
  out.curve_steps = c.curve_points > 0 ? CurveSteps(N, c.curve_points) : std::vector<int64_t>{};
  LhoptFeatureBuilder features(P);
  std::vector<RestartRegisters> regs(P);
  PolicyState ps = controlled ? policy->InitialState(P) : PolicyState{};
  torch::Tensor prev_actions = KeepActions(P);
  CiaoStatsMean interval;
  torch::Tensor interval_loss = torch::zeros({P}, f64_dev);
  int64_t interval_steps = 0;
  torch::Tensor window_loss = torch::zeros({P}, f64_dev);
  int64_t window_steps = 0;
  const int64_t final_window = std::max<int64_t>(1, N / 10);
  torch::Tensor final_loss = torch::zeros({P}, f64_dev);
  // h on the task's device, copied once each time h changes rather than by
  // CiaoStep at every inner step.
  CiaoHparamTensors h_dev = h.On(dev);
  std::vector<torch::Tensor> raw, feats, extras, acts, logps, vals, hps, curve, train_curve;
  int64_t next_state_id = 0;
  size_t next_decision = 0, next_curve = 0;
  EvalResult last_eval;
  int64_t last_eval_step = -1;

  for (int64_t step = 0;; ++step) {  // `step` inner steps done
    if (c.cancelled && c.cancelled())
      return absl::CancelledError(absl::StrCat("cancelled after ", step, " of ", N, " inner steps"));
    if (next_curve < out.curve_steps.size() && out.curve_steps[next_curve] == step) {
      last_eval = task.Evaluate(state);
      last_eval_step = step;
      curve.push_back(cpu64(last_eval.loss));
      ++next_curve;
    }
    if (controlled && next_decision < out.decision_steps.size() &&
        out.decision_steps[next_decision] == step) {
      const double progress = double(step) / double(N);
      LhoptObservation obs;
      obs.progress = torch::full({P}, progress, torch::kFloat64);
      obs.train_loss = cpu64(interval_loss) / double(std::max<int64_t>(1, interval_steps));
      // Validation loss: a batch the run never steps on (Task has no
      // validation split, and Evaluate over the test split at every
      // decision would cost more than the inner steps).
      Batch vb = task.SampleBatch(G, valid_gen);
      obs.valid_loss = cpu64(task.LossAndGrad(state, vb, nullptr));
      obs.inner = interval.Mean();
      obs.hparams = h;
      obs.prev_actions = prev_actions;
      FillRegisterObservation(regs, &obs);
      torch::Tensor x = features.Build(obs);
      torch::Tensor xn = normalizer->Normalize(x);
      torch::Tensor extra = torch::zeros({P, kLhoptValueExtraSize}, torch::kFloat32);
      if (fits != nullptr) {
        torch::Tensor vl = obs.valid_loss.contiguous();
        for (int64_t p = 0; p < P; ++p) {
          extra[p][0] = 1.0;
          extra[p][1] = LogSpeedup((*fits)[p], double(step), vl[p].item<double>(), c.reward_clip) /
                        c.reward_clip;
        }
      }
      extra.select(1, 2).fill_(std::log(double(N)) / std::log(1e4));
      extra.select(1, 3).fill_(std::log(double(c.decisions)) / std::log(128.0));
      auto [po, next_ps] = policy->Step(xn, extra, ps);
      ps = next_ps;
      torch::Tensor a = c.mode == ActMode::kSample ? SampleActions(po.logits, act_gen)
                                                   : GreedyActions(po.logits);
      torch::Tensor logp = ActionLogProb(po.logits, a);
      h = ApplyActions(h, a);
      h_dev = h.On(dev);
      // Register actions: bookkeeping per particle that asked for one (at
      // decisions only, never in the inner step).
      torch::Tensor reg_col = a.select(1, kHeadRegisters).contiguous();
      torch::Tensor tl = obs.train_loss.contiguous();
      for (int64_t p = 0; p < P; ++p) {
        const int64_t choice = reg_col[p].item<int64_t>();
        if (choice == 0) continue;
        RegisterCommand cmd = regs[p].Apply(DecodeRegisterAction(choice), next_state_id,
                                            tl[p].item<double>(), progress);
        if (cmd.store_id) {
          if (absl::Status s = store->Put(*cmd.store_id, ParticleState(state, cs, p)); !s.ok())
            return s;
          ++next_state_id;
          ++out.register_saves;
        }
        if (cmd.load_id) {
          // A swap stored the current state first, so the load may not
          // read what it just wrote: the id differs.
          auto item = store->Get(*cmd.load_id);
          if (!item.ok()) return item.status();
          if (absl::Status s = LoadParticleState(*item, p, &state, &cs); !s.ok()) return s;
          ++out.register_loads;
        }
        if (cmd.release_id) {
          if (absl::Status s = store->Release(*cmd.release_id); !s.ok()) return s;
        }
      }
      prev_actions = a;
      raw.push_back(x);
      feats.push_back(xn);
      extras.push_back(extra);
      acts.push_back(a);
      logps.push_back(logp);
      vals.push_back(po.value);
      hps.push_back(HparamRow(h));
      if (c.on_decision) c.on_decision(int64_t(next_decision), state, cs);
      interval.Reset();
      interval_loss.zero_();
      interval_steps = 0;
      ++next_decision;
    }
    if (step == N) break;

    if (c.schedule) {
      h = c.schedule(step);
      h_dev = h.On(dev);
    }
    if (c.on_step) c.on_step(step, h);
    Batch b = task.SampleBatch(G, data_gen);
    std::vector<torch::Tensor> grads;
    torch::Tensor loss = task.LossAndGrad(state, b, &grads).to(torch::kFloat64);
    CiaoStepResult r = CiaoStep(state.params, grads, &cs, h_dev);
    for (size_t i = 0; i < state.params.size(); ++i) state.params[i].sub_(r.updates[i]);
    interval.Add(r.stats);
    interval_loss += loss;
    ++interval_steps;
    if (c.record_every > 0) {
      window_loss += loss;
      if (++window_steps == c.record_every) {
        train_curve.push_back(cpu64(window_loss) / double(window_steps));
        window_loss = torch::zeros({P}, f64_dev);
        window_steps = 0;
      }
    }
    if (step >= N - final_window) final_loss += loss;
  }

  if (controlled) {
    out.raw_features = torch::stack(raw);
    out.features = torch::stack(feats);
    out.value_extra = torch::stack(extras);
    out.actions = torch::stack(acts);
    out.log_probs = torch::stack(logps);
    out.values = torch::stack(vals);
    out.hparams = torch::stack(hps);
  }
  out.curve = curve.empty() ? torch::zeros({0, P}, torch::kFloat64) : torch::stack(curve);
  out.train_curve =
      train_curve.empty() ? torch::zeros({0, P}, torch::kFloat64) : torch::stack(train_curve);
  out.final_train_loss = cpu64(final_loss) / double(final_window);
  if (last_eval_step != N) last_eval = task.Evaluate(state);
  out.test_loss = cpu64(last_eval.loss);
  out.test_accuracy = cpu64(last_eval.accuracy);
  if (last_eval.hit_rate.defined()) {
    out.test_hit_rate = cpu64(last_eval.hit_rate);
    out.test_ndcg = cpu64(last_eval.ndcg);
  }
  if (last_eval.char_error_rate.defined()) out.test_cer = cpu64(last_eval.char_error_rate);
  if (registers == nullptr) (void)own_store.ReleaseAll();
  return out;
}

// ---------------------------------------------------------------------------
LhoptEpisodeRunner::LhoptEpisodeRunner(const v1::JobSpec& job, ReplayBuffer* buffer,
                                       std::string table_prefix, torch::Device device)
    : job_(job), device_(device), buffer_(buffer), prefix_(std::move(table_prefix)) {}

std::string LhoptEpisodeRunner::BaselineTable(const std::string& task_key) const {
  return absl::StrCat(prefix_, "/baseline/", task_key);
}

absl::StatusOr<const Task*> LhoptEpisodeRunner::GetTask(const v1::TaskSpec& spec, uint64_t seed) {
  std::string key = absl::StrCat(seed, "/", spec.SerializeAsString());
  auto it = tasks_.find(key);
  if (it != tasks_.end()) return it->second.get();
  auto task = MakeTask(spec, seed, device_);
  if (!task.ok()) return task.status();
  if (tasks_.size() >= 64) tasks_.clear();  // datasets stay cached by the loaders
  return (tasks_[key] = std::move(*task)).get();
}

absl::StatusOr<std::vector<PowerLawFit>> LhoptEpisodeRunner::BaselineFits(const LhoptUnit& u,
                                                                         bool* computed,
                                                                         torch::Tensor* curve_out) {
  if (computed) *computed = false;
  auto memo = memo_.find(u.task_key);
  if (memo != memo_.end()) {
    ++memo_hits_;
    if (curve_out) *curve_out = memo->second.curve;
    return memo->second.fits;
  }
  auto task = GetTask(u.task, u.task_seed);
  if (!task.ok()) return task.status();
  const std::string table = BaselineTable(u.task_key);
  baseline_tables_.insert(table);
  const std::vector<int64_t> steps = CurveSteps(u.inner_steps, job_.lhopt().curve_points());
  torch::Tensor curve;
  auto size = buffer_->Size(table);
  if (size.ok() && *size > 0) {
    auto item = buffer_->Sample(table, 0.0);
    if (!item.ok()) return item.status();
    auto c = Find(*item, "curve");
    if (!c.ok()) return c.status();
    if (c->dim() != 2 || c->size(0) != int64_t(steps.size()) || c->size(1) != u.particles)
      return absl::DataLossError(absl::StrCat("baseline curve in ", table, " has the wrong shape"));
    curve = *c;
    ++buffer_hits_;
  } else {
    LhoptPolicy baseline(LhoptPolicyOptionsFor(job_));
    if (absl::Status s = SetPolicyWeights(*baseline, u.baseline_policy, "policy/"); !s.ok())
      return s;
    EwmaNormalizer norm(kNumLhoptFeatures);
    if (absl::Status s = SetNormalizer(norm, u.baseline_policy, "normalizer/"); !s.ok())
      return absl::InvalidArgumentError(absl::StrCat("baseline policy: ", s.message()));
    ControlledRunConfig c;
    c.groups = u.particles;
    c.inner_steps = u.inner_steps;
    c.decisions = u.decisions;
    c.curve_points = job_.lhopt().curve_points();
    c.task_seed = u.task_seed;
    c.mode = ActMode::kGreedy;
    c.reward_clip = job_.lhopt().reward_clip();
    c.cancelled = cancel_check_;
    RegisterStore store(buffer_, absl::StrCat(prefix_, "/registers/baseline/", u.unit_id));
    auto run = RunControlled(**task, c, baseline.get(), &norm, nullptr, &store);
    (void)store.ReleaseAll();
    if (!run.ok()) return run.status();
    curve = run->curve;
    if (absl::Status s = buffer_->Put(
            table, 1,
            {{"curve", curve},
             {"curve_steps", torch::tensor(steps, torch::kInt64)},
             {"generation", torch::tensor(u.baseline_generation, torch::kInt64)}});
        !s.ok())
      return s;
    ++baseline_runs_;
    if (computed) *computed = true;
  }
  std::vector<PowerLawFit> fits = FitCurves(steps, curve, (*task)->MaxMetaLoss());
  if (memo_.size() >= 256) memo_.clear();
  memo_[u.task_key] = Memo{fits, curve};
  if (curve_out) *curve_out = curve;
  return fits;
}

absl::StatusOr<LhoptUnitResult> LhoptEpisodeRunner::Run(const LhoptUnit& u) {
  if (u.particles < 1 || u.decisions < 1 || u.inner_steps <= u.decisions)
    return absl::InvalidArgumentError(absl::StrCat(
        "unit ", u.unit_id, ": need particles >= 1 and 1 <= decisions < inner_steps, got ",
        u.particles, ", ", u.decisions, ", ", u.inner_steps));
  auto task = GetTask(u.task, u.task_seed);
  if (!task.ok()) return task.status();
  LhoptPolicy policy(LhoptPolicyOptionsFor(job_));
  if (absl::Status s = SetPolicyWeights(*policy, u.policy, "policy/"); !s.ok()) return s;
  EwmaNormalizer norm(kNumLhoptFeatures);
  if (absl::Status s = SetNormalizer(norm, u.policy, "normalizer/"); !s.ok())
    return absl::InvalidArgumentError(absl::StrCat("unit policy: ", s.message()));

  LhoptUnitResult res;
  res.unit_id = u.unit_id;
  res.policy_version = u.policy_version;
  res.task_index = u.task_index;
  auto fits = BaselineFits(u, &res.baseline_computed, &res.baseline_curve);
  if (!fits.ok()) return fits.status();

  ControlledRunConfig c;
  c.groups = u.particles;
  c.inner_steps = u.inner_steps;
  c.decisions = u.decisions;
  c.curve_points = job_.lhopt().curve_points();
  c.task_seed = u.task_seed;
  c.action_seed = MakeGenerator(job_.seed(), 0x1a10, u.unit_id).current_seed();
  c.mode = ActMode::kSample;
  c.reward_clip = job_.lhopt().reward_clip();
  c.cancelled = cancel_check_;
  RegisterStore store(buffer_, absl::StrCat(prefix_, "/registers/unit/", u.unit_id));
  auto run = RunControlled(**task, c, policy.get(), &norm, &*fits, &store);
  (void)store.ReleaseAll();
  if (!run.ok()) return run.status();

  torch::Tensor rewards = DecisionRewards(*fits, run->decision_steps, run->curve_steps,
                                          run->curve, c.reward_clip);  // [D, P]
  const int64_t D = u.decisions, P = u.particles, hidden = policy->options().hidden_size;
  for (int64_t p = 0; p < P; ++p) {
    PpoSegment s;
    s.features = run->features.select(1, p).clone();
    s.value_extra = run->value_extra.select(1, p).clone();
    s.actions = run->actions.select(1, p).clone();
    s.log_probs = run->log_probs.select(1, p).to(torch::kFloat32).clone();
    s.values = run->values.select(1, p).to(torch::kFloat32).clone();
    s.rewards = rewards.select(1, p).to(torch::kFloat32).clone();
    s.dones = torch::zeros({D}, torch::kFloat32);
    s.dones[D - 1] = 1.0;
    s.bootstrap_value = torch::zeros({}, torch::kFloat32);
    s.initial_state = {torch::zeros({hidden}), torch::zeros({hidden})};
    s.policy_version = u.policy_version;
    res.segments.push_back(std::move(s));
  }
  res.raw_features = run->raw_features.reshape({D * P, kNumLhoptFeatures});
  res.episode_rewards = rewards.sum(0);
  res.curve_steps = run->curve_steps;
  res.curve = run->curve;
  res.final_hparams = run->hparams[D - 1];
  res.inner_particle_steps = u.inner_steps * P * (res.baseline_computed ? 2 : 1);
  res.register_saves = run->register_saves;
  res.register_loads = run->register_loads;
  return res;
}

}  // namespace lopt
