#include "learner/elo_job.h"

#include <cmath>
#include <cstdint>
#include <cstring>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/tasks/task.h"
#include "common/util/error_kinds.h"

namespace lopt {
namespace {

// Whether every entry of `t` is finite. A CPU float32 gradient (every
// result the learner decodes) is checked in one pass over its bits instead
// of three tensor ops and a sync (isfinite, all, item).
bool AllFinite(const torch::Tensor& t) {
  if (t.device().is_cpu() && t.scalar_type() == torch::kFloat32 && t.is_contiguous()) {
    const float* p = t.data_ptr<float>();
    bool finite = true;
    for (int64_t i = 0, n = t.numel(); i < n; ++i) {
      uint32_t bits;
      std::memcpy(&bits, p + i, sizeof(bits));
      finite &= (bits & 0x7f800000u) != 0x7f800000u;  // exponent all ones: inf or NaN
    }
    return finite;
  }
  return torch::isfinite(t).all().item<bool>();
}

}  // namespace

EloJob::EloJob(const v1::JobSpec& job)
    : learner_(job),
      num_shards_(job.cluster().shards()),
      results_per_step_(job.cluster().results_per_step() > 0 ? job.cluster().results_per_step()
                                                             : job.cluster().shards()),
      max_staleness_(job.cluster().max_staleness()),
      running_(num_shards_, false),
      truncations_(num_shards_, 0),
      grad_sum_(torch::zeros_like(learner_.theta())) {}

bool EloJob::CanStart(int32_t shard) const {
  if (done() || shard < 0 || shard >= num_shards_ || running_[shard]) return false;
  if (max_staleness_ > 0) return true;
  return pending_ + running_count_ < results_per_step_;
}

EloUnit EloJob::Start(int32_t shard, bool copy_theta) {
  running_[shard] = true;
  ++running_count_;
  EloUnit u;
  u.shard = shard;
  u.theta_version = outer_step();
  u.truncation = truncations_[shard]++;
  if (copy_theta) u.theta = learner_.theta().clone();
  u.alpha = learner_.Alpha();
  return u;
}

void EloJob::Abandon(int32_t shard) {
  if (shard < 0 || shard >= num_shards_ || !running_[shard]) return;
  running_[shard] = false;
  --running_count_;
}

absl::StatusOr<EloAcceptOutcome> EloJob::Accept(const EloShardResult& r, EloStepRecord* record) {
  if (r.shard < 0 || r.shard >= num_shards_)
    return absl::InvalidArgumentError(
        absl::StrCat("shard ", r.shard, " is out of range [0, ", num_shards_, ")"));
  const int64_t d = learner_.theta().numel();
  if (!r.grad.defined() || r.grad.dim() != 1 || r.grad.size(0) != d ||
      r.grad.scalar_type() != torch::kFloat32)
    return absl::InvalidArgumentError(absl::StrCat(
        "gradient must be float32 of shape [", d, "], got ",
        r.grad.defined() ? absl::StrCat(std::string(c10::toString(r.grad.scalar_type())), " of shape [",
                                        absl::StrJoin(r.grad.sizes().vec(), ", "), "]")
                         : "none"));
  if (!std::isfinite(r.meta_loss) || !std::isfinite(r.task_loss) || !std::isfinite(r.bc_loss))
    return NonFiniteError(absl::StrCat("non-finite losses: meta_loss ", r.meta_loss,
                                       ", task_loss ", r.task_loss));
  if (!AllFinite(r.grad))
    return NonFiniteError("gradient has non-finite entries");
  if (r.theta_version > outer_step() || r.theta_version < 0)
    return absl::InvalidArgumentError(absl::StrCat("theta version ", r.theta_version,
                                                   " is not one this job handed out (now ",
                                                   outer_step(), ")"));
  if (running_[r.shard]) {
    running_[r.shard] = false;
    --running_count_;
  }
  if (outer_step() - r.theta_version > max_staleness_) return EloAcceptOutcome::kDroppedStale;

  if (pending_ == 0) {
    grad_sum_.zero_();
    pending_record_ = EloStepRecord();
  }
  grad_sum_.add_(r.grad);
  ++pending_;
  auto& p = pending_record_;
  p.meta_loss += r.meta_loss;
  p.task_loss += r.task_loss;
  p.bc_loss += r.bc_loss;
  p.fresh_starts += r.fresh_starts;
  p.restores += r.restores;
  p.pushes += r.pushes;
  p.particle_steps += r.particle_steps;
  if (pending_ < results_per_step_) return EloAcceptOutcome::kAccepted;

  const double n = pending_;
  p.results = pending_;
  p.meta_loss /= n;
  p.task_loss /= n;
  p.bc_loss /= n;
  p.outer_step = outer_step();
  p.alpha = learner_.Alpha();
  p.outer_lr = learner_.OuterLrAt(p.outer_step);
  // One result: the gradient as sent (local mode's step, bit for bit).
  torch::Tensor grad = pending_ == 1 ? grad_sum_ : grad_sum_ / n;
  learner_.ApplyGradient(grad, p.meta_loss);
  meta_losses_.push_back(p.meta_loss);
  task_losses_.push_back(p.task_loss);
  pending_ = 0;
  if (record) *record = p;
  return EloAcceptOutcome::kStepApplied;
}

NamedTensors EloJob::SaveState() const {
  NamedTensors s = learner_.SaveState();
  s.emplace_back("job/truncations", torch::tensor(truncations_, torch::kInt64));
  s.emplace_back("job/meta_losses", torch::tensor(meta_losses_, torch::kFloat64));
  s.emplace_back("job/task_losses", torch::tensor(task_losses_, torch::kFloat64));
  return s;
}

absl::Status EloJob::LoadState(const NamedTensors& s) {
  if (absl::Status st = learner_.LoadState(s); !st.ok()) return st;
  auto tr = Find(s, "job/truncations");
  auto ml = Find(s, "job/meta_losses");
  auto tl = Find(s, "job/task_losses");
  if (!tr.ok() || !ml.ok() || !tl.ok()) return absl::DataLossError("checkpoint lacks the job's state");
  if (tr->numel() != num_shards_)
    return absl::InvalidArgumentError("checkpoint's shard count does not match cluster.shards");
  torch::Tensor t = tr->contiguous();
  truncations_.assign(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
  torch::Tensor m = ml->contiguous(), k = tl->contiguous();
  meta_losses_.assign(m.data_ptr<double>(), m.data_ptr<double>() + m.numel());
  task_losses_.assign(k.data_ptr<double>(), k.data_ptr<double>() + k.numel());
  std::fill(running_.begin(), running_.end(), false);
  running_count_ = 0;
  pending_ = 0;
  return absl::OkStatus();
}

}  // namespace lopt
