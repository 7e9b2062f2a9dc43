#include "tests/support/buffer_items.h"

#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "common/rpc/rpc.h"
#include "common/util/remove_tree.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace lopt::testing {
namespace {

EncodedItem StateItem(std::string payload) {
  EncodedItem item;
  item.payload = std::move(payload);
  const int64_t bytes = static_cast<int64_t>(item.payload.size());
  v1::TensorHeader h;
  h.set_name("state");
  h.set_dtype(v1::UINT8);
  h.add_shape(bytes);
  h.set_num_bytes(bytes);
  item.tensors.push_back(h);
  item.payload_crc32 = Crc32(item.payload.data(), item.payload.size());
  return item;
}

}  // namespace

EncodedItem FilledItem(size_t bytes, uint8_t fill) {
  return StateItem(std::string(bytes, static_cast<char>(fill)));
}

EncodedItem RandomItem(std::mt19937& rng, size_t min_bytes, size_t max_bytes) {
  size_t bytes = std::uniform_int_distribution<size_t>(min_bytes, max_bytes)(rng);
  std::string payload(bytes, '\0');
  for (size_t i = 0; i < bytes; i += 8) {
    uint64_t v = rng();
    std::memcpy(&payload[i], &v, std::min<size_t>(8, bytes - i));
  }
  return StateItem(std::move(payload));
}

std::string BufferHealth(const std::string& target, const std::string& auth_token) {
  ClientConfig config{target, auth_token, 3000};
  auto stub = grpc::health::v1::Health::NewStub(MakeChannel(config));
  grpc::health::v1::HealthCheckRequest req;
  req.set_service("lopt.v1.BufferService");
  grpc::health::v1::HealthCheckResponse resp;
  auto ctx = MakeContext(config);
  grpc::Status s = stub->Check(ctx.get(), req, &resp);
  if (!s.ok()) return "error: " + s.error_message();
  return resp.status() == grpc::health::v1::HealthCheckResponse::SERVING ? "SERVING"
                                                                         : "NOT_SERVING";
}

bool WaitForBufferHealth(const std::string& target, const std::string& want, int seconds,
                         const std::string& auth_token) {
  for (int i = 0; i < seconds * 10; ++i) {
    if (BufferHealth(target, auth_token) == want) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

bool FillDisk(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return false;
  std::string block(1 << 16, 'x');
  while (std::fwrite(block.data(), 1, block.size(), f) == block.size()) {
  }
  std::fclose(f);
  return true;
}

Tmpfs::Tmpfs(const std::string& size) {
  std::string tmpl = (std::filesystem::temp_directory_path() / "lopt_tmpfs_XXXXXX").string();
  dir_ = mkdtemp(tmpl.data());
  if (::mount("tmpfs", dir_.c_str(), "tmpfs", 0, ("size=" + size).c_str()) != 0)
    error_ = std::strerror(errno);
  else
    mounted_ = true;
}

Tmpfs::~Tmpfs() {
  if (mounted_ && ::umount2(dir_.c_str(), MNT_DETACH) != 0)
    ADD_FAILURE() << "cannot unmount " << dir_ << ": " << std::strerror(errno);
  lopt::RemoveTree(dir_).IgnoreError();
}

}  // namespace lopt::testing
