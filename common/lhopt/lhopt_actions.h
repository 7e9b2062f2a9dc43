// LHOPT's actions: discrete and relative, one categorical head per CIAO
// hyperparameter plus one head for the restart registers (REFERENCE.md §4;
// the heads, factors and bounds of openai/LHOPT's example_config.jsonnet).
//
// Heads, in order (index = position in an action row [P, kNumActionHeads]):
//   0 lr               x {0.5, 0.707, 0.9, 1, 1.1, 1.414, 2}, bounds [1e-8, 1]
//   1 weight_decay     x {0.5, 1, 2},                        bounds [1e-8, 1]
//   2 eps              x {0.5, 1, 2},                        bounds [1e-8, 1]
//   3 one_minus_beta2  x {0.5, 1, 2},                        bounds [1e-5, 0.1]
//   4 one_minus_beta1  x {0.5, 1, 2},                        bounds [1e-5, 1]
//   5 clip_fraction    logit += {-1, -0.3, 0, 0.3, 1},       bounds [1e-6, 1 - 1e-6]
//   6 registers        none, then (save, load, swap) x register 0..2 (10 choices)
// "Keep" is an explicit choice of every hyperparameter head (factor 1 or
// shift 0) so that doing nothing is one choice of one head, not a
// combination; the paper's {0.5, 2} and {-1, -0.3, 0.3, 1} sets gain it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <torch/types.h>

#include "common/lhopt/ciao.h"

namespace lopt {

enum ActionHeadIndex : int {
  kHeadLr = 0,
  kHeadWeightDecay = 1,
  kHeadEps = 2,
  kHeadOneMinusBeta2 = 3,
  kHeadOneMinusBeta1 = 4,
  kHeadClipFraction = 5,
  kHeadRegisters = 6,
};
constexpr int kNumActionHeads = 7;
constexpr int kNumHparamHeads = 6;  // heads 0..5
constexpr int kNumRestartRegisters = 3;

struct ActionHead {
  std::string name;
  // Multiplicative factors (heads 0-4) or logit shifts (head 5); empty for
  // the register head.
  std::vector<double> choices;
  double lower = 0, upper = 0;  // bounds of the hyperparameter
  int64_t num_choices = 0;
  int64_t keep_choice = 0;  // the choice that changes nothing
};

// The 7 heads in order.
const std::vector<ActionHead>& ActionHeads();
// num_choices of each head, in order: {7, 3, 3, 3, 3, 5, 10}.
std::vector<int64_t> ActionHeadSizes();
// Sum of ActionHeadSizes(): the width of the previous-action one-hot.
int64_t TotalActionChoices();
// One row of "keep" choices per particle: [P, kNumActionHeads] int64 (the
// previous action of a run's first decision).
torch::Tensor KeepActions(int64_t num_particles);

// Clamps every hyperparameter into its head's bounds.
CiaoHparamTensors ClampHparams(const CiaoHparamTensors& h);

// Applies the hyperparameter heads of `actions` ([P, kNumActionHeads] int64;
// the register column is ignored here) to `h` ([P] each) and clamps.
CiaoHparamTensors ApplyActions(const CiaoHparamTensors& h, const torch::Tensor& actions);

// The random start of a run: lr x log-uniform[1e-2, 1e2], weight decay, eps,
// 1 - beta2 and 1 - beta1 each x log-uniform[0.1, 10], and the clip fraction's
// logit shifted by uniform[-1, 1] (openai/LHOPT's initial_logit_shift), then
// clamped. Deterministic given `gen`.
CiaoHparamTensors RandomInitialHparams(int64_t num_particles, torch::Generator& gen,
                                       const CiaoHyperparameters& base = {});

// ---------------------------------------------------------------------------
// Restart registers: bookkeeping of one run (one particle). The states live
// elsewhere (the buffer server); a register only remembers the id of the
// state it holds and the loss and progress when it was saved.

enum class RegisterOp { kNone = 0, kSave = 1, kLoad = 2, kSwap = 3 };

struct RegisterAction {
  RegisterOp op = RegisterOp::kNone;
  int reg = -1;  // 0..kNumRestartRegisters-1, or -1 for kNone
};

// Register-head choice c: 0 = none; 1 + 3 * r + {0 save, 1 load, 2 swap}.
RegisterAction DecodeRegisterAction(int64_t choice);
int64_t EncodeRegisterAction(const RegisterAction& a);

struct RegisterEntry {
  bool filled = false;
  int64_t state_id = -1;
  double loss = 0;      // the run's loss when saved
  double progress = 0;  // the run's progress in [0, 1] when saved
};

// What the caller must do for a register action, in this order:
//   1. if store_id: store the current state under *store_id;
//   2. if load_id: replace the current state by the one stored as *load_id;
//   3. if release_id: the state *release_id is referenced by no register
//      any more and may be deleted.
// An action that cannot apply (load from an empty register) returns
// applied = false and asks for nothing.
struct RegisterCommand {
  bool applied = false;
  std::optional<int64_t> store_id;
  std::optional<int64_t> load_id;
  std::optional<int64_t> release_id;
  // After a load or swap: the loss and progress saved with the loaded state.
  double loaded_loss = 0, loaded_progress = 0;
};

class RestartRegisters {
 public:
  explicit RestartRegisters(int num_registers = kNumRestartRegisters);

  // Applies `action` to the current state, whose loss and progress are
  // `loss` and `progress`. `new_state_id` is the id the caller will store
  // the current state under if the action saves it (save, or swap).
  //   save r: r <- current (its old state released unless another register
  //           still holds it);
  //   load r: current <- r's state; r keeps it (it can be loaded again);
  //   swap r: current <- r's state and r <- the old current; on an empty
  //           register swap acts as save.
  RegisterCommand Apply(const RegisterAction& action, int64_t new_state_id, double loss,
                        double progress);

  const RegisterEntry& entry(int r) const { return entries_.at(r); }
  // Sets register r as a saved run had it (entry(r) of that run).
  void set_entry(int r, const RegisterEntry& e) { entries_.at(r) = e; }
  int num_registers() const { return static_cast<int>(entries_.size()); }
  // Every state id some register holds (what must not be deleted).
  std::vector<int64_t> LiveStateIds() const;

 private:
  bool HeldElsewhere(int64_t id, int except) const;
  std::vector<RegisterEntry> entries_;
};

}  // namespace lopt
