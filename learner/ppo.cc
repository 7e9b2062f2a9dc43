#include "learner/ppo.h"

#include <algorithm>
#include <numeric>

#include <torch/torch.h>

#include "common/tasks/task.h"

namespace lopt {

GaeResult ComputeGae(const torch::Tensor& rewards, const torch::Tensor& values,
                     const torch::Tensor& dones, const torch::Tensor& bootstrap_value,
                     double gamma, double lambda) {
  TORCH_CHECK(rewards.dim() == 2 && values.sizes() == rewards.sizes() &&
                  dones.sizes() == rewards.sizes() && bootstrap_value.dim() == 1 &&
                  bootstrap_value.size(0) == rewards.size(1),
              "GAE: rewards, values, dones must be [T, B] and bootstrap_value [B]");
  torch::NoGradGuard no_grad;
  const int64_t steps = rewards.size(0);
  torch::Tensor r = rewards.to(torch::kFloat64), v = values.to(torch::kFloat64);
  torch::Tensor not_done = 1 - dones.to(torch::kFloat64);
  torch::Tensor adv = torch::zeros_like(r);
  torch::Tensor next_value = bootstrap_value.to(torch::kFloat64);
  torch::Tensor next_adv = torch::zeros_like(next_value);
  for (int64_t t = steps - 1; t >= 0; --t) {
    torch::Tensor delta = r[t] + gamma * not_done[t] * next_value - v[t];
    next_adv = delta + gamma * lambda * not_done[t] * next_adv;
    adv[t] = next_adv;
    next_value = v[t];
  }
  auto dtype = rewards.scalar_type();
  return {adv.to(dtype), (adv + v).to(dtype)};
}

torch::Tensor MaskedMean(const torch::Tensor& x, const torch::Tensor& mask) {
  if (!mask.defined()) return x.mean();
  return (x * mask).sum() / mask.sum().clamp_min(1);
}

torch::Tensor PpoClipLoss(const torch::Tensor& new_log_prob, const torch::Tensor& old_log_prob,
                          const torch::Tensor& advantages, double clip,
                          const torch::Tensor& mask) {
  torch::Tensor ratio = torch::exp(new_log_prob - old_log_prob);
  torch::Tensor unclipped = ratio * advantages;
  torch::Tensor clipped = ratio.clamp(1 - clip, 1 + clip) * advantages;
  return -MaskedMean(torch::min(unclipped, clipped), mask);
}

std::vector<PpoSegment> DropStaleSegments(const std::vector<PpoSegment>& segments,
                                          int64_t current_version, int64_t max_staleness,
                                          int64_t* dropped) {
  std::vector<PpoSegment> kept;
  int64_t n = 0;
  for (const auto& s : segments) {
    const int64_t lag = current_version - s.policy_version;
    if (lag >= 0 && lag <= max_staleness)
      kept.push_back(s);
    else
      ++n;
  }
  if (dropped != nullptr) *dropped = n;
  return kept;
}

PpoTrainer::PpoTrainer(LhoptPolicy policy, const PpoOptions& options)
    : policy_(std::move(policy)), options_(options) {
  adam_ = std::make_unique<torch::optim::Adam>(
      policy_->parameters(),
      torch::optim::AdamOptions(options_.lr).betas(
                                       std::make_tuple(options_.adam_beta1, options_.adam_beta2)));
}

PpoStats PpoTrainer::Update(const std::vector<PpoSegment>& all, int64_t current_version) {
  PpoStats stats;
  std::vector<PpoSegment> segs =
      DropStaleSegments(all, current_version, options_.max_staleness,
                        &stats.segments_dropped_stale);
  stats.segments_used = static_cast<int64_t>(segs.size());
  if (segs.empty()) return stats;
  const int64_t steps = segs[0].rewards.size(0);
  for (const auto& s : segs)
    TORCH_CHECK(s.rewards.size(0) == steps, "PPO: segments of ", steps, " and ",
                s.rewards.size(0), " steps in one batch");
  const bool has_extra = policy_->options().value_extra_size > 0;

  // [T, B] views of the batch.
  auto stack_time = [&](auto field) {
    std::vector<torch::Tensor> v;
    for (const auto& s : segs) v.push_back(field(s));
    return torch::stack(v, 1);
  };
  torch::Tensor features = stack_time([](const PpoSegment& s) { return s.features; });
  torch::Tensor extra = has_extra ? stack_time([](const PpoSegment& s) { return s.value_extra; })
                                  : torch::Tensor();
  torch::Tensor actions = stack_time([](const PpoSegment& s) { return s.actions; });
  torch::Tensor old_logp = stack_time([](const PpoSegment& s) { return s.log_probs; }).to(torch::kFloat32);
  torch::Tensor old_values = stack_time([](const PpoSegment& s) { return s.values; }).to(torch::kFloat32);
  torch::Tensor rewards = stack_time([](const PpoSegment& s) { return s.rewards; }).to(torch::kFloat32);
  torch::Tensor dones = stack_time([](const PpoSegment& s) { return s.dones; }).to(torch::kFloat32);
  // Padding masks: only when some lane has one, so that unmasked batches
  // compute exactly as before.
  bool masked = false;
  for (const auto& s : segs) masked = masked || s.mask.defined();
  torch::Tensor mask = masked ? stack_time([](const PpoSegment& s) {
                                  return s.mask.defined() ? s.mask.to(torch::kFloat32)
                                                          : torch::ones_like(s.dones, torch::kFloat32);
                                }).to(torch::kFloat32)
                              : torch::Tensor();
  std::vector<torch::Tensor> boot, h0, c0;
  for (const auto& s : segs) {
    boot.push_back(s.bootstrap_value.reshape({}));
    h0.push_back(s.initial_state.h);
    c0.push_back(s.initial_state.c);
  }
  torch::Tensor bootstrap = torch::stack(boot).to(torch::kFloat32);
  torch::Tensor h0s = torch::stack(h0), c0s = torch::stack(c0);
  // The LSTM restarts where the previous step ended an episode.
  torch::Tensor starts = torch::zeros_like(dones);
  if (steps > 1) starts.slice(0, 1).copy_(dones.slice(0, 0, steps - 1));

  GaeResult gae = ComputeGae(rewards, old_values, dones, bootstrap, options_.gamma,
                             options_.gae_lambda);
  torch::Tensor adv = gae.advantages;
  if (options_.normalize_advantages && adv.numel() > 1) {
    if (masked) {
      torch::Tensor real = adv.masked_select(mask > 0);
      if (real.numel() > 1) adv = (adv - real.mean()) / (real.std() + 1e-8) * mask;
    } else {
      adv = (adv - adv.mean()) / (adv.std() + 1e-8);
    }
  }

  const int64_t lanes = static_cast<int64_t>(segs.size());
  const int64_t mb = std::max<int64_t>(1, std::min(options_.minibatch_segments, lanes));
  const int64_t epochs = std::min(options_.epochs, options_.max_sample_reuse);
  torch::Generator gen = MakeGenerator(options_.seed, /*stream=*/0x9e0, updates_++);
  for (int64_t e = 0; e < epochs; ++e) {
    torch::Tensor perm = torch::randperm(lanes, gen);
    for (int64_t start = 0; start < lanes; start += mb) {
      torch::Tensor idx = perm.slice(0, start, std::min(lanes, start + mb));
      auto lane = [&](const torch::Tensor& t) { return t.index_select(1, idx); };
      PolicyState init{h0s.index_select(0, idx), c0s.index_select(0, idx)};
      PolicyOutput out = policy_->Forward(lane(features), has_extra ? lane(extra) : torch::Tensor(),
                                          lane(starts), init);
      torch::Tensor logp = ActionLogProb(out.logits, lane(actions));
      torch::Tensor old = lane(old_logp);
      torch::Tensor a = lane(adv);
      torch::Tensor m = masked ? lane(mask) : torch::Tensor();
      torch::Tensor pg_loss = PpoClipLoss(logp, old, a, options_.clip, m);
      torch::Tensor v_loss = 0.5 * MaskedMean((out.value - lane(gae.returns)).pow(2), m);
      torch::Tensor entropy = MaskedMean(PolicyEntropy(out.logits), m);
      torch::Tensor loss =
          pg_loss + options_.value_coef * v_loss - options_.entropy_coef * entropy;
      adam_->zero_grad();
      loss.backward();
      double gnorm = torch::nn::utils::clip_grad_norm_(policy_->parameters(),
                                                       options_.max_grad_norm);
      adam_->step();
      {
        torch::NoGradGuard no_grad;
        torch::Tensor log_ratio = logp.detach() - old;
        torch::Tensor ratio = log_ratio.exp();
        stats.approx_kl += MaskedMean((ratio - 1) - log_ratio, m).item<double>();
        stats.clip_fraction +=
            MaskedMean(((ratio - 1).abs() > options_.clip).to(torch::kFloat32), m).item<double>();
      }
      stats.policy_loss += pg_loss.item<double>();
      stats.value_loss += v_loss.item<double>();
      stats.entropy += entropy.item<double>();
      stats.grad_norm += gnorm;
      ++stats.gradient_steps;
    }
  }
  const double n = static_cast<double>(stats.gradient_steps);
  stats.policy_loss /= n;
  stats.value_loss /= n;
  stats.entropy /= n;
  stats.approx_kl /= n;
  stats.clip_fraction /= n;
  stats.grad_norm /= n;
  return stats;
}

}  // namespace lopt
