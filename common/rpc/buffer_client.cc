#include "common/rpc/buffer_client.h"

#include <algorithm>
#include <limits>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/rpc/chunk_codec.h"

namespace lopt {

RemoteReplayBuffer::RemoteReplayBuffer(ClientConfig config, RemoteReplayBufferOptions options)
    : config_(std::move(config)),
      options_(options),
      channel_(MakeChannel(config_)),
      stub_(v1::BufferService::NewStub(channel_)) {}

bool RemoteReplayBuffer::WaitForConnected(int64_t timeout_ms) {
  return lopt::WaitForConnected(channel_.get(), timeout_ms);
}

template <typename Fn>
absl::Status RemoteReplayBuffer::WithRetries(Fn&& attempt) {
  int64_t backoff_ms = options_.initial_backoff_ms;
  for (int i = 1;; ++i) {
    absl::Status s = attempt();
    if (!absl::IsUnavailable(s) || i >= std::max(1, options_.max_attempts)) return s;
    std::this_thread::sleep_for(std::chrono::milliseconds(backoff_ms));
    backoff_ms = std::min(options_.max_backoff_ms, backoff_ms * 2);
  }
}

int64_t RemoteReplayBuffer::TimeoutForBytes(int64_t bytes) const {
  return config_.timeout_ms + bytes * 1000 / std::max<int64_t>(1, options_.min_bytes_per_second);
}

absl::StatusOr<v1::PutResponse> RemoteReplayBuffer::PutEncoded(const std::string& table,
                                                               int64_t capacity,
                                                               const EncodedItem& item) {
  const std::string& payload = item.payload;
  const int64_t size = static_cast<int64_t>(payload.size());
  v1::PutResponse response;
  absl::Status s = WithRetries([&]() -> absl::Status {
    auto context = MakeContext(config_, TimeoutForBytes(size));
    response.Clear();
    auto writer = stub_->Put(context.get(), &response);
    v1::PutRequest req;
    v1::ItemHeader* h = req.mutable_header();
    h->set_table(table);
    h->set_capacity(capacity);
    for (const auto& t : item.tensors) *h->add_tensors() = t;
    h->set_payload_bytes(size);
    h->set_payload_crc32(item.payload_crc32);
    bool ok = writer->Write(req);
    for (int64_t off = 0; ok && off < size; off += kChunkBytes) {
      const int64_t n = std::min<int64_t>(kChunkBytes, size - off);
      v1::Chunk* c = req.mutable_chunk();
      c->set_offset(off);
      c->set_data(payload.data() + off, n);
      c->set_crc32(Crc32(payload.data() + off, n));
      ok = writer->Write(req);
    }
    // Half-closing commits the item; a broken stream's status says why.
    if (ok) writer->WritesDone();
    return FromGrpcStatus(writer->Finish());
  });
  if (!s.ok()) return s;
  return response;
}

absl::StatusOr<RemoteItem> RemoteReplayBuffer::ReadItem(const StartRead& start) {
  RemoteItem item;
  absl::Status s = WithRetries([&]() -> absl::Status {
    auto context = MakeContext(config_, options_.read_timeout_ms);
    auto reader = start(context.get());
    v1::ItemChunk msg;
    absl::Status bad;
    if (!reader->Read(&msg)) {
      absl::Status st = FromGrpcStatus(reader->Finish());
      return st.ok() ? absl::DataLossError("the server ended the stream without an item") : st;
    }
    if (!msg.has_header()) {
      bad = absl::DataLossError("the server's stream did not start with the item's header");
    } else {
      item.header = std::move(*msg.mutable_header());
      auto assembler = ChunkAssembler::Create(item.header.payload_bytes(),
                                              item.header.payload_crc32(),
                                              std::numeric_limits<int64_t>::max());
      if (!assembler.ok()) {
        bad = assembler.status();
      } else {
        while (bad.ok() && reader->Read(&msg)) {
          if (!msg.has_chunk())
            bad = absl::DataLossError("the server sent a second header inside an item");
          else
            bad = assembler->Add(msg.chunk());
        }
        if (bad.ok()) {
          absl::Status st = FromGrpcStatus(reader->Finish());
          if (!st.ok()) return st;
          auto payload = assembler->Finish();
          if (!payload.ok()) return payload.status();
          item.payload = std::move(*payload);
          return absl::OkStatus();
        }
      }
    }
    context->TryCancel();
    reader->Finish().ok();
    // A reply this client cannot trust is data loss on the way, not bad input.
    if (absl::IsInvalidArgument(bad)) return absl::DataLossError(bad.message());
    return bad;
  });
  if (!s.ok()) return s;
  return item;
}

absl::StatusOr<RemoteItem> RemoteReplayBuffer::SampleEncoded(const std::string& table, double u) {
  v1::SampleRequest req;
  req.set_table(table);
  req.set_u(u);
  return ReadItem([&](grpc::ClientContext* c) { return stub_->Sample(c, req); });
}

absl::StatusOr<RemoteItem> RemoteReplayBuffer::GetEncoded(const std::string& table,
                                                          uint64_t key) {
  v1::GetRequest req;
  req.set_table(table);
  req.set_key(key);
  return ReadItem([&](grpc::ClientContext* c) { return stub_->Get(c, req); });
}

absl::StatusOr<std::vector<uint64_t>> RemoteReplayBuffer::ListKeys(const std::string& table) {
  v1::ListItemsRequest req;
  req.set_table(table);
  v1::ListItemsResponse resp;
  absl::Status s = WithRetries([&] {
    resp.Clear();
    return FromGrpcStatus(stub_->ListItems(MakeContext(config_).get(), req, &resp));
  });
  if (!s.ok()) return s;
  return std::vector<uint64_t>(resp.keys().begin(), resp.keys().end());
}

absl::StatusOr<v1::DeleteTablesResponse> RemoteReplayBuffer::DeleteTables(
    const std::string& prefix) {
  return DeleteTablesCall(prefix, /*close=*/false);
}

absl::StatusOr<v1::DeleteTablesResponse> RemoteReplayBuffer::CloseTables(
    const std::string& prefix) {
  return DeleteTablesCall(prefix, /*close=*/true);
}

absl::StatusOr<v1::DeleteTablesResponse> RemoteReplayBuffer::DeleteTablesCall(
    const std::string& prefix, bool close) {
  v1::DeleteTablesRequest req;
  req.set_prefix(prefix);
  v1::DeleteTablesResponse resp;
  absl::Status s = WithRetries([&] {
    resp.Clear();
    auto ctx = MakeContext(config_);
    if (close) ctx->AddMetadata(kClosePrefixMetadata, "1");
    return FromGrpcStatus(stub_->DeleteTables(ctx.get(), req, &resp));
  });
  if (!s.ok()) return s;
  return resp;
}

absl::StatusOr<v1::StatsResponse> RemoteReplayBuffer::Stats(const std::string& prefix) {
  v1::StatsRequest req;
  req.set_prefix(prefix);
  v1::StatsResponse resp;
  absl::Status s = WithRetries([&] {
    resp.Clear();
    return FromGrpcStatus(stub_->Stats(MakeContext(config_).get(), req, &resp));
  });
  if (!s.ok()) return s;
  return resp;
}

absl::Status RemoteReplayBuffer::Put(const std::string& table, int64_t capacity,
                                     NamedTensors item) {
  return PutEncoded(table, capacity, EncodeItem(item)).status();
}

absl::StatusOr<NamedTensors> RemoteReplayBuffer::Sample(const std::string& table, double u) {
  auto item = SampleEncoded(table, u);
  if (!item.ok()) return item.status();
  return DecodeItem({item->header.tensors().begin(), item->header.tensors().end()},
                    item->payload);
}

absl::StatusOr<int64_t> RemoteReplayBuffer::Size(const std::string& table) {
  auto stats = Stats(table);
  if (!stats.ok()) return stats.status();
  for (const auto& t : stats->tables())
    if (t.name() == table) return t.items();
  return 0;
}

absl::StatusOr<std::vector<NamedTensors>> RemoteReplayBuffer::Items(const std::string& table) {
  auto keys = ListKeys(table);
  if (!keys.ok()) return keys.status();
  std::vector<NamedTensors> out;
  for (uint64_t key : *keys) {
    auto item = GetEncoded(table, key);
    if (absl::IsNotFound(item.status())) continue;  // evicted meanwhile
    if (!item.ok()) return item.status();
    auto decoded = DecodeItem({item->header.tensors().begin(), item->header.tensors().end()},
                              item->payload);
    if (!decoded.ok()) return decoded.status();
    out.push_back(std::move(*decoded));
  }
  return out;
}

absl::Status RemoteReplayBuffer::DeleteTable(const std::string& table) {
  v1::DeleteTablesRequest req;
  req.set_table(table);
  v1::DeleteTablesResponse resp;
  return WithRetries([&] {
    return FromGrpcStatus(stub_->DeleteTables(MakeContext(config_).get(), req, &resp));
  });
}

}  // namespace lopt
