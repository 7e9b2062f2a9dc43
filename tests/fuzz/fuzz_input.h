// The input format of the stream targets (fuzz_chunk_codec,
// fuzz_buffer_put): a flags byte, then messages, each a 2-byte
// little-endian length and that many bytes of a serialized proto. The flags
// ask the harness to repair what random bytes almost never get right (the
// checksums, offsets and announced sizes), so that the search also reaches
// the code behind those checks; with no flags the bytes are taken as sent.
// fuzz_seeds.cc writes seeds in this format.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace lopt::fuzz {

enum Repair : uint8_t {
  kFixChunkCrcs = 1,     // each chunk's crc32 = crc32 of its data
  kFixPayloadCrc = 2,    // the announced whole checksum = crc32 of all chunk data
  kFixPayloadBytes = 4,  // the announced size = the sum of the chunks' sizes
  kFixOffsets = 8,       // each chunk's offset = the bytes before it
};

struct StreamInput {
  uint8_t flags = 0;
  std::vector<std::string> messages;
};

inline StreamInput SplitStream(const uint8_t* data, size_t size) {
  StreamInput in;
  if (size == 0) return in;
  in.flags = data[0];
  size_t i = 1;
  while (i + 2 <= size) {
    size_t n = data[i] | (size_t{data[i + 1]} << 8);
    i += 2;
    n = std::min(n, size - i);
    in.messages.emplace_back(reinterpret_cast<const char*>(data + i), n);
    i += n;
  }
  return in;
}

inline void AppendMessage(std::string* out, const std::string& bytes) {
  out->push_back(static_cast<char>(bytes.size() & 0xff));
  out->push_back(static_cast<char>((bytes.size() >> 8) & 0xff));
  *out += bytes;
}

}  // namespace lopt::fuzz
