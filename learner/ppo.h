// PPO for the LHOPT controller (Schulman et al. 2017) with LHOPT's numbers
// (REFERENCE.md §4): clip 0.2, value coefficient 0.5, entropy bonus 1e-2,
// Adam lr 2e-4 (beta2 0.999), gradient-norm clip 5, each sample reused for
// at most 4 epochs, GAE lambda 0.95 with gamma 1, and segments more than 4
// policy versions behind dropped.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <torch/optim/adam.h>
#include <torch/types.h>

#include "common/lhopt/lhopt_policy.h"
#include "lopt/v1/job.pb.h"

namespace lopt {

struct GaeResult {
  torch::Tensor advantages;  // [T, B]
  torch::Tensor returns;     // [T, B]: advantages + values, the value targets
};

// Generalised advantage estimation over T steps of B lanes:
//   delta_t = r_t + gamma * (1 - done_t) * V_{t+1} - V_t
//   A_t     = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}
// with V_T = bootstrap_value. done_t = 1 where an episode ends after step t:
// nothing after it flows back across the boundary (a new episode may start
// at t + 1 in the same lane).
//   rewards, values, dones: [T, B]; bootstrap_value: [B]
GaeResult ComputeGae(const torch::Tensor& rewards, const torch::Tensor& values,
                     const torch::Tensor& dones, const torch::Tensor& bootstrap_value,
                     double gamma = 1.0, double lambda = 0.95);

// The clipped surrogate objective as a loss to minimise:
//   -mean(min(rho * A, clamp(rho, 1 - clip, 1 + clip) * A)),
//   rho = exp(new_log_prob - old_log_prob).
// With `mask` (1 real, 0 padding; same shape) the mean is over real samples.
torch::Tensor PpoClipLoss(const torch::Tensor& new_log_prob, const torch::Tensor& old_log_prob,
                          const torch::Tensor& advantages, double clip = 0.2,
                          const torch::Tensor& mask = {});

// mean(x) over the entries where mask is 1 (all entries if mask is undefined).
torch::Tensor MaskedMean(const torch::Tensor& x, const torch::Tensor& mask);

// PpoSegment (one lane of experience) lives in common/lhopt/lhopt_policy.h: the
// workers that act produce it.


// Keeps the segments with 0 <= current_version - policy_version <=
// max_staleness; *dropped (if non-null) counts the others.
std::vector<PpoSegment> DropStaleSegments(const std::vector<PpoSegment>& segments,
                                          int64_t current_version, int64_t max_staleness,
                                          int64_t* dropped = nullptr);

// The defaults of the fields a job sets are the job spec's (LhoptPpoSpec in
// proto/lopt/v1/job.proto), written there only.
struct PpoOptions {
  static const v1::LhoptPpoSpec& Spec() { return v1::LhoptPpoSpec::default_instance(); }
  double clip = Spec().clip();
  double value_coef = Spec().value_coef();
  double entropy_coef = Spec().entropy_coef();
  double lr = Spec().lr();
  double adam_beta1 = 0.9;
  double adam_beta2 = 0.999;
  double max_grad_norm = Spec().max_grad_norm();
  double gamma = Spec().gamma();
  double gae_lambda = Spec().gae_lambda();
  int64_t epochs = Spec().epochs();  // passes over the batch, at most max_sample_reuse
  int64_t max_sample_reuse = Spec().max_sample_reuse();
  int64_t minibatch_segments = Spec().minibatch_episodes();  // segments (lanes) per gradient step
  int64_t max_staleness = Spec().max_staleness();
  bool normalize_advantages = true;  // over the whole batch
  uint64_t seed = 0;                 // minibatch shuffling
};

struct PpoStats {
  // Means over the gradient steps of the update.
  double policy_loss = 0;
  double value_loss = 0;  // 0.5 * mean((V - return)^2)
  double entropy = 0;     // summed over heads, mean over samples
  double approx_kl = 0;   // mean((rho - 1) - log rho): KL(old || new) >= 0
  double clip_fraction = 0;  // fraction of samples with |rho - 1| > clip
  double grad_norm = 0;      // before clipping
  int64_t segments_used = 0;
  int64_t segments_dropped_stale = 0;
  int64_t gradient_steps = 0;
};

class PpoTrainer {
 public:
  PpoTrainer(LhoptPolicy policy, const PpoOptions& options = {});

  // Drops stale segments, computes GAE with the acting policy's values, and
  // runs min(epochs, max_sample_reuse) epochs of minibatch updates.
  // REQUIRES: every segment has the same T (pad shorter lanes with `mask`).
  PpoStats Update(const std::vector<PpoSegment>& segments, int64_t current_version);

  LhoptPolicy policy() const { return policy_; }
  torch::optim::Adam& optimizer() { return *adam_; }
  // Updates run so far: the index of the next update's minibatch shuffle
  // stream (saved with checkpoints so that a resumed run shuffles alike).
  uint64_t updates() const { return updates_; }
  void set_updates(uint64_t n) { updates_ = n; }

 private:
  LhoptPolicy policy_;
  PpoOptions options_;
  std::unique_ptr<torch::optim::Adam> adam_;
  uint64_t updates_ = 0;
};

}  // namespace lopt
