#include "buffer_server/buffer_service.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/rpc/buffer_protocol.h"
#include "common/rpc/chunk_codec.h"
#include "common/rpc/metrics.h"
#include "common/rpc/rpc.h"
#include "common/util/log.h"

namespace lopt {
namespace {

constexpr char kService[] = "lopt.v1.BufferService";

// Label values of lopt_buffer_rejected_total: a fixed set.
// "closed": a put under a prefix closed when its job ended (CloseTables).
constexpr const char* kRejectReasons[] = {"unauthenticated", "invalid_argument", "truncated",
                                          "data_loss",       "too_large",        "cancelled",
                                          "closed"};

struct Metrics {
  prometheus::Gauge& bytes;
  prometheus::Gauge& items;
  prometheus::Gauge& tables;
  prometheus::Counter& puts;
  prometheus::Counter& put_bytes;
  prometheus::Counter& samples;
  prometheus::Family<prometheus::Counter>& rejected;
};

Metrics& M() {
  static Metrics* m = [] {
    auto* m = new Metrics{
        GaugeFamily("lopt_buffer_bytes", "Payload bytes stored in all tables").Add({}),
        GaugeFamily("lopt_buffer_items", "Items stored in all tables").Add({}),
        GaugeFamily("lopt_buffer_tables", "Tables in the buffer").Add({}),
        CounterFamily("lopt_buffer_puts_total", "Items stored by Put").Add({}),
        CounterFamily("lopt_buffer_put_bytes_total", "Payload bytes stored by Put").Add({}),
        CounterFamily("lopt_buffer_samples_total", "Items sent by Sample").Add({}),
        CounterFamily("lopt_buffer_rejected_total",
                      "Calls refused for bad input or credentials, by reason")};
    for (const char* r : kRejectReasons) m->rejected.Add({{"reason", r}});
    return m;
  }();
  return *m;
}

grpc::Status Status(grpc::StatusCode code, std::string msg) {
  return grpc::Status(code, std::move(msg));
}

// The reject reason of a status from the chunk assembler or the store.
const char* ReasonOf(const grpc::Status& s) {
  switch (s.error_code()) {
    case grpc::StatusCode::DATA_LOSS: return "data_loss";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "too_large";
    case grpc::StatusCode::CANCELLED: return "cancelled";
    case grpc::StatusCode::UNAUTHENTICATED: return "unauthenticated";
    default: return "invalid_argument";
  }
}

}  // namespace

BufferServiceImpl::BufferServiceImpl(RocksReplayStore* store, BufferServiceOptions options)
    : store_(store), options_(std::move(options)) {
  UpdateGauges();
}

void BufferServiceImpl::UpdateGauges() {
  StoreTotals t = store_->Totals();
  M().bytes.Set(static_cast<double>(t.bytes));
  M().items.Set(static_cast<double>(t.items));
  M().tables.Set(static_cast<double>(t.tables));
}

grpc::Status BufferServiceImpl::Reject(const std::string& method, const char* reason,
                                       grpc::Status status) {
  M().rejected.Add({{"reason", reason}}).Increment();
  LogWarning("request rejected", {{"method", method},
                                  {"reason", reason},
                                  {"code", std::to_string(static_cast<int>(status.error_code()))},
                                  {"error", status.error_message()}});
  return status;
}

grpc::Status BufferServiceImpl::Put(grpc::ServerContext* context,
                                    grpc::ServerReader<v1::PutRequest>* reader,
                                    v1::PutResponse* response) {
  RpcTimer timer(kService, "Put");
  return timer.Done(DoPut(context, reader, response));
}

grpc::Status BufferServiceImpl::DoPut(grpc::ServerContext* context,
                                      grpc::ServerReaderInterface<v1::PutRequest>* reader,
                                      v1::PutResponse* response) {
  if (auto s = CheckAuth(*context, options_.auth_token); !s.ok())
    return Reject("Put", "unauthenticated", s);
  v1::PutRequest req;
  if (!reader->Read(&req)) {
    if (context->IsCancelled())
      return Reject("Put", "cancelled", Status(grpc::StatusCode::CANCELLED, "put cancelled"));
    return Reject("Put", "truncated",
                  Status(grpc::StatusCode::INVALID_ARGUMENT,
                         "empty put stream: the first message must be the header"));
  }
  if (!req.has_header())
    return Reject("Put", "invalid_argument",
                  Status(grpc::StatusCode::INVALID_ARGUMENT,
                         "header missing: the first message of a put must be the header"));
  const v1::ItemHeader header = std::move(*req.mutable_header());
  if (auto s = CheckItemHeader(header); !s.ok())
    return Reject("Put", "invalid_argument", ToGrpcStatus(s));
  // A finished job's late put is refused before its payload is read.
  if (std::string closed = store_->ClosedPrefixOf(header.table()); !closed.empty())
    return Reject("Put", "closed",
                  Status(grpc::StatusCode::FAILED_PRECONDITION,
                         absl::StrCat("table '", header.table(), "' is under '", closed,
                                      "', whose tables were deleted when its job ended: a late "
                                      "put cannot create them again")));
  if (header.payload_bytes() > options_.max_item_bytes)
    return Reject("Put", "too_large",
                  Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                         absl::StrCat("item of ", header.payload_bytes(),
                                      " bytes exceeds this server's --max-item-bytes of ",
                                      options_.max_item_bytes)));
  auto assembler = ChunkAssembler::Create(header.payload_bytes(), header.payload_crc32(),
                                          options_.max_item_bytes);
  if (!assembler.ok()) return Reject("Put", "invalid_argument", ToGrpcStatus(assembler.status()));
  while (reader->Read(&req)) {
    if (!req.has_chunk())
      return Reject("Put", "invalid_argument",
                    Status(grpc::StatusCode::INVALID_ARGUMENT,
                           absl::StrCat("a second header after ", assembler->received(),
                                        " payload bytes: a put carries one item")));
    if (auto s = assembler->Add(req.chunk()); !s.ok()) {
      grpc::Status g = ToGrpcStatus(s);
      return Reject("Put", ReasonOf(g), g);
    }
  }
  // The client's half-close commits the item; a stream that broke off (the
  // client died or cancelled) stores nothing, even if every byte arrived.
  if (context->IsCancelled())
    return Reject("Put", "cancelled",
                  Status(grpc::StatusCode::CANCELLED, "put cancelled before it was committed"));
  auto payload = assembler->Finish();
  if (!payload.ok()) {
    grpc::Status g = ToGrpcStatus(payload.status());
    return Reject("Put", g.error_code() == grpc::StatusCode::DATA_LOSS ? "data_loss" : "truncated",
                  g);
  }
  auto put = store_->Put(header, *payload);
  if (!put.ok()) {
    if (absl::IsInvalidArgument(put.status()))
      return Reject("Put", "invalid_argument", ToGrpcStatus(put.status()));
    if (absl::IsFailedPrecondition(put.status()))  // closed while its payload came in
      return Reject("Put", "closed", ToGrpcStatus(put.status()));
    LogError("put failed", {{"table", header.table()}, {"error", put.status().ToString()}});
    return ToGrpcStatus(put.status());
  }
  response->set_key(put->key);
  response->set_table_size(put->table_size);
  response->set_evicted(put->evicted);
  M().puts.Increment();
  M().put_bytes.Increment(static_cast<double>(header.payload_bytes()));
  UpdateGauges();
  return grpc::Status::OK;
}

grpc::Status BufferServiceImpl::SendItem(const StoredItem& item,
                                         grpc::ServerWriter<v1::ItemChunk>* writer) {
  const std::string& payload = item.payload;
  const int64_t size = static_cast<int64_t>(payload.size());
  // Hash each chunk once: its own checksum for the wire, combined into the
  // payload's, which must match the one stored with it.
  std::vector<uint32_t> crcs;
  uint32_t whole = 0;
  for (int64_t off = 0; off < size; off += kChunkBytes) {
    int64_t n = std::min<int64_t>(kChunkBytes, size - off);
    crcs.push_back(Crc32(payload.data() + off, n));
    whole = Crc32Combine(whole, crcs.back(), n);
  }
  if (whole != item.header.payload_crc32()) {
    LogError("stored item fails its checksum",
             {{"table", item.header.table()}, {"key", std::to_string(item.header.key())}});
    return Status(grpc::StatusCode::DATA_LOSS,
                  absl::StrCat("item ", item.header.key(), " of table '", item.header.table(),
                               "' fails its checksum on the server's disk"));
  }
  v1::ItemChunk msg;
  *msg.mutable_header() = item.header;
  if (!writer->Write(msg)) return Status(grpc::StatusCode::CANCELLED, "client went away");
  for (size_t i = 0; i < crcs.size(); ++i) {
    int64_t off = static_cast<int64_t>(i) * kChunkBytes;
    int64_t n = std::min<int64_t>(kChunkBytes, size - off);
    v1::Chunk* c = msg.mutable_chunk();
    c->set_offset(off);
    c->set_data(payload.data() + off, n);
    c->set_crc32(crcs[i]);
    if (!writer->Write(msg)) return Status(grpc::StatusCode::CANCELLED, "client went away");
  }
  return grpc::Status::OK;
}

grpc::Status BufferServiceImpl::Sample(grpc::ServerContext* context,
                                       const v1::SampleRequest* request,
                                       grpc::ServerWriter<v1::ItemChunk>* writer) {
  RpcTimer timer(kService, "Sample");
  if (auto s = CheckAuth(*context, options_.auth_token); !s.ok())
    return timer.Done(Reject("Sample", "unauthenticated", s));
  if (auto s = CheckTableName(request->table(), "table"); !s.ok())
    return timer.Done(Reject("Sample", "invalid_argument", ToGrpcStatus(s)));
  auto item = store_->Sample(request->table(), request->u());
  if (!item.ok()) {
    grpc::Status g = ToGrpcStatus(item.status());
    if (absl::IsInvalidArgument(item.status())) g = Reject("Sample", "invalid_argument", g);
    return timer.Done(g);
  }
  grpc::Status s = SendItem(*item, writer);
  if (s.ok()) M().samples.Increment();
  return timer.Done(s);
}

grpc::Status BufferServiceImpl::Get(grpc::ServerContext* context, const v1::GetRequest* request,
                                    grpc::ServerWriter<v1::ItemChunk>* writer) {
  RpcTimer timer(kService, "Get");
  if (auto s = CheckAuth(*context, options_.auth_token); !s.ok())
    return timer.Done(Reject("Get", "unauthenticated", s));
  if (auto s = CheckTableName(request->table(), "table"); !s.ok())
    return timer.Done(Reject("Get", "invalid_argument", ToGrpcStatus(s)));
  auto item = store_->Get(request->table(), request->key());
  if (!item.ok()) return timer.Done(ToGrpcStatus(item.status()));
  return timer.Done(SendItem(*item, writer));
}

grpc::Status BufferServiceImpl::ListItems(grpc::ServerContext* context,
                                          const v1::ListItemsRequest* request,
                                          v1::ListItemsResponse* response) {
  RpcTimer timer(kService, "ListItems");
  if (auto s = CheckAuth(*context, options_.auth_token); !s.ok())
    return timer.Done(Reject("ListItems", "unauthenticated", s));
  if (auto s = CheckTableName(request->table(), "table"); !s.ok())
    return timer.Done(Reject("ListItems", "invalid_argument", ToGrpcStatus(s)));
  for (uint64_t k : store_->Keys(request->table())) response->add_keys(k);
  return timer.Done(grpc::Status::OK);
}

grpc::Status BufferServiceImpl::DeleteTables(grpc::ServerContext* context,
                                             const v1::DeleteTablesRequest* request,
                                             v1::DeleteTablesResponse* response) {
  RpcTimer timer(kService, "DeleteTables");
  if (auto s = CheckAuth(*context, options_.auth_token); !s.ok())
    return timer.Done(Reject("DeleteTables", "unauthenticated", s));
  const std::string& prefix = request->prefix();
  const std::string& table = request->table();
  if (!prefix.empty() && !table.empty())
    return timer.Done(Reject("DeleteTables", "invalid_argument",
                             Status(grpc::StatusCode::INVALID_ARGUMENT,
                                    "set prefix or table, not both")));
  if (prefix.empty() && table.empty())
    return timer.Done(Reject(
        "DeleteTables", "invalid_argument",
        Status(grpc::StatusCode::INVALID_ARGUMENT,
               "prefix must not be empty: an empty prefix would delete every table")));
  // The learner closes a finished job's prefix (kClosePrefixMetadata): its
  // workers' late puts must not create the tables again.
  bool close = false;
  for (auto [k, v] : context->client_metadata())
    if (k == kClosePrefixMetadata) close = v == "1";
  if (close && prefix.empty())
    return timer.Done(Reject("DeleteTables", "invalid_argument",
                             Status(grpc::StatusCode::INVALID_ARGUMENT,
                                    absl::StrCat(kClosePrefixMetadata,
                                                 " closes a prefix: set prefix, not table"))));
  auto result = table.empty() ? (close ? store_->CloseTables(prefix) : store_->DeleteTables(prefix))
                              : store_->DeleteTable(table);
  if (!result.ok()) {
    grpc::Status g = ToGrpcStatus(result.status());
    if (absl::IsInvalidArgument(result.status())) g = Reject("DeleteTables", "invalid_argument", g);
    return timer.Done(g);
  }
  response->set_tables_deleted(result->tables_deleted);
  response->set_items_deleted(result->items_deleted);
  UpdateGauges();
  LogInfo(close ? "tables deleted and their prefix closed" : "tables deleted",
          {{table.empty() ? "prefix" : "table", table.empty() ? prefix : table},
                             {"tables", std::to_string(result->tables_deleted)},
                             {"items", std::to_string(result->items_deleted)}});
  return timer.Done(grpc::Status::OK);
}

grpc::Status BufferServiceImpl::Stats(grpc::ServerContext* context,
                                      const v1::StatsRequest* request,
                                      v1::StatsResponse* response) {
  RpcTimer timer(kService, "Stats");
  if (auto s = CheckAuth(*context, options_.auth_token); !s.ok())
    return timer.Done(Reject("Stats", "unauthenticated", s));
  for (auto& t : store_->Stats(request->prefix())) {
    response->set_total_items(response->total_items() + t.items());
    response->set_total_bytes(response->total_bytes() + t.bytes());
    *response->add_tables() = std::move(t);
  }
  return timer.Done(grpc::Status::OK);
}

}  // namespace lopt
