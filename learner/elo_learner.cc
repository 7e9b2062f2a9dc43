#include "learner/elo_learner.h"

#include <cmath>

#include <torch/torch.h>

namespace lopt {

EloLearner::EloLearner(const v1::JobSpec& job)
    : job_(job),
      lopt_(job.lopt()),
      theta_(InitialTheta(job)),
      outer_(job.outer(), job.budget().outer_steps(), SmallFcLopt(job.lopt()).theta_size()) {}

double EloLearner::AlphaAt(int64_t step) const {
  if (!job_.elo().behavior_cloning().enabled()) return 1.0;
  int64_t T = total_steps();
  if (T <= 1) return 1.0;
  // alpha_t = t / ((T-1) * ramp): the paper's t/(T-1) at ramp 1.
  double ramp = double(T - 1) * job_.elo().behavior_cloning().alpha_ramp_fraction();
  return std::min(1.0, double(step) / std::max(ramp, 1.0));
}

double EloLearner::Alpha() const { return AlphaAt(outer_step_); }

void EloLearner::ApplyGradient(const torch::Tensor& grad, double meta_loss) {
  outer_.Apply(theta_, grad, outer_step_);
  if (std::isnan(first_meta_loss_)) first_meta_loss_ = meta_loss;
  last_meta_loss_ = meta_loss;
  ++outer_step_;
}

v1::OptimizerFile EloLearner::MakeOptimizerFile() const {
  v1::OptimizerFile f;
  *f.mutable_options() = job_.lopt();
  *f.mutable_job() = job_;
  f.set_outer_step(outer_step_);
  f.set_meta_loss(last_meta_loss_);
  return f;
}

NamedTensors EloLearner::SaveState() const {
  NamedTensors s = outer_.SaveState();
  s.emplace_back("theta", theta_);
  s.emplace_back("outer_step", torch::tensor(outer_step_, torch::kInt64));
  s.emplace_back("meta_loss", torch::tensor({first_meta_loss_, last_meta_loss_}, torch::kFloat64));
  return s;
}

absl::Status EloLearner::LoadState(const NamedTensors& s) {
  auto theta = Find(s, "theta");
  auto step = Find(s, "outer_step");
  auto ml = Find(s, "meta_loss");
  if (!theta.ok() || !step.ok() || !ml.ok())
    return absl::DataLossError("checkpoint lacks the learner's state");
  if (theta->sizes() != theta_.sizes())
    return absl::InvalidArgumentError("checkpoint's theta does not match lopt.hidden_size");
  if (absl::Status st = outer_.LoadState(s); !st.ok()) return st;
  theta_.copy_(*theta);
  outer_step_ = step->item<int64_t>();
  first_meta_loss_ = (*ml)[0].item<double>();
  last_meta_loss_ = (*ml)[1].item<double>();
  return absl::OkStatus();
}

}  // namespace lopt
