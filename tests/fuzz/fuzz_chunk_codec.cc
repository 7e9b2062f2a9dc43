// Payload reassembly (common/rpc/chunk_codec.h), as the buffer server and the
// work stream run it on chunks from a peer. Input (fuzz_input.h): the first
// message is a v1::ItemHeader whose payload_bytes and payload_crc32 are the
// announcement, the rest v1::Chunk messages. Checks: a refusal is
// INVALID_ARGUMENT or DATA_LOSS with a reason; what Finish returns is
// exactly the chunks' bytes in order, of the announced size and checksum;
// and MakeChunks of that payload reassembles to it again.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/rpc/chunk_codec.h"
#include "lopt/v1/buffer_service.pb.h"
#include "tests/fuzz/fuzz_common.h"
#include "tests/fuzz/fuzz_input.h"

using lopt::fuzz::CheckRefusal;
using namespace lopt::fuzz;

namespace {
constexpr int64_t kMaxBytes = int64_t{1} << 20;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  StreamInput in = SplitStream(data, size);
  if (in.messages.empty()) return 0;
  lopt::v1::ItemHeader header;
  if (!header.ParseFromString(in.messages[0])) return 0;
  std::vector<lopt::v1::Chunk> chunks;
  std::string all;
  for (size_t i = 1; i < in.messages.size(); ++i) {
    lopt::v1::Chunk c;
    if (!c.ParseFromString(in.messages[i])) continue;
    if (in.flags & kFixOffsets) c.set_offset(static_cast<int64_t>(all.size()));
    if (in.flags & kFixChunkCrcs) c.set_crc32(lopt::Crc32(c.data().data(), c.data().size()));
    all += c.data();
    chunks.push_back(std::move(c));
  }
  if (in.flags & kFixPayloadBytes) header.set_payload_bytes(static_cast<int64_t>(all.size()));
  if (in.flags & kFixPayloadCrc) header.set_payload_crc32(lopt::Crc32(all.data(), all.size()));

  auto a = lopt::ChunkAssembler::Create(header.payload_bytes(), header.payload_crc32(), kMaxBytes);
  if (!a.ok()) {
    CheckRefusal(a.status(), {absl::StatusCode::kInvalidArgument});
    FUZZ_CHECK(header.payload_bytes() < 0 || header.payload_bytes() > kMaxBytes);
    return 0;
  }
  std::string accepted;
  for (const auto& c : chunks) {
    absl::Status s = a->Add(c);
    if (!s.ok()) {
      CheckRefusal(s, {absl::StatusCode::kInvalidArgument, absl::StatusCode::kDataLoss});
      return 0;
    }
    accepted += c.data();
    FUZZ_CHECK(a->received() == static_cast<int64_t>(accepted.size()));
  }
  auto payload = a->Finish();
  if (!payload.ok()) {
    CheckRefusal(payload.status(),
                 {absl::StatusCode::kInvalidArgument, absl::StatusCode::kDataLoss});
    return 0;
  }
  FUZZ_CHECK(*payload == accepted, "Finish returned other bytes than the chunks'");
  FUZZ_CHECK(static_cast<int64_t>(payload->size()) == header.payload_bytes());
  FUZZ_CHECK(lopt::Crc32(payload->data(), payload->size()) == header.payload_crc32(),
             "a payload that fails its announced checksum was accepted");

  // The sender's side: any chunk size reassembles to the same bytes.
  const int64_t chunk_bytes = 1 + (in.flags >> 4) * 97;
  auto b = lopt::ChunkAssembler::Create(payload->size(), header.payload_crc32(), kMaxBytes);
  FUZZ_CHECK(b.ok());
  for (const auto& c : lopt::MakeChunks(*payload, chunk_bytes)) FUZZ_CHECK(b->Add(c).ok());
  auto again = b->Finish();
  FUZZ_CHECK(again.ok() && *again == *payload);
  return 0;
}
