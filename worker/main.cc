// lopt-worker: runs the learner's work units (inner-loop unrolls) on this
// machine's CPU or GPU and streams the results back over gRPC.
#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <fstream>
#include <thread>
#include <vector>

#ifdef LOPT_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/rpc/buffer_client.h"
#include "common/rpc/metrics.h"
#include "common/rpc/rpc.h"
#include "common/rpc/service_main.h"
#include "common/tasks/task.h"
#include "common/util/log.h"
#include "common/util/runtime.h"
#include "worker/worker.h"

namespace {

std::string Hostname() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof buf - 1) != 0 || buf[0] == 0) return "worker";
  return buf;
}

const std::vector<lopt::FlagDef> kFlags = {
    {"learner", "localhost:50051", "learner host:port (WorkService)"},
    {"buffer", "", "buffer server host:port for ELO's replay buffer (empty: a buffer in this process)"},
    {"metrics-listen", "0.0.0.0:9103", "address of /metrics for Prometheus (empty: off)"},
    {"name", "", "stable worker name; the learner keeps a worker's shards on it (default: hostname)"},
    {"device", "cpu", "where inner loops run: cpu (cuda when built with LOPT_CUDA)"},
    {"threads", "0", "LibTorch threads (0: all cores)"},
    {"max-particles", "0", "refuse jobs with more particles than this (0: no limit)"},
    {"memory", "auto",
     "memory a work unit may use, reported to the learner for admission: auto (the GPU's memory "
     "for cuda, else the cgroup's memory.max or the machine's MemTotal), a size (512M, 16G), or 0 "
     "(none reported: the learner trusts it)"},
    {"max-cached-shards", "16", "shards whose inner states stay in memory between units"},
    {"auth-token-file", "", "file with the bearer token of the learner and the buffer server"},
    {"timeout-ms", "10000", "deadline of each unary call to the buffer server"},
    {"tls-ca-file", "", "PEM roots that sign the learner's and the buffer's certificates: talk TLS (empty: plaintext)"},
};

// What --memory means on this machine, in bytes (0: none reported).
absl::StatusOr<int64_t> MemoryBytes(const std::string& flag, const torch::Device& device) {
  if (flag == "auto") {
#ifdef LOPT_WITH_CUDA
    if (device.is_cuda())
      return int64_t(at::cuda::getDeviceProperties(device.has_index() ? device.index() : 0)
                         ->totalGlobalMem);
#endif
    (void)device;
    int64_t bytes = 0;
    std::ifstream meminfo("/proc/meminfo");
    long long kb = 0;
    for (std::string line; std::getline(meminfo, line);)
      if (std::sscanf(line.c_str(), "MemTotal: %lld kB", &kb) == 1) bytes = int64_t(kb) * 1024;
    std::ifstream cgroup("/sys/fs/cgroup/memory.max");  // "max" when unlimited
    int64_t limit = 0;
    if (cgroup >> limit && limit > 0 && (bytes == 0 || limit < bytes)) bytes = limit;
    return bytes;
  }
  size_t used = 0;
  double value = 0;
  try {
    value = std::stod(flag, &used);
  } catch (...) {
    used = 0;
  }
  std::string suffix = flag.substr(used);
  double mult = suffix.empty() ? 1 : 0;
  if (suffix == "K" || suffix == "k") mult = 1024;
  if (suffix == "M" || suffix == "m") mult = 1024.0 * 1024;
  if (suffix == "G" || suffix == "g") mult = 1024.0 * 1024 * 1024;
  if (used == 0 || mult == 0 || !(value >= 0) || value * mult > 9e18)
    return absl::InvalidArgumentError(
        absl::StrCat("--memory must be auto, 0, or a size such as 512M or 16G, got '", flag, "'"));
  return int64_t(value * mult);
}

}  // namespace

int main(int argc, char** argv) {
  lopt::PreferPassiveOpenMpWait(argv);  // first: it may re-execute the program
  // Before any thread starts, so that all of them inherit the mask.
  const sigset_t stop = lopt::BlockStopSignals();
  int code = 0;
  auto f = lopt::ParseServiceFlags("lopt-worker", "worker", "usage: lopt-worker [flags]", argc,
                                   argv, kFlags, &code);
  if (!f) return code;
  auto Fail = [](const absl::Status& s) { return lopt::ServiceStartFailed("lopt-worker", s); };
  auto threads = f->GetInt("threads", 0);
  auto max_particles = f->GetInt("max-particles", 0);
  auto cached = f->GetInt("max-cached-shards", 16);
  auto timeout = f->GetInt("timeout-ms", 10000);
  for (const auto* v : {&threads, &max_particles, &cached, &timeout})
    if (!v->ok()) return Fail(v->status());
  auto device = lopt::ParseDevice(f->Get("device"));
  if (!device.ok()) return Fail(device.status());
  // The worker's tasks (and so its unrollers) live on this device.
  lopt::SetDefaultTaskDevice(*device);
  auto token = lopt::ReadTokenFile(f->Get("auth-token-file"));
  if (!token.ok()) return Fail(token.status());
  lopt::ConfigureRuntime(static_cast<int>(*threads));

  int metrics_port = 0;
  if (auto s = lopt::StartMetricsServer(f->Get("metrics-listen"), &metrics_port); !s.ok())
    return Fail(s);

  lopt::WorkerOptions opt;
  opt.learner = {f->Get("learner"), *token, *timeout};
  if (auto s = lopt::LoadClientTls(f->Get("tls-ca-file"), &opt.learner); !s.ok()) return Fail(s);
  opt.name = f->Get("name").empty() ? Hostname() : f->Get("name");
  opt.device = f->Get("device");
  opt.max_particles = *max_particles;
  auto memory = MemoryBytes(f->Get("memory"), *device);
  if (!memory.ok()) return Fail(memory.status());
  opt.memory_bytes = *memory;
  opt.max_cached_shards = static_cast<int32_t>(*cached);
  if (!f->Get("buffer").empty()) {
    lopt::ClientConfig buffer = opt.learner;  // token, deadline and TLS roots
    buffer.target = f->Get("buffer");
    opt.make_buffer = [buffer] { return std::make_unique<lopt::RemoteReplayBuffer>(buffer); };
  }
  lopt::Worker worker(opt);
  lopt::LogInfo("starting", {{"name", opt.name}, {"learner", opt.learner.target},
                             {"buffer", f->Get("buffer").empty() ? "in-process" : f->Get("buffer")},
                             {"memory_bytes", absl::StrCat(opt.memory_bytes)},
                             {"metrics_port", absl::StrCat(metrics_port)}});
  std::thread stopper = lopt::WaitForStopSignal(stop, [&](const std::string&) { worker.Stop(); });
  worker.Run();
  stopper.detach();  // Run returns on Stop, or on an unrecoverable error
  return 0;
}
