// The lopt.v1.BufferService over a RocksReplayStore (buffer_service.proto
// says what each method does). Every method checks the bearer token first,
// validates its request at the door and answers bad input with
// INVALID_ARGUMENT, DATA_LOSS, RESOURCE_EXHAUSTED or NOT_FOUND, never
// INTERNAL; nothing of a rejected Put is stored. Payloads pass through
// undecoded: the service checks their chunks' and whole checksums only.
#pragma once

#include <cstdint>
#include <string>

#include <grpcpp/grpcpp.h>

#include "buffer_server/rocks_store.h"
#include "lopt/v1/buffer_service.grpc.pb.h"

namespace lopt {

struct BufferServiceOptions {
  // Required of every call as "authorization: Bearer <token>"; empty: none.
  std::string auth_token;
  // A Put announcing a larger payload is refused (RESOURCE_EXHAUSTED) before
  // any of it is received. Default 1 GiB.
  int64_t max_item_bytes = int64_t{1} << 30;
};

class BufferServiceImpl final : public v1::BufferService::Service {
 public:
  // REQUIRES: store outlives the service.
  BufferServiceImpl(RocksReplayStore* store, BufferServiceOptions options);

  grpc::Status Put(grpc::ServerContext* context, grpc::ServerReader<v1::PutRequest>* reader,
                   v1::PutResponse* response) override;
  grpc::Status Sample(grpc::ServerContext* context, const v1::SampleRequest* request,
                      grpc::ServerWriter<v1::ItemChunk>* writer) override;
  grpc::Status Get(grpc::ServerContext* context, const v1::GetRequest* request,
                   grpc::ServerWriter<v1::ItemChunk>* writer) override;
  grpc::Status ListItems(grpc::ServerContext* context, const v1::ListItemsRequest* request,
                         v1::ListItemsResponse* response) override;
  grpc::Status DeleteTables(grpc::ServerContext* context, const v1::DeleteTablesRequest* request,
                            v1::DeleteTablesResponse* response) override;
  grpc::Status Stats(grpc::ServerContext* context, const v1::StatsRequest* request,
                     v1::StatsResponse* response) override;

  // Put's work on any stream of requests: the fuzz target
  // (tests/fuzz/fuzz_buffer_put.cc) feeds it decoded messages in-process.
  grpc::Status DoPut(grpc::ServerContext* context,
                     grpc::ServerReaderInterface<v1::PutRequest>* reader,
                     v1::PutResponse* response);

 private:
  // Streams `item`'s header then its chunks, after checking the payload
  // against its checksum (DATA_LOSS, nothing sent, if it fails).
  grpc::Status SendItem(const StoredItem& item, grpc::ServerWriter<v1::ItemChunk>* writer);
  // Counts and logs a rejected call; returns `status`.
  grpc::Status Reject(const std::string& method, const char* reason, grpc::Status status);
  void UpdateGauges();

  RocksReplayStore* const store_;
  const BufferServiceOptions options_;
};

}  // namespace lopt
