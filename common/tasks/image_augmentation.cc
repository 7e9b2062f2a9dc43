#include "common/tasks/image_augmentation.h"

#include <torch/torch.h>

namespace lopt {

torch::Tensor AugmentImages(const torch::Tensor& x, int64_t image_size,
                            const v1::ImageAugmentation& spec, torch::Generator& gen) {
  const int64_t S = image_size;
  TORCH_CHECK(x.size(-1) == S * S, "AugmentImages: images of ", x.size(-1),
              " pixels are not ", S, "x", S);
  const int64_t N = x.numel() / (S * S);
  const auto i64 = torch::kInt64;
  // Each image's draws, in the transforms' order: flip [N, 1], then the
  // crop's and the translation's offsets [2 (row, column), N, 1].
  torch::Tensor flip, crop, translation;
  if (spec.horizontal_flip()) flip = torch::randint(0, 2, {N, 1}, gen, i64).to(torch::kBool);
  if (spec.crop_padding() > 0)
    crop = torch::randint(-spec.crop_padding(), spec.crop_padding() + 1, {2, N, 1}, gen, i64);
  if (spec.max_translation() > 0)
    translation = torch::randint(-spec.max_translation(), spec.max_translation() + 1,
                                 {2, N, 1}, gen, i64);
  if (!flip.defined() && !crop.defined() && !translation.defined()) return x;

  // For every image n and output row i (column j): the input row rows[n, i]
  // (column cols[n, j]) it shows, and whether every intermediate image had
  // that pixel inside its frame. Composed backwards from the last transform.
  torch::Tensor rows = torch::arange(S, i64).expand({N, S});
  torch::Tensor cols = rows;
  torch::Tensor row_ok = torch::ones({N, S}, torch::kBool);
  torch::Tensor col_ok = row_ok;
  // out(i, j) = in(i + d_row, j + d_col), 0 outside the frame. A crop of
  // the image padded by p at offset o in [0, 2p] is the shift by o - p.
  auto shift_by = [&](const torch::Tensor& d) {
    rows = rows + d[0];
    cols = cols + d[1];
    row_ok = row_ok & rows.ge(0) & rows.lt(S);
    col_ok = col_ok & cols.ge(0) & cols.lt(S);
  };
  if (translation.defined()) shift_by(translation);
  if (crop.defined()) shift_by(crop);
  if (flip.defined()) cols = torch::where(flip, S - 1 - cols, cols);
  rows = rows.clamp(0, S - 1);
  cols = cols.clamp(0, S - 1);

  // Two gathers with broadcast (stride-0) indices: no [N, S, S] index tensor.
  const torch::Device dev = x.device();
  torch::Tensor img = x.reshape({N, S, S});
  img = img.gather(1, rows.to(dev).unsqueeze(2).expand({N, S, S}));
  img = img.gather(2, cols.to(dev).unsqueeze(1).expand({N, S, S}));
  img.masked_fill_(row_ok.logical_not().to(dev).unsqueeze(2), 0);
  img.masked_fill_(col_ok.logical_not().to(dev).unsqueeze(1), 0);
  return img.view(x.sizes());
}

}  // namespace lopt
