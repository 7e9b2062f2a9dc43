#include "common/runtime.h"

#include <malloc.h>

#include <thread>

#include <torch/torch.h>

namespace lopt {

void ConfigureRuntime(int threads) {
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  if (threads <= 0) threads = std::max(1u, std::thread::hardware_concurrency());
  torch::set_num_threads(threads);
}

}  // namespace lopt
