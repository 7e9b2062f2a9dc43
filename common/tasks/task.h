// Task families with particle batching. A Task trains P copies of one model
// (the particles) at once: every trainable tensor carries a leading particle
// dimension ([P, out, in] weights, grouped convolutions), so that one inner
// step is a fixed number of kernels whatever P is. Never a loop over particles.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "absl/status/statusor.h"
#include "lopt/v1/job.pb.h"

namespace lopt {

// The inner training state of P particles that a Task owns.
struct TaskState {
  std::vector<torch::Tensor> params;  // trainable, each [P, ...]
  std::vector<torch::Tensor> aux;     // per-particle constants of the task, [P, ...]
  int64_t num_particles() const { return params.empty() ? 0 : params[0].size(0); }
};

// Training data for `groups` independent tasks; leading dimension = groups.
struct Batch {
  torch::Tensor x;
  torch::Tensor y;  // labels, or undefined for label-free families
};

struct EvalResult {
  torch::Tensor loss;      // [P] mean test loss
  torch::Tensor accuracy;  // [P] test accuracy, NaN where it has no meaning
  // Ranking families (neumf): [P] hit ratio and NDCG at 10 of the test split
  // (MLPerf's recommendation metrics); undefined for every other family.
  torch::Tensor hit_rate;
  torch::Tensor ndcg;
  // Transcription families (speech_ctc): [P] character error rate of the
  // test split (edit distance over reference length); undefined elsewhere.
  torch::Tensor char_error_rate;
};

class Task {
 public:
  virtual ~Task() = default;

  virtual std::string name() const = 0;

  // Where the task's data and every tensor it returns live (CPU unless
  // MakeTask was given another device).
  virtual torch::Device device() const { return torch::kCPU; }

  // Shapes of the trainable tensors of one particle (no particle dimension).
  virtual const std::vector<std::vector<int64_t>>& param_shapes() const = 0;

  // Fresh states for `groups` tasks, each replicated `replicas` times (the
  // antithetic pair of PES shares its start): particle r * groups + g.
  virtual TaskState Init(int64_t groups, int64_t replicas,
                         torch::Generator& gen) const = 0;

  // A training batch for `groups` tasks.
  virtual Batch SampleBatch(int64_t groups, torch::Generator& gen) const = 0;

  // Per-particle training losses [P] at `state` on `batch` (its groups are
  // shared by the P / groups replicas) and, when `grads` is non-null, the
  // gradients w.r.t. state.params, each [P, ...].
  virtual torch::Tensor LossAndGrad(const TaskState& state, const Batch& batch,
                                    std::vector<torch::Tensor>* grads) const = 0;

  // Test-split loss and accuracy of every particle.
  virtual EvalResult Evaluate(const TaskState& state) const = 0;

  // Per trainable tensor, the factor by which an optimizer that follows the
  // task's parameterisation scales its update of that tensor: 1 / (width
  // multiplier) for the hidden matrices of a MUP task (muP, as muLO and
  // mup's MuAdam), 1 elsewhere. Empty: 1 for every tensor (STANDARD).
  virtual std::vector<double> UpdateScales() const { return {}; }

  // Whether LossAndGrad can be captured in a CUDA graph: no host
  // synchronisation (a .item(), a length copied to the host) and no
  // data-dependent control flow on the host. ELO's unroller replays the inner
  // step from a graph only where this holds, and runs it eagerly elsewhere.
  virtual bool CudaGraphCapturable() const { return true; }

  // The meta-loss normaliser's ceiling: losses are clipped to it and NaN maps
  // to it (learned_optimization: 1.5 * ln(num_classes) for classifiers).
  virtual double MaxMetaLoss() const = 0;
};

// Builds a task from its spec; `seed` fixes what the family draws once (e.g.
// the quadratic's dimension). Its data is uploaded to `device` once and its
// states, batches and losses live there; random draws stay on the CPU
// generators, so a CUDA task draws the same numbers as a CPU one. Errors:
// data that cannot be read, a parameterisation the family does not have.
absl::StatusOr<std::unique_ptr<Task>> MakeTask(const v1::TaskSpec& spec, uint64_t seed,
                                               torch::Device device);
// The same on DefaultTaskDevice().
absl::StatusOr<std::unique_ptr<Task>> MakeTask(const v1::TaskSpec& spec,
                                               uint64_t seed);

// The process-wide device of MakeTask(spec, seed): CPU unless a process's
// main (e.g. `lopt-worker --device cuda`) sets it before building tasks.
torch::Device DefaultTaskDevice();
void SetDefaultTaskDevice(torch::Device device);

// Parses a --device flag: "cpu", "cuda" or "cuda:N". Errors name what is
// missing: a build without LOPT_CUDA, or no visible GPU.
absl::StatusOr<torch::Device> ParseDevice(const std::string& name);

// muP's update scales of an MLP's tensors [w0, b0, w1, b1, ...] whose layer l
// has fan-in fan_ins[l]: 1 / (fan_in / base_width) for the hidden matrices
// (layers 1 .. L-2: both dimensions grow with width), 1 elsewhere (MuAdam).
std::vector<double> MupMlpUpdateScales(const std::vector<int64_t>& fan_ins, int64_t base_width);

// Multiplies each update by the task's UpdateScales() (no-op for STANDARD).
void ScaleUpdates(const std::vector<double>& scales, std::vector<torch::Tensor>* updates);

// Repeats a [G, ...] tensor to [R * G, ...] (particle r * G + g).
torch::Tensor RepeatGroups(const torch::Tensor& t, int64_t replicas);

// Clips to `max_loss` and maps NaN/inf to it.
torch::Tensor NormalizeMetaLoss(const torch::Tensor& loss, double max_loss);

// A generator seeded from (seed, stream, index): independent streams that a
// resumed run reproduces without storing generator state.
torch::Generator MakeGenerator(uint64_t seed, uint64_t stream, uint64_t index);

}  // namespace lopt
