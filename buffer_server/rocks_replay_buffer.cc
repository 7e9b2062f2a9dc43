#include "buffer_server/rocks_replay_buffer.h"

#include "absl/strings/str_cat.h"
#include "common/rpc/tensor_codec.h"

namespace lopt {
namespace {

absl::StatusOr<NamedTensors> Decode(const StoredItem& item) {
  if (Crc32(item.payload.data(), item.payload.size()) != item.header.payload_crc32())
    return absl::DataLossError(absl::StrCat("item ", item.header.key(), " of table '",
                                            item.header.table(), "' fails its checksum"));
  return DecodeItem({item.header.tensors().begin(), item.header.tensors().end()}, item.payload);
}

}  // namespace

absl::StatusOr<std::unique_ptr<RocksReplayBuffer>> RocksReplayBuffer::Open(
    const std::string& path, bool sync_writes) {
  auto store = RocksReplayStore::Open(path, sync_writes);
  if (!store.ok()) return store.status();
  return std::make_unique<RocksReplayBuffer>(std::shared_ptr<RocksReplayStore>(std::move(*store)));
}

RocksReplayBuffer::RocksReplayBuffer(std::shared_ptr<RocksReplayStore> store)
    : store_(std::move(store)) {}

absl::Status RocksReplayBuffer::Put(const std::string& table, int64_t capacity,
                                    NamedTensors item) {
  EncodedItem enc = EncodeItem(item);
  v1::ItemHeader h;
  h.set_table(table);
  h.set_capacity(capacity);
  for (auto& t : enc.tensors) *h.add_tensors() = std::move(t);
  h.set_payload_bytes(static_cast<int64_t>(enc.payload.size()));
  h.set_payload_crc32(enc.payload_crc32);
  return store_->Put(h, enc.payload).status();
}

absl::StatusOr<NamedTensors> RocksReplayBuffer::Sample(const std::string& table, double u) {
  auto item = store_->Sample(table, u);
  if (!item.ok()) return item.status();
  return Decode(*item);
}

absl::StatusOr<int64_t> RocksReplayBuffer::Size(const std::string& table) {
  return store_->Size(table);
}

absl::StatusOr<std::vector<NamedTensors>> RocksReplayBuffer::Items(const std::string& table) {
  std::vector<NamedTensors> out;
  for (uint64_t key : store_->Keys(table)) {
    auto item = store_->Get(table, key);
    if (absl::IsNotFound(item.status())) continue;  // evicted meanwhile
    if (!item.ok()) return item.status();
    auto decoded = Decode(*item);
    if (!decoded.ok()) return decoded.status();
    out.push_back(std::move(*decoded));
  }
  return out;
}

absl::Status RocksReplayBuffer::DeleteTable(const std::string& table) {
  return store_->DeleteTable(table).status();
}

}  // namespace lopt
