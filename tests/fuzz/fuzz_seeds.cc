// Writes the generated seeds of the stream targets (fuzz_input.h format)
// into corpus/<target>/: valid put streams, chunked payloads and encoded
// tensors, each as a peer sends them, plus a few with one thing wrong.
//
//   build/fuzz/fuzz_seeds tests/fuzz/corpus
//
// The job and .lopt corpora are copies of files in the tree (run.sh).
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "common/rpc/chunk_codec.h"
#include "lopt/v1/buffer_service.pb.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

using lopt::fuzz::AppendMessage;

void Write(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
  std::printf("%s (%zu bytes)\n", path.c_str(), bytes.size());
}

std::string Payload(size_t n, unsigned seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + seed * 7) & 0xff);
  return s;
}

lopt::v1::TensorHeader Header(const std::string& name, lopt::v1::DType dtype,
                              std::vector<int64_t> shape, int64_t elem) {
  lopt::v1::TensorHeader h;
  h.set_name(name);
  h.set_dtype(dtype);
  int64_t n = 1;
  for (int64_t d : shape) {
    h.add_shape(d);
    n *= d;
  }
  h.set_num_bytes(n * elem);
  return h;
}

// One item: its tensors' headers and the payload they describe.
struct Item {
  std::vector<lopt::v1::TensorHeader> tensors;
  std::string payload;
};

std::vector<Item> Items() {
  std::vector<Item> items;
  items.push_back({{Header("state", lopt::v1::UINT8, {300}, 1)}, Payload(300, 1)});
  items.push_back({{Header("params/w", lopt::v1::FLOAT32, {4, 3}, 4),
                    Header("params/b", lopt::v1::FLOAT32, {3}, 4),
                    Header("step", lopt::v1::INT64, {}, 8)},
                   Payload(4 * 12 + 4 * 3 + 8, 2)});
  items.push_back({{Header("empty", lopt::v1::FLOAT64, {0, 5}, 8)}, ""});
  items.push_back({{Header("half", lopt::v1::BFLOAT16, {2, 2}, 2),
                    Header("mask", lopt::v1::BOOL, {5}, 1)},
                   Payload(8 + 5, 3)});
  return items;
}

std::string PutStream(const Item& item, const std::string& table, int64_t chunk_bytes,
                      uint8_t flags, int64_t capacity = 8) {
  std::string out(1, static_cast<char>(flags));
  lopt::v1::PutRequest r;
  auto* h = r.mutable_header();
  h->set_table(table);
  h->set_capacity(capacity);
  for (const auto& t : item.tensors) *h->add_tensors() = t;
  h->set_payload_bytes(static_cast<int64_t>(item.payload.size()));
  h->set_payload_crc32(lopt::Crc32(item.payload.data(), item.payload.size()));
  AppendMessage(&out, r.SerializeAsString());
  for (auto& c : lopt::MakeChunks(item.payload, chunk_bytes)) {
    lopt::v1::PutRequest m;
    *m.mutable_chunk() = c;
    AppendMessage(&out, m.SerializeAsString());
  }
  return out;
}

std::string ChunkStream(const std::string& payload, int64_t chunk_bytes, uint8_t flags) {
  std::string out(1, static_cast<char>(flags));
  lopt::v1::ItemHeader h;
  h.set_payload_bytes(static_cast<int64_t>(payload.size()));
  h.set_payload_crc32(lopt::Crc32(payload.data(), payload.size()));
  AppendMessage(&out, h.SerializeAsString());
  for (auto& c : lopt::MakeChunks(payload, chunk_bytes)) AppendMessage(&out, c.SerializeAsString());
  return out;
}

std::string TensorSeed(const lopt::v1::TensorHeader& h, const std::string& data) {
  lopt::v1::TensorProto p;
  p.set_name(h.name());
  p.set_dtype(h.dtype());
  for (int64_t d : h.shape()) p.add_shape(d);
  p.set_data(data);
  p.set_crc32(lopt::Crc32(data.data(), data.size()));
  std::string out(1, '\0');
  AppendMessage(&out, p.SerializeAsString());
  return out;
}

std::string ItemSeed(const Item& item) {
  std::string out(1, '\x10');
  for (const auto& t : item.tensors) AppendMessage(&out, t.SerializeAsString());
  AppendMessage(&out, item.payload);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fuzz_seeds CORPUS_DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  const std::vector<Item> items = Items();
  int n = 0;
  for (const Item& item : items) {
    ++n;
    Write(dir + "/fuzz_buffer_put/gen_item" + std::to_string(n),
          PutStream(item, "seed/states", 64, 0));
    Write(dir + "/fuzz_buffer_put/gen_item" + std::to_string(n) + "_repair",
          PutStream(item, "job-" + std::to_string(n) + "/g0", 1000, 0x0f, 1));
    Write(dir + "/fuzz_tensor_codec/gen_item" + std::to_string(n), ItemSeed(item));
    Write(dir + "/fuzz_tensor_codec/gen_tensor" + std::to_string(n),
          TensorSeed(item.tensors[0], item.payload.substr(0, item.tensors[0].num_bytes())));
  }
  // Puts with one thing wrong: a header announcing more bytes than sent, a
  // second header, no header.
  {
    std::string s = PutStream(items[0], "seed/short", 100, 0);
    Write(dir + "/fuzz_buffer_put/gen_truncated", s.substr(0, s.size() - 50));
    lopt::v1::PutRequest r;
    r.mutable_header()->set_table("seed/two");
    std::string two = PutStream(items[0], "seed/two", 200, 0);
    AppendMessage(&two, r.SerializeAsString());
    Write(dir + "/fuzz_buffer_put/gen_two_headers", two);
  }
  const std::vector<std::pair<size_t, int64_t>> shapes = {{0, 1}, {1, 1}, {100, 7}, {3000, 1024}};
  for (const auto& [bytes, chunk] : shapes) {
    const std::string base = dir + "/fuzz_chunk_codec/gen_" + std::to_string(bytes);
    Write(base, ChunkStream(Payload(bytes, 4), chunk, 0));
    Write(base + "_repair", ChunkStream(Payload(bytes, 5), chunk, 0x0f));
  }
  return 0;
}
