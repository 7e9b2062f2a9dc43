// LHOPT units and results on the WorkService stream (work_service.proto):
// the scalars in LhoptUnitInfo / LhoptResultInfo, the tensors in the big
// payload that follows the WorkUnit / WorkResult as Chunk messages. The one
// place that converts LhoptUnit / LhoptUnitResult to and from the wire.
//
// Payload names:
//   unit:   "policy/<shipped name>" (LhoptUnit::policy, itself "policy/..."
//           and "normalizer/..."), "baseline/<shipped name>".
//   result: "seg/<i>/<field>" (features, value_extra, actions, log_probs,
//           values, rewards, dones, bootstrap_value, h, c, mask; an undefined
//           tensor is left out), "raw_features", "episode_rewards", "curve",
//           "baseline_curve", "final_hparams".
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "common/elo/replay_buffer.h"
#include "common/lhopt/lhopt_unit.h"
#include "common/rpc/chunk_codec.h"
#include "lopt/v1/work_service.pb.h"

namespace lopt {

// The most bytes a peer may announce for one payload.
inline constexpr int64_t kMaxPayloadBytes = int64_t(1) << 30;

void EncodeLhoptUnit(const LhoptUnit& unit, v1::LhoptUnitInfo* info, NamedTensors* tensors);
// INVALID_ARGUMENT for a tensor name it does not know.
absl::StatusOr<LhoptUnit> DecodeLhoptUnit(const v1::LhoptUnitInfo& info,
                                          const NamedTensors& tensors);

void EncodeLhoptResult(const LhoptUnitResult& result, v1::LhoptResultInfo* info,
                       NamedTensors* tensors);
// INVALID_ARGUMENT for an unknown name, a segment out of range or missing a
// required field, a policy version list of the wrong length.
absl::StatusOr<LhoptUnitResult> DecodeLhoptResult(const v1::LhoptResultInfo& info,
                                                  const NamedTensors& tensors);

// Named tensors -> payload header + bytes (to be sent with MakeChunks).
v1::PayloadHeader EncodePayload(const NamedTensors& tensors, std::string* bytes);

// Receives one announced payload chunk by chunk.
class PayloadReceiver {
 public:
  // INVALID_ARGUMENT for a negative or oversized announcement.
  static absl::StatusOr<PayloadReceiver> Create(const v1::PayloadHeader& header);
  // INVALID_ARGUMENT (out of order, past the end), DATA_LOSS (checksum).
  absl::Status Add(const v1::Chunk& chunk);
  bool complete() const { return assembler_.received() >= expected_; }
  int64_t received() const { return assembler_.received(); }
  int64_t expected() const { return expected_; }
  // INVALID_ARGUMENT "payload truncated: ..." if bytes are missing;
  // DATA_LOSS on a checksum mismatch; the tensors' decoding errors.
  absl::StatusOr<NamedTensors> Finish();

 private:
  PayloadReceiver(v1::PayloadHeader h, ChunkAssembler a, int64_t expected)
      : header_(std::move(h)), assembler_(std::move(a)), expected_(expected) {}
  v1::PayloadHeader header_;
  ChunkAssembler assembler_;
  int64_t expected_;
};

}  // namespace lopt
