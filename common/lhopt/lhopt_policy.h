// The LHOPT controller: an LSTM policy over the features of common/
// lhopt_features.h with one categorical head per action head of common/
// lhopt_actions.h, and a value head that also sees task and baseline
// statistics (REFERENCE.md §4; openai/LHOPT's example config: 256 -> LSTM
// 256 with layer norm -> heads).
//
//   x [.., F] -> Linear(F, 256) -> ReLU -> layer-normed LSTM cell (256)
//     -> h -> Linear(256, n_k) per head k            (policy logits)
//     -> [h, value_extra] -> Linear(256 + E, 256) -> ReLU -> Linear(256, 1)
//
// Batched over B episodes. Acting steps one decision at a time with an
// explicit (h, c); training runs whole sequences [T, B] with episode starts
// resetting (h, c), and gives the same numbers as stepping.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include "absl/status/status.h"
#include "common/elo/replay_buffer.h"
#include "common/lhopt/lhopt_features.h"

namespace lopt {

// An LSTM cell with layer normalisation (Ba et al. 2016): each gate's
// input and recurrent pre-activations normalised separately, and the cell
// state normalised before the output gate.
//   [i, f, g, o] = LN(W_x x) + LN(W_h h) + b     (each gate its own LN)
//   c' = sigmoid(f) * c + sigmoid(i) * tanh(g)
//   h' = sigmoid(o) * tanh(LN(c'))
// The forget gate's bias starts at 1.
class LayerNormLstmCellImpl : public torch::nn::Module {
 public:
  LayerNormLstmCellImpl(int64_t input_size, int64_t hidden_size);
  // x [N, input], h and c [N, hidden] -> (h', c').
  std::pair<torch::Tensor, torch::Tensor> forward(const torch::Tensor& x, const torch::Tensor& h,
                                                  const torch::Tensor& c);
  int64_t hidden_size() const { return hidden_; }

 private:
  torch::Tensor GateNorm(const torch::Tensor& z, const torch::Tensor& gain,
                         const torch::Tensor& bias) const;
  int64_t hidden_;
  torch::nn::Linear w_x_{nullptr}, w_h_{nullptr};
  torch::Tensor gain_x_, bias_x_, gain_h_, bias_h_, gate_bias_, gain_c_, bias_c_;
};
TORCH_MODULE(LayerNormLstmCell);

struct LhoptPolicyOptions {
  int64_t input_size = 70;  // kNumLhoptFeatures
  int64_t hidden_size = 256;
  int64_t value_extra_size = 0;   // task and baseline statistics for the value head
  std::vector<int64_t> head_sizes;  // empty: ActionHeadSizes()
};

struct PolicyState {
  torch::Tensor h, c;  // [B, hidden]
};

struct PolicyOutput {
  std::vector<torch::Tensor> logits;  // one per head, [..., n_k]
  torch::Tensor value;                // [...]
};

class LhoptPolicyImpl : public torch::nn::Module {
 public:
  explicit LhoptPolicyImpl(LhoptPolicyOptions options = {});

  // Zeros: the state before an episode's first decision.
  PolicyState InitialState(int64_t batch) const;

  // One decision of B episodes: x [B, F], value_extra [B, E] (undefined if
  // E = 0). Returns outputs [B, ...] and the state after it.
  std::pair<PolicyOutput, PolicyState> Step(const torch::Tensor& x,
                                            const torch::Tensor& value_extra,
                                            const PolicyState& state);

  // T decisions of B episodes: x [T, B, F], value_extra [T, B, E],
  // episode_start [T, B] (nonzero: the state is reset to InitialState before
  // step t; may be undefined), `state` the state before step 0. Outputs are
  // [T, B, ...]; *final_state (if non-null) the state after step T - 1.
  PolicyOutput Forward(const torch::Tensor& x, const torch::Tensor& value_extra,
                       const torch::Tensor& episode_start, const PolicyState& state,
                       PolicyState* final_state = nullptr);

  const LhoptPolicyOptions& options() const { return options_; }

 private:
  PolicyOutput Heads(const torch::Tensor& h, const torch::Tensor& value_extra);

  LhoptPolicyOptions options_;
  torch::nn::Linear input_{nullptr};
  LayerNormLstmCell lstm_{nullptr};
  std::vector<torch::nn::Linear> heads_;
  torch::nn::Linear value_hidden_{nullptr}, value_out_{nullptr};
};
TORCH_MODULE(LhoptPolicy);

// One lane of experience: T consecutive decisions of one worker's run(s),
// acted by policy version `policy_version`.
struct PpoSegment {
  torch::Tensor features;     // [T, F], as fed to the policy (normalised)
  torch::Tensor value_extra;  // [T, E], undefined if E = 0
  torch::Tensor actions;      // [T, num_heads] int64
  torch::Tensor log_probs;    // [T] of the acting policy
  torch::Tensor values;       // [T] of the acting policy
  torch::Tensor rewards;      // [T]
  torch::Tensor dones;        // [T] 1 where the episode ends after step t
  torch::Tensor bootstrap_value;  // [] V of the state after step T - 1
  PolicyState initial_state;  // h, c [hidden] before step 0
  int64_t policy_version = 0;
  // [T] 1 for real steps, 0 for padding after the lane's last episode ends
  // (lanes of different lengths batched together); undefined: all real.
  // Padded steps must have done = 1 at the last real step.
  torch::Tensor mask;
};

// Samples one choice per head: [..., num_heads] int64.
torch::Tensor SampleActions(const std::vector<torch::Tensor>& logits, torch::Generator& gen);
// The most likely choice per head: [..., num_heads] int64.
torch::Tensor GreedyActions(const std::vector<torch::Tensor>& logits);
// log pi(actions) summed over heads: [...]. actions [..., num_heads].
torch::Tensor ActionLogProb(const std::vector<torch::Tensor>& logits,
                            const torch::Tensor& actions);
// Entropy summed over heads: [...].
torch::Tensor PolicyEntropy(const std::vector<torch::Tensor>& logits);

// target <- decay * target + (1 - decay) * source over every parameter and
// buffer (the EMA baseline policy, decay 0.99). The modules must have the
// same structure.
void PolyakUpdate(torch::nn::Module& target, const torch::nn::Module& source,
                  double decay = 0.99);

// The policy's parameters and buffers by name (cloned), each name prefixed
// with `prefix`: what a work unit ships and a checkpoint keeps.
NamedTensors PolicyWeights(const LhoptPolicyImpl& policy, const std::string& prefix = "");
// Copies `weights` (names with `prefix`) into the policy. INVALID_ARGUMENT
// when a parameter or buffer is missing or has another shape.
absl::Status SetPolicyWeights(LhoptPolicyImpl& policy, const NamedTensors& weights,
                              const std::string& prefix = "");

// The feature normaliser's state beside them: "<prefix>weight", "sum" and
// "sum_sq" (cloned), and back. SetNormalizer: DATA_LOSS when one is missing
// or has another size.
NamedTensors NormalizerTensors(const EwmaNormalizer& n, const std::string& prefix);
absl::Status SetNormalizer(EwmaNormalizer& n, const NamedTensors& weights,
                           const std::string& prefix);

}  // namespace lopt
