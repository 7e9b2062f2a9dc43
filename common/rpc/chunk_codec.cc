#include "common/rpc/chunk_codec.h"

#include <algorithm>

#include <zlib.h>

#include "absl/strings/str_cat.h"

namespace lopt {

uint32_t Crc32(const void* data, size_t size, uint32_t crc) {
  const auto* p = static_cast<const Bytef*>(data);
  uLong c = crc;
  while (size > 0) {  // zlib takes uInt lengths
    uInt n = static_cast<uInt>(std::min<size_t>(size, 1u << 30));
    c = crc32(c, p, n);
    p += n;
    size -= n;
  }
  return static_cast<uint32_t>(c);
}

uint32_t Crc32Combine(uint32_t crc_a, uint32_t crc_b, int64_t size_b) {
  return static_cast<uint32_t>(crc32_combine(crc_a, crc_b, static_cast<z_off_t>(size_b)));
}

std::vector<v1::Chunk> MakeChunks(const std::string& payload, int64_t chunk_bytes) {
  std::vector<v1::Chunk> chunks;
  for (int64_t off = 0; off < static_cast<int64_t>(payload.size()); off += chunk_bytes) {
    int64_t n = std::min<int64_t>(chunk_bytes, payload.size() - off);
    v1::Chunk c;
    c.set_offset(off);
    c.set_data(payload.data() + off, n);
    c.set_crc32(Crc32(payload.data() + off, n));
    chunks.push_back(std::move(c));
  }
  return chunks;
}

absl::StatusOr<ChunkAssembler> ChunkAssembler::Create(int64_t expected_bytes,
                                                      uint32_t expected_crc32,
                                                      int64_t max_bytes) {
  if (expected_bytes < 0)
    return absl::InvalidArgumentError("payload size must be >= 0");
  if (expected_bytes > max_bytes)
    return absl::InvalidArgumentError(absl::StrCat("payload of ", expected_bytes,
                                                   " bytes exceeds the limit of ", max_bytes));
  ChunkAssembler a(expected_bytes, expected_crc32);
  // Memory follows the bytes that arrive: an announcement alone (up to
  // max_bytes, 1 GiB on the WorkService) reserves at most 64 MiB.
  a.payload_.reserve(std::min<int64_t>(expected_bytes, int64_t{64} << 20));
  return a;
}

absl::Status ChunkAssembler::Add(const v1::Chunk& chunk) {
  if (chunk.offset() != received())
    return absl::InvalidArgumentError(absl::StrCat("chunk at offset ", chunk.offset(),
                                                   " arrived where ", received(),
                                                   " was expected"));
  if (received() + static_cast<int64_t>(chunk.data().size()) > expected_)
    return absl::InvalidArgumentError(absl::StrCat("chunks exceed the announced ", expected_,
                                                   " bytes"));
  if (Crc32(chunk.data().data(), chunk.data().size()) != chunk.crc32())
    return absl::DataLossError(absl::StrCat("chunk at offset ", chunk.offset(),
                                            " fails its checksum"));
  running_crc_ = Crc32Combine(running_crc_, chunk.crc32(), chunk.data().size());
  payload_ += chunk.data();
  return absl::OkStatus();
}

absl::StatusOr<std::string> ChunkAssembler::Finish() {
  if (received() != expected_)
    return absl::InvalidArgumentError(absl::StrCat("stream ended after ", received(), " of ",
                                                   expected_, " bytes"));
  if (running_crc_ != crc_) return absl::DataLossError("payload fails its checksum");
  return std::move(payload_);
}

}  // namespace lopt
