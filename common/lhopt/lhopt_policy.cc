#include "common/lhopt/lhopt_policy.h"

#include <map>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/lhopt/lhopt_actions.h"

namespace lopt {

LayerNormLstmCellImpl::LayerNormLstmCellImpl(int64_t input_size, int64_t hidden_size)
    : hidden_(hidden_size) {
  w_x_ = register_module("w_x", torch::nn::Linear(
                                    torch::nn::LinearOptions(input_size, 4 * hidden_size).bias(false)));
  w_h_ = register_module("w_h", torch::nn::Linear(
                                    torch::nn::LinearOptions(hidden_size, 4 * hidden_size).bias(false)));
  gain_x_ = register_parameter("gain_x", torch::ones({4, hidden_size}));
  bias_x_ = register_parameter("bias_x", torch::zeros({4, hidden_size}));
  gain_h_ = register_parameter("gain_h", torch::ones({4, hidden_size}));
  bias_h_ = register_parameter("bias_h", torch::zeros({4, hidden_size}));
  torch::Tensor b = torch::zeros({4, hidden_size});
  b[1].fill_(1.0);  // forget gate
  gate_bias_ = register_parameter("gate_bias", b);
  gain_c_ = register_parameter("gain_c", torch::ones({hidden_size}));
  bias_c_ = register_parameter("bias_c", torch::zeros({hidden_size}));
}

torch::Tensor LayerNormLstmCellImpl::GateNorm(const torch::Tensor& z, const torch::Tensor& gain,
                                              const torch::Tensor& bias) const {
  torch::Tensor g = z.view({z.size(0), 4, hidden_});
  return torch::layer_norm(g, {hidden_}) * gain + bias;
}

std::pair<torch::Tensor, torch::Tensor> LayerNormLstmCellImpl::forward(const torch::Tensor& x,
                                                                       const torch::Tensor& h,
                                                                       const torch::Tensor& c) {
  torch::Tensor gates = GateNorm(w_x_(x), gain_x_, bias_x_) +
                        GateNorm(w_h_(h), gain_h_, bias_h_) + gate_bias_;  // [N, 4, H]
  torch::Tensor i = torch::sigmoid(gates.select(1, 0));
  torch::Tensor f = torch::sigmoid(gates.select(1, 1));
  torch::Tensor g = torch::tanh(gates.select(1, 2));
  torch::Tensor o = torch::sigmoid(gates.select(1, 3));
  torch::Tensor c_new = f * c + i * g;
  torch::Tensor c_norm = torch::layer_norm(c_new, {hidden_}, gain_c_, bias_c_);
  return {o * torch::tanh(c_norm), c_new};
}

LhoptPolicyImpl::LhoptPolicyImpl(LhoptPolicyOptions options) : options_(std::move(options)) {
  if (options_.head_sizes.empty()) options_.head_sizes = ActionHeadSizes();
  const int64_t hid = options_.hidden_size;
  input_ = register_module("input", torch::nn::Linear(options_.input_size, hid));
  lstm_ = register_module("lstm", LayerNormLstmCell(hid, hid));
  for (size_t k = 0; k < options_.head_sizes.size(); ++k) {
    auto head = torch::nn::Linear(hid, options_.head_sizes[k]);
    // Near-uniform initial policy: small logits, so that early PPO explores.
    {
      torch::NoGradGuard no_grad;
      head->weight.mul_(0.01);
      head->bias.zero_();
    }
    heads_.push_back(register_module(absl::StrCat("head", k), head));
  }
  value_hidden_ = register_module(
      "value_hidden", torch::nn::Linear(hid + options_.value_extra_size, hid));
  value_out_ = register_module("value_out", torch::nn::Linear(hid, 1));
}

PolicyState LhoptPolicyImpl::InitialState(int64_t batch) const {
  auto opts = input_->weight.options().requires_grad(false);
  return {torch::zeros({batch, options_.hidden_size}, opts),
          torch::zeros({batch, options_.hidden_size}, opts)};
}

PolicyOutput LhoptPolicyImpl::Heads(const torch::Tensor& h, const torch::Tensor& value_extra) {
  PolicyOutput out;
  for (auto& head : heads_) out.logits.push_back(head(h));
  torch::Tensor v_in = h;
  if (options_.value_extra_size > 0) {
    TORCH_CHECK(value_extra.defined() && value_extra.size(-1) == options_.value_extra_size,
                "the value head needs ", options_.value_extra_size, " extra inputs");
    v_in = torch::cat({h, value_extra.to(h.scalar_type())}, -1);
  }
  out.value = value_out_(torch::relu(value_hidden_(v_in))).squeeze(-1);
  return out;
}

std::pair<PolicyOutput, PolicyState> LhoptPolicyImpl::Step(const torch::Tensor& x,
                                                           const torch::Tensor& value_extra,
                                                           const PolicyState& state) {
  TORCH_CHECK(x.dim() == 2 && x.size(1) == options_.input_size, "policy input must be [B, ",
              options_.input_size, "]");
  torch::Tensor z = torch::relu(input_(x));
  auto [h, c] = lstm_(z, state.h, state.c);
  PolicyOutput out = Heads(h, value_extra);
  return {std::move(out), PolicyState{h, c}};
}

PolicyOutput LhoptPolicyImpl::Forward(const torch::Tensor& x, const torch::Tensor& value_extra,
                                      const torch::Tensor& episode_start,
                                      const PolicyState& state, PolicyState* final_state) {
  TORCH_CHECK(x.dim() == 3 && x.size(2) == options_.input_size, "policy input must be [T, B, ",
              options_.input_size, "]");
  const int64_t steps = x.size(0), batch = x.size(1);
  // The input layer has no recurrence: one matmul for the whole sequence.
  torch::Tensor z = torch::relu(input_(x));
  torch::Tensor h = state.h, c = state.c;
  std::vector<torch::Tensor> hs;
  hs.reserve(steps);
  for (int64_t t = 0; t < steps; ++t) {
    if (episode_start.defined()) {
      torch::Tensor keep = (episode_start[t] == 0).to(h.scalar_type()).view({batch, 1});
      h = h * keep;
      c = c * keep;
    }
    std::tie(h, c) = lstm_(z[t], h, c);
    hs.push_back(h);
  }
  if (final_state != nullptr) *final_state = PolicyState{h, c};
  return Heads(torch::stack(hs, 0), value_extra);
}

torch::Tensor SampleActions(const std::vector<torch::Tensor>& logits, torch::Generator& gen) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> cols;
  for (const auto& l : logits) {
    torch::Tensor probs = torch::softmax(l.to(torch::kFloat64), -1).reshape({-1, l.size(-1)});
    torch::Tensor a = torch::multinomial(probs.cpu(), 1, /*replacement=*/true, gen);
    std::vector<int64_t> shape(l.sizes().begin(), l.sizes().end() - 1);
    cols.push_back(a.view(shape).to(l.device()));
  }
  return torch::stack(cols, -1);
}

torch::Tensor GreedyActions(const std::vector<torch::Tensor>& logits) {
  std::vector<torch::Tensor> cols;
  for (const auto& l : logits) cols.push_back(l.argmax(-1));
  return torch::stack(cols, -1);
}

torch::Tensor ActionLogProb(const std::vector<torch::Tensor>& logits,
                            const torch::Tensor& actions) {
  TORCH_CHECK(actions.size(-1) == static_cast<int64_t>(logits.size()),
              "actions have ", actions.size(-1), " heads, the policy ", logits.size());
  torch::Tensor total;
  for (size_t k = 0; k < logits.size(); ++k) {
    torch::Tensor lp = torch::log_softmax(logits[k], -1)
                           .gather(-1, actions.select(-1, k).to(torch::kInt64).unsqueeze(-1))
                           .squeeze(-1);
    total = total.defined() ? total + lp : lp;
  }
  return total;
}

torch::Tensor PolicyEntropy(const std::vector<torch::Tensor>& logits) {
  torch::Tensor total;
  for (const auto& l : logits) {
    torch::Tensor lp = torch::log_softmax(l, -1);
    torch::Tensor e = -(lp.exp() * lp).sum(-1);
    total = total.defined() ? total + e : e;
  }
  return total;
}

void PolyakUpdate(torch::nn::Module& target, const torch::nn::Module& source, double decay) {
  torch::NoGradGuard no_grad;
  auto t_params = target.named_parameters(/*recurse=*/true);
  auto s_params = source.named_parameters(/*recurse=*/true);
  TORCH_CHECK(t_params.size() == s_params.size(), "Polyak: modules differ");
  for (const auto& item : t_params) {
    const torch::Tensor* s = s_params.find(item.key());
    TORCH_CHECK(s != nullptr, "Polyak: source has no parameter ", item.key());
    item.value().mul_(decay).add_(*s, 1 - decay);
  }
  auto t_bufs = target.named_buffers(true);
  auto s_bufs = source.named_buffers(true);
  for (const auto& item : t_bufs) {
    const torch::Tensor* s = s_bufs.find(item.key());
    TORCH_CHECK(s != nullptr, "Polyak: source has no buffer ", item.key());
    if (item.value().is_floating_point())
      item.value().mul_(decay).add_(*s, 1 - decay);
    else
      item.value().copy_(*s);
  }
}

NamedTensors PolicyWeights(const LhoptPolicyImpl& policy, const std::string& prefix) {
  torch::NoGradGuard no_grad;
  NamedTensors out;
  for (const auto& item : policy.named_parameters(/*recurse=*/true))
    out.emplace_back(prefix + item.key(), item.value().detach().clone());
  for (const auto& item : policy.named_buffers(/*recurse=*/true))
    out.emplace_back(prefix + item.key(), item.value().detach().clone());
  return out;
}

absl::Status SetPolicyWeights(LhoptPolicyImpl& policy, const NamedTensors& weights,
                              const std::string& prefix) {
  torch::NoGradGuard no_grad;
  std::map<std::string, const torch::Tensor*> by_name;
  for (const auto& [k, v] : weights) by_name[k] = &v;
  auto copy = [&](const std::string& key, torch::Tensor& dst) -> absl::Status {
    auto it = by_name.find(prefix + key);
    if (it == by_name.end())
      return absl::InvalidArgumentError(absl::StrCat("policy weights lack ", prefix, key));
    if (it->second->sizes() != dst.sizes())
      return absl::InvalidArgumentError(absl::StrCat("policy weight ", prefix, key,
                                                     " has the wrong shape"));
    dst.copy_(*it->second);
    return absl::OkStatus();
  };
  for (auto& item : policy.named_parameters(true))
    if (absl::Status s = copy(item.key(), item.value()); !s.ok()) return s;
  for (auto& item : policy.named_buffers(true))
    if (absl::Status s = copy(item.key(), item.value()); !s.ok()) return s;
  return absl::OkStatus();
}

NamedTensors NormalizerTensors(const EwmaNormalizer& n, const std::string& prefix) {
  std::vector<torch::Tensor> s = n.state();
  return {{prefix + "weight", s[0].clone()}, {prefix + "sum", s[1].clone()},
          {prefix + "sum_sq", s[2].clone()}};
}

absl::Status SetNormalizer(EwmaNormalizer& n, const NamedTensors& weights,
                           const std::string& prefix) {
  const std::vector<torch::Tensor> now = n.state();
  std::vector<torch::Tensor> s;
  int i = 0;
  for (const char* k : {"weight", "sum", "sum_sq"}) {
    auto t = Find(weights, prefix + k);
    if (!t.ok()) return absl::DataLossError(absl::StrCat("missing ", prefix, k));
    if (t->numel() != now[i++].numel())
      return absl::DataLossError(absl::StrCat(prefix, k, " has the wrong size"));
    s.push_back(t->clone());
  }
  n.set_state(s);
  return absl::OkStatus();
}

}  // namespace lopt
