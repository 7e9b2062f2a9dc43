// The buffer server's Put (buffer_server/buffer_service.h), called
// in-process with a stream of decoded PutRequests on a real RocksDB store in
// a temporary directory. Input (fuzz_input.h): each message a serialized
// v1::PutRequest, in stream order; the flags repair chunk checksums,
// offsets and the header's payload size and checksum.
//
// Checks: a refused put answers INVALID_ARGUMENT, DATA_LOSS,
// RESOURCE_EXHAUSTED (never INTERNAL or UNKNOWN) and stores nothing (the
// store's totals do not move); an acknowledged one reads back with exactly
// the bytes its chunks carried and the announced checksum, and is then
// deleted so that the store stays small.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "buffer_server/buffer_service.h"
#include "buffer_server/rocks_store.h"
#include "common/rpc/chunk_codec.h"
#include "common/util/log.h"
#include "common/util/remove_tree.h"
#include "tests/fuzz/fuzz_common.h"
#include "tests/fuzz/fuzz_input.h"

using namespace lopt::fuzz;

namespace {

class Reader : public grpc::ServerReaderInterface<lopt::v1::PutRequest> {
 public:
  explicit Reader(std::vector<lopt::v1::PutRequest> msgs) : msgs_(std::move(msgs)) {}
  void SendInitialMetadata() override {}
  bool NextMessageSize(uint32_t* sz) override {
    if (next_ >= msgs_.size()) return false;
    *sz = static_cast<uint32_t>(msgs_[next_].ByteSizeLong());
    return true;
  }
  bool Read(lopt::v1::PutRequest* msg) override {
    if (next_ >= msgs_.size()) return false;
    *msg = msgs_[next_++];
    return true;
  }

 private:
  std::vector<lopt::v1::PutRequest> msgs_;
  size_t next_ = 0;
};

std::string g_dir;

struct Server {
  std::unique_ptr<lopt::RocksReplayStore> store;
  std::unique_ptr<lopt::BufferServiceImpl> service;
};

Server& TheServer() {
  static Server* s = [] {
    lopt::SetLogLevel(lopt::LogLevel::kError);
    std::string tmpl = (std::filesystem::temp_directory_path() / "lopt_fuzz_put_XXXXXX").string();
    g_dir = mkdtemp(tmpl.data());
    std::atexit([] {
      lopt::RemoveTree(g_dir).IgnoreError();
    });
    auto* s = new Server;
    auto store = lopt::RocksReplayStore::Open(g_dir + "/db", /*sync_writes=*/false);
    FUZZ_CHECK(store.ok(), "%s", store.status().ToString().c_str());
    s->store = std::move(*store);
    lopt::BufferServiceOptions o;
    o.max_item_bytes = int64_t{1} << 20;
    s->service = std::make_unique<lopt::BufferServiceImpl>(s->store.get(), o);
    return s;
  }();
  return *s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Server& server = TheServer();
  StreamInput in = SplitStream(data, size);
  std::vector<lopt::v1::PutRequest> msgs;
  std::string all;
  lopt::v1::ItemHeader* header = nullptr;
  for (const std::string& m : in.messages) {
    lopt::v1::PutRequest r;
    if (!r.ParseFromString(m)) continue;
    msgs.push_back(std::move(r));
  }
  for (auto& r : msgs) {
    if (r.has_header() && header == nullptr) header = r.mutable_header();
    if (!r.has_chunk()) continue;
    lopt::v1::Chunk* c = r.mutable_chunk();
    if (in.flags & kFixOffsets) c->set_offset(static_cast<int64_t>(all.size()));
    if (in.flags & kFixChunkCrcs) c->set_crc32(lopt::Crc32(c->data().data(), c->data().size()));
    all += c->data();
  }
  if (header != nullptr) {
    if (in.flags & kFixPayloadBytes) header->set_payload_bytes(static_cast<int64_t>(all.size()));
    if (in.flags & kFixPayloadCrc) header->set_payload_crc32(lopt::Crc32(all.data(), all.size()));
  }
  const lopt::v1::ItemHeader sent = header ? *header : lopt::v1::ItemHeader();

  const lopt::StoreTotals before = server.store->Totals();
  grpc::ServerContext context;
  Reader reader(std::move(msgs));
  lopt::v1::PutResponse response;
  grpc::Status s = server.service->DoPut(&context, &reader, &response);
  const lopt::StoreTotals after = server.store->Totals();
  if (!s.ok()) {
    const grpc::StatusCode c = s.error_code();
    FUZZ_CHECK(c == grpc::StatusCode::INVALID_ARGUMENT || c == grpc::StatusCode::DATA_LOSS ||
                   c == grpc::StatusCode::RESOURCE_EXHAUSTED,
               "code %d: %s", static_cast<int>(c), s.error_message().c_str());
    FUZZ_CHECK(!s.error_message().empty());
    FUZZ_CHECK(before.items == after.items && before.bytes == after.bytes &&
                   before.tables == after.tables,
               "a refused put changed the store");
    return 0;
  }
  // Acknowledged: it is there, whole, with what the chunks carried.
  FUZZ_CHECK(after.items == before.items + 1 - response.evicted());
  auto got = server.store->Get(sent.table(), response.key());
  FUZZ_CHECK(got.ok(), "acknowledged key %llu: %s",
             static_cast<unsigned long long>(response.key()), got.status().ToString().c_str());
  FUZZ_CHECK(got->payload == all, "stored payload differs from the chunks' bytes");
  FUZZ_CHECK(got->header.payload_crc32() == lopt::Crc32(all.data(), all.size()));
  FUZZ_CHECK(got->header.payload_bytes() == static_cast<int64_t>(all.size()));
  FUZZ_CHECK(got->header.tensors_size() == sent.tensors_size());
  auto del = server.store->DeleteTable(sent.table());
  FUZZ_CHECK(del.ok() && del->tables_deleted == 1, "%s", del.status().ToString().c_str());
  FUZZ_CHECK(server.store->Size(sent.table()) == 0);
  return 0;
}
