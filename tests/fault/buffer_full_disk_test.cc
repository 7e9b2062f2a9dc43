// The real lopt-buffer on a disk that fills up (a small tmpfs filled with a
// file): puts are refused with a reason and the server reports NOT_SERVING;
// once the file is removed it is SERVING again and puts succeed without a
// restart; started on a full disk it exits with the reason instead of
// aborting. Before, RocksDB met ENOSPC in its WAL writer and Debian's build
// aborted on an assertion (exit 134). A tmpfs gives a real full disk; it
// needs root (mount), so the test skips without it.
#include <sys/mount.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "buffer_server/testing/buffer_process.h"
#include "common/buffer_client.h"
#include "common/rpc.h"
#include "common/tensor_codec.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/support/child_process.h"

namespace lopt {
namespace {

constexpr char kTable[] = "disk/states";

EncodedItem Item(size_t bytes, uint8_t fill) {
  EncodedItem item;
  item.payload.assign(bytes, static_cast<char>(fill));
  v1::TensorHeader h;
  h.set_name("state");
  h.set_dtype(v1::UINT8);
  h.add_shape(static_cast<int64_t>(bytes));
  h.set_num_bytes(static_cast<int64_t>(bytes));
  item.tensors.push_back(h);
  item.payload_crc32 = Crc32(item.payload.data(), bytes);
  return item;
}

// Writes `path` until the file system is full.
void FillDisk(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  std::string block(1 << 16, 'x');
  while (std::fwrite(block.data(), 1, block.size(), f) == block.size()) {
  }
  std::fclose(f);
}

// The health of lopt.v1.BufferService (what the readiness probe asks).
std::string Health(const std::string& target) {
  auto stub = grpc::health::v1::Health::NewStub(MakeChannel(ClientConfig{target, "", 3000}));
  grpc::health::v1::HealthCheckRequest req;
  req.set_service("lopt.v1.BufferService");
  grpc::health::v1::HealthCheckResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(3));
  grpc::Status s = stub->Check(&ctx, req, &resp);
  if (!s.ok()) return "error: " + s.error_message();
  return resp.status() == grpc::health::v1::HealthCheckResponse::SERVING ? "SERVING" : "NOT_SERVING";
}

bool WaitForHealth(const std::string& target, const std::string& want, int seconds) {
  for (int i = 0; i < seconds * 10; ++i) {
    if (Health(target) == want) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

struct Tmpfs {
  std::string dir;
  bool mounted = false;
  ~Tmpfs() {
    if (mounted && ::umount2(dir.c_str(), MNT_DETACH) != 0)
      ADD_FAILURE() << "cannot unmount " << dir << ": " << std::strerror(errno);
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

TEST(BufferFullDisk, NotServingWhileFullResumesWhenSpaceReturnsAndStartsWithoutAborting) {
  Tmpfs fs;
  std::string tmpl = (std::filesystem::temp_directory_path() / "lopt_fulldisk_XXXXXX").string();
  fs.dir = mkdtemp(tmpl.data());
  if (::mount("tmpfs", fs.dir.c_str(), "tmpfs", 0, "size=24m") != 0)
    GTEST_SKIP() << "cannot mount a tmpfs (" << std::strerror(errno)
                 << "): the test needs root to make a disk that fills up";
  fs.mounted = true;
  const std::string keep_free = "--min-free-bytes=4194304";
  BufferProcessOptions popts{LOPT_BUFFER_BINARY, fs.dir + "/db", {keep_free}, 20000};
  auto server = BufferProcess::Start(popts);
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string target = (*server)->target();
  RemoteReplayBufferOptions copts;
  copts.max_attempts = 1;
  RemoteReplayBuffer client(ClientConfig{target, "", 10000}, copts);
  ASSERT_TRUE(client.WaitForConnected(5000));
  auto first = client.PutEncoded(kTable, 1000, Item(256 << 10, 1));
  ASSERT_TRUE(first.ok()) << first.status();

  // The disk fills up: a put fails with the disk's error, health says so.
  FillDisk(fs.dir + "/filler");
  absl::StatusOr<v1::PutResponse> put;
  for (int i = 0; i < 40; ++i) {
    put = client.PutEncoded(kTable, 1000, Item(256 << 10, uint8_t(2 + i)));
    if (!put.ok()) break;
  }
  ASSERT_FALSE(put.ok()) << "40 puts of 256 KiB fitted on a full 24 MiB disk";
  EXPECT_EQ(put.status().code(), absl::StatusCode::kResourceExhausted) << put.status();
  EXPECT_NE(put.status().message().find("bytes must leave --min-free-bytes 4194304: free space"),
            std::string::npos)
      << put.status();
  EXPECT_TRUE(WaitForHealth(target, "NOT_SERVING", 5)) << Health(target);
  // Reads go on.
  auto got = client.GetEncoded(kTable, first->key());
  EXPECT_TRUE(got.ok()) << got.status();

  // Space comes back: SERVING again, and puts succeed without a restart.
  std::filesystem::remove(fs.dir + "/filler");
  EXPECT_TRUE(WaitForHealth(target, "SERVING", 10)) << Health(target);
  auto after = client.PutEncoded(kTable, 1000, Item(256 << 10, 99));
  EXPECT_TRUE(after.ok()) << after.status();
  EXPECT_TRUE(client.GetEncoded(kTable, first->key()).ok());
  EXPECT_EQ((*server)->Stop(), 0);

  // Started on a full disk: it exits with the reason instead of aborting.
  FillDisk(fs.dir + "/filler");
  auto [code, out] = testing::RunCommand(absl::StrCat(
      "timeout 20 ", LOPT_BUFFER_BINARY, " --listen=127.0.0.1:0 --metrics-listen= --db-path=",
      fs.dir, "/db ", keep_free));
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find("bytes free, less than --min-free-bytes 4194304; free space there"),
            std::string::npos)
      << out;
}

}  // namespace
}  // namespace lopt
