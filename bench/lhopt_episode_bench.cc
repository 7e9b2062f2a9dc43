// LHOPT episodes a second on one device: a unit's P controlled inner runs
// (RunControlled, as a worker runs them: the task's particle-batched inner
// steps, CIAO, the unitless features and a sampling LSTM policy at each
// decision, curve points on the test split) for each task family of a
// paper-scale mixture. Run it with --device cpu and --device cuda to compare.
//
//   bench_lhopt_episode [--device cpu|cuda] [--data-dir DIR] [--text PATH]
//                       [--particles 8] [--steps 1000] [--decisions 16]
//                       [--tasks quadratic,mlp28,cnn28,byte_lm] [--repeats 2]
//                       [--threads N] [--json FILE]
//
// Prints, per task, seconds per unit, episodes/s and inner particle-steps/s
// (the best of --repeats units after one warm-up unit), and writes them as
// JSON lines to --json.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <torch/cuda.h>
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/lhopt/lhopt_episode.h"
#include "common/lhopt/lhopt_unit.h"
#include "common/tasks/task.h"
#include "common/util/runtime.h"
#include "kinds/job_door.h"

namespace {

using Clock = std::chrono::steady_clock;

// The families of the mixture, at the sizes of the ELO study and bench/lhopt.
std::string TaskText(const std::string& name, const std::string& data_dir, const std::string& text) {
  const std::string data = data_dir.empty() ? "" : absl::StrCat(" data_dir: \"", data_dir, "\"");
  if (name == "quadratic") return "noisy_quadratic { min_dim: 1000 max_dim: 1000 }";
  if (name == "mlp8")
    return absl::StrCat("fmnist_mlp { image_size: 8 hidden_sizes: 32 batch_size: 128", data, " }");
  if (name == "mlp28")
    return absl::StrCat("fmnist_mlp { image_size: 28 hidden_sizes: 128 hidden_sizes: 128 batch_size: 128",
                        data, " }");
  if (name == "cnn28")
    return absl::StrCat("fmnist_cnn { image_size: 28 channels: 16 channels: 32 batch_size: 64", data, " }");
  if (name == "byte_lm")
    return absl::StrCat("byte_lm {", text.empty() ? "" : absl::StrCat(" data_path: \"", text, "\""),
                        " context_length: 64 model_dim: 64 num_layers: 2 batch_size: 32 }");
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> flags = {
      {"device", "cpu"}, {"data-dir", ""},     {"text", ""},
      {"particles", "8"}, {"steps", "1000"},   {"decisions", "16"},
      {"tasks", "quadratic,mlp28,cnn28,byte_lm"}, {"repeats", "2"}, {"threads", "0"},
      {"json", ""}};
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) != 0 || !flags.count(a.substr(2)) || i + 1 >= argc) {
      std::fprintf(stderr, "bench_lhopt_episode: unknown or incomplete flag %s (see the header)\n",
                   a.c_str());
      return 2;
    }
    flags[a.substr(2)] = argv[++i];
  }
  lopt::ConfigureRuntime(std::stoi(flags["threads"]));
  auto device = lopt::ParseDevice(flags["device"]);
  if (!device.ok()) {
    std::fprintf(stderr, "bench_lhopt_episode: %s\n", std::string(device.status().message()).c_str());
    return 2;
  }
  const int64_t P = std::stoll(flags["particles"]), N = std::stoll(flags["steps"]),
                D = std::stoll(flags["decisions"]), repeats = std::stoll(flags["repeats"]);
  std::ofstream json;
  if (!flags["json"].empty()) json.open(flags["json"], std::ios::app);
  const bool cuda = device->is_cuda();
  auto sync = [&] {
    if (cuda) torch::cuda::synchronize();
  };
  std::printf("device %s, P = %lld particles, %lld inner steps, %lld decisions\n",
              flags["device"].c_str(), (long long)P,
              (long long)N, (long long)D);
  std::printf("%-10s %12s %12s %18s %14s\n", "task", "s / unit", "episodes/s", "particle-steps/s",
              "final loss");
  for (const auto& name : absl::StrSplit(flags["tasks"], ',')) {
    const std::string n(name);
    const std::string spec_text = TaskText(n, flags["data-dir"], flags["text"]);
    if (spec_text.empty()) {
      std::fprintf(stderr, "bench_lhopt_episode: unknown task %s\n", n.c_str());
      return 2;
    }
    auto job = lopt::JobFromText(
        absl::StrCat("task { ", spec_text, " }\n lhopt { tasks { task { ", spec_text,
                     " } } hidden_size: 64 }"),
        "<bench job>");
    if (!job.ok()) {
      std::fprintf(stderr, "bench_lhopt_episode: %s\n", std::string(job.status().message()).c_str());
      return 2;
    }
    auto task = lopt::MakeTask(job->task(), 1, *device);
    if (!task.ok()) {
      std::fprintf(stderr, "bench_lhopt_episode: %s: %s\n", n.c_str(),
                   std::string(task.status().message()).c_str());
      return 1;
    }
    lopt::LhoptPolicy policy(lopt::LhoptPolicyOptionsFor(*job));
    lopt::EwmaNormalizer norm(lopt::kNumLhoptFeatures);
    double best = 1e300, final_loss = 0;
    for (int64_t r = 0; r <= repeats; ++r) {  // r = 0: warm-up
      lopt::ControlledRunConfig c;
      c.groups = P;
      c.inner_steps = N;
      c.decisions = D;
      c.curve_points = 10;
      c.task_seed = 100 + r;
      c.action_seed = 200 + r;
      sync();
      const auto t0 = Clock::now();
      auto run = lopt::RunControlled(**task, c, policy.get(), &norm, nullptr, nullptr);
      sync();
      const double s = std::chrono::duration<double>(Clock::now() - t0).count();
      if (!run.ok()) {
        std::fprintf(stderr, "bench_lhopt_episode: %s: %s\n", n.c_str(),
                     std::string(run.status().message()).c_str());
        return 1;
      }
      if (r > 0 && s < best) {
        best = s;
        final_loss = run->test_loss.mean().item<double>();
      }
    }
    std::printf("%-10s %12.3f %12.2f %18.0f %14.4f\n", n.c_str(), best, P / best, P * N / best,
                final_loss);
    if (json.is_open())
      json << absl::StrCat("{\"task\": \"", n, "\", \"device\": \"", flags["device"],
                           "\", \"particles\": ", P,
                           ", \"steps\": ", N, ", \"decisions\": ", D, ", \"seconds_per_unit\": ", best,
                           ", \"episodes_per_s\": ", P / best,
                           ", \"particle_steps_per_s\": ", P * N / best, "}\n");
  }
  return 0;
}
