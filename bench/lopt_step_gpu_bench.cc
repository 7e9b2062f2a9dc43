// The small_fc_lopt optimizer step on the GPU for ViT-B/16's 152 parameter
// tensors (86,567,656 float32 parameters), against AdamW on the same tensors
// in the same run. Times with CUDA events around each step; reports the
// median (and min, max) over --steps timed steps after --warmup, the bytes
// the step moves through device memory and their fraction of the HBM limit.
//
//   bench_lopt_step_gpu [--steps 30] [--warmup 5] [--particles 1]
//                       [--hbm-tbps 3.35] [--json out.json]
//
// Rows: the fused step (SmallFcLopt::Step, i.e. what lopt::LearnedOptimizer
// runs) in fp32 and tf32 MLP precision, each without and with applying
// p -= u; torch's fused AdamW kernel (at::_fused_adamw_, what
// torch.optim.AdamW(fused=True) runs: LibTorch's C++ AdamWOptions has no
// fused switch) and torch::optim::AdamW of the C++ API (per-tensor ops).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <torch/torch.h>

#include "common/elo/small_fc_lopt.h"
#include "common/tasks/task.h"
#include "kernels/lopt_step_cuda.h"

namespace {

std::vector<std::vector<int64_t>> VitB16Shapes() {
  const int64_t d = 768, mlp = 3072;
  std::vector<std::vector<int64_t>> s = {{d, 3, 16, 16}, {d}, {1, 1, d}, {1, 197, d}};
  for (int b = 0; b < 12; ++b) {
    for (auto x : std::vector<std::vector<int64_t>>{
             {d}, {d}, {3 * d, d}, {3 * d}, {d, d}, {d}, {d}, {d}, {mlp, d}, {mlp}, {d, mlp}, {d}})
      s.push_back(x);
  }
  s.push_back({d});
  s.push_back({d});
  s.push_back({1000, d});
  s.push_back({1000});
  return s;
}

void CudaCheck(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

struct Stats {
  double median = 0, min = 0, max = 0;
};

template <typename Fn>
Stats TimeMs(Fn fn, int warmup, int steps) {
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  for (int i = 0; i < warmup; ++i) fn();
  CudaCheck(cudaStreamSynchronize(stream), "warm-up");
  std::vector<cudaEvent_t> ev(2 * steps);
  for (auto& e : ev) CudaCheck(cudaEventCreate(&e), "event");
  for (int i = 0; i < steps; ++i) {
    CudaCheck(cudaEventRecord(ev[2 * i], stream), "record");
    fn();
    CudaCheck(cudaEventRecord(ev[2 * i + 1], stream), "record");
  }
  CudaCheck(cudaStreamSynchronize(stream), "sync");
  CudaCheck(cudaGetLastError(), "launch");
  std::vector<double> ms(steps);
  for (int i = 0; i < steps; ++i) {
    float t = 0;
    CudaCheck(cudaEventElapsedTime(&t, ev[2 * i], ev[2 * i + 1]), "elapsed");
    ms[i] = t;
  }
  for (auto& e : ev) cudaEventDestroy(e);
  std::sort(ms.begin(), ms.end());
  Stats s;
  s.median = steps % 2 ? ms[steps / 2] : 0.5 * (ms[steps / 2 - 1] + ms[steps / 2]);
  s.min = ms.front();
  s.max = ms.back();
  return s;
}

struct Row {
  std::string name;
  Stats t;
  double bytes = 0;  // device-memory traffic of one step
};

}  // namespace

int main(int argc, char** argv) {
  int steps = 30, warmup = 5;
  int64_t P = 1;
  double hbm_tbps = 3.35;
  std::string json;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string f = argv[i], v = argv[i + 1];
    if (f == "--steps") steps = std::stoi(v);
    else if (f == "--warmup") warmup = std::stoi(v);
    else if (f == "--particles") P = std::stoll(v);
    else if (f == "--hbm-tbps") hbm_tbps = std::stod(v);
    else if (f == "--json") json = v;
    else {
      std::fprintf(stderr, "unknown flag %s\n", f.c_str());
      return 2;
    }
  }
  if (!torch::cuda::is_available()) {
    std::fprintf(stderr, "no CUDA device\n");
    return 2;
  }
  torch::NoGradGuard no_grad;
  cudaDeviceProp prop;
  CudaCheck(cudaGetDeviceProperties(&prop, 0), "properties");
  const auto shapes = VitB16Shapes();
  const torch::Device dev(torch::kCUDA);
  auto opts = torch::TensorOptions().device(dev).dtype(torch::kFloat32);
  torch::manual_seed(0);

  // Parameters and gradients [P, shape...] (random, not zeros).
  std::vector<torch::Tensor> params, grads;
  int64_t numel = 0, factored_numel = 0, entries = 0;
  for (const auto& s : shapes) {
    std::vector<int64_t> full = {P};
    full.insert(full.end(), s.begin(), s.end());
    params.push_back(torch::randn(full, opts) * 0.02);
    grads.push_back(torch::randn(full, opts) * 1e-3);
    int64_t n = 1;
    for (auto x : s) n *= x;
    numel += n;
    lopt::FactoredDims fd = lopt::FactoredDimsOf(s);
    if (fd.factored) {
      factored_numel += n;
      entries += n / s[fd.d0] + n / s[fd.d1];
    }
  }
  std::printf("device: %s, %d SMs, %.0f MB L2\n", prop.name, prop.multiProcessorCount,
              prop.l2CacheSize / 1e6);
  std::printf("ViT-B/16: %zu tensors, %lld parameters per particle, %lld particle(s)\n",
              shapes.size(), (long long)numel, (long long)P);

  lopt::v1::LearnedOptimizerSpec spec;
  spec.set_hidden_size(32);
  spec.set_step_mult(0.001f);
  spec.set_exp_mult(0.001f);
  lopt::SmallFcLopt lo(spec);
  torch::Generator gen = lopt::MakeGenerator(1, 0, 0);
  torch::Tensor theta = lo.InitTheta(gen).to(dev);
  lopt::LoptState state = lo.InitState(params);
  torch::Tensor step = torch::zeros({P}, torch::TensorOptions().device(dev).dtype(torch::kInt64));

  // Bytes of one fused step (see kernels/lopt_step_cuda.h): accumulate reads
  // g, mom, rms (and v of unfactored tensors) and writes mom, rms (v); the
  // statistics and MLP launches each read g, p, mom, rms (v) and the row and
  // column tables (L2-resident, counted once); MLP writes u. Applying the
  // update reads p and u and writes p.
  const double N = double(numel) * P, NU = double(numel - factored_numel) * P;
  const double lo_bytes = N * (4 + 12 + 4 + 12 + 4) + NU * (12 + 12)  // accumulate
                          + 2 * (N * (4 + 4 + 12 + 4) + NU * 12)      // statistics, MLP
                          + N * 4                                     // u
                          + double(entries) * P * 4 * (1 + 3 + 3);    // tables
  const double apply_bytes = N * 12;
  // The least any optimizer step of this kind moves: read g, p, mom, rms (v),
  // write p, mom, rms (v) once.
  const double lo_min_bytes = N * (4 + 4 + 12 + 4 + 4 + 12 + 4) + NU * 24;

  std::vector<Row> rows;
  for (auto mode : {lopt::kernels::LoptCudaMlp::kFp32, lopt::kernels::LoptCudaMlp::kTf32}) {
    lopt::kernels::LoptCudaMlpSetting() = mode;
    const std::string tag = mode == lopt::kernels::LoptCudaMlp::kFp32 ? "fp32" : "tf32";
    double host_s = 0;
    int host_n = 0;
    Stats t = TimeMs(
        [&] {
          auto h0 = std::chrono::steady_clock::now();
          lo.Step(params, grads, &state, step, theta);
          host_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - h0).count();
          ++host_n;
        },
        warmup, steps);
    rows.push_back({"small_fc_lopt fused step, " + tag + " MLP (u only)", t, lo_bytes});
    float ms[5];
    if (lopt::kernels::LoptStepCudaLastTimings(ms))
      std::printf("%s launches (LOPT_CUDA_TIMING, last step): copy+memset %.3f, accumulate %.3f, "
                  "tables %.3f, statistics %.3f, MLP %.3f ms\n",
                  tag.c_str(), ms[0], ms[1], ms[2], ms[3], ms[4]);
    std::printf("%s: host time of one Step() call (launches queued, no sync) %.3f ms\n",
                tag.c_str(), 1e3 * host_s / std::max(host_n, 1));
    t = TimeMs(
        [&] {
          auto u = lo.Step(params, grads, &state, step, theta);
          for (size_t j = 0; j < u.size(); ++j) params[j].sub_(u[j]);
        },
        warmup, steps);
    rows.push_back({"small_fc_lopt fused step, " + tag + " MLP + apply p -= u", t,
                    lo_bytes + apply_bytes});
  }
  lopt::kernels::LoptCudaMlpSetting() = lopt::kernels::LoptCudaMlp::kFp32;

  // AdamW on the same tensors (one particle's worth when P > 1: all of them).
  std::vector<torch::Tensor> ap, ag, m1, m2, steps_t;
  for (size_t j = 0; j < params.size(); ++j) {
    ap.push_back(params[j].clone());
    ag.push_back(grads[j].clone());
    m1.push_back(torch::zeros_like(ap.back()));
    m2.push_back(torch::zeros_like(ap.back()));
    steps_t.push_back(torch::zeros({}, opts));
  }
  const double adam_bytes = N * (4 + 4 + 4 + 4 + 4 + 4 + 4);  // read p g m v, write p m v
  {
    Stats t = TimeMs(
        [&] {
          at::_foreach_add_(steps_t, 1);  // as torch.optim.AdamW(fused=True) does
          at::_fused_adamw_(ap, ag, m1, m2, {}, steps_t, 1e-3, 0.9, 0.999, 1e-2, 1e-8, false,
                            false);
        },
        warmup, steps);
    rows.push_back({"AdamW fused (at::_fused_adamw_)", t, adam_bytes});
  }
  {
    std::vector<torch::Tensor> leaf;
    for (size_t j = 0; j < ap.size(); ++j) {
      leaf.push_back(ap[j].detach().clone().set_requires_grad(true));
      leaf.back().mutable_grad() = ag[j];
    }
    torch::optim::AdamW opt(leaf, torch::optim::AdamWOptions(1e-3).weight_decay(1e-2));
    Stats t = TimeMs([&] { opt.step(); }, warmup, steps);
    rows.push_back({"AdamW torch::optim::AdamW (C++ API, per-tensor ops)", t, adam_bytes});
  }

  const double limit = hbm_tbps * 1e12;
  std::printf("\n%-56s %9s %9s %9s %9s %8s\n", "step (median of CUDA-event times)", "ms", "min",
              "max", "GB moved", "of HBM");
  for (const Row& r : rows) {
    const double frac = r.bytes / (r.t.median * 1e-3) / limit;
    std::printf("%-56s %9.3f %9.3f %9.3f %9.2f %7.1f%%\n", r.name.c_str(), r.t.median, r.t.min,
                r.t.max, r.bytes / 1e9, 100 * frac);
  }
  std::printf("\nHBM limit %.2f TB/s: the fused step's traffic %.2f GB -> %.3f ms; the least a "
              "step of this optimizer moves (each input read, each output written once) "
              "%.2f GB -> %.3f ms\n",
              hbm_tbps, lo_bytes / 1e9, lo_bytes / limit * 1e3, lo_min_bytes / 1e9,
              lo_min_bytes / limit * 1e3);
  std::printf("MLP work: %.1f GFLOP a step (39->32->32->2 with the time features folded: "
              "1,984 FMA a parameter)\n", N * 1984 * 2 / 1e9);
  std::printf("bars: < 10 ms; PyLO fused 69.7 ms and torch AdamW fused 1.35 ms on the same H100\n");

  if (!json.empty()) {
    std::ofstream o(json);
    o << "{\n  \"device\": \"" << prop.name << "\",\n  \"tensors\": " << shapes.size()
      << ",\n  \"parameters\": " << numel << ",\n  \"particles\": " << P
      << ",\n  \"steps\": " << steps << ",\n  \"warmup\": " << warmup
      << ",\n  \"hbm_tbps\": " << hbm_tbps << ",\n  \"rows\": [\n";
    for (size_t i = 0; i < rows.size(); ++i) {
      const Row& r = rows[i];
      o << "    {\"name\": \"" << r.name << "\", \"median_ms\": " << r.t.median
        << ", \"min_ms\": " << r.t.min << ", \"max_ms\": " << r.t.max
        << ", \"bytes\": " << r.bytes
        << ", \"hbm_fraction\": " << r.bytes / (r.t.median * 1e-3) / limit << "}"
        << (i + 1 < rows.size() ? "," : "") << "\n";
    }
    o << "  ]\n}\n";
  }
  return 0;
}
