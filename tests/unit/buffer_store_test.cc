// RocksReplayStore on a real RocksDB in a temporary directory, and its
// ReplayBuffer adapter against the in-memory reference.
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <random>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "buffer_server/rocks_replay_buffer.h"
#include "buffer_server/rocks_store.h"
#include "common/rpc/tensor_codec.h"
#include "common/util/remove_tree.h"

namespace lopt {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "lopt_buffer_XXXXXX").string();
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() { lopt::RemoveTree(path_).IgnoreError(); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// An item of one uint8 tensor holding `payload`.
v1::ItemHeader Header(const std::string& table, int64_t capacity, const std::string& payload) {
  v1::ItemHeader h;
  h.set_table(table);
  h.set_capacity(capacity);
  v1::TensorHeader* t = h.add_tensors();
  t->set_name("bytes");
  t->set_dtype(v1::UINT8);
  t->add_shape(static_cast<int64_t>(payload.size()));
  t->set_num_bytes(static_cast<int64_t>(payload.size()));
  h.set_payload_bytes(static_cast<int64_t>(payload.size()));
  h.set_payload_crc32(Crc32(payload.data(), payload.size()));
  return h;
}

std::string Payload(int seed, size_t bytes) {
  std::mt19937 rng(seed);
  std::string s(bytes, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

PutResult MustPut(RocksReplayStore& store, const std::string& table, int64_t capacity,
                  const std::string& payload) {
  auto r = store.Put(Header(table, capacity, payload), payload);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : PutResult{};
}

std::unique_ptr<RocksReplayStore> MustOpen(const std::string& path) {
  auto s = RocksReplayStore::Open(path);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(*s) : nullptr;
}

TEST(RocksReplayStore, FifoOrderAndCapacityEviction) {
  TempDir dir;
  auto store = MustOpen(dir.path());
  std::vector<uint64_t> keys;
  std::vector<int64_t> sizes, evicted;
  for (int i = 0; i < 5; ++i) {
    PutResult r = MustPut(*store, "j/t", 3, Payload(i, 100 + i));
    keys.push_back(r.key);
    sizes.push_back(r.table_size);
    evicted.push_back(r.evicted);
  }
  EXPECT_THAT(sizes, ElementsAre(1, 2, 3, 3, 3));
  EXPECT_THAT(evicted, ElementsAre(0, 0, 0, 1, 1));
  EXPECT_TRUE(std::is_sorted(keys.begin(), keys.end()));
  EXPECT_THAT(store->Keys("j/t"), ElementsAre(keys[2], keys[3], keys[4]));
  for (int i = 2; i < 5; ++i) {
    auto item = store->Get("j/t", keys[i]);
    ASSERT_TRUE(item.ok()) << item.status();
    EXPECT_EQ(item->payload, Payload(i, 100 + i));
    EXPECT_EQ(item->header.index(), i - 2);
    EXPECT_EQ(item->header.table_size(), 3);
  }
  EXPECT_EQ(store->Get("j/t", keys[0]).status().code(), absl::StatusCode::kNotFound);
  // Lowering the capacity evicts down to it in the same put.
  PutResult r = MustPut(*store, "j/t", 1, "x");
  EXPECT_EQ(r.evicted, 3);
  EXPECT_EQ(r.table_size, 1);
  EXPECT_THAT(store->Keys("j/t"), ElementsAre(r.key));
  auto stats = store->Stats("j/t");
  ASSERT_EQ(stats.size(), 1u);
  EXPECT_EQ(stats[0].items(), 1);
  EXPECT_EQ(stats[0].bytes(), 1);
  EXPECT_EQ(stats[0].capacity(), 1);
  EXPECT_EQ(stats[0].puts(), 6);
}

TEST(RocksReplayStore, SampleIndexIsFloorOfUTimesSize) {
  TempDir dir;
  auto store = MustOpen(dir.path());
  for (int i = 0; i < 4; ++i) MustPut(*store, "t", 10, Payload(i, 10));
  const std::vector<std::pair<double, int>> cases = {
      {0.0, 0}, {0.2499, 0}, {0.25, 1}, {0.5, 2}, {0.74, 2}, {0.75, 3}, {0.9999999, 3}};
  for (auto [u, want] : cases) {
    auto item = store->Sample("t", u);
    ASSERT_TRUE(item.ok()) << item.status();
    EXPECT_EQ(item->header.index(), want) << "u=" << u;
    EXPECT_EQ(item->payload, Payload(want, 10)) << "u=" << u;
    EXPECT_EQ(item->header.table_size(), 4);
  }
  EXPECT_EQ(store->Stats("t")[0].samples(), static_cast<int64_t>(cases.size()));
  for (double bad : {1.0, -0.01, std::nan(""), std::numeric_limits<double>::infinity()})
    EXPECT_EQ(store->Sample("t", bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  EXPECT_EQ(store->Sample("nope", 0.5).status().code(), absl::StatusCode::kNotFound);
  MustPut(*store, "e", 1, "a");
  ASSERT_TRUE(store->DeleteTable("e").ok());
  EXPECT_EQ(store->Sample("e", 0.5).status().code(), absl::StatusCode::kNotFound);
}

TEST(RocksReplayStore, ReopenRecoversTablesOrderAndContents) {
  TempDir dir;
  std::vector<uint64_t> a_keys, b_keys;
  std::vector<v1::TableStats> before;
  uint64_t last_key = 0;
  const std::string big = Payload(99, 3 * kStoreValueBytes + 12345);  // several values
  {
    auto store = MustOpen(dir.path());
    for (int i = 0; i < 6; ++i) MustPut(*store, "job1/a", 4, Payload(i, 1000));
    MustPut(*store, "job1/b", 2, big);
    last_key = MustPut(*store, "job1/b", 2, "").key;  // an empty payload is an item too
    MustPut(*store, "job1/gone", 2, "z");
    ASSERT_TRUE(store->DeleteTable("job1/gone").ok());
    a_keys = store->Keys("job1/a");
    b_keys = store->Keys("job1/b");
    before = store->Stats();
  }
  auto store = MustOpen(dir.path());
  EXPECT_EQ(store->Keys("job1/a"), a_keys);
  EXPECT_EQ(store->Keys("job1/b"), b_keys);
  auto after = store->Stats();
  ASSERT_EQ(after.size(), 2u);
  ASSERT_EQ(before.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(after[i].name(), before[i].name());
    EXPECT_EQ(after[i].items(), before[i].items());
    EXPECT_EQ(after[i].bytes(), before[i].bytes());
    EXPECT_EQ(after[i].capacity(), before[i].capacity());
    EXPECT_EQ(after[i].puts(), before[i].puts());
  }
  for (int i = 0; i < 4; ++i) {
    auto item = store->Get("job1/a", a_keys[i]);
    ASSERT_TRUE(item.ok()) << item.status();
    EXPECT_EQ(item->payload, Payload(i + 2, 1000));
  }
  auto item = store->Get("job1/b", b_keys[0]);
  ASSERT_TRUE(item.ok()) << item.status();
  EXPECT_EQ(item->payload, big);
  EXPECT_EQ(item->header.payload_crc32(), Crc32(big.data(), big.size()));
  ASSERT_EQ(item->header.tensors_size(), 1);
  EXPECT_EQ(item->header.tensors(0).shape(0), static_cast<int64_t>(big.size()));
  EXPECT_EQ(store->Size("job1/gone"), 0);
  // Keys keep increasing across restarts, even past deleted items.
  EXPECT_GT(MustPut(*store, "job1/gone", 2, "z").key, last_key + 1);
  // Capacity survives: one more put into b evicts its oldest.
  EXPECT_EQ(MustPut(*store, "job1/b", 2, "q").evicted, 1);
}

TEST(RocksReplayStore, DeleteTablesRemovesOnlyThePrefix) {
  TempDir dir;
  {
    auto store = MustOpen(dir.path());
    for (const char* t : {"j1/a", "j1/b", "j10/a", "j2/a", "j1"})
      for (int i = 0; i < 3; ++i) MustPut(*store, t, 5, Payload(i, 2000));
    auto r = store->DeleteTables("j1/");
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->tables_deleted, 2);
    EXPECT_EQ(r->items_deleted, 6);
    EXPECT_EQ(store->DeleteTables("").status().code(), absl::StatusCode::kInvalidArgument);
    // DeleteTable is exact: "j1" is a prefix of "j10/a" but only "j1" goes.
    auto one = store->DeleteTable("j1");
    ASSERT_TRUE(one.ok());
    EXPECT_EQ(one->tables_deleted, 1);
    EXPECT_EQ(one->items_deleted, 3);
    EXPECT_EQ(store->Totals().tables, 2);
  }
  auto store = MustOpen(dir.path());
  std::vector<std::string> names;
  for (const auto& s : store->Stats()) names.push_back(s.name());
  EXPECT_THAT(names, ElementsAre("j10/a", "j2/a"));
  EXPECT_EQ(store->Size("j10/a"), 3);
  EXPECT_EQ(store->Size("j1/a"), 0);
  EXPECT_EQ(store->Totals().items, 6);
  EXPECT_EQ(store->Totals().bytes, 6 * 2000);
  // A deleted table starts afresh.
  EXPECT_EQ(MustPut(*store, "j1/a", 5, "n").table_size, 1);
}

TEST(RocksReplayStore, CloseTablesDeletesThemAndRefusesLaterPutsAcrossAReopen) {
  TempDir dir;
  {
    auto store = MustOpen(dir.path());
    for (const char* t : {"j1/a", "j1/b", "j10/a"}) MustPut(*store, t, 5, Payload(1, 100));
    auto r = store->CloseTables("j1/");
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->tables_deleted, 2);
    EXPECT_EQ(store->ClosedPrefixOf("j1/a"), "j1/");
    auto late = store->Put(Header("j1/a", 5, "late"), "late");
    EXPECT_EQ(late.status().code(), absl::StatusCode::kFailedPrecondition) << late.status();
    EXPECT_EQ(store->Size("j1/a"), 0);
    // Closing a prefix with no table left still records it; twice is fine.
    ASSERT_TRUE(store->CloseTables("j7/").ok());
    ASSERT_TRUE(store->CloseTables("j7/").ok());
    EXPECT_EQ(store->CloseTables("").status().code(), absl::StatusCode::kInvalidArgument);
  }
  auto store = MustOpen(dir.path());
  EXPECT_EQ(store->Put(Header("j1/new", 5, "x"), "x").status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store->Put(Header("j7/a", 5, "x"), "x").status().code(),
            absl::StatusCode::kFailedPrecondition);
  // Other prefixes are open: "j10/" only starts like "j1".
  MustPut(*store, "j10/a", 5, "y");
  MustPut(*store, "j1", 5, "y");
  EXPECT_EQ(store->Totals().tables, 2);
}

TEST(RocksReplayStore, RejectsBadHeadersNamingTheField) {
  TempDir dir;
  auto store = MustOpen(dir.path());
  std::string p = "abcd";
  auto expect = [&](v1::ItemHeader h, const std::string& payload, const std::string& field) {
    auto r = store->Put(h, payload);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(field));
  };
  auto h = Header("", 3, p);
  expect(h, p, "header.table");
  h = Header("t", 0, p);
  expect(h, p, "header.capacity");
  h = Header("t", 3, p);
  h.mutable_tensors(0)->set_num_bytes(5);
  expect(h, p, "header.tensors[0] ('bytes').num_bytes");
  h = Header("t", 3, p);
  h.mutable_tensors(0)->set_dtype(static_cast<v1::DType>(42));
  expect(h, p, "unknown dtype");
  h = Header("t", 3, p);
  h.set_payload_bytes(3);
  expect(h, p, "header.payload_bytes");
  h = Header("t", 3, p);
  expect(h, "abc", "payload has 3 bytes");
  h = Header(std::string("a\0b", 3), 3, p);
  expect(h, p, "NUL");
  EXPECT_EQ(store->Totals().items, 0);
  EXPECT_EQ(store->Totals().tables, 0);
}

TEST(RocksReplayStore, ConcurrentPutsAndSamplesSeeWholeItems) {
  TempDir dir;
  auto store = MustOpen(dir.path());
  constexpr int kCapacity = 5;
  std::atomic<bool> stop{false};
  std::atomic<int> bad{0}, samples{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < 3; ++w)
    threads.emplace_back([&, w] {
      for (int i = 0; i < 40; ++i) MustPut(*store, "c", kCapacity, Payload(w * 1000 + i, 3000 + i));
    });
  for (int r = 0; r < 3; ++r)
    threads.emplace_back([&, r] {
      std::mt19937 rng(r);
      while (!stop) {
        auto item = store->Sample("c", std::uniform_real_distribution<double>(0, 1)(rng));
        if (absl::IsNotFound(item.status())) continue;
        if (!item.ok() ||
            Crc32(item->payload.data(), item->payload.size()) != item->header.payload_crc32() ||
            item->header.table_size() > kCapacity)
          ++bad;
        ++samples;
      }
    });
  for (int w = 0; w < 3; ++w) threads[w].join();
  stop = true;
  for (size_t i = 3; i < threads.size(); ++i) threads[i].join();
  EXPECT_EQ(bad, 0);
  EXPECT_GT(samples, 0);
  EXPECT_EQ(store->Size("c"), kCapacity);
  EXPECT_EQ(store->Stats("c")[0].puts(), 120);
}

// ---- the ReplayBuffer adapter ----

NamedTensors MixedItem(int seed) {
  torch::manual_seed(seed);
  return {{"w", torch::randn({3, 4})},
          {"step", torch::tensor({int64_t{seed}})},
          {"mask", torch::rand({5}) > 0.5},
          {"half", torch::randn({2, 2}).to(torch::kBFloat16)},
          {"d", torch::randn({2}, torch::kFloat64)}};
}

void ExpectSame(const NamedTensors& a, const NamedTensors& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].first, b[i].first);
    EXPECT_EQ(a[i].second.scalar_type(), b[i].second.scalar_type()) << a[i].first;
    EXPECT_TRUE(torch::equal(a[i].second, b[i].second)) << a[i].first;
  }
}

TEST(RocksReplayBuffer, AgreesWithInMemoryAndWithTheRawApi) {
  TempDir dir;
  auto rocks = RocksReplayBuffer::Open(dir.path());
  ASSERT_TRUE(rocks.ok()) << rocks.status();
  InMemoryReplayBuffer mem;
  for (int i = 0; i < 7; ++i) {
    int64_t cap = i < 5 ? 4 : 3;
    ASSERT_TRUE((*rocks)->Put("j/s", cap, MixedItem(i)).ok());
    ASSERT_TRUE(mem.Put("j/s", cap, MixedItem(i)).ok());
  }
  EXPECT_EQ(*(*rocks)->Size("j/s"), *mem.Size("j/s"));
  auto ri = (*rocks)->Items("j/s");
  auto mi = mem.Items("j/s");
  ASSERT_TRUE(ri.ok() && mi.ok());
  ASSERT_EQ(ri->size(), 3u);
  for (size_t i = 0; i < ri->size(); ++i) ExpectSame((*ri)[i], (*mi)[i]);
  // Items are oldest first: the newest is the last put.
  ExpectSame(ri->back(), MixedItem(6));
  for (double u : {0.0, 0.34, 0.67, 0.99}) {
    auto a = (*rocks)->Sample("j/s", u);
    auto b = mem.Sample("j/s", u);
    ASSERT_TRUE(a.ok() && b.ok());
    ExpectSame(*a, *b);
  }
  // The raw API holds exactly the codec's bytes.
  RocksReplayStore& store = (*rocks)->store();
  auto raw = store.Get("j/s", store.Keys("j/s").back());
  ASSERT_TRUE(raw.ok());
  EncodedItem enc = EncodeItem(MixedItem(6));
  EXPECT_EQ(raw->payload, enc.payload);
  EXPECT_EQ(raw->header.payload_crc32(), enc.payload_crc32);
  ASSERT_EQ(raw->header.tensors_size(), 5);
  EXPECT_EQ(raw->header.tensors(3).dtype(), v1::BFLOAT16);
  // A raw put reads back through the torch API.
  v1::ItemHeader h;
  h.set_table("j/s");
  h.set_capacity(3);
  for (const auto& t : enc.tensors) *h.add_tensors() = t;
  h.set_payload_bytes(static_cast<int64_t>(enc.payload.size()));
  h.set_payload_crc32(enc.payload_crc32);
  ASSERT_TRUE(store.Put(h, enc.payload).ok());
  auto back = (*rocks)->Sample("j/s", 0.99);
  ASSERT_TRUE(back.ok());
  ExpectSame(*back, MixedItem(6));
  EXPECT_EQ((*rocks)->Put("j/s", 0, MixedItem(0)).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE((*rocks)->DeleteTable("j/s").ok());
  EXPECT_EQ(*(*rocks)->Size("j/s"), 0);
  EXPECT_EQ((*rocks)->Sample("j/s", 0.1).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace lopt
