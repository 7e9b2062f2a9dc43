// The one tensor codec: torch tensors <-> lopt.v1.TensorProto (small tensors
// sent whole) and named-tensor items <-> header + payload chunks of about
// 1 MiB (states of any size). Decoding validates everything a peer could get
// wrong and says what: unknown dtype, shape/byte-count mismatch, checksum.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "absl/status/statusor.h"
#include "common/replay_buffer.h"
#include "lopt/v1/tensor.pb.h"

namespace lopt {

uint32_t Crc32(const void* data, size_t size, uint32_t crc = 0);

// A contiguous CPU copy's bytes (row-major, little-endian host order).
v1::TensorProto EncodeTensor(const torch::Tensor& t, const std::string& name = "");
// INVALID_ARGUMENT on an unknown dtype, a negative dim or a byte count that
// does not match the shape; DATA_LOSS on a checksum mismatch.
absl::StatusOr<torch::Tensor> DecodeTensor(const v1::TensorProto& p);
// As DecodeTensor, and INVALID_ARGUMENT unless the shape is `shape` and the
// dtype float32: "<what> has shape [3] but must be [2402]".
absl::StatusOr<torch::Tensor> DecodeFloatTensor(const v1::TensorProto& p,
                                                const std::vector<int64_t>& shape,
                                                const std::string& what);

struct EncodedItem {
  std::vector<v1::TensorHeader> tensors;
  std::string payload;       // the tensors' bytes, concatenated in order
  uint32_t payload_crc32 = 0;
};
EncodedItem EncodeItem(const NamedTensors& item);
absl::StatusOr<NamedTensors> DecodeItem(const std::vector<v1::TensorHeader>& tensors,
                                        const std::string& payload);

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
