#include "cli/large_eval_mode.h"

#include <cstdio>
#include <memory>
#include <type_traits>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "cli/exit_code.h"
#include "cli/large_eval.h"
#include "cli/rank_launch.h"
#include "common/tasks/task.h"
#include "common/util/flags.h"
#include "common/util/progress.h"
#include "common/util/runtime.h"
#ifdef LOPT_WITH_NCCL
#include "cli/data_parallel.h"
#endif

namespace lopt {
namespace {

constexpr char kUsage[] = R"(usage:
  lopt eval-large --optimizer FILE [--gpus N] [--device cpu|cuda[:N]] [--hidden 4096,4096]
                  [--batch 1024] [--steps 300] [--adamw-lrs 1e-3,3e-3] [--seed N]
                  [--data-dir DIR] [--out DIR] [--threads N] [--lopt-options TEXT]
                  [--no-progress]
      Trains one ReLU MLP 784-hidden-10 on Fashion-MNIST 28x28 with the trained
      optimizer and with AdamW (default: the optimizer's job's learning-rate
      grid) from the same start, and prints final train loss, test loss and
      accuracy, and milliseconds a step. --gpus N > 1 runs one process a GPU:
      each trains on 1/N of every global batch and the gradients are averaged
      with NCCL (builds with LOPT_CUDA and NCCL). Writes DIR/report.json,
      curves.csv and table.txt (default runs/eval-large).
      A muLO (an optimizer whose lopt.parameterization is MUP) trains the MLP
      in muP (mup's MuReadout and init, hidden updates / width multiplier,
      base width from its job); AdamW trains the standard MLP.
      --lopt-options 'warmup_fraction: 0.05 step_mult_schedule: COSINE' merges
      a text LearnedOptimizerSpec into the file's (ELO's step-multiplier
      schedule over --steps, weight decay).
)";

int Fail(const absl::Status& s) { return FailCommand("lopt eval-large", s); }

template <typename T>
absl::StatusOr<std::vector<T>> ParseList(const std::string& flag, const std::string& text) {
  std::vector<T> out;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    T v;
    bool ok;
    if constexpr (std::is_same_v<T, double>) ok = absl::SimpleAtod(part, &v) && v > 0;
    else ok = absl::SimpleAtoi(part, &v) && v > 0;
    if (!ok)
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, ": '", std::string(part), "' is not a positive number"));
    out.push_back(v);
  }
  if (out.empty()) return absl::InvalidArgumentError(absl::StrCat("--", flag, " is empty"));
  return out;
}

}  // namespace

int RunEvalLargeCommand(int argc, char** argv) {
  auto f = ParseFlags(argc, argv, 2,
                      {"optimizer", "gpus", "device", "hidden", "batch", "steps", "adamw-lrs",
                       "seed", "data-dir", "out", "threads", "record-every", "rank", "world",
                       "id-file", "lopt-options"},
                      {"no-progress", "help"});
  if (!f.ok()) return Fail(f.status());
  if (f->Has("help")) return std::printf("%s", kUsage), 0;
  if (!f->Has("optimizer"))
    return Fail(absl::InvalidArgumentError("needs --optimizer FILE (see lopt eval-large --help)"));
  LargeEvalConfig cfg;
  cfg.optimizer_path = f->Get("optimizer");
  cfg.lopt_options = f->Get("lopt-options", "");
  if (f->Has("data-dir")) cfg.data_dir = f->Get("data-dir");
  auto gpus = f->GetInt("gpus", 1);
  auto batch = f->GetInt("batch", cfg.batch);
  auto steps = f->GetInt("steps", cfg.steps);
  auto seed = f->GetInt("seed", 0);
  auto every = f->GetInt("record-every", cfg.record_every);
  auto threads = f->GetInt("threads", 0);
  for (const auto* v : {&gpus, &batch, &steps, &seed, &every, &threads})
    if (!v->ok()) return Fail(v->status());
  if (*gpus < 1) return Fail(absl::InvalidArgumentError("--gpus must be >= 1"));
  cfg.batch = *batch;
  cfg.steps = *steps;
  cfg.seed = uint64_t(*seed);
  cfg.record_every = *every;
  if (f->Has("hidden")) {
    auto h = ParseList<int64_t>("hidden", f->Get("hidden"));
    if (!h.ok()) return Fail(h.status());
    cfg.hidden = *h;
  }
  if (f->Has("adamw-lrs")) {
    auto l = ParseList<double>("adamw-lrs", f->Get("adamw-lrs"));
    if (!l.ok()) return Fail(l.status());
    cfg.adamw_lrs = *l;
  }
  ConfigureRuntime(int(*threads), *gpus > 1 || absl::StartsWith(f->Get("device", "cpu"), "cuda"));
  const int world = int(*gpus);
  if (cfg.batch % world != 0)
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--batch ", cfg.batch, " is not a multiple of --gpus ", world)));

  Collectives col;
  torch::Device device = torch::kCPU;
#ifdef LOPT_WITH_NCCL
  std::unique_ptr<NcclCommunicator> comm;
#endif
  if (world > 1) {
#ifndef LOPT_WITH_NCCL
    return Fail(absl::FailedPreconditionError(
        "--gpus > 1 needs a build with CUDA LibTorch and NCCL (cmake -DLOPT_CUDA=ON)"));
#else
    if (!f->Has("rank")) {  // the launcher
      if (int64_t(torch::cuda::device_count()) < world)
        return Fail(absl::FailedPreconditionError(absl::StrCat(
            "--gpus ", world, ": this host has ", torch::cuda::device_count(), " GPU(s)")));
      std::vector<std::string> args(argv, argv + argc);
      if (auto s = LaunchRanks(args, world); !s.ok()) return Fail(s);
      return 0;
    }
    auto rank = f->GetInt("rank", 0);
    if (!rank.ok()) return Fail(rank.status());
    col.rank = int(*rank);
    col.world = world;
    absl::StatusOr<std::string> id;
    if (col.rank == 0) {
      id = NcclCommunicator::NewUniqueId();
      if (id.ok()) {
        if (auto s = PublishRankId(f->Get("id-file"), *id); !s.ok()) return Fail(s);
      }
    } else {
      id = WaitForRankId(f->Get("id-file"));
    }
    if (!id.ok()) return Fail(id.status());
    auto c = NcclCommunicator::Create(*id, col.rank, world, col.rank);
    if (!c.ok()) return Fail(c.status());
    comm = std::move(*c);
    col.average = [&](const std::vector<torch::Tensor>& t) { return comm->AllReduceMean(t); };
    device = torch::Device(torch::kCUDA, col.rank);
#endif
  } else {
    auto d = ParseDevice(f->Get("device", "cpu"));
    if (!d.ok()) return Fail(d.status());
    device = *d;
  }
  if (col.rank == 0)
    std::fprintf(stderr,
                 "lopt eval-large: MLP 784-%s-10, global batch %lld over %d rank(s) on %s, %lld "
                 "steps for the trained optimizer and each AdamW learning rate\n",
                 absl::StrJoin(cfg.hidden, "-").c_str(), (long long)cfg.batch, world,
                 world > 1 ? "cuda" : device.str().c_str(), (long long)cfg.steps);
  std::unique_ptr<ProgressBar> bar;
  const bool show = col.rank == 0 && !f->Has("no-progress");
  auto report = RunLargeEval(cfg, device, col, [&](int64_t done, int64_t total) {
    if (!bar) bar = std::make_unique<ProgressBar>("eval-large", total, show);
    bar->Update(done, "steps (all optimizers)");
  });
  if (!report.ok()) return Fail(report.status());
  if (bar) bar->Finish("");
  if (col.rank != 0) return 0;
  const std::string out = f->Get("out", "runs/eval-large");
  if (auto s = WriteLargeEvalReport(*report, out); !s.ok()) return Fail(s);
  std::printf("%s", FormatLargeEvalTable(*report).c_str());
  std::printf("wrote %s/report.json, curves.csv, table.txt\n", out.c_str());
  return 0;
}

}  // namespace lopt
