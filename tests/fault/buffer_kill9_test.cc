// The real lopt-buffer, killed with SIGKILL in the middle of a stream of
// puts and restarted on the same directory: every acknowledged put reads
// back bit-identical, and an unacknowledged one is absent or whole.
#include <atomic>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "buffer_server/testing/buffer_process.h"
#include "common/rpc/buffer_client.h"
#include "common/rpc/tensor_codec.h"
#include "common/util/remove_tree.h"
#include "tests/support/buffer_items.h"

#ifndef LOPT_BUFFER_BINARY
#error "LOPT_BUFFER_BINARY must name the lopt-buffer executable"
#endif

namespace lopt {
namespace {

constexpr char kTable[] = "fault/states";

// 64 KiB to 1.5 MiB: puts long enough to be cut in the middle.
EncodedItem RandomItem(std::mt19937& rng) { return testing::RandomItem(rng, 64 << 10, 3 << 19); }

struct Acked {
  uint32_t crc;
  int64_t bytes;
};

TEST(BufferKill9, AcknowledgedPutsSurviveSigkill) {
  std::string tmpl = (std::filesystem::temp_directory_path() / "lopt_kill9_XXXXXX").string();
  const std::string dir = mkdtemp(tmpl.data());
  BufferProcessOptions popts{LOPT_BUFFER_BINARY, dir + "/db", {}, 20000};

  std::map<uint64_t, Acked> acked;        // key -> what was acknowledged
  std::map<uint32_t, int64_t> in_flight;  // crc -> bytes of puts cut off by the kill
  int64_t acked_before_kill = 0;
  for (int round = 0; round < 2; ++round) {
    auto server = BufferProcess::Start(popts);
    ASSERT_TRUE(server.ok()) << server.status();
    RemoteReplayBufferOptions copts;
    copts.max_attempts = 1;  // a put that fails is unacknowledged: no retry
    RemoteReplayBuffer client(ClientConfig{(*server)->target(), "", 10000}, copts);
    ASSERT_TRUE(client.WaitForConnected(5000));

    // Two writers put until the server dies under them.
    std::mutex mu;
    std::atomic<int> acks{0};
    std::vector<std::thread> writers;
    for (int w = 0; w < 2; ++w)
      writers.emplace_back([&, w] {
        std::mt19937 rng(1000 * round + w);
        for (;;) {
          EncodedItem item = RandomItem(rng);
          auto r = client.PutEncoded(kTable, 100000, item);
          std::lock_guard<std::mutex> l(mu);
          if (!r.ok()) {
            in_flight[item.payload_crc32] = static_cast<int64_t>(item.payload.size());
            return;
          }
          EXPECT_EQ(acked.count(r->key()), 0u) << "key handed out twice: " << r->key();
          acked[r->key()] = {item.payload_crc32, static_cast<int64_t>(item.payload.size())};
          ++acks;
        }
      });
    // Kill at a moment that depends on the round, after enough acks.
    const int kill_after = 20 + 7 * round;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(8);
    while (acks < kill_after && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    std::this_thread::sleep_for(std::chrono::microseconds(1500 * (round + 1)));
    (*server)->Kill9();
    for (auto& t : writers) t.join();
    ASSERT_GE(acks.load(), kill_after) << "the server acknowledged too few puts to test";
    acked_before_kill = static_cast<int64_t>(acked.size());
  }

  // Restart on the same directory and read everything back.
  auto server = BufferProcess::Start(popts);
  ASSERT_TRUE(server.ok()) << server.status();
  auto client_ptr =
      std::make_unique<RemoteReplayBuffer>(ClientConfig{(*server)->target(), "", 10000});
  RemoteReplayBuffer& client = *client_ptr;
  auto keys = client.ListKeys(kTable);
  ASSERT_TRUE(keys.ok()) << keys.status();
  std::set<uint64_t> present(keys->begin(), keys->end());
  for (const auto& [key, want] : acked) {
    ASSERT_TRUE(present.count(key)) << "acknowledged put " << key << " was lost";
    auto item = client.GetEncoded(kTable, key);  // verifies chunk and payload checksums
    ASSERT_TRUE(item.ok()) << "key " << key << ": " << item.status();
    EXPECT_EQ(static_cast<int64_t>(item->payload.size()), want.bytes) << key;
    EXPECT_EQ(Crc32(item->payload.data(), item->payload.size()), want.crc) << key;
    EXPECT_EQ(item->header.payload_crc32(), want.crc) << key;
  }
  // Anything else must be one of the puts the kills cut off, and whole.
  int extra = 0;
  for (uint64_t key : present) {
    if (acked.count(key)) continue;
    ++extra;
    auto item = client.GetEncoded(kTable, key);
    ASSERT_TRUE(item.ok()) << "unacknowledged item " << key << " is torn: " << item.status();
    uint32_t crc = Crc32(item->payload.data(), item->payload.size());
    ASSERT_TRUE(in_flight.count(crc)) << "item " << key << " is none of the puts in flight";
    EXPECT_EQ(static_cast<int64_t>(item->payload.size()), in_flight[crc]);
  }
  EXPECT_LE(extra, static_cast<int>(in_flight.size()));
  EXPECT_EQ(static_cast<int64_t>(acked.size()), acked_before_kill);
  auto size = client.Size(kTable);
  ASSERT_TRUE(size.ok());
  EXPECT_EQ(*size, static_cast<int64_t>(acked.size()) + extra);
  // A clean stop after all that. The client goes first: an idle connection
  // holds a graceful shutdown until its deadline (5 s).
  client_ptr.reset();
  EXPECT_EQ((*server)->Stop(), 0);
  lopt::RemoveTree(dir).IgnoreError();
}

}  // namespace
}  // namespace lopt
