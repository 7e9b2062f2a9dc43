// The worker side of ELO meta-training: T tasks (2T particles, the PES
// antithetic pairs) trained by the learned optimizer, truncation after
// truncation, with ELO's replay buffer of inner states and online behaviour
// cloning against Adam (REFERENCE.md sections 2 and 3).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "absl/status/statusor.h"
#include "common/elo/pes.h"
#include "common/elo/replay_buffer.h"
#include "common/elo/small_fc_lopt.h"
#include "common/tasks/adam.h"
#include "common/tasks/task.h"
#include "lopt/v1/job.pb.h"

namespace lopt {

// An unroll that started inside a truncation: from `start_step` (0 for a
// fresh state, the buffered step for a restored one) for `length` steps,
// pushing its state to the buffer at `push_step` (-1: no buffer).
struct UnrollStart {
  int64_t task = 0;
  int64_t start_step = 0;
  int64_t length = 0;
  int64_t push_step = -1;
  bool restored = false;
};

struct TruncationResult {
  torch::Tensor grad;        // [D] PES estimate of d(meta-loss)/d(theta)
  double meta_loss = 0;      // mean normalised meta-loss over particles and steps
  double task_loss = 0;      // mean normalised task loss
  double bc_loss = 0;        // mean ||theta^O - theta^H||^2 (0 without BC)
  int64_t particle_steps = 0;
  int64_t fresh_starts = 0;  // unroll starts from step 0
  int64_t restores = 0;      // unroll starts from a replay-buffer state
  int64_t pushes = 0;        // states pushed to the replay buffer (stored)
  // Replay-buffer calls that failed (a put lost, a sample or size that fell
  // back to a fresh start) and the last one's error: a job whose buffer is
  // unreachable says so instead of silently running without it.
  int64_t buffer_failures = 0;
  std::string buffer_error;
  std::vector<UnrollStart> unroll_starts;
  // Stopped between inner steps by the cancel check: no gradient or losses,
  // and the unroller's state is left mid-truncation (not to be used again).
  bool cancelled = false;
};

class EloUnroller {
 public:
  // `task` and `buffer` must outlive the unroller. `buffer` may be null when
  // the job's buffer is disabled. `seed` derives every random draw, so a run
  // is reproducible from (seed, outer step) and the saved state.
  // Runs on task->device(): state, accumulators and PES live there; theta
  // comes in and the gradient goes out on the CPU.
  EloUnroller(const v1::JobSpec& job, const Task* task, ReplayBuffer* buffer,
              std::string buffer_table, uint64_t seed);
  ~EloUnroller();

  // Runs one truncation of pes.truncation_length inner steps for every task
  // with meta-parameters theta [D]; alpha is ELO's alpha_t in [0, 1].
  TruncationResult RunTruncation(const torch::Tensor& theta, double alpha,
                                 int64_t outer_step);

  // Asked before each inner step of a truncation; true stops it there
  // (TruncationResult::cancelled). The worker's: the learner no longer wants
  // the unit (its job was cancelled, say).
  void set_cancel_check(std::function<bool()> check) { cancel_check_ = std::move(check); }

  int64_t num_tasks() const { return num_tasks_; }
  int64_t num_particles() const { return 2 * num_tasks_; }

  // Everything needed to continue bit-identically (not the buffer's items).
  NamedTensors SaveState() const;
  absl::Status LoadState(const NamedTensors& state);

  torch::Device device() const { return device_; }

  // On CUDA (builds with LOPT_WITH_CUDA): capture the inner step once as a
  // CUDA graph and replay it (default on); off, the same kernels run eagerly.
  // Never on for a task that cannot be captured (Task::CudaGraphCapturable).
  void set_use_cuda_graph(bool on);
  bool use_cuda_graph() const { return use_cuda_graph_; }
  // Inner steps a second graph captures back to back (default 8, env
  // LOPT_CUDA_GRAPH_STEPS; 1: off): replayed wherever that many steps in a row
  // need no reset or push from the host, which saves a graph launch, two batch
  // copies and the host's bookkeeping per step. The one-step graph does the rest.
  void set_cuda_graph_steps(int64_t n) { graph_steps_ = n < 1 ? 1 : n; }
  // Nodes of the multi-step graph (-1 before its capture).
  int64_t chunk_graph_nodes() const;
  // Nodes of the captured inner step's graph (-1 before a capture): all of
  // them, and its kernel launches.
  int64_t graph_nodes() const;
  int64_t graph_kernel_nodes() const;

 private:
  void InitAll(torch::Generator& gen, int64_t outer_step);
  UnrollStart StartUnroll(int64_t i, torch::Generator& gen, int64_t outer_step);
  bool Push(int64_t i);  // false: the put failed (counted)
  void BufferFailed(const char* op, const absl::Status& status);
  absl::Status CheckItem(const NamedTensors& item) const;
  int64_t SampleUnrollLength(torch::Generator& gen, int64_t outer_step) const;
  void WriteRows(int64_t i, const std::vector<torch::Tensor>& src,
                 std::vector<torch::Tensor>& dst);
  torch::Tensor StepTensor() const;
  NamedTensors SaveStateOnDevice() const;

  // The truncation's static tensors (on CUDA a graph's inputs and outputs)
  // and one inner step over them, on every device.
  struct DeviceSteps;
  void DeviceStep(DeviceSteps* ds);
  void CaptureDeviceStep(DeviceSteps* ds);
  void CaptureDeviceChunk(DeviceSteps* ds, int64_t steps);

  v1::JobSpec job_;
  const Task* task_;
  ReplayBuffer* buffer_;
  std::string buffer_table_;
  uint64_t seed_;
  int64_t num_tasks_;
  SmallFcLopt lopt_;
  AdamOptions teacher_;
  bool initialized_ = false;
  std::function<bool()> cancel_check_;
  int64_t buffer_failures_ = 0;  // in this truncation
  std::string buffer_error_;
  std::vector<double> update_scales_;  // MUP: the task's; empty: all 1

  TaskState state_;                // 2T particles
  LoptState lopt_state_;
  AdamState adam_state_;
  std::vector<int64_t> step_;      // [T] inner step of each task (both particles)
  std::vector<int64_t> end_;       // [T] step at which the current unroll ends
  std::vector<int64_t> push_at_;   // [T] step at which to push, -1 if none
  PesAccumulator pes_;
  torch::Device device_;
  bool use_cuda_graph_ = true;
  int64_t graph_steps_ = 8;
  std::unique_ptr<DeviceSteps> device_steps_;  // static buffers, the captured graph
};

}  // namespace lopt
