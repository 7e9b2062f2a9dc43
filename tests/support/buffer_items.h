// Helpers of the tests that put items into a real lopt-buffer and make its
// disk fill up: items of known bytes, the buffer's health as its readiness
// probe sees it, and a small tmpfs (root only) that a file fills.
#pragma once

#include <cstdint>
#include <random>
#include <string>

#include "common/rpc/tensor_codec.h"

namespace lopt::testing {

// One uint8 tensor "state" of `bytes` bytes, all `fill`.
EncodedItem FilledItem(size_t bytes, uint8_t fill);
// One uint8 tensor "state" of a random size in [min_bytes, max_bytes] and
// random bytes.
EncodedItem RandomItem(std::mt19937& rng, size_t min_bytes, size_t max_bytes);

// The health of lopt.v1.BufferService at `target` ("SERVING",
// "NOT_SERVING" or "error: ..."), asked as the readiness probe does.
std::string BufferHealth(const std::string& target, const std::string& auth_token = "");
bool WaitForBufferHealth(const std::string& target, const std::string& want, int seconds,
                         const std::string& auth_token = "");

// Writes `path` until its file system is full; false if it cannot be created.
bool FillDisk(const std::string& path);

// A tmpfs of `size` (mount(8)'s size= syntax, e.g. "24m") mounted on a fresh
// directory, unmounted and removed when destroyed. mounted() is false when
// it could not be mounted (not root); error() says why.
class Tmpfs {
 public:
  explicit Tmpfs(const std::string& size);
  ~Tmpfs();
  Tmpfs(const Tmpfs&) = delete;
  Tmpfs& operator=(const Tmpfs&) = delete;
  bool mounted() const { return mounted_; }
  const std::string& dir() const { return dir_; }
  const std::string& error() const { return error_; }

 private:
  std::string dir_, error_;
  bool mounted_ = false;
};

}  // namespace lopt::testing
