// lopt._C: the C++ side of the Python package (python/lopt). Thin bindings
// over lopt_common, so that Python runs the code the C++ tools run:
//   * SmallFcLopt: small_fc_lopt's step (SmallFcLopt::Step: the fused CPU
//     kernel on CPU float32 tensors, the CUDA kernel in CUDA builds, else the
//     reference), as lopt::LearnedOptimizer::step applies it;
//   * CppLearnedOptimizer: lopt::LearnedOptimizer itself (the reference the
//     Python optimizer is tested against);
//   * optimizer and schedule files (common/elo/optimizer_file.h,
//     common/lhopt/lhopt_schedule.h) with their validation;
//   * Controller: a trained LHOPT controller acting online on a user's
//     training loop, with CIAO (common/lhopt/ciao.h) as the inner optimizer, as
//     common/lhopt/lhopt_episode.cc's RunControlled acts greedily.
#include <cmath>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include <pybind11/stl.h>
#include <torch/csrc/utils/pybind.h>
#include <torch/torch.h>

#include "absl/status/status.h"
#include "common/elo/learned_optimizer.h"
#include "common/elo/optimizer_file.h"
#include "common/elo/small_fc_lopt.h"
#include "common/lhopt/ciao.h"
#include "common/lhopt/lhopt_actions.h"
#include "common/lhopt/lhopt_features.h"
#include "common/lhopt/lhopt_policy.h"
#include "common/lhopt/lhopt_schedule.h"
#include "kernels/lopt_step_cpu.h"
#ifdef LOPT_WITH_CUDA
#include "kernels/lopt_step_cuda.h"
#endif
#include "kinds/job_door.h"
#include "learner/lhopt_job.h"

namespace py = pybind11;

namespace lopt {
namespace {

// absl errors as the Python exceptions a user expects.
[[noreturn]] void Raise(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kNotFound:
      PyErr_SetString(PyExc_FileNotFoundError, std::string(s.message()).c_str());
      throw py::error_already_set();
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kFailedPrecondition:
      throw py::value_error(std::string(s.message()));
    default:
      throw std::runtime_error(s.ToString());
  }
}

// c10::Error (TORCH_CHECK) as RuntimeError without the C++ backtrace.
template <typename F>
auto Checked(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const c10::Error& e) {
    throw std::runtime_error(e.what_without_backtrace());
  }
}

template <typename Proto>
Proto Parse(const std::string& bytes, const char* what) {
  Proto p;
  if (!p.ParseFromString(bytes)) throw py::value_error(std::string("not a serialized ") + what);
  return p;
}

// small_fc_lopt over a list of tensors (no particle dimension), its state
// held by the caller: 4 tensors a parameter (FlattenLoptState's order: mom,
// rms, fac_a, fac_b, each with a leading particle dimension of 1 as
// lopt::LearnedOptimizer keeps them).
class PySmallFcLopt {
 public:
  explicit PySmallFcLopt(const std::string& spec_bytes)
      : lopt_(Parse<v1::LearnedOptimizerSpec>(spec_bytes, "LearnedOptimizerSpec")) {}

  int64_t theta_size() const { return lopt_.theta_size(); }

  std::vector<torch::Tensor> InitState(const torch::Tensor& p) const {
    torch::NoGradGuard no_grad;
    return FlattenLoptState(lopt_.InitState({p.detach().unsqueeze(0)}));
  }

  // The updates u (p_new = p - lr * u) of one lopt::LearnedOptimizer step,
  // and the parameters' new states. update_scales: empty or one a parameter.
  std::pair<std::vector<torch::Tensor>, std::vector<std::vector<torch::Tensor>>> Step(
      const std::vector<torch::Tensor>& params, const std::vector<torch::Tensor>& grads,
      const std::vector<std::vector<torch::Tensor>>& states, int64_t iteration,
      int64_t total_steps, const torch::Tensor& theta, const std::vector<double>& update_scales) {
    TORCH_CHECK(params.size() == grads.size() && params.size() == states.size(),
                "step: params, grads and states differ in length");
    TORCH_CHECK(update_scales.empty() || update_scales.size() == params.size(),
                "step: one update scale a parameter");
    torch::NoGradGuard no_grad;
    std::vector<torch::Tensor> p1, g1;
    LoptState state;
    for (size_t i = 0; i < params.size(); ++i) {
      TORCH_CHECK(states[i].size() == 4, "step: a parameter's state is 4 tensors");
      p1.push_back(params[i].detach().unsqueeze(0));
      g1.push_back(grads[i].detach().unsqueeze(0));
      state.push_back(LoptTensorState{states[i][0], states[i][1], states[i][2], states[i][3]});
    }
    std::vector<torch::Tensor> out;
    if (p1.empty()) return {out, {}};
    torch::Tensor t =
        torch::full({1}, iteration, torch::TensorOptions(torch::kInt64).device(p1[0].device()));
    std::vector<torch::Tensor> u = lopt_.Step(p1, g1, &state, t, theta);
    if (HasStepMultSchedule(lopt_.spec()))
      ApplyStepMultSchedule(lopt_.spec(), StepMultFactor(lopt_.spec(), iteration, total_steps),
                            p1, &u);
    std::vector<std::vector<torch::Tensor>> new_states;
    for (size_t k = 0; k < u.size(); ++k) {
      if (!update_scales.empty()) u[k].mul_(update_scales[k]);
      out.push_back(u[k].squeeze(0));
      new_states.push_back(FlattenLoptState({state[k]}));
    }
    return {out, new_states};
  }

 private:
  SmallFcLopt lopt_;
};

// lopt::LearnedOptimizer as C++ users hold it.
class PyCppLearnedOptimizer {
 public:
  PyCppLearnedOptimizer(std::vector<torch::Tensor> params, const std::string& path) {
    auto o = LearnedOptimizer::FromFile(std::move(params), path);
    if (!o.ok()) Raise(o.status());
    opt_ = std::move(*o);
  }
  void step() { opt_->step(); }
  void zero_grad() { opt_->zero_grad(); }
  void set_update_scales(std::vector<double> s) { opt_->set_update_scales(std::move(s)); }
  void set_total_steps(int64_t n) { opt_->set_total_steps(n); }
  int64_t iteration() const { return opt_->iteration(); }

 private:
  std::unique_ptr<LearnedOptimizer> opt_;
};

py::dict HparamsDict(const CiaoHyperparameters& h) {
  py::dict d;
  d["lr"] = h.lr;
  d["one_minus_beta1"] = h.one_minus_beta1;
  d["one_minus_beta2"] = h.one_minus_beta2;
  d["eps"] = h.eps;
  d["weight_decay"] = h.weight_decay;
  d["clip_fraction"] = h.clip_fraction;
  return d;
}

CiaoHyperparameters HparamsFrom(const py::dict& d) {
  CiaoHyperparameters h;
  for (auto item : d) {
    const std::string k = py::cast<std::string>(item.first);
    const double v = py::cast<double>(item.second);
    if (k == "lr") h.lr = v;
    else if (k == "one_minus_beta1") h.one_minus_beta1 = v;
    else if (k == "one_minus_beta2") h.one_minus_beta2 = v;
    else if (k == "eps") h.eps = v;
    else if (k == "weight_decay") h.weight_decay = v;
    else if (k == "clip_fraction") h.clip_fraction = v;
    else throw py::value_error("unknown CIAO hyperparameter '" + k + "'");
  }
  return h;
}

// A trained controller on one run of the user's: CIAO steps on the user's
// parameters (one particle), the policy's greedy decisions at the same steps
// as `lopt eval --controller` (DecisionSteps of common/lhopt/lhopt_episode.h:
// decision d after 1 + floor(d (N - 1) / D) steps), restart registers kept
// in memory (parameters and CIAO state; a load copies into the parameters).
class PyController {
 public:
  PyController(std::vector<torch::Tensor> params, const std::string& path, int64_t total_steps,
               int64_t decisions, const py::dict& initial)
      : params_(std::move(params)), total_steps_(total_steps), decisions_(decisions) {
    if (!(decisions >= 1 && decisions < total_steps))
      throw py::value_error("need 1 <= decisions < total_steps, got " + std::to_string(decisions) +
                            " and " + std::to_string(total_steps));
    auto c = LoadControllerFile(path);
    if (!c.ok()) Raise(c.status());
    loaded_ = std::move(*c);
    loaded_.policy->eval();
    for (int64_t d = 0; d < decisions; ++d)
      decision_steps_.push_back(1 + d * (total_steps - 1) / decisions);
    h_ = CiaoHparamTensors::Fill(1, HparamsFrom(initial));
    ps_ = loaded_.policy->InitialState(1);
    prev_ = KeepActions(1);
    std::vector<torch::Tensor> batched;
    torch::NoGradGuard no_grad;
    for (auto& p : params_) batched.push_back(p.detach().unsqueeze(0));
    cs_ = InitCiaoState(batched);
  }

  // One CIAO step on every parameter with a gradient, at the hyperparameters
  // in force; `loss` is this step's training loss.
  void Step(double loss) {
    torch::NoGradGuard no_grad;
    std::vector<torch::Tensor> ps, gs;
    CiaoState sub = cs_;
    sub.m.clear();
    sub.v.clear();
    std::vector<size_t> which;
    for (size_t i = 0; i < params_.size(); ++i) {
      if (!params_[i].grad().defined()) continue;
      ps.push_back(params_[i].detach().unsqueeze(0));
      gs.push_back(params_[i].grad().detach().unsqueeze(0));
      sub.m.push_back(cs_.m[i]);
      sub.v.push_back(cs_.v[i]);
      which.push_back(i);
    }
    if (ps.empty()) return;
    CiaoStepResult r = CiaoStep(ps, gs, &sub, h_);
    for (size_t k = 0; k < which.size(); ++k) params_[which[k]].detach().sub_(r.updates[k].squeeze(0));
    cs_.bias_correction1 = sub.bias_correction1;
    cs_.bias_correction2 = sub.bias_correction2;
    cs_.rolling_max = sub.rolling_max;
    cs_.step = sub.step;
    interval_.Add(r.stats);
    interval_loss_ += loss;
    ++interval_steps_;
    ++steps_;
  }

  bool DecisionDue() const {
    return next_decision_ < decision_steps_.size() && decision_steps_[next_decision_] == steps_;
  }

  // The controller's decision after the steps so far: the features of the
  // interval since the last one, the policy's greedy action, the new
  // hyperparameters and any register action. valid_loss: the loss on data
  // the run does not train on (None: the interval's training loss).
  py::dict Decide(std::optional<double> valid_loss) {
    if (interval_.count() == 0)
      throw std::runtime_error("decide: no step since the last decision");
    torch::NoGradGuard no_grad;
    const double progress = double(steps_) / double(total_steps_);
    const double train = interval_loss_ / double(std::max<int64_t>(1, interval_steps_));
    LhoptObservation obs;
    obs.progress = torch::full({1}, progress, torch::kFloat64);
    obs.train_loss = torch::full({1}, train, torch::kFloat64);
    obs.valid_loss = torch::full({1}, valid_loss ? *valid_loss : train, torch::kFloat64);
    obs.inner = interval_.Mean();
    obs.hparams = h_;
    obs.prev_actions = prev_;
    FillRegisterObservation(regs_, &obs);
    torch::Tensor x = features_.Build(obs);
    torch::Tensor xn = loaded_.normalizer->Normalize(x);
    const int64_t E = loaded_.policy->options().value_extra_size;
    torch::Tensor extra;
    if (E > 0) {
      extra = torch::zeros({1, E}, torch::kFloat32);
      // As RunControlled without baseline fits: the run's length and decisions.
      if (E > 2) extra.select(1, 2).fill_(std::log(double(total_steps_)) / std::log(1e4));
      if (E > 3) extra.select(1, 3).fill_(std::log(double(decisions_)) / std::log(128.0));
    }
    auto [po, next] = loaded_.policy->Step(xn, extra, ps_);
    ps_ = next;
    torch::Tensor a = GreedyActions(po.logits).contiguous();
    h_ = ApplyActions(h_, a);
    const int64_t choice = a[0][kHeadRegisters].item<int64_t>();
    std::string reg = "none";
    if (choice != 0) {
      RegisterAction ra = DecodeRegisterAction(choice);
      RegisterCommand cmd = regs_[0].Apply(ra, next_state_id_, train, progress);
      if (cmd.store_id) {
        store_[*cmd.store_id] = Snapshot();
        ++next_state_id_;
      }
      if (cmd.load_id) Restore(store_.at(*cmd.load_id));
      if (cmd.release_id) store_.erase(*cmd.release_id);
      static const char* kOps[] = {"none", "save", "load", "swap"};
      reg = cmd.applied ? std::string(kOps[int(ra.op)]) + " " + std::to_string(ra.reg)
                        : "none (register empty)";
    }
    prev_ = a;
    interval_.Reset();
    interval_loss_ = 0;
    interval_steps_ = 0;
    ++next_decision_;
    py::dict out;
    out["step"] = steps_;
    out["progress"] = progress;
    out["train_loss"] = train;
    out["hparams"] = HparamsDict(h_.At(0));
    std::vector<int64_t> acts(a.data_ptr<int64_t>(), a.data_ptr<int64_t>() + a.numel());
    out["actions"] = acts;
    out["register"] = reg;
    // The policy's inputs before normalisation (common/lhopt/lhopt_features.h's
    // columns, FeatureNames()): what the decision was made on.
    torch::Tensor f = x[0].to(torch::kFloat64).contiguous();
    out["features"] = std::vector<double>(f.data_ptr<double>(), f.data_ptr<double>() + f.numel());
    return out;
  }

  // Everything the run's next decisions depend on besides the parameters'
  // values (the user's model saves those): CIAO's state, the hyperparameters,
  // the policy's LSTM state, the features' CDF history, the interval's sums,
  // the restart registers and the states they hold, the step counts. Copies:
  // the run going on does not change them.
  py::dict StateDict() {
    py::dict d;
    d["format_version"] = kStateFormat;
    d["total_steps"] = total_steps_;
    d["decisions"] = decisions_;
    d["steps"] = steps_;
    d["next_decision"] = int64_t(next_decision_);
    d["next_state_id"] = next_state_id_;
    d["interval_loss"] = interval_loss_;
    d["interval_steps"] = interval_steps_;
    d["interval_stats"] = interval_.state();
    py::dict h;
    h["lr"] = h_.lr.clone();
    h["one_minus_beta1"] = h_.one_minus_beta1.clone();
    h["one_minus_beta2"] = h_.one_minus_beta2.clone();
    h["eps"] = h_.eps.clone();
    h["weight_decay"] = h_.weight_decay.clone();
    h["clip_fraction"] = h_.clip_fraction.clone();
    d["hparams"] = h;
    d["policy_h"] = ps_.h.clone();
    d["policy_c"] = ps_.c.clone();
    d["prev_actions"] = prev_.clone();
    std::vector<torch::Tensor> cdf;
    for (const auto& t : features_.cdf().state())
      cdf.push_back(t.clone());
    d["feature_cdf"] = cdf;
    d["ciao"] = CiaoDict(cs_.m, cs_.v, cs_.bias_correction1, cs_.bias_correction2,
                         cs_.rolling_max, cs_.step);
    py::list regs;
    for (int r = 0; r < regs_[0].num_registers(); ++r) {
      const RegisterEntry& e = regs_[0].entry(r);
      py::dict re;
      re["filled"] = e.filled;
      re["state_id"] = e.state_id;
      re["loss"] = e.loss;
      re["progress"] = e.progress;
      regs.append(re);
    }
    d["registers"] = regs;
    py::dict store;
    for (const auto& [id, saved] : store_) {
      py::dict sd = CiaoDict(saved.m, saved.v, saved.bc1, saved.bc2, saved.rolling_max,
                             torch::Tensor());
      std::vector<torch::Tensor> params;
      for (const auto& p : saved.params) params.push_back(p.clone());
      sd["params"] = params;
      store[py::int_(id)] = sd;
    }
    d["saved_states"] = store;
    return d;
  }

  // A state_dict() of a controller run with the same total_steps, decisions,
  // policy and parameter shapes. Checked whole before anything changes:
  // ValueError saying what does not fit.
  void LoadStateDict(const py::dict& d) {
    auto fail = [](const std::string& what) -> void {
      throw py::value_error("LhoptController.load_state_dict: " + what);
    };
    auto item = [&](const py::dict& in, const char* key) -> py::object {
      if (!in.contains(key)) fail(std::string("the state has no '") + key + "'");
      return in[key];
    };
    auto cast = [&](const py::dict& in, const char* key, auto* out) {
      py::object v = item(in, key);
      try {
        *out = py::cast<std::decay_t<decltype(*out)>>(v);
      } catch (const py::cast_error&) {
        fail(std::string("'") + key + "' has the wrong type");
      } catch (const py::error_already_set&) {
        fail(std::string("'") + key + "' has the wrong type");
      }
    };
    auto like = [&](const torch::Tensor& t, const torch::Tensor& ref, const std::string& what) {
      if (!t.defined() || t.sizes() != ref.sizes())
        fail(what + " has shape " + (t.defined() ? ShapeOf(t) : "none") + ", this run's " +
             ShapeOf(ref));
      return t.to(ref.device(), ref.scalar_type()).clone();
    };
    int64_t format = 0, total = 0, decisions = 0;
    cast(d, "format_version", &format);
    if (format != kStateFormat)
      fail("format_version " + std::to_string(format) + ", this lopt reads " +
           std::to_string(kStateFormat));
    cast(d, "total_steps", &total);
    cast(d, "decisions", &decisions);
    if (total != total_steps_ || decisions != decisions_)
      fail("the state is of a run of total_steps=" + std::to_string(total) +
           " and decisions=" + std::to_string(decisions) + ", this controller has " +
           std::to_string(total_steps_) + " and " + std::to_string(decisions_));
    int64_t steps = 0, next_decision = 0, next_state_id = 0, interval_steps = 0;
    double interval_loss = 0;
    cast(d, "steps", &steps);
    cast(d, "next_decision", &next_decision);
    cast(d, "next_state_id", &next_state_id);
    cast(d, "interval_loss", &interval_loss);
    cast(d, "interval_steps", &interval_steps);
    if (steps < 0 || next_decision < 0 || next_decision > decisions_ || interval_steps < 0)
      fail("steps, next_decision or interval_steps out of range");
    std::vector<torch::Tensor> interval_stats, cdf;
    cast(d, "interval_stats", &interval_stats);
    cast(d, "feature_cdf", &cdf);
    if (cdf.size() != 3) fail("feature_cdf must be 3 tensors, got " + std::to_string(cdf.size()));
    torch::Tensor h, c, prev;
    cast(d, "policy_h", &h);
    cast(d, "policy_c", &c);
    cast(d, "prev_actions", &prev);
    PolicyState ps{like(h, ps_.h, "policy_h"), like(c, ps_.c, "policy_c")};
    prev = like(prev, prev_, "prev_actions");
    py::dict hd;
    cast(d, "hparams", &hd);
    CiaoHparamTensors hp;
    for (auto [name, field, ref] :
         {std::tuple{"lr", &hp.lr, &h_.lr},
          std::tuple{"one_minus_beta1", &hp.one_minus_beta1, &h_.one_minus_beta1},
          std::tuple{"one_minus_beta2", &hp.one_minus_beta2, &h_.one_minus_beta2},
          std::tuple{"eps", &hp.eps, &h_.eps},
          std::tuple{"weight_decay", &hp.weight_decay, &h_.weight_decay},
          std::tuple{"clip_fraction", &hp.clip_fraction, &h_.clip_fraction}}) {
      torch::Tensor t;
      cast(hd, name, &t);
      *field = like(t, *ref, std::string("hparams['") + name + "']");
    }
    py::dict cd;
    cast(d, "ciao", &cd);
    CiaoState cs = LoadCiao(cd, /*with_step=*/true, like, cast);
    std::vector<RegisterEntry> entries;
    py::list regs;
    cast(d, "registers", &regs);
    if (int(regs.size()) != regs_[0].num_registers())
      fail("the state has " + std::to_string(regs.size()) + " registers, the controller " +
           std::to_string(regs_[0].num_registers()));
    for (auto r : regs) {
      py::dict re;
      try {
        re = py::cast<py::dict>(r);
      } catch (const py::cast_error&) {
        fail("a register is not a dict");
      }
      RegisterEntry e;
      cast(re, "filled", &e.filled);
      cast(re, "state_id", &e.state_id);
      cast(re, "loss", &e.loss);
      cast(re, "progress", &e.progress);
      entries.push_back(e);
    }
    py::dict sd;
    cast(d, "saved_states", &sd);
    std::map<int64_t, Saved> store;
    for (auto [k, v] : sd) {
      int64_t id = 0;
      py::dict one;
      try {
        id = py::cast<int64_t>(k);
        one = py::cast<py::dict>(v);
      } catch (const py::cast_error&) {
        fail("saved_states must map state ids to dicts");
      }
      CiaoState st = LoadCiao(one, /*with_step=*/false, like, cast);
      Saved s{{}, st.m, st.v, st.bias_correction1, st.bias_correction2, st.rolling_max};
      std::vector<torch::Tensor> params;
      cast(one, "params", &params);
      if (params.size() != params_.size())
        fail("a saved state has " + std::to_string(params.size()) + " parameters, this run " +
             std::to_string(params_.size()));
      for (size_t i = 0; i < params.size(); ++i)
        s.params.push_back(like(params[i], params_[i].detach(), "a saved state's parameter " +
                                                                  std::to_string(i)));
      store[id] = std::move(s);
    }
    for (const auto& e : entries)
      if (e.filled && !store.count(e.state_id))
        fail("a register holds state " + std::to_string(e.state_id) + ", which saved_states lacks");
    // Every piece fits: the run is the saved one from here on.
    LhoptFeatureBuilder features(1);
    CiaoStatsMean interval;
    try {
      features.cdf().set_state({cdf[0].clone(), cdf[1].clone(), cdf[2].clone()});
      interval.set_state(interval_stats);
    } catch (const c10::Error& e) {
      fail(e.what_without_backtrace());
    }
    features_ = std::move(features);
    interval_ = std::move(interval);
    steps_ = steps;
    next_decision_ = size_t(next_decision);
    next_state_id_ = next_state_id;
    interval_loss_ = interval_loss;
    interval_steps_ = interval_steps;
    ps_ = ps;
    prev_ = prev;
    h_ = hp;
    cs_ = cs;
    for (size_t r = 0; r < entries.size(); ++r) regs_[0].set_entry(int(r), entries[r]);
    store_ = std::move(store);
  }

  py::dict Hparams() const { return HparamsDict(h_.At(0)); }
  void SetHparams(const py::dict& d) { h_ = CiaoHparamTensors::Fill(1, HparamsFrom(d)); }
  int64_t steps() const { return steps_; }
  std::vector<int64_t> decision_steps() const { return decision_steps_; }

 private:
  struct Saved {
    std::vector<torch::Tensor> params, m, v;
    torch::Tensor bc1, bc2, rolling_max;
  };
  Saved Snapshot() const {
    Saved s;
    for (size_t i = 0; i < params_.size(); ++i) {
      s.params.push_back(params_[i].detach().clone());
      s.m.push_back(cs_.m[i].clone());
      s.v.push_back(cs_.v[i].clone());
    }
    s.bc1 = cs_.bias_correction1.clone();
    s.bc2 = cs_.bias_correction2.clone();
    s.rolling_max = cs_.rolling_max.clone();
    return s;
  }
  static constexpr int64_t kStateFormat = 1;

  static std::string ShapeOf(const torch::Tensor& t) {
    std::string out = "[";
    for (int64_t i = 0; i < t.dim(); ++i) out += (i ? ", " : "") + std::to_string(t.size(i));
    return out + "]";
  }

  static py::dict CiaoDict(const std::vector<torch::Tensor>& m, const std::vector<torch::Tensor>& v,
                           const torch::Tensor& bc1, const torch::Tensor& bc2,
                           const torch::Tensor& rolling_max, const torch::Tensor& step) {
    auto clones = [](const std::vector<torch::Tensor>& ts) {
      std::vector<torch::Tensor> out;
      for (const auto& t : ts) out.push_back(t.clone());
      return out;
    };
    py::dict d;
    d["m"] = clones(m);
    d["v"] = clones(v);
    d["bias_correction1"] = bc1.clone();
    d["bias_correction2"] = bc2.clone();
    d["rolling_max"] = rolling_max.clone();
    if (step.defined()) d["step"] = step.clone();
    return d;
  }

  // CIAO's state from a CiaoDict, shaped as this run's (cs_).
  template <typename Like, typename Cast>
  CiaoState LoadCiao(const py::dict& d, bool with_step, Like& like, Cast& cast) const {
    CiaoState out;
    std::vector<torch::Tensor> m, v;
    cast(d, "m", &m);
    cast(d, "v", &v);
    if (m.size() != cs_.m.size() || v.size() != cs_.v.size())
      throw py::value_error("LhoptController.load_state_dict: CIAO's state has " +
                            std::to_string(m.size()) + " parameters, this run " +
                            std::to_string(cs_.m.size()));
    for (size_t i = 0; i < m.size(); ++i) {
      out.m.push_back(like(m[i], cs_.m[i], "CIAO's m of parameter " + std::to_string(i)));
      out.v.push_back(like(v[i], cs_.v[i], "CIAO's v of parameter " + std::to_string(i)));
    }
    torch::Tensor t;
    cast(d, "bias_correction1", &t);
    out.bias_correction1 = like(t, cs_.bias_correction1, "bias_correction1");
    cast(d, "bias_correction2", &t);
    out.bias_correction2 = like(t, cs_.bias_correction2, "bias_correction2");
    cast(d, "rolling_max", &t);
    out.rolling_max = like(t, cs_.rolling_max, "rolling_max");
    if (with_step) {
      cast(d, "step", &t);
      out.step = like(t, cs_.step, "step");
    }
    return out;
  }

  // The weights and CIAO's moments, bias corrections and rolling max (not the
  // hyperparameters, not the step count: the budget keeps running).
  void Restore(const Saved& s) {
    for (size_t i = 0; i < params_.size(); ++i) {
      params_[i].detach().copy_(s.params[i]);
      cs_.m[i].copy_(s.m[i]);
      cs_.v[i].copy_(s.v[i]);
    }
    cs_.bias_correction1 = s.bc1.clone();
    cs_.bias_correction2 = s.bc2.clone();
    cs_.rolling_max = s.rolling_max.clone();
  }

  std::vector<torch::Tensor> params_;
  int64_t total_steps_, decisions_;
  LoadedController loaded_;
  std::vector<int64_t> decision_steps_;
  size_t next_decision_ = 0;
  CiaoHparamTensors h_;
  CiaoState cs_;
  PolicyState ps_;
  torch::Tensor prev_;
  LhoptFeatureBuilder features_{1};
  std::vector<RestartRegisters> regs_ = std::vector<RestartRegisters>(1);
  CiaoStatsMean interval_;
  double interval_loss_ = 0;
  int64_t interval_steps_ = 0;
  int64_t steps_ = 0;
  int64_t next_state_id_ = 0;
  std::map<int64_t, Saved> store_;
};

}  // namespace
}  // namespace lopt

PYBIND11_MODULE(_C, m) {
  using namespace lopt;
  m.doc() = "lopt's C++ core (lopt_common) for the Python package";

  m.def("load_optimizer_file", [](const std::string& path) {
    auto t = LoadOptimizerFile(path);
    if (!t.ok()) Raise(t.status());
    v1::OptimizerFile f = t->file;
    f.clear_theta();
    return std::make_pair(py::bytes(f.SerializeAsString()), t->theta);
  }, py::arg("path"),
  "(OptimizerFile bytes without theta, theta [D] float32) of a .lopt file, validated "
  "as lopt::LoadOptimizerFile does.");
  m.def("save_optimizer_file", [](const std::string& path, const std::string& file_bytes,
                                  const torch::Tensor& theta) {
    auto file = Parse<v1::OptimizerFile>(file_bytes, "OptimizerFile");
    if (theta.numel() != SmallFcLopt(file.options()).theta_size())
      throw py::value_error("theta has " + std::to_string(theta.numel()) +
                            " values, the options need " +
                            std::to_string(SmallFcLopt(file.options()).theta_size()));
    if (absl::Status s = SaveOptimizerFile(path, file, theta); !s.ok()) Raise(s);
  }, py::arg("path"), py::arg("file_bytes"), py::arg("theta"),
  "Writes a .lopt file (format version, architecture, created_at filled in).");
  m.def("load_schedule_json", [](const std::string& path) {
    auto s = LoadScheduleJson(path);
    if (!s.ok()) Raise(s.status());
    return py::bytes(s->SerializeAsString());
  }, py::arg("path"), "LhoptSchedule bytes of a schedule.json, validated.");
  m.def("write_initial_controller", [](const std::string& path, const std::string& job_text) {
    auto job = JobFromText(job_text, "job");
    if (!job.ok()) Raise(job.status());
    if (!job->has_lhopt()) throw py::value_error("the job has no lhopt section");
    auto file = Checked([&] { return LhoptJob(*job).MakeControllerFile(); });
    if (!file.ok()) Raise(file.status());
    if (absl::Status s = SaveControllerFile(path, *file); !s.ok()) Raise(s);
  }, py::arg("path"), py::arg("job_text"),
  "Writes the controller an LHOPT job starts from (iteration 0: its initial policy), as "
  "`loptctl export` writes a trained one: a baseline, and a controller for tests.");
  m.def("cpu_kernel_isa", []() { return std::string(kernels::LoptStepCpuIsa()); });
#ifdef LOPT_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
  // The CUDA kernel's MLP precision (kernels/lopt_step_cuda.h): "tf32" (tensor cores,
  // the default, about 1e-3 relative) or "fp32" (the CPU kernel's arithmetic to 1e-6).
  m.def("cuda_mlp_precision", []() {
#ifdef LOPT_WITH_CUDA
    return std::string(kernels::LoptCudaMlpSetting() == kernels::LoptCudaMlp::kFp32 ? "fp32"
                                                                                   : "tf32");
#else
    return std::string("none");
#endif
  });
  m.def("set_cuda_mlp_precision", [](const std::string& mode) {
    if (mode != "fp32" && mode != "tf32")
      throw py::value_error("cuda MLP precision must be \"fp32\" or \"tf32\", not \"" + mode +
                            "\"");
#ifdef LOPT_WITH_CUDA
    kernels::LoptCudaMlpSetting() =
        mode == "fp32" ? kernels::LoptCudaMlp::kFp32 : kernels::LoptCudaMlp::kTf32;
#endif
  }, py::arg("mode"));

  py::class_<PySmallFcLopt>(m, "SmallFcLopt")
      .def(py::init<const std::string&>(), py::arg("spec_bytes"))
      .def_property_readonly("theta_size", &PySmallFcLopt::theta_size)
      .def("init_state", [](PySmallFcLopt& s, const torch::Tensor& p) {
        return Checked([&] { return s.InitState(p); });
      })
      .def("step", [](PySmallFcLopt& s, const std::vector<torch::Tensor>& params,
                      const std::vector<torch::Tensor>& grads,
                      const std::vector<std::vector<torch::Tensor>>& states, int64_t iteration,
                      int64_t total_steps, const torch::Tensor& theta,
                      const std::vector<double>& scales) {
        py::gil_scoped_release release;
        return Checked([&] {
          return s.Step(params, grads, states, iteration, total_steps, theta, scales);
        });
      }, py::arg("params"), py::arg("grads"), py::arg("states"), py::arg("iteration"),
         py::arg("total_steps"), py::arg("theta"), py::arg("update_scales"));

  py::class_<PyCppLearnedOptimizer>(m, "CppLearnedOptimizer")
      .def(py::init<std::vector<torch::Tensor>, const std::string&>())
      .def("step", [](PyCppLearnedOptimizer& o) { Checked([&] { o.step(); }); })
      .def("zero_grad", &PyCppLearnedOptimizer::zero_grad)
      .def("set_update_scales", &PyCppLearnedOptimizer::set_update_scales)
      .def("set_total_steps", &PyCppLearnedOptimizer::set_total_steps)
      .def_property_readonly("iteration", &PyCppLearnedOptimizer::iteration);

  py::class_<PyController>(m, "Controller")
      .def(py::init([](std::vector<torch::Tensor> params, const std::string& path,
                       int64_t total_steps, int64_t decisions, const py::dict& initial) {
             return Checked([&] {
               return std::make_unique<PyController>(std::move(params), path, total_steps,
                                                     decisions, initial);
             });
           }),
           py::arg("params"), py::arg("path"), py::arg("total_steps"), py::arg("decisions"),
           py::arg("initial"))
      .def("step", [](PyController& c, double loss) { Checked([&] { c.Step(loss); }); })
      .def("decision_due", &PyController::DecisionDue)
      .def("decide", [](PyController& c, std::optional<double> v) {
        return Checked([&] { return c.Decide(v); });
      }, py::arg("valid_loss") = py::none())
      .def("state_dict", &PyController::StateDict)
      .def("load_state_dict", [](PyController& c, const py::dict& d) {
        Checked([&] { c.LoadStateDict(d); });
      }, py::arg("state"))
      .def("hparams", &PyController::Hparams)
      .def("set_hparams", &PyController::SetHparams)
      .def_property_readonly("steps", &PyController::steps)
      .def_property_readonly("decision_steps", &PyController::decision_steps);
}
