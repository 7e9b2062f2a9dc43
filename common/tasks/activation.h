// The hidden activation every task family applies (v1::Activation; ReLU
// where unset): one definition for the MLP and CNN families, NeuMF's towers
// and the speech model.
#pragma once

#include <torch/torch.h>

#include "lopt/v1/job.pb.h"

namespace lopt {

inline torch::Tensor Activate(const torch::Tensor& x, v1::Activation a) {
  switch (a) {
    case v1::TANH: return torch::tanh(x);
    case v1::GELU: return torch::gelu(x);
    case v1::SIGMOID: return torch::sigmoid(x);
    default: return torch::relu(x);
  }
}

}  // namespace lopt
