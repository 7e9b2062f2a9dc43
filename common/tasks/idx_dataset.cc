#include "common/tasks/idx_dataset.h"

#include <zlib.h>

#include <map>
#include <mutex>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/spec/job_limits.h"
#include "common/util/checkpoint.h"

namespace lopt {
namespace {

absl::StatusOr<std::string> ReadMaybeGz(const std::string& base) {
  for (const std::string& path : {base, base + ".gz"}) {
    if (!FileExists(path)) continue;
    // A regular file of bounded size, and no more than that once inflated.
    if (auto s = CheckDataFile(path); !s.ok()) return s;
    gzFile f = gzopen(path.c_str(), "rb");  // reads plain files too
    if (f == nullptr) continue;
    std::string out;
    char buf[1 << 16];
    int n;
    while ((n = gzread(f, buf, sizeof(buf))) > 0) {
      out.append(buf, n);
      if (int64_t(out.size()) > kMaxDataBytes) {
        gzclose(f);
        return absl::InvalidArgumentError(
            absl::StrCat(path, " inflates to more than the ", kMaxDataBytes, " bytes a task may read"));
      }
    }
    int err = 0;
    const char* msg = gzerror(f, &err);
    gzclose(f);
    if (n < 0 || (err != Z_OK && err != Z_STREAM_END))
      return absl::DataLossError(absl::StrCat(path, ": ", msg));
    return out;
  }
  return absl::NotFoundError(absl::StrCat(
      "cannot read ", base, "[.gz] (install Debian's dataset-fashion-mnist, or "
      "point data_dir at a directory of Fashion-MNIST-layout IDX files)"));
}

uint32_t BigEndian32(const std::string& s, size_t off) {
  return (uint32_t(uint8_t(s[off])) << 24) | (uint32_t(uint8_t(s[off + 1])) << 16) |
         (uint32_t(uint8_t(s[off + 2])) << 8) | uint32_t(uint8_t(s[off + 3]));
}

absl::StatusOr<torch::Tensor> ReadImages(const std::string& path, int64_t size) {
  auto raw = ReadMaybeGz(path);
  if (!raw.ok()) return raw.status();
  const std::string& s = *raw;
  if (s.size() < 16 || BigEndian32(s, 0) != 0x803)
    return absl::DataLossError(absl::StrCat(path, ": not an IDX3 image file"));
  int64_t n = BigEndian32(s, 4), h = BigEndian32(s, 8), w = BigEndian32(s, 12);
  if (int64_t(s.size()) != 16 + n * h * w)
    return absl::DataLossError(absl::StrCat(path, ": truncated: expected ",
                                            16 + n * h * w, " bytes, got ", s.size()));
  torch::Tensor bytes = torch::from_blob(const_cast<char*>(s.data()) + 16,
                                         {n, 1, h, w}, torch::kUInt8);
  torch::Tensor x = bytes.to(torch::kFloat32).div_(255.0);
  if (size != h || size != w)
    x = torch::adaptive_avg_pool2d(x, {size, size});
  return x.reshape({n, size * size}).contiguous();
}

absl::StatusOr<torch::Tensor> ReadLabels(const std::string& path) {
  auto raw = ReadMaybeGz(path);
  if (!raw.ok()) return raw.status();
  const std::string& s = *raw;
  if (s.size() < 8 || BigEndian32(s, 0) != 0x801)
    return absl::DataLossError(absl::StrCat(path, ": not an IDX1 label file"));
  int64_t n = BigEndian32(s, 4);
  if (int64_t(s.size()) != 8 + n)
    return absl::DataLossError(absl::StrCat(path, ": truncated label file"));
  return torch::from_blob(const_cast<char*>(s.data()) + 8, {n}, torch::kUInt8)
      .to(torch::kInt64);
}

}  // namespace

absl::StatusOr<std::shared_ptr<const ImageDataset>> LoadImageDataset(
    const std::string& dir, int64_t image_size) {
  static std::mutex mu;
  static std::map<std::pair<std::string, int64_t>, std::shared_ptr<const ImageDataset>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto key = std::make_pair(dir, image_size);
  if (auto it = cache.find(key); it != cache.end()) return it->second;

  auto ds = std::make_shared<ImageDataset>();
  auto tx = ReadImages(dir + "/train-images-idx3-ubyte", image_size);
  if (!tx.ok()) return tx.status();
  auto ty = ReadLabels(dir + "/train-labels-idx1-ubyte");
  if (!ty.ok()) return ty.status();
  auto vx = ReadImages(dir + "/t10k-images-idx3-ubyte", image_size);
  if (!vx.ok()) return vx.status();
  auto vy = ReadLabels(dir + "/t10k-labels-idx1-ubyte");
  if (!vy.ok()) return vy.status();
  if (tx->size(0) != ty->size(0) || vx->size(0) != vy->size(0))
    return absl::DataLossError(absl::StrCat(dir, ": image and label counts differ"));
  ds->train_x = *tx;
  ds->train_y = *ty;
  ds->test_x = *vx;
  ds->test_y = *vy;
  ds->image_size = image_size;
  ds->num_classes = std::max(ty->max().item<int64_t>(), vy->max().item<int64_t>()) + 1;
  cache[key] = ds;
  return std::shared_ptr<const ImageDataset>(ds);
}

}  // namespace lopt
