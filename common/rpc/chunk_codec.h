// Payload chunking, the torch-free half of the one tensor codec
// (tensor_codec.h includes it): zlib crc32, cutting a payload into Chunks and
// reassembling them with every check a peer could fail. The buffer server
// uses it to move payloads without decoding them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "lopt/v1/tensor.pb.h"

namespace lopt {

uint32_t Crc32(const void* data, size_t size, uint32_t crc = 0);
// The crc32 of A followed by B, from crc32(A), crc32(B) and B's length: lets a
// payload be checked from its chunks' checksums without hashing it twice.
uint32_t Crc32Combine(uint32_t crc_a, uint32_t crc_b, int64_t size_b);

// The chunks of `payload`, each at most chunk_bytes.
std::vector<v1::Chunk> MakeChunks(const std::string& payload, int64_t chunk_bytes);

// Reassembles a payload from chunks that must arrive in order.
class ChunkAssembler {
 public:
  // REQUIRES: expected_bytes >= 0; max_bytes bounds what a peer may announce.
  static absl::StatusOr<ChunkAssembler> Create(int64_t expected_bytes, uint32_t expected_crc32,
                                               int64_t max_bytes);
  // INVALID_ARGUMENT for a chunk out of order or past the end; DATA_LOSS for
  // a chunk whose checksum does not match.
  absl::Status Add(const v1::Chunk& chunk);
  // INVALID_ARGUMENT if bytes are missing (a truncated stream); DATA_LOSS if
  // the whole payload's checksum does not match.
  absl::StatusOr<std::string> Finish();
  int64_t received() const { return static_cast<int64_t>(payload_.size()); }

 private:
  ChunkAssembler(int64_t expected, uint32_t crc) : expected_(expected), crc_(crc) {}
  int64_t expected_;
  uint32_t crc_;
  uint32_t running_crc_ = 0;
  std::string payload_;
};

}  // namespace lopt
