// The one tensor codec: torch tensors <-> lopt.v1.TensorProto (small tensors
// sent whole) and named-tensor items <-> header + payload chunks of about
// 1 MiB (states of any size). Decoding validates everything a peer could get
// wrong and says what: unknown dtype, shape/byte-count mismatch, checksum.
// Crc32 and the chunking (MakeChunks, ChunkAssembler) live in chunk_codec.h,
// free of LibTorch so that the buffer server can move payloads untouched.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "absl/status/statusor.h"
#include "common/elo/replay_buffer.h"
#include "common/rpc/chunk_codec.h"
#include "lopt/v1/tensor.pb.h"

namespace lopt {

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

}  // namespace lopt
