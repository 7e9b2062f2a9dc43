// Inner particle-steps per second of ELO/PES meta-training: EloUnroller
// truncations (forward, backward, small_fc_lopt step, PES bookkeeping) on the
// Fashion-MNIST MLPs, against the jitted, vmapped JAX implementation measured
// on the same H100 (REFERENCE.md section 5). On CUDA it times the captured
// inner step (CUDA graph) and the same kernels launched eagerly, and counts
// the kernel launches of one captured inner step at each particle count.
//
//   bench_pes_throughput [--device cuda] [--data-dir DIR] [--seconds 4]
//                        [--json FILE] [--configs 8:16,8:128,28:16]
//                        [--bc] (behaviour cloning on; the JAX bars have none)
//                        [--graph-steps N] (inner steps a multi-step graph replays;
//                        0: EloUnroller's default, 8 or LOPT_CUDA_GRAPH_STEPS; 1: off)
//                        [--graph-only] (CUDA: skip the no-graph runs)
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <torch/torch.h>
#ifdef LOPT_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/elo/elo_unroller.h"
#include "common/elo/small_fc_lopt.h"
#include "common/tasks/task.h"
#include "common/util/runtime.h"
#include "kinds/job_door.h"

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a) {
  return std::chrono::duration<double>(Clock::now() - a).count();
}

struct Config {
  int image = 8;
  int particles = 16;
  double jax = 0;  // the JAX bar, inner particle-steps/s (0: none)
};

double JaxBar(int image, int particles) {
  if (image == 8 && particles == 16) return 149561;
  if (image == 8 && particles == 128) return 352180;
  if (image == 28 && particles == 16) return 9268;
  return 0;
}

lopt::v1::JobSpec JobFor(const Config& c, const std::string& data_dir, bool bc) {
  std::string text = absl::StrCat(
      "task { fmnist_mlp { image_size: ", c.image, " hidden_sizes: ", c.image == 8 ? 32 : 128,
      " activation: RELU batch_size: 128",
      data_dir.empty() ? "" : absl::StrCat(" data_dir: \"", data_dir, "\""), " } }\n",
      "lopt { hidden_size: 32 step_mult: 0.001 exp_mult: 0.001 }\n",
      "pes { num_tasks: ", c.particles / 2,
      " truncation_length: 50 sigma: 0.01 min_unroll_length: 100 max_unroll_length: 1000"
      " unroll_length_distribution: UNIFORM }\n",
      "elo { buffer { enabled: false } behavior_cloning { enabled: ", bc ? "true" : "false",
      " teacher_lr: 0.001 } }\n");
  return lopt::JobFromText(text, "<bench job>").value();
}

struct Result {
  double steps_per_s = 0;
  double ms_per_truncation = 0;
  int64_t truncations = 0;
  double meta_loss_first = 0, meta_loss_last = 0;
  int64_t graph_nodes = -1, graph_kernels = -1, chunk_nodes = -1;
};

int64_t g_graph_steps = 0;  // --graph-steps (0: the unroller's default / env)

Result Measure(const lopt::v1::JobSpec& job, const lopt::Task& task, bool graph, double budget) {
  lopt::EloUnroller un(job, &task, nullptr, "bench", 7);
  un.set_use_cuda_graph(graph);
  if (g_graph_steps > 0) un.set_cuda_graph_steps(g_graph_steps);
  torch::Generator gen = lopt::MakeGenerator(3, 0, 0);
  lopt::SmallFcLopt lo(job.lopt());
  torch::Tensor theta = lo.InitTheta(gen);
  Result r;
  int64_t step = 0;
  auto run = [&] {
    lopt::TruncationResult tr = un.RunTruncation(theta, 1.0, step++);
    theta -= 1e-3 * tr.grad.clamp(-3, 3);  // a plain outer step keeps theta moving
    return tr;
  };
  for (int i = 0; i < 3; ++i) r.meta_loss_first = run().meta_loss;  // warm-up, capture
  int64_t n = 0, particle_steps = 0;
  auto start = Clock::now();
  while (Seconds(start) < budget || n < 3) {
    lopt::TruncationResult tr = run();  // ends with the gradient on the CPU: synchronised
    particle_steps += tr.particle_steps;
    r.meta_loss_last = tr.meta_loss;
    ++n;
  }
  double s = Seconds(start);
  r.steps_per_s = double(particle_steps) / s;
  r.ms_per_truncation = 1e3 * s / double(n);
  r.truncations = n;
  r.graph_nodes = un.graph_nodes();
  r.graph_kernels = un.graph_kernel_nodes();
  r.chunk_nodes = un.chunk_graph_nodes();
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  lopt::ConfigureRuntime(0);
  std::string device_name = "cpu", data_dir, json, configs = "8:16,8:128,28:16";
  double seconds = 4;
  bool bc = false, graph_only = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--device") device_name = next();
    else if (a == "--data-dir") data_dir = next();
    else if (a == "--seconds") seconds = std::atof(next().c_str());
    else if (a == "--json") json = next();
    else if (a == "--configs") configs = next();
    else if (a == "--bc") bc = true;
    else if (a == "--graph-steps") g_graph_steps = std::atoll(next().c_str());
    else if (a == "--graph-only") graph_only = true;  // skip the no-graph runs
    else {
      std::fprintf(stderr, "unknown flag %s\n", a.c_str());
      return 2;
    }
  }
  auto device = lopt::ParseDevice(device_name);
  if (!device.ok()) {
    std::fprintf(stderr, "%s\n", std::string(device.status().message()).c_str());
    return 1;
  }
  std::vector<Config> cs;
  for (absl::string_view c : absl::StrSplit(configs, ',')) {
    std::vector<std::string> f = absl::StrSplit(c, ':');
    Config k;
    k.image = std::atoi(f[0].c_str());
    k.particles = std::atoi(f[1].c_str());
    k.jax = JaxBar(k.image, k.particles);
    cs.push_back(k);
  }
  std::string dev_desc = device->str();
#ifdef LOPT_WITH_CUDA
  if (device->is_cuda()) {
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, device->index()) == cudaSuccess)
      dev_desc = absl::StrCat(dev_desc, " (", prop.name, ")");
  }
#endif
  std::printf("ELO/PES inner particle-steps/s, EloUnroller truncations of 50 steps, batch 128, "
              "BC %s, device %s, %.0f s a point\n", bc ? "on" : "off", dev_desc.c_str(), seconds);
  std::string rows;
  struct Row { Config c; Result graph, eager; };
  std::vector<Row> table;
  for (const Config& c : cs) {
    lopt::v1::JobSpec job = JobFor(c, data_dir, bc);
    auto task = lopt::MakeTask(job.task(), job.seed(), *device);
    if (!task.ok()) {
      std::fprintf(stderr, "%s\n", std::string(task.status().message()).c_str());
      return 1;
    }
    Row row{c, {}, {}};
    if (device->is_cuda()) row.graph = Measure(job, **task, true, seconds);
    if (!(graph_only && device->is_cuda())) row.eager = Measure(job, **task, false, seconds);
    table.push_back(row);
    std::fprintf(stderr, "done %dx%d P=%d\n", c.image, c.image, c.particles);
  }
  std::printf("\n%-18s %-9s %-14s %-14s %-12s %-10s %-10s %-14s %s\n", "task", "particles",
              "graph", "no graph", "JAX (H100)", "graph/JAX", "graph/no", "launches/step",
              "ms/truncation (graph, no graph)");
  for (const Row& r : table) {
    const double best = r.graph.steps_per_s > 0 ? r.graph.steps_per_s : r.eager.steps_per_s;
    std::printf("%-18s %-9d %-14.0f %-14.0f %-12.0f %-10.2f %-10.2f %-14s %.2f, %.2f\n",
                absl::StrCat("fmnist ", r.c.image, "x", r.c.image, " MLP").c_str(), r.c.particles,
                r.graph.steps_per_s, r.eager.steps_per_s, r.c.jax,
                r.c.jax > 0 ? best / r.c.jax : 0.0,
                r.eager.steps_per_s > 0 ? r.graph.steps_per_s / r.eager.steps_per_s : 0.0,
                absl::StrCat(r.graph.graph_kernels, " (", r.graph.graph_nodes, " nodes)").c_str(),
                r.graph.ms_per_truncation, r.eager.ms_per_truncation);
    absl::StrAppend(&rows, rows.empty() ? "" : ",\n", "    {\"image\": ", r.c.image,
                    ", \"particles\": ", r.c.particles, ", \"graph_steps_per_s\": ",
                    r.graph.steps_per_s, ", \"eager_steps_per_s\": ", r.eager.steps_per_s,
                    ", \"jax_steps_per_s\": ", r.c.jax, ", \"ratio_vs_jax\": ",
                    r.c.jax > 0 ? (r.graph.steps_per_s > 0 ? r.graph.steps_per_s
                                                            : r.eager.steps_per_s) / r.c.jax
                                : 0.0,
                    ", \"graph_kernel_launches_per_step\": ", r.graph.graph_kernels,
                    ", \"graph_nodes_per_step\": ", r.graph.graph_nodes,
                    ", \"multi_step_graph_nodes\": ", r.graph.chunk_nodes,
                    ", \"graph_steps\": ", g_graph_steps,
                    ", \"ms_per_truncation_graph\": ", r.graph.ms_per_truncation,
                    ", \"ms_per_truncation_eager\": ", r.eager.ms_per_truncation,
                    ", \"truncations_timed_graph\": ", r.graph.truncations,
                    ", \"truncations_timed_eager\": ", r.eager.truncations,
                    ", \"meta_loss_first_graph\": ", r.graph.meta_loss_first,
                    ", \"meta_loss_last_graph\": ", r.graph.meta_loss_last,
                    ", \"meta_loss_first_eager\": ", r.eager.meta_loss_first,
                    ", \"meta_loss_last_eager\": ", r.eager.meta_loss_last, "}");
  }
  if (!json.empty()) {
    FILE* f = std::fopen(json.c_str(), "w");
    if (f) {
      std::fprintf(f, "{\n  \"bench\": \"pes_throughput\",\n  \"device\": \"%s\",\n  \"bc\": %s,\n"
                   "  \"seconds_per_point\": %.1f,\n  \"rows\": [\n%s\n  ]\n}\n",
                   dev_desc.c_str(), bc ? "true" : "false", seconds, rows.c_str());
      std::fclose(f);
    }
  }
  return 0;
}
