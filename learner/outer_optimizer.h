// The outer optimiser of meta-training: AdamW on theta with linear warm-up,
// cosine (or no) decay, and per-component clipping of the meta-gradient.
#pragma once

#include <cstdint>

#include <torch/types.h>

#include "absl/status/status.h"
#include "common/elo/replay_buffer.h"
#include "lopt/v1/job.pb.h"

namespace lopt {

class OuterOptimizer {
 public:
  OuterOptimizer(const v1::OuterOptimizerSpec& spec, int64_t total_steps, int64_t dim);

  // The learning rate of outer step `step` (0-based).
  double LrAt(int64_t step) const;

  // theta <- AdamW(theta, clip(grad)) at outer step `step`. Non-finite
  // gradient components are treated as 0 so that one bad estimate cannot
  // poison theta; returns how many there were.
  int64_t Apply(torch::Tensor& theta, const torch::Tensor& grad, int64_t step);

  NamedTensors SaveState() const;
  absl::Status LoadState(const NamedTensors& state);

 private:
  v1::OuterOptimizerSpec spec_;
  int64_t total_steps_;
  torch::Tensor m_, v_;
  int64_t updates_ = 0;
};

}  // namespace lopt
