// ELO's replay buffer of inner states: named FIFO tables with a capacity,
// sampled uniformly. Local mode keeps it in memory; the services keep it in
// the RocksDB buffer server behind the same interface.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "absl/status/statusor.h"

namespace lopt {

// One stored state: tensors by name (parameters, accumulators, step, xi...).
using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

// Returns the tensor called `name`, or NOT_FOUND.
absl::StatusOr<torch::Tensor> Find(const NamedTensors& item, const std::string& name);

class ReplayBuffer {
 public:
  virtual ~ReplayBuffer() = default;
  // Appends `item` to `table`, evicting the oldest item beyond `capacity`.
  virtual absl::Status Put(const std::string& table, int64_t capacity, NamedTensors item) = 0;
  // A uniformly chosen item: index floor(u * size) for u in [0, 1).
  // NOT_FOUND when the table is empty.
  virtual absl::StatusOr<NamedTensors> Sample(const std::string& table, double u) = 0;
  virtual absl::StatusOr<int64_t> Size(const std::string& table) = 0;
  // All items, oldest first (checkpoints).
  virtual absl::StatusOr<std::vector<NamedTensors>> Items(const std::string& table) = 0;
  virtual absl::Status DeleteTable(const std::string& table) = 0;
};

// Thread-safe in-process tables.
class InMemoryReplayBuffer : public ReplayBuffer {
 public:
  absl::Status Put(const std::string& table, int64_t capacity, NamedTensors item) override;
  absl::StatusOr<NamedTensors> Sample(const std::string& table, double u) override;
  absl::StatusOr<int64_t> Size(const std::string& table) override;
  absl::StatusOr<std::vector<NamedTensors>> Items(const std::string& table) override;
  absl::Status DeleteTable(const std::string& table) override;

 private:
  std::mutex mu_;
  std::map<std::string, std::vector<NamedTensors>> tables_;  // guarded by mu_
};

}  // namespace lopt
