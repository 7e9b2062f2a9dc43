// The real lopt-buffer on a disk that fills up (a small tmpfs filled with a
// file): puts are refused with a reason and the server reports NOT_SERVING;
// once the file is removed it is SERVING again and puts succeed without a
// restart; started on a full disk it exits with the reason instead of
// aborting. Before, RocksDB met ENOSPC in its WAL writer and Debian's build
// aborted on an assertion (exit 134). A tmpfs gives a real full disk; it
// needs root (mount), so the test skips without it.
#include <filesystem>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "buffer_server/testing/buffer_process.h"
#include "common/rpc/buffer_client.h"
#include "common/rpc/rpc.h"
#include "common/rpc/tensor_codec.h"
#include "tests/support/buffer_items.h"
#include "tests/support/child_process.h"

namespace lopt {
namespace {

constexpr char kTable[] = "disk/states";

using testing::BufferHealth;
using testing::FilledItem;
using testing::FillDisk;
using testing::Tmpfs;
using testing::WaitForBufferHealth;

TEST(BufferFullDisk, NotServingWhileFullResumesWhenSpaceReturnsAndStartsWithoutAborting) {
  Tmpfs fs("24m");
  if (!fs.mounted())
    GTEST_SKIP() << "cannot mount a tmpfs (" << fs.error()
                 << "): the test needs root to make a disk that fills up";
  const std::string keep_free = "--min-free-bytes=4194304";
  BufferProcessOptions popts{LOPT_BUFFER_BINARY, fs.dir() + "/db", {keep_free}, 20000};
  auto server = BufferProcess::Start(popts);
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string target = (*server)->target();
  RemoteReplayBufferOptions copts;
  copts.max_attempts = 1;
  RemoteReplayBuffer client(ClientConfig{target, "", 10000}, copts);
  ASSERT_TRUE(client.WaitForConnected(5000));
  auto first = client.PutEncoded(kTable, 1000, FilledItem(256 << 10, 1));
  ASSERT_TRUE(first.ok()) << first.status();

  // The disk fills up: a put fails with the disk's error, health says so.
  ASSERT_TRUE(FillDisk(fs.dir() + "/filler"));
  absl::StatusOr<v1::PutResponse> put;
  for (int i = 0; i < 40; ++i) {
    put = client.PutEncoded(kTable, 1000, FilledItem(256 << 10, uint8_t(2 + i)));
    if (!put.ok()) break;
  }
  ASSERT_FALSE(put.ok()) << "40 puts of 256 KiB fitted on a full 24 MiB disk";
  EXPECT_EQ(put.status().code(), absl::StatusCode::kResourceExhausted) << put.status();
  EXPECT_NE(put.status().message().find("bytes must leave --min-free-bytes 4194304: free space"),
            std::string::npos)
      << put.status();
  EXPECT_TRUE(WaitForBufferHealth(target, "NOT_SERVING", 5)) << BufferHealth(target);
  // Reads go on.
  auto got = client.GetEncoded(kTable, first->key());
  EXPECT_TRUE(got.ok()) << got.status();

  // Space comes back: SERVING again, and puts succeed without a restart.
  std::filesystem::remove(fs.dir() + "/filler");
  EXPECT_TRUE(WaitForBufferHealth(target, "SERVING", 10)) << BufferHealth(target);
  auto after = client.PutEncoded(kTable, 1000, FilledItem(256 << 10, 99));
  EXPECT_TRUE(after.ok()) << after.status();
  EXPECT_TRUE(client.GetEncoded(kTable, first->key()).ok());
  EXPECT_EQ((*server)->Stop(), 0);

  // Started on a full disk: it exits with the reason instead of aborting.
  ASSERT_TRUE(FillDisk(fs.dir() + "/filler"));
  auto [code, out] = testing::RunCommand(absl::StrCat(
      "timeout 20 ", LOPT_BUFFER_BINARY, " --listen=127.0.0.1:0 --metrics-listen= --db-path=",
      fs.dir(), "/db ", keep_free));
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find("bytes free, less than --min-free-bytes 4194304; free space there"),
            std::string::npos)
      << out;
}

}  // namespace
}  // namespace lopt
