#include "common/lhopt/lhopt_actions.h"

#include <cmath>

#include <torch/torch.h>

namespace lopt {

namespace {

ActionHead ScaleHead(std::string name, std::vector<double> factors, double lo, double hi) {
  ActionHead h;
  h.name = std::move(name);
  h.choices = std::move(factors);
  h.lower = lo;
  h.upper = hi;
  h.num_choices = static_cast<int64_t>(h.choices.size());
  for (size_t i = 0; i < h.choices.size(); ++i)
    if (h.choices[i] == 1.0) h.keep_choice = static_cast<int64_t>(i);
  return h;
}

std::vector<ActionHead> BuildHeads() {
  std::vector<ActionHead> heads;
  heads.push_back(ScaleHead("lr", {0.5, 0.707, 0.9, 1, 1.1, 1.414, 2}, 1e-8, 1));
  heads.push_back(ScaleHead("weight_decay", {0.5, 1, 2}, 1e-8, 1));
  heads.push_back(ScaleHead("eps", {0.5, 1, 2}, 1e-8, 1));
  heads.push_back(ScaleHead("one_minus_beta2", {0.5, 1, 2}, 1e-5, 0.1));
  heads.push_back(ScaleHead("one_minus_beta1", {0.5, 1, 2}, 1e-5, 1));
  ActionHead clip;
  clip.name = "clip_fraction";
  clip.choices = {-1, -0.3, 0, 0.3, 1};
  clip.lower = 1e-6;
  clip.upper = 1 - 1e-6;
  clip.num_choices = 5;
  clip.keep_choice = 2;
  heads.push_back(clip);
  ActionHead regs;
  regs.name = "registers";
  regs.num_choices = 1 + 3 * kNumRestartRegisters;
  regs.keep_choice = 0;
  heads.push_back(regs);
  return heads;
}

torch::Tensor Logit(const torch::Tensor& p) { return torch::log(p) - torch::log1p(-p); }

torch::Tensor Clamp(const torch::Tensor& t, int head) {
  const ActionHead& h = ActionHeads()[head];
  return t.clamp(h.lower, h.upper);
}

// Looks up choices[actions[:, head]] as a float64 [P] tensor.
torch::Tensor ChoiceValues(const torch::Tensor& actions, int head) {
  const ActionHead& h = ActionHeads()[head];
  torch::Tensor table = torch::tensor(h.choices, torch::kFloat64).to(actions.device());
  torch::Tensor idx = actions.select(1, head).to(torch::kInt64);
  TORCH_CHECK(idx.numel() == 0 ||
                  (idx.min().item<int64_t>() >= 0 && idx.max().item<int64_t>() < h.num_choices),
              "action of head ", h.name, " out of range [0, ", h.num_choices, ")");
  return table.index_select(0, idx);
}

}  // namespace

const std::vector<ActionHead>& ActionHeads() {
  static const std::vector<ActionHead>* heads = new std::vector<ActionHead>(BuildHeads());
  return *heads;
}

std::vector<int64_t> ActionHeadSizes() {
  std::vector<int64_t> sizes;
  for (const auto& h : ActionHeads()) sizes.push_back(h.num_choices);
  return sizes;
}

int64_t TotalActionChoices() {
  int64_t n = 0;
  for (const auto& h : ActionHeads()) n += h.num_choices;
  return n;
}

torch::Tensor KeepActions(int64_t num_particles) {
  std::vector<int64_t> keep;
  for (const auto& h : ActionHeads()) keep.push_back(h.keep_choice);
  return torch::tensor(keep, torch::kInt64).unsqueeze(0).repeat({num_particles, 1});
}

CiaoHparamTensors ClampHparams(const CiaoHparamTensors& h) {
  return {Clamp(h.lr, kHeadLr),
          Clamp(h.one_minus_beta1, kHeadOneMinusBeta1),
          Clamp(h.one_minus_beta2, kHeadOneMinusBeta2),
          Clamp(h.eps, kHeadEps),
          Clamp(h.weight_decay, kHeadWeightDecay),
          Clamp(h.clip_fraction, kHeadClipFraction)};
}

CiaoHparamTensors ApplyActions(const CiaoHparamTensors& h, const torch::Tensor& actions) {
  TORCH_CHECK(actions.dim() == 2 && actions.size(1) == kNumActionHeads &&
                  actions.size(0) == h.num_particles(),
              "actions must be [P, ", kNumActionHeads, "] for P = ", h.num_particles());
  CiaoHparamTensors out;
  out.lr = h.lr * ChoiceValues(actions, kHeadLr);
  out.weight_decay = h.weight_decay * ChoiceValues(actions, kHeadWeightDecay);
  out.eps = h.eps * ChoiceValues(actions, kHeadEps);
  out.one_minus_beta2 = h.one_minus_beta2 * ChoiceValues(actions, kHeadOneMinusBeta2);
  out.one_minus_beta1 = h.one_minus_beta1 * ChoiceValues(actions, kHeadOneMinusBeta1);
  out.clip_fraction =
      torch::sigmoid(Logit(h.clip_fraction) + ChoiceValues(actions, kHeadClipFraction));
  return ClampHparams(out);
}

CiaoHparamTensors RandomInitialHparams(int64_t n, torch::Generator& gen,
                                       const CiaoHyperparameters& base) {
  auto log_uniform = [&](double lo, double hi) {
    torch::Tensor u = torch::rand({n}, gen, torch::kFloat64);
    return torch::exp(std::log(lo) + u * (std::log(hi) - std::log(lo)));
  };
  CiaoHparamTensors h = CiaoHparamTensors::Fill(n, base);
  h.lr = h.lr * log_uniform(1e-2, 1e2);
  h.weight_decay = h.weight_decay * log_uniform(0.1, 10);
  h.eps = h.eps * log_uniform(0.1, 10);
  h.one_minus_beta2 = h.one_minus_beta2 * log_uniform(0.1, 10);
  h.one_minus_beta1 = h.one_minus_beta1 * log_uniform(0.1, 10);
  torch::Tensor shift = torch::rand({n}, gen, torch::kFloat64) * 2 - 1;
  h.clip_fraction = torch::sigmoid(Logit(h.clip_fraction) + shift);
  return ClampHparams(h);
}

// ---------------------------------------------------------------------------

RegisterAction DecodeRegisterAction(int64_t choice) {
  TORCH_CHECK(choice >= 0 && choice < 1 + 3 * kNumRestartRegisters,
              "register action out of range: ", choice);
  if (choice == 0) return {};
  const int64_t k = choice - 1;
  static constexpr RegisterOp kOps[] = {RegisterOp::kSave, RegisterOp::kLoad, RegisterOp::kSwap};
  return {kOps[k % 3], static_cast<int>(k / 3)};
}

int64_t EncodeRegisterAction(const RegisterAction& a) {
  if (a.op == RegisterOp::kNone) return 0;
  const int op = static_cast<int>(a.op) - 1;  // save 0, load 1, swap 2
  return 1 + 3 * a.reg + op;
}

RestartRegisters::RestartRegisters(int num_registers) : entries_(num_registers) {}

bool RestartRegisters::HeldElsewhere(int64_t id, int except) const {
  for (int r = 0; r < num_registers(); ++r)
    if (r != except && entries_[r].filled && entries_[r].state_id == id) return true;
  return false;
}

std::vector<int64_t> RestartRegisters::LiveStateIds() const {
  std::vector<int64_t> ids;
  for (const auto& e : entries_)
    if (e.filled) ids.push_back(e.state_id);
  return ids;
}

RegisterCommand RestartRegisters::Apply(const RegisterAction& action, int64_t new_state_id,
                                        double loss, double progress) {
  RegisterCommand cmd;
  if (action.op == RegisterOp::kNone) return cmd;
  TORCH_CHECK(action.reg >= 0 && action.reg < num_registers(), "no register ", action.reg);
  RegisterEntry& e = entries_[action.reg];
  RegisterOp op = action.op;
  if (op == RegisterOp::kSwap && !e.filled) op = RegisterOp::kSave;
  switch (op) {
    case RegisterOp::kSave: {
      if (e.filled && !HeldElsewhere(e.state_id, action.reg)) cmd.release_id = e.state_id;
      e = {true, new_state_id, loss, progress};
      cmd.store_id = new_state_id;
      cmd.applied = true;
      break;
    }
    case RegisterOp::kLoad: {
      if (!e.filled) return cmd;
      cmd.load_id = e.state_id;
      cmd.loaded_loss = e.loss;
      cmd.loaded_progress = e.progress;
      cmd.applied = true;
      break;
    }
    case RegisterOp::kSwap: {
      // After the load the old register copy is referenced by no register
      // (unless another one holds the same id): released once loaded.
      cmd.load_id = e.state_id;
      if (!HeldElsewhere(e.state_id, action.reg)) cmd.release_id = e.state_id;
      cmd.loaded_loss = e.loss;
      cmd.loaded_progress = e.progress;
      e = {true, new_state_id, loss, progress};
      cmd.store_id = new_state_id;
      cmd.applied = true;
      break;
    }
    case RegisterOp::kNone:
      break;
  }
  return cmd;
}

}  // namespace lopt
