#include "common/util/runtime.h"

#include <malloc.h>
#include <unistd.h>

#include <cstdlib>

#include <thread>

#include <torch/torch.h>

namespace lopt {

void ConfigureRuntime(int threads) {
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  if (threads <= 0) threads = std::max(1u, std::thread::hardware_concurrency());
  torch::set_num_threads(threads);
}

void PreferPassiveOpenMpWait(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  setenv("OMP_WAIT_POLICY", "PASSIVE", /*overwrite=*/0);
  execv("/proc/self/exe", argv);  // returns only on failure: carry on as we are
}

}  // namespace lopt
