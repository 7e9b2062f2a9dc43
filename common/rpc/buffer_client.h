// RemoteReplayBuffer: the ReplayBuffer interface (replay_buffer.h) served by
// a lopt-buffer over gRPC, plus the raw calls (encoded items, keys, stats)
// that checkpoints, fault tests and benchmarks use. Payloads travel in
// kChunkBytes chunks with checksums; every call has a deadline (longer for
// big items) and the configured bearer token; UNAVAILABLE (server restarting,
// connection refused) is retried a bounded number of times with exponential
// backoff. Thread-safe: calls may run concurrently on one channel.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/elo/replay_buffer.h"
#include "common/rpc/buffer_protocol.h"
#include "common/rpc/rpc.h"
#include "common/rpc/tensor_codec.h"
#include "lopt/v1/buffer_service.grpc.pb.h"

namespace lopt {

struct RemoteReplayBufferOptions {
  // Attempts of a call that fails with UNAVAILABLE, the first included.
  int max_attempts = 5;
  // Wait before the first retry; doubled each time up to max_backoff_ms.
  int64_t initial_backoff_ms = 100;
  int64_t max_backoff_ms = 2000;
  // A call moving an item gets config.timeout_ms plus the time its bytes
  // take at this rate, so that a 100 MB state is not cut off by a deadline
  // sized for small calls.
  int64_t min_bytes_per_second = 10 << 20;
  // Deadline of Sample and Get, whose item's size is unknown when they start.
  int64_t read_timeout_ms = 120000;
};

// An item as stored: its header (key, index, table_size set) and payload,
// whose chunk and whole checksums have been verified.
struct RemoteItem {
  v1::ItemHeader header;
  std::string payload;
};

class RemoteReplayBuffer : public ReplayBuffer {
 public:
  // Does not connect: the first call does (and retries while UNAVAILABLE).
  explicit RemoteReplayBuffer(ClientConfig config, RemoteReplayBufferOptions options = {});

  // ReplayBuffer. Errors are the server's status (INVALID_ARGUMENT,
  // NOT_FOUND, ...) with its message, or UNAVAILABLE / DEADLINE_EXCEEDED
  // after the retries.
  // A Put retried after a lost reply may store the item twice: fine for a
  // replay buffer sampled uniformly.
  absl::Status Put(const std::string& table, int64_t capacity, NamedTensors item) override;
  absl::StatusOr<NamedTensors> Sample(const std::string& table, double u) override;
  absl::StatusOr<int64_t> Size(const std::string& table) override;
  // Oldest first; an item evicted while they are read is left out.
  absl::StatusOr<std::vector<NamedTensors>> Items(const std::string& table) override;
  absl::Status DeleteTable(const std::string& table) override;

  // Raw calls: encoded items, not decoded on either side.
  absl::StatusOr<v1::PutResponse> PutEncoded(const std::string& table, int64_t capacity,
                                             const EncodedItem& item);
  absl::StatusOr<RemoteItem> SampleEncoded(const std::string& table, double u);
  absl::StatusOr<RemoteItem> GetEncoded(const std::string& table, uint64_t key);
  // The table's keys, oldest first (empty for an unknown table).
  absl::StatusOr<std::vector<uint64_t>> ListKeys(const std::string& table);
  // Deletes the tables whose name starts with prefix (not empty).
  absl::StatusOr<v1::DeleteTablesResponse> DeleteTables(const std::string& prefix);
  // Deletes them and closes the prefix (kClosePrefixMetadata).
  absl::StatusOr<v1::DeleteTablesResponse> CloseTables(const std::string& prefix);
  absl::StatusOr<v1::StatsResponse> Stats(const std::string& prefix = "");

  // Waits up to timeout_ms for the channel to connect.
  bool WaitForConnected(int64_t timeout_ms);

 private:
  template <typename Fn>
  absl::Status WithRetries(Fn&& attempt);
  int64_t TimeoutForBytes(int64_t bytes) const;
  // One server stream of an item (Sample or Get), retried while UNAVAILABLE.
  using StartRead = std::function<std::unique_ptr<grpc::ClientReader<v1::ItemChunk>>(
      grpc::ClientContext*)>;
  absl::StatusOr<RemoteItem> ReadItem(const StartRead& start);
  // DeleteTables, with the close metadata when `close` (CloseTables).
  absl::StatusOr<v1::DeleteTablesResponse> DeleteTablesCall(const std::string& prefix, bool close);

  const ClientConfig config_;
  const RemoteReplayBufferOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::BufferService::Stub> stub_;
};

}  // namespace lopt
