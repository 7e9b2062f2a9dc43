// The BufferService on real gRPC (loopback, port 0) over a real RocksDB:
// round trips through RemoteReplayBuffer, and bad input through a raw stub.
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <random>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "buffer_server/buffer_service.h"
#include "buffer_server/rocks_store.h"
#include "common/rpc/buffer_client.h"
#include "common/rpc/metrics.h"
#include "common/rpc/rpc.h"
#include "common/rpc/tensor_codec.h"
#include "common/util/remove_tree.h"

namespace lopt {
namespace {

using ::testing::HasSubstr;

constexpr char kToken[] = "s3cret-token";
constexpr int64_t kMaxItemBytes = 32 << 20;

class BufferServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "lopt_bufsvc_XXXXXX").string();
    dir_ = mkdtemp(tmpl.data());
    auto store = RocksReplayStore::Open(dir_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    service_ = std::make_unique<BufferServiceImpl>(
        store_.get(), BufferServiceOptions{kToken, kMaxItemBytes});
    grpc::ServerBuilder builder;
    int port = 0;
    ConfigureServer(builder, ServerConfig{"127.0.0.1:0", kToken}, &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_TRUE(server_ && port > 0);
    target_ = "127.0.0.1:" + std::to_string(port);
    client_ = std::make_unique<RemoteReplayBuffer>(ClientConfig{target_, kToken, 10000});
    channel_ = MakeChannel(ClientConfig{target_, "", 10000});
    stub_ = v1::BufferService::NewStub(channel_);
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
    client_.reset();
    service_.reset();
    store_.reset();
    lopt::RemoveTree(dir_).IgnoreError();
  }

  // Sends `messages` on a raw Put stream with `token` ("" for none), then
  // half-closes; returns the call's status.
  grpc::Status RawPut(const std::vector<v1::PutRequest>& messages,
                      const std::string& token = kToken) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
    v1::PutResponse resp;
    auto writer = stub_->Put(&ctx, &resp);
    for (const auto& m : messages)
      if (!writer->Write(m)) break;
    writer->WritesDone();
    return writer->Finish();
  }

  // A well-formed put of `payload` into `table`: header then chunks of 1 MiB.
  static std::vector<v1::PutRequest> PutMessages(const std::string& table,
                                                 const std::string& payload) {
    std::vector<v1::PutRequest> msgs(1);
    v1::ItemHeader* h = msgs[0].mutable_header();
    h->set_table(table);
    h->set_capacity(10);
    v1::TensorHeader* t = h->add_tensors();
    t->set_name("b");
    t->set_dtype(v1::UINT8);
    t->add_shape(static_cast<int64_t>(payload.size()));
    t->set_num_bytes(static_cast<int64_t>(payload.size()));
    h->set_payload_bytes(static_cast<int64_t>(payload.size()));
    h->set_payload_crc32(Crc32(payload.data(), payload.size()));
    for (auto& c : MakeChunks(payload, kChunkBytes)) *msgs.emplace_back().mutable_chunk() = c;
    return msgs;
  }

  static std::string Bytes(size_t n, int seed) {
    std::mt19937 rng(seed);
    std::string s(n, '\0');
    for (auto& c : s) c = static_cast<char>(rng());
    return s;
  }

  int64_t Size(const std::string& table) {
    auto s = client_->Size(table);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *s : -1;
  }

  // The server still takes a good put after a bad one.
  void ExpectStillServes(const std::string& table) {
    int64_t before = Size(table);
    grpc::Status s = RawPut(PutMessages(table, Bytes(100, 7)));
    EXPECT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(Size(table), before + 1);
  }

  static double Rejected(const std::string& reason) {
    for (const auto& family : MetricsRegistry().Collect()) {
      if (family.name != "lopt_buffer_rejected_total") continue;
      for (const auto& m : family.metric)
        for (const auto& l : m.label)
          if (l.name == "reason" && l.value == reason) return m.counter.value;
    }
    return -1;
  }

  std::string dir_;
  std::unique_ptr<RocksReplayStore> store_;
  std::unique_ptr<BufferServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  std::string target_;
  std::unique_ptr<RemoteReplayBuffer> client_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::BufferService::Stub> stub_;
};

void ExpectSame(const NamedTensors& a, const NamedTensors& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].first, b[i].first);
    EXPECT_EQ(a[i].second.scalar_type(), b[i].second.scalar_type()) << a[i].first;
    EXPECT_EQ(a[i].second.sizes(), b[i].second.sizes()) << a[i].first;
    EXPECT_TRUE(torch::equal(a[i].second, b[i].second)) << a[i].first;
  }
}

TEST_F(BufferServiceTest, RoundTripOfManyDtypesAndShapes) {
  torch::manual_seed(3);
  NamedTensors item = {
      {"f32", torch::randn({3, 4})},
      {"f64", torch::randn({2, 1, 3}, torch::kFloat64)},
      {"i64", torch::randint(-1000, 1000, {5}, torch::kInt64)},
      {"i32", torch::randint(-1000, 1000, {2, 2, 2}, torch::kInt32)},
      {"u8", torch::randint(0, 255, {7}, torch::kUInt8)},
      {"bf16", torch::randn({3}).to(torch::kBFloat16)},
      {"f16", torch::randn({4, 1}).to(torch::kFloat16)},
      {"bool", torch::rand({6}) > 0.5},
      {"scalar", torch::tensor(2.5f).reshape({})},
      {"empty", torch::zeros({0, 3})},
      {"conv", torch::randn({8, 3, 4, 4})}};
  ASSERT_TRUE(client_->Put("j/a", 4, item).ok());
  auto back = client_->Sample("j/a", 0.0);
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectSame(*back, item);
  auto raw = client_->SampleEncoded("j/a", 0.5);
  ASSERT_TRUE(raw.ok()) << raw.status();
  EXPECT_EQ(raw->payload, EncodeItem(item).payload);
  EXPECT_EQ(raw->header.index(), 0);
  EXPECT_EQ(raw->header.table_size(), 1);
  EXPECT_EQ(raw->header.table(), "j/a");
}

TEST_F(BufferServiceTest, TwentyMegabyteItemTravelsInChunksBitIdentical) {
  torch::manual_seed(5);
  NamedTensors item = {{"big", torch::randn({5'000'000})}, {"step", torch::tensor({int64_t{9}})}};
  EncodedItem enc = EncodeItem(item);
  ASSERT_GT(enc.payload.size(), 19u * kChunkBytes);  // ~20 chunks
  auto put = client_->PutEncoded("j/big", 2, enc);
  ASSERT_TRUE(put.ok()) << put.status();
  EXPECT_EQ(put->table_size(), 1);
  auto raw = client_->GetEncoded("j/big", put->key());
  ASSERT_TRUE(raw.ok()) << raw.status();
  EXPECT_EQ(raw->payload.size(), enc.payload.size());
  EXPECT_TRUE(raw->payload == enc.payload);
  EXPECT_EQ(raw->header.payload_crc32(), enc.payload_crc32);
  auto back = client_->Sample("j/big", 0.3);
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectSame(*back, item);
}

TEST_F(BufferServiceTest, TablesKeysStatsAndDeletionThroughTheClient) {
  for (int i = 0; i < 5; ++i)
    ASSERT_TRUE(client_->Put("job7/states", 3, {{"x", torch::full({2}, float(i))}}).ok());
  ASSERT_TRUE(client_->Put("job7/states2", 3, {{"x", torch::ones({1})}}).ok());
  ASSERT_TRUE(client_->Put("job8/states", 3, {{"x", torch::ones({1})}}).ok());
  EXPECT_EQ(Size("job7/states"), 3);
  auto keys = client_->ListKeys("job7/states");
  ASSERT_TRUE(keys.ok());
  EXPECT_EQ(keys->size(), 3u);
  EXPECT_TRUE(std::is_sorted(keys->begin(), keys->end()));
  auto items = client_->Items("job7/states");
  ASSERT_TRUE(items.ok());
  ASSERT_EQ(items->size(), 3u);
  for (int i = 0; i < 3; ++i)
    EXPECT_TRUE(torch::equal((*items)[i][0].second, torch::full({2}, float(i + 2))));
  auto stats = client_->Stats("job7/");
  ASSERT_TRUE(stats.ok());
  ASSERT_EQ(stats->tables_size(), 2);
  EXPECT_EQ(stats->tables(0).name(), "job7/states");
  EXPECT_EQ(stats->tables(0).puts(), 5);
  EXPECT_EQ(stats->tables(0).capacity(), 3);
  EXPECT_EQ(stats->total_items(), 4);
  EXPECT_EQ(stats->total_bytes(), 3 * 8 + 4);
  // DeleteTable is exact; DeleteTables takes a prefix.
  ASSERT_TRUE(client_->DeleteTable("job7/states").ok());
  EXPECT_EQ(Size("job7/states"), 0);
  EXPECT_EQ(Size("job7/states2"), 1);
  auto del = client_->DeleteTables("job");
  ASSERT_TRUE(del.ok());
  EXPECT_EQ(del->tables_deleted(), 2);
  EXPECT_EQ(del->items_deleted(), 2);
  EXPECT_EQ(client_->DeleteTables("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client_->Stats()->tables_size(), 0);
}

TEST_F(BufferServiceTest, TruncatedStreamIsInvalidAndStoresNothing) {
  ExpectStillServes("t");
  auto msgs = PutMessages("t", Bytes(3 * kChunkBytes + 5, 1));
  msgs.resize(3);  // header + 2 of 4 chunks, then half-close
  double before = Rejected("truncated");
  grpc::Status s = RawPut(msgs);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("stream ended after"));
  EXPECT_EQ(Size("t"), 1);
  EXPECT_EQ(Rejected("truncated"), before + 1);
  // Header alone, no chunk at all.
  msgs.resize(1);
  EXPECT_EQ(RawPut(msgs).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(RawPut({}).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Size("t"), 1);
  ExpectStillServes("t");
}

TEST_F(BufferServiceTest, CancelledStreamStoresNothingEvenWithEveryByte) {
  auto msgs = PutMessages("t", Bytes(2 * kChunkBytes, 2));
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", std::string("Bearer ") + kToken);
  v1::PutResponse resp;
  auto writer = stub_->Put(&ctx, &resp);
  for (const auto& m : msgs) ASSERT_TRUE(writer->Write(m));
  ctx.TryCancel();  // no half-close: no commit
  EXPECT_EQ(writer->Finish().error_code(), grpc::StatusCode::CANCELLED);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // let the server see it
  EXPECT_EQ(Size("t"), 0);
  ExpectStillServes("t");
}

TEST_F(BufferServiceTest, BadChunkChecksumIsDataLoss) {
  ExpectStillServes("t");
  auto msgs = PutMessages("t", Bytes(2 * kChunkBytes + 10, 3));
  msgs[2].mutable_chunk()->mutable_data()->at(100) ^= 1;  // flip a bit in flight
  double before = Rejected("data_loss");
  grpc::Status s = RawPut(msgs);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DATA_LOSS) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("offset 1048576"));
  EXPECT_EQ(Size("t"), 1);
  EXPECT_EQ(Rejected("data_loss"), before + 1);
  ExpectStillServes("t");
}

TEST_F(BufferServiceTest, BadPayloadChecksumIsDataLoss) {
  ExpectStillServes("t");
  auto msgs = PutMessages("t", Bytes(kChunkBytes + 10, 4));
  msgs[0].mutable_header()->set_payload_crc32(msgs[0].header().payload_crc32() ^ 0x10);
  grpc::Status s = RawPut(msgs);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DATA_LOSS) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("payload fails its checksum"));
  EXPECT_EQ(Size("t"), 1);
  ExpectStillServes("t");
}

TEST_F(BufferServiceTest, OutOfOrderOrRepeatedChunkIsInvalid) {
  ExpectStillServes("t");
  auto msgs = PutMessages("t", Bytes(3 * kChunkBytes, 5));
  std::swap(msgs[2], msgs[3]);
  grpc::Status s = RawPut(msgs);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("arrived where 1048576 was expected"));
  msgs = PutMessages("t", Bytes(3 * kChunkBytes, 5));
  msgs.insert(msgs.begin() + 2, msgs[1]);  // a repeated chunk
  EXPECT_EQ(RawPut(msgs).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Size("t"), 1);
  ExpectStillServes("t");
}

TEST_F(BufferServiceTest, OversizedAnnouncementIsRefusedBeforeThePayload) {
  ExpectStillServes("t");
  auto msgs = PutMessages("t", "");
  v1::ItemHeader* h = msgs[0].mutable_header();
  h->mutable_tensors(0)->set_shape(0, kMaxItemBytes + 1);
  h->mutable_tensors(0)->set_num_bytes(kMaxItemBytes + 1);
  h->set_payload_bytes(kMaxItemBytes + 1);
  double before = Rejected("too_large");
  // Only the header is sent: a server that waited for the payload would
  // answer "truncated" (INVALID_ARGUMENT) instead.
  grpc::Status s = RawPut(msgs);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("--max-item-bytes"));
  EXPECT_EQ(Rejected("too_large"), before + 1);
  EXPECT_EQ(Size("t"), 1);
  ExpectStillServes("t");
}

TEST_F(BufferServiceTest, MissingOrBadHeaderIsInvalidAndNamesTheField) {
  ExpectStillServes("t");
  auto msgs = PutMessages("t", Bytes(100, 6));
  std::vector<v1::PutRequest> no_header(msgs.begin() + 1, msgs.end());
  grpc::Status s = RawPut(no_header);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("header missing"));

  auto empty_table = msgs;
  empty_table[0].mutable_header()->set_table("");
  s = RawPut(empty_table);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("header.table must not be empty"));

  for (int64_t cap : {0, -3}) {
    auto bad_cap = msgs;
    bad_cap[0].mutable_header()->set_capacity(cap);
    s = RawPut(bad_cap);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr("header.capacity must be > 0"));
  }
  auto two_headers = msgs;
  two_headers.push_back(msgs[0]);
  EXPECT_EQ(RawPut(two_headers).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Size("t"), 1);
  ExpectStillServes("t");
}

TEST_F(BufferServiceTest, MissingOrWrongTokenIsUnauthenticated) {
  ExpectStillServes("t");
  auto msgs = PutMessages("t", Bytes(100, 8));
  EXPECT_EQ(RawPut(msgs, "").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(RawPut(msgs, "s3cret-tokeN").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(RawPut(msgs, "s3cret-token-and-more").error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  RemoteReplayBuffer anonymous(ClientConfig{target_, "", 5000});
  EXPECT_EQ(anonymous.Sample("t", 0.5).status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(anonymous.Size("t").status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(anonymous.DeleteTables("t").status().code(), absl::StatusCode::kUnauthenticated);
  RemoteReplayBuffer wrong(ClientConfig{target_, "nope", 5000});
  EXPECT_EQ(wrong.ListKeys("t").status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(Size("t"), 1);
  ExpectStillServes("t");
}

TEST_F(BufferServiceTest, SampleValidatesUAndTable) {
  ExpectStillServes("t");
  EXPECT_EQ(client_->Sample("t", 1.0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client_->Sample("t", -0.5).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client_->Sample("t", std::nan("")).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client_->Sample("", 0.5).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client_->Sample("unknown", 0.5).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(client_->GetEncoded("t", 123456).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(client_->Sample("t", 0.999).ok());
}

TEST_F(BufferServiceTest, ClientRetriesUnavailableThenGivesUp) {
  // Nothing listens on this port: every attempt is UNAVAILABLE.
  RemoteReplayBufferOptions opts;
  opts.max_attempts = 3;
  opts.initial_backoff_ms = 50;
  RemoteReplayBuffer nowhere(ClientConfig{"127.0.0.1:1", "", 2000}, opts);
  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(nowhere.Size("t").status().code(), absl::StatusCode::kUnavailable);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                std::chrono::steady_clock::now() - start).count();
  EXPECT_GE(ms, 50 + 100);  // two backoffs
  EXPECT_LT(ms, 5000);
}

}  // namespace
}  // namespace lopt
