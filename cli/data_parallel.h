// Data parallelism for one big optimizee over several GPUs of one host: one
// process a GPU, each computing gradients on its share of the batch, the
// gradients averaged in place with NCCL before every optimizer step, so that
// the replicas (parameters and learned-optimizer state) stay bit-identical.
//
//   // rank 0 makes the id and hands it to the others (file, env, RPC):
//   std::string id = lopt::NcclCommunicator::NewUniqueId();
//   auto comm = lopt::NcclCommunicator::Create(id, rank, world, /*device=*/rank);
//   (*comm)->Broadcast(model->parameters(), 0);       // identical start
//   for (...) {
//     opt.zero_grad(); LossOnMyShard().backward();
//     (*comm)->AverageGradients(model->parameters()); // NCCL all-reduce (avg)
//     opt.step();                                     // lopt::LearnedOptimizer
//   }
//
// Raw NCCL (nccl.h), on the caller's current CUDA stream: no host sync, the
// collectives are ordered with the backward pass and the optimizer step like
// any other kernel. Gradients are packed into flat buckets (one dtype each, at
// most `bucket_bytes`), one ncclAllReduce(ncclAvg) per bucket, then unpacked.
// Built only with CUDA LibTorch and NCCL (LOPT_WITH_NCCL).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace lopt {

class NcclCommunicator {
 public:
  // A fresh ncclUniqueId as 256 hex characters (call it on one rank only).
  static absl::StatusOr<std::string> NewUniqueId();

  // Joins the communicator of `world_size` ranks named by `unique_id` (hex,
  // from NewUniqueId) as `rank`, on CUDA device `device`. Blocks until every
  // rank has joined.
  static absl::StatusOr<std::unique_ptr<NcclCommunicator>> Create(const std::string& unique_id,
                                                                  int rank, int world_size,
                                                                  int device);
  ~NcclCommunicator();
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  int device() const { return device_; }

  // Averages `tensors` over the ranks, in place (floating CUDA tensors on
  // this device; any layout). Undefined tensors are skipped.
  absl::Status AllReduceMean(const std::vector<torch::Tensor>& tensors);
  // Sums instead of averaging.
  absl::Status AllReduceSum(const std::vector<torch::Tensor>& tensors);
  // Averages the .grad() of every parameter that has one.
  absl::Status AverageGradients(const std::vector<torch::Tensor>& params);
  // Copies rank `root`'s values into every rank's `tensors`, in place.
  absl::Status Broadcast(const std::vector<torch::Tensor>& tensors, int root);

  // Largest flat buffer one collective packs (default 64 MiB).
  void set_bucket_bytes(int64_t bytes) { bucket_bytes_ = bytes; }

 private:
  NcclCommunicator() = default;
  absl::Status Reduce(const std::vector<torch::Tensor>& tensors, bool average);

  void* comm_ = nullptr;  // ncclComm_t
  int rank_ = 0, world_size_ = 1, device_ = 0;
  int64_t bucket_bytes_ = int64_t{64} << 20;
};

}  // namespace lopt
