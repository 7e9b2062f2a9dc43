// RocksReplayBuffer: the ReplayBuffer interface (common/elo/replay_buffer.h) over
// a RocksReplayStore, for local mode with its buffer in a directory. Items
// are encoded with the one tensor codec on Put and decoded, after checking
// their checksum, on Sample and Items. Thread-safe, as the store.
#pragma once

#include <memory>
#include <string>

#include "buffer_server/rocks_store.h"
#include "common/elo/replay_buffer.h"

namespace lopt {

class RocksReplayBuffer : public ReplayBuffer {
 public:
  // Opens (or creates) the store at `path`; errors and sync_writes as
  // RocksReplayStore::Open.
  static absl::StatusOr<std::unique_ptr<RocksReplayBuffer>> Open(const std::string& path,
                                                                 bool sync_writes = true);
  // Shares `store` with other users (a server in the same process).
  explicit RocksReplayBuffer(std::shared_ptr<RocksReplayStore> store);

  // INVALID_ARGUMENT for a bad table name or capacity <= 0.
  absl::Status Put(const std::string& table, int64_t capacity, NamedTensors item) override;
  // As RocksReplayStore::Sample; DATA_LOSS if the stored payload fails its
  // checksum.
  absl::StatusOr<NamedTensors> Sample(const std::string& table, double u) override;
  absl::StatusOr<int64_t> Size(const std::string& table) override;
  // Oldest first; an item evicted while they are read is left out.
  absl::StatusOr<std::vector<NamedTensors>> Items(const std::string& table) override;
  absl::Status DeleteTable(const std::string& table) override;

  RocksReplayStore& store() { return *store_; }

 private:
  std::shared_ptr<RocksReplayStore> store_;
};

}  // namespace lopt
