// Fashion-MNIST-layout IDX files (plain or gzipped), as float tensors.
#pragma once

#include <memory>
#include <string>

#include <torch/types.h>

#include "absl/status/statusor.h"

namespace lopt {

struct ImageDataset {
  torch::Tensor train_x;  // [N, H*W] float32 in [0, 1], resized to image_size
  torch::Tensor train_y;  // [N] int64
  torch::Tensor test_x;
  torch::Tensor test_y;
  int64_t image_size = 0;
  int64_t num_classes = 0;
};

// Reads {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] from `dir` and
// area-resizes the images to image_size x image_size. Cached per (dir, size):
// every task of a process shares one copy.
absl::StatusOr<std::shared_ptr<const ImageDataset>> LoadImageDataset(
    const std::string& dir, int64_t image_size);

}  // namespace lopt
