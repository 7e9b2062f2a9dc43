#include "common/util/runtime.h"

#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>

#include <thread>

#include <torch/torch.h>

namespace lopt {

int DefaultThreadCount(bool on_gpu, unsigned hardware_threads) {
  const int cores = std::max(1, static_cast<int>(hardware_threads));
  return on_gpu ? std::min(cores, kGpuProcessThreads) : cores;
}

void ConfigureRuntime(int threads, bool on_gpu) {
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  if (threads <= 0) threads = DefaultThreadCount(on_gpu, std::thread::hardware_concurrency());
  torch::set_num_threads(threads);
}

void PreferPassiveOpenMpWait(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  setenv("OMP_WAIT_POLICY", "PASSIVE", /*overwrite=*/0);
  execv("/proc/self/exe", argv);  // returns only on failure: carry on as we are
}

}  // namespace lopt
