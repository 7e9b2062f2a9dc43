// Random augmentation of image batches (random flips, crops with padding,
// translations), as the ELO paper meta-trains and meta-tests with. Vectorised
// over the whole batch: a fixed number of tensor ops whatever its size.
#pragma once

#include <cstdint>

#include <torch/types.h>

#include "lopt/v1/job.pb.h"

namespace lopt {

// Augments every image of `x`, a [..., image_size * image_size] tensor of
// flattened square images (any leading dimensions, any device), as
// v1::ImageAugmentation documents: mirror with probability 1/2, then pad by
// crop_padding zeros and crop back at a uniform offset, then shift by a
// uniform offset in [-max_translation, max_translation] on each axis with 0
// shifted in. Every image draws its own flip and offsets from `gen` (a CPU
// generator, so that a CUDA batch draws what a CPU one does); `spec.enabled`
// is not consulted. REQUIRES: x.size(-1) == image_size^2, the options
// validated (common/spec/job_spec.h).
torch::Tensor AugmentImages(const torch::Tensor& x, int64_t image_size,
                            const v1::ImageAugmentation& spec, torch::Generator& gen);

}  // namespace lopt
