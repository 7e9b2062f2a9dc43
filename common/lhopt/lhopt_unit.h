// LHOPT work units: what the learner (learner/lhopt_job.h) hands out and
// what a worker (common/lhopt/lhopt_episode.h) sends back. Plain structs and
// tensors, so that a service can ship them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "common/elo/replay_buffer.h"
#include "common/lhopt/lhopt_policy.h"
#include "lopt/v1/job.pb.h"

namespace lopt {

// Extra inputs of the value head (task and baseline statistics), [P, 4]:
//   0  1 where a baseline fit is known, else 0
//   1  log speed-up of the current validation loss over the baseline fit,
//      divided by the reward clip (0 without a fit)
//   2  log(inner steps) / log(1e4)
//   3  log(decisions) / log(128)
inline constexpr int64_t kLhoptValueExtraSize = 4;

// The policy architecture of an LHOPT job.
inline LhoptPolicyOptions LhoptPolicyOptionsFor(const v1::JobSpec& job) {
  LhoptPolicyOptions o;
  o.input_size = 70;  // kNumLhoptFeatures
  o.hidden_size = job.lhopt().hidden_size();
  o.value_extra_size = kLhoptValueExtraSize;
  return o;
}

// One task instance of an LHOPT mixture entry drawn from `g`: the
// generator's seed names it (MakeTask's seed, init, data, initial hparams);
// inner steps and decisions are log-uniform in the job's ranges (decisions <
// inner steps); an entry with random_activation gets one of ReLU, tanh, GELU,
// sigmoid. Training (LhoptJob) and the yardstick (common/lhopt/lhopt_yardstick.h)
// both draw theirs with it, from different random streams.
struct LhoptInstance {
  int32_t task_index = 0;  // into lhopt.tasks
  v1::TaskSpec task;       // with its activation drawn
  uint64_t task_seed = 0;
  int64_t inner_steps = 0;
  int64_t decisions = 0;
};
LhoptInstance DrawLhoptInstance(const v1::LhoptSpec& l, int32_t task_index, torch::Generator& g);

// Weights as shipped: "policy/<name>" parameters and buffers and
// "normalizer/{weight,sum,sum_sq}".
struct LhoptUnit {
  int64_t unit_id = 0;  // the job's unit counter: the acting run's random stream
  int64_t policy_version = 0;
  NamedTensors policy;
  // The EMA policy's snapshot of this baseline generation.
  int64_t baseline_generation = 0;
  NamedTensors baseline_policy;
  int32_t task_index = 0;  // into lhopt.tasks
  v1::TaskSpec task;       // with its activation drawn
  uint64_t task_seed = 0;  // the task instance: MakeTask's seed, init, data, initial hparams
  int64_t inner_steps = 0;
  int64_t decisions = 0;
  int64_t particles = 0;
  // Names the baseline of this instance and generation (cache and buffer key).
  std::string task_key;
};

struct LhoptUnitResult {
  int64_t unit_id = 0;
  int64_t policy_version = 0;
  int32_t task_index = 0;
  std::vector<PpoSegment> segments;  // one episode per particle, T = decisions
  torch::Tensor raw_features;        // [D * P, F]: the normaliser's update
  torch::Tensor episode_rewards;     // [P] float64, = sum of each segment's rewards
  std::vector<int64_t> curve_steps;  // [C]
  torch::Tensor curve;               // [C, P] float64 eval loss of the episodes
  torch::Tensor baseline_curve;      // [C, P] float64
  bool baseline_computed = false;    // false: the fit came from the cache or the buffer
  torch::Tensor final_hparams;       // [P, 6]
  int64_t inner_particle_steps = 0;  // including the baseline's when computed
  int64_t register_saves = 0;
  int64_t register_loads = 0;
};

}  // namespace lopt
