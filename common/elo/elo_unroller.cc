#include "common/elo/elo_unroller.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <optional>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/rpc/metrics.h"
#include "common/spec/job_spec.h"
#include "common/util/log.h"

#ifdef LOPT_WITH_CUDA
#include <cuda_runtime_api.h>

#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels/lopt_step_cuda_torch.h"
#include "kernels/losses_cuda_torch.h"
#endif

namespace lopt {
namespace {

constexpr uint64_t kStreamUnroll = 1;

double Uniform01(torch::Generator& gen) {
  return torch::rand({1}, gen, torch::kFloat64).item<double>();
}

int64_t UniformInt(torch::Generator& gen, int64_t lo, int64_t hi) {  // [lo, hi]
  return torch::randint(lo, hi + 1, {1}, gen, torch::kInt64).item<int64_t>();
}

// The rows of task i's antithetic pair: particles i and T + i.
torch::Tensor PairIndex(int64_t i, int64_t T, torch::Device device) {
  return torch::tensor({i, T + i}, torch::kInt64).to(device);
}

// Rows `idx` of each tensor, on the CPU (what the replay buffer keeps). The
// rows of every tensor of the first one's dtype are gathered into one buffer
// and copied back at once: on a GPU one transfer and one wait a push, not one
// a tensor (a state is ~30 small tensors). Another dtype goes on its own.
std::vector<torch::Tensor> GatherRows(const std::vector<torch::Tensor>& ts,
                                      const torch::Tensor& idx) {
  std::vector<torch::Tensor> out(ts.size());
  if (ts.empty()) return out;
  const auto dtype = ts[0].scalar_type();
  std::vector<torch::Tensor> flat;
  std::vector<size_t> batched;
  for (size_t j = 0; j < ts.size(); ++j) {
    out[j] = ts[j].index_select(0, idx);
    if (out[j].scalar_type() == dtype) {
      flat.push_back(out[j].reshape({-1}));
      batched.push_back(j);
    } else {
      out[j] = out[j].cpu();
    }
  }
  torch::Tensor host = torch::cat(flat).cpu();  // a new tensor on the CPU too
  int64_t off = 0;
  for (size_t j : batched) {
    const int64_t n = out[j].numel();
    out[j] = host.narrow(0, off, n).view(out[j].sizes());
    off += n;
  }
  return out;
}

}  // namespace

EloUnroller::EloUnroller(const v1::JobSpec& job, const Task* task, ReplayBuffer* buffer,
                         std::string buffer_table, uint64_t seed)
    : job_(job),
      task_(task),
      buffer_(buffer),
      buffer_table_(std::move(buffer_table)),
      seed_(seed),
      num_tasks_(job.pes().num_tasks()),
      lopt_(job.lopt()),
      pes_(job.pes().num_tasks(), SmallFcLopt(job.lopt()).theta_size(), job.pes().sigma(),
           task->device()),
      device_(task->device()) {
  const auto& bc = job.elo().behavior_cloning();
  teacher_.beta1 = bc.teacher_beta1();
  teacher_.beta2 = bc.teacher_beta2();
  teacher_.eps = bc.teacher_eps();
  teacher_.weight_decay = 0;
  if (!job.elo().buffer().enabled()) buffer_ = nullptr;
  // A muLO's (and its Adam teacher's) updates follow the task's muP scales.
  if (job.lopt().parameterization() == v1::MUP) {
    update_scales_ = task->UpdateScales();
    bool all_one = true;
    for (double x : update_scales_) all_one = all_one && x == 1.0;
    if (all_one) update_scales_.clear();
  }
  // Tasks that synchronise with the host (speech_ctc's CTC loss) run eagerly.
  set_use_cuda_graph(true);
  const char* graph = std::getenv("LOPT_CUDA_GRAPH");  // 0: no capture (debugging)
  if (graph && std::string(graph) == "0") use_cuda_graph_ = false;
  if (const char* n = std::getenv("LOPT_CUDA_GRAPH_STEPS")) set_cuda_graph_steps(std::atoll(n));
}

void EloUnroller::set_use_cuda_graph(bool on) { use_cuda_graph_ = on && task_->CudaGraphCapturable(); }

int64_t EloUnroller::SampleUnrollLength(torch::Generator& gen, int64_t outer_step) const {
  const auto& p = job_.pes();
  double lo = p.min_unroll_length(), hi = double(MaxUnrollLengthAt(job_, outer_step));
  double u = Uniform01(gen);
  if (p.unroll_length_distribution() == v1::LOG_UNIFORM)
    return int64_t(std::lround(std::exp(std::log(lo) + u * (std::log(hi) - std::log(lo)))));
  return int64_t(std::lround(lo + u * (hi - lo)));
}

torch::Tensor EloUnroller::StepTensor() const {
  torch::Tensor s = torch::tensor(step_, torch::kInt64);
  return torch::cat({s, s});
}

void EloUnroller::WriteRows(int64_t i, const std::vector<torch::Tensor>& src,
                            std::vector<torch::Tensor>& dst) {
  torch::Tensor idx = PairIndex(i, num_tasks_, device_);
  if (dst.empty()) return;
  // One host-to-device transfer for every source of the first destination's
  // dtype (GatherRows's counterpart), then one row copy a tensor on the device.
  const auto dtype = dst[0].scalar_type();
  std::vector<torch::Tensor> flat;
  std::vector<size_t> batched;
  for (size_t j = 0; j < dst.size(); ++j) {
    if (src[j].scalar_type() == dtype && dst[j].scalar_type() == dtype) {
      flat.push_back(src[j].reshape({-1}));
      batched.push_back(j);
    } else {
      dst[j].index_copy_(0, idx, src[j].to(device_));
    }
  }
  if (flat.empty()) return;
  torch::Tensor dev = torch::cat(flat).to(device_);
  int64_t off = 0;
  for (size_t j : batched) {
    const int64_t n = src[j].numel();
    dst[j].index_copy_(0, idx, dev.narrow(0, off, n).view(src[j].sizes()));
    off += n;
  }
}

void EloUnroller::InitAll(torch::Generator& gen, int64_t outer_step) {
  device_steps_.reset();  // its static buffers were the old state's
  state_ = task_->Init(num_tasks_, 2, gen);
  lopt_state_ = lopt_.InitState(state_.params);
  adam_state_ = InitAdamState(state_.params);
  step_.assign(num_tasks_, 0);
  end_.assign(num_tasks_, 0);
  push_at_.assign(num_tasks_, -1);
  for (int64_t i = 0; i < num_tasks_; ++i) {
    int64_t n = SampleUnrollLength(gen, outer_step);
    // A random initial offset shortens each task's first unroll by a random
    // amount, so that the tasks' resets do not fall on the same outer step.
    int64_t offset = job_.pes().random_initial_offset() ? UniformInt(gen, 0, n - 1) : 0;
    end_[i] = n - offset;
    if (buffer_) push_at_[i] = UniformInt(gen, 0, end_[i]);
  }
  initialized_ = true;
}

UnrollStart EloUnroller::StartUnroll(int64_t i, torch::Generator& gen, int64_t outer_step) {
  const auto& bcfg = job_.elo().buffer();
  bool restore = false;
  double u = Uniform01(gen);
  if (buffer_ && outer_step > 0 && u > bcfg.fresh_start_probability()) {
    auto size = buffer_->Size(buffer_table_);
    if (!size.ok()) BufferFailed("size", size.status());
    restore = size.ok() && *size > 0;
  }
  torch::Tensor xi_restored = torch::zeros({lopt_.theta_size()});
  if (restore) {
    auto item = buffer_->Sample(buffer_table_, Uniform01(gen) * 0.999999999);
    if (!item.ok()) {
      BufferFailed("sample", item.status());
      restore = false;
    } else if (absl::Status st = CheckItem(*item); !st.ok()) {
      BufferFailed("sample", st);
      restore = false;
    }
    if (restore) {
      auto get = [&](const std::string& name) { return Find(*item, name).value(); };
      // Every saved row into its place in one WriteRows (one transfer).
      std::vector<torch::Tensor> src, dst;
      auto add = [&](const std::string& name, const torch::Tensor& to) {
        src.push_back(get(name));
        dst.push_back(to);  // a handle: writing it writes the state
      };
      for (size_t j = 0; j < state_.params.size(); ++j) {
        add(absl::StrCat("params/", j), state_.params[j]);
        add(absl::StrCat("adam_m/", j), adam_state_.m[j]);
        add(absl::StrCat("adam_v/", j), adam_state_.v[j]);
      }
      for (size_t j = 0; j < state_.aux.size(); ++j) add(absl::StrCat("aux/", j), state_.aux[j]);
      std::vector<torch::Tensor> lo_flat = FlattenLoptState(lopt_state_);  // aliases the state
      for (size_t j = 0; j < lo_flat.size(); ++j) add(absl::StrCat("lopt/", j), lo_flat[j]);
      WriteRows(i, src, dst);
      step_[i] = get("step").item<int64_t>();
      if (bcfg.restore_pes_accumulator()) xi_restored = get("xi");
    }
  }
  if (!restore) {
    TaskState fresh = task_->Init(1, 2, gen);
    std::vector<torch::Tensor> src = fresh.params, dst = state_.params;
    src.insert(src.end(), fresh.aux.begin(), fresh.aux.end());
    dst.insert(dst.end(), state_.aux.begin(), state_.aux.end());
    WriteRows(i, src, dst);
    torch::Tensor idx = PairIndex(i, num_tasks_, device_);
    std::vector<torch::Tensor> lo_flat = FlattenLoptState(lopt_state_);
    for (auto& t : lo_flat) t.index_fill_(0, idx, 0);
    for (auto& t : adam_state_.m) t.index_fill_(0, idx, 0);
    for (auto& t : adam_state_.v) t.index_fill_(0, idx, 0);
    step_[i] = 0;
  }
  int64_t n = SampleUnrollLength(gen, outer_step);
  end_[i] = step_[i] + n;
  push_at_[i] = buffer_ ? UniformInt(gen, step_[i], end_[i]) : -1;
  pes_.Reset(i, xi_restored);
  return UnrollStart{i, step_[i], n, push_at_[i], restore};
}

void EloUnroller::BufferFailed(const char* op, const absl::Status& status) {
  ++buffer_failures_;
  buffer_error_ = absl::StrCat(op, " on table ", buffer_table_, ": ", status.ToString());
  // Every failed call, by kind, where the worker's /metrics shows it (the
  // result carries the count to the learner, which shows it in the job's
  // status). A call to a buffer that is down fails only after its retries,
  // so this logs at most a few lines a second.
  static auto& errors = CounterFamily(
      "lopt_worker_buffer_errors_total",
      "Replay-buffer calls that failed on this worker, by op (put: the state was lost; size, "
      "sample: a fresh start instead of a restore) and status code (a malformed item: "
      "INVALID_ARGUMENT, NOT_FOUND)");
  errors.Add({{"op", op}, {"code", absl::StatusCodeToString(status.code())}}).Increment();
  LogWarning("replay buffer call failed",
             {{"op", op}, {"table", buffer_table_}, {"error", status.ToString()}});
}

absl::Status EloUnroller::CheckItem(const NamedTensors& item) const {
  // The names and shapes a restore writes: an item from another job or a
  // damaged one is a failure the result reports, never an abort.
  auto check = [&](const std::string& name, const torch::Tensor& like) -> absl::Status {
    auto t = Find(item, name);
    if (!t.ok()) return t.status();
    std::vector<int64_t> want = like.sizes().vec();
    want[0] = 2;
    if (t->sizes().vec() != want)
      return absl::InvalidArgumentError(absl::StrCat("buffered item's ", name, " has shape ",
                                                     c10::str(t->sizes()), ", expected ",
                                                     c10::str(c10::IntArrayRef(want))));
    return absl::OkStatus();
  };
  for (size_t j = 0; j < state_.params.size(); ++j) {
    if (auto s = check(absl::StrCat("params/", j), state_.params[j]); !s.ok()) return s;
    if (auto s = check(absl::StrCat("adam_m/", j), adam_state_.m[j]); !s.ok()) return s;
    if (auto s = check(absl::StrCat("adam_v/", j), adam_state_.v[j]); !s.ok()) return s;
  }
  for (size_t j = 0; j < state_.aux.size(); ++j)
    if (auto s = check(absl::StrCat("aux/", j), state_.aux[j]); !s.ok()) return s;
  std::vector<torch::Tensor> lo_flat = FlattenLoptState(lopt_state_);
  for (size_t j = 0; j < lo_flat.size(); ++j)
    if (auto s = check(absl::StrCat("lopt/", j), lo_flat[j]); !s.ok()) return s;
  auto step = Find(item, "step");
  if (!step.ok()) return step.status();
  auto xi = Find(item, "xi");
  if (!xi.ok()) return xi.status();
  if (xi->numel() != lopt_.theta_size())
    return absl::InvalidArgumentError("buffered item's xi has the wrong size");
  return absl::OkStatus();
}

bool EloUnroller::Push(int64_t i) {
  std::vector<std::string> names;
  std::vector<torch::Tensor> tensors;
  auto add = [&](std::string name, const torch::Tensor& t) {
    names.push_back(std::move(name));
    tensors.push_back(t);
  };
  for (size_t j = 0; j < state_.params.size(); ++j) {
    add(absl::StrCat("params/", j), state_.params[j]);
    add(absl::StrCat("adam_m/", j), adam_state_.m[j]);
    add(absl::StrCat("adam_v/", j), adam_state_.v[j]);
  }
  for (size_t j = 0; j < state_.aux.size(); ++j) add(absl::StrCat("aux/", j), state_.aux[j]);
  std::vector<torch::Tensor> lo_flat = FlattenLoptState(lopt_state_);
  for (size_t j = 0; j < lo_flat.size(); ++j) add(absl::StrCat("lopt/", j), lo_flat[j]);
  std::vector<torch::Tensor> rows = GatherRows(tensors, PairIndex(i, num_tasks_, device_));
  NamedTensors item;
  for (size_t k = 0; k < rows.size(); ++k) item.emplace_back(names[k], rows[k]);
  item.emplace_back("step", torch::tensor(step_[i], torch::kInt64));
  item.emplace_back("xi", pes_.CurrentXi(i).clone().cpu());
  absl::Status st = buffer_->Put(buffer_table_, job_.elo().buffer().capacity(), std::move(item));
  if (!st.ok()) BufferFailed("put", st);
  return st.ok();
}

// ---------------------------------------------------------------------------
// The truncation loop, one for every device. One inner step's work reads and
// writes only tensors whose addresses never change (the state, the
// accumulators and the DeviceSteps below), so that on CUDA it is captured
// once as a graph and replayed; on the CPU the same step runs eagerly. The
// host keeps the per-task counters and does the rare resets and pushes
// between steps, writing the static tensors in place.

struct EloUnroller::DeviceSteps {
  Batch batch;            // this step's batch, copied in before each step
  torch::Tensor theta;    // [2T, D] perturbed meta-parameters of the truncation
  torch::Tensor step;     // [2T] float: updates already applied
  torch::Tensor alpha;    // [] float: ELO's alpha_t
  torch::Tensor teacher_lr;                    // [2T]
  torch::Tensor sum_meta, sum_task, sum_bc;    // [] float64, over the truncation
  int64_t eager_steps = 0;  // a capture follows a warm-up step on its stream
#ifdef LOPT_WITH_CUDA
  std::optional<c10::cuda::CUDAStream> stream;
  std::unique_ptr<at::cuda::CUDAGraph> graph;
  std::vector<torch::Tensor> keep;  // buffers the graph's kernels read
  int64_t nodes = -1, kernel_nodes = -1;
  // `chunk_steps` inner steps in one graph, reading their batches from
  // `chunk` (chunk_steps * T rows, copied in before each replay).
  std::unique_ptr<at::cuda::CUDAGraph> chunk_graph;
  Batch chunk;
  int64_t chunk_steps = 0, chunk_nodes = -1;
#endif
};

EloUnroller::~EloUnroller() = default;

int64_t EloUnroller::graph_nodes() const {
#ifdef LOPT_WITH_CUDA
  if (device_steps_) return device_steps_->nodes;
#endif
  return -1;
}

int64_t EloUnroller::chunk_graph_nodes() const {
#ifdef LOPT_WITH_CUDA
  if (device_steps_) return device_steps_->chunk_nodes;
#endif
  return -1;
}

int64_t EloUnroller::graph_kernel_nodes() const {
#ifdef LOPT_WITH_CUDA
  if (device_steps_) return device_steps_->kernel_nodes;
#endif
  return -1;
}

void EloUnroller::DeviceStep(DeviceSteps* ds) {
  const bool bc = job_.elo().behavior_cloning().enabled();
  const double max_loss = task_->MaxMetaLoss();
  std::vector<torch::Tensor> grads;
  torch::Tensor loss = task_->LossAndGrad(state_, ds->batch, &grads);
  std::vector<torch::Tensor> u = lopt_.Step(state_.params, grads, &lopt_state_, ds->step, ds->theta);
  ScaleUpdates(update_scales_, &u);
  if (!bc) {
    pes_.AddClippedLossesUncounted(loss, max_loss, ds->sum_task);
  } else {
    torch::Tensor bc_loss;
#ifdef LOPT_WITH_CUDA
    // One multi-tensor kernel for the teacher's step, the BC loss and the mix.
    // (Its teacher has no per-tensor update scales: a MUP task takes the op path.)
    if (update_scales_.empty())
      bc_loss = BehaviorCloningCudaFused(state_.params, grads, adam_state_.m, adam_state_.v, u,
                                         ds->step, ds->teacher_lr, ds->alpha, teacher_.beta1,
                                         teacher_.beta2, teacher_.eps, teacher_.weight_decay);
#endif
    if (!bc_loss.defined()) {
      std::vector<torch::Tensor> uh =
          AdamUpdates(state_.params, grads, &adam_state_, ds->teacher_lr, ds->step, teacher_);
      ScaleUpdates(update_scales_, &uh);
      bc_loss = torch::zeros({2 * num_tasks_}, loss.options());
      torch::Tensor one_minus_alpha = 1 - ds->alpha;
      for (size_t j = 0; j < u.size(); ++j) {
        bc_loss += (u[j] - uh[j]).square().flatten(1).sum(1);
        u[j] = uh[j] * one_minus_alpha + u[j] * ds->alpha;
      }
    }
    pes_.AddBcLossesUncounted(loss, bc_loss, ds->alpha, max_loss, ds->sum_meta, ds->sum_task,
                              ds->sum_bc);
  }
  at::_foreach_sub_(state_.params, u);
  ds->step.add_(1);
}

void EloUnroller::CaptureDeviceStep(DeviceSteps* ds) {
#ifdef LOPT_WITH_CUDA
  ds->graph = std::make_unique<at::cuda::CUDAGraph>(/*keep_graph=*/true);
  LoptStepCudaBeginCapture(device_);
  ds->graph->capture_begin({0, 0}, cudaStreamCaptureModeThreadLocal);
  DeviceStep(ds);
  ds->graph->capture_end();
  // The fused LO step's tensor table goes to the device now, once.
  ds->keep.push_back(LoptStepCudaFinishCapture());
  ds->graph->instantiate();
  cudaGraph_t g = ds->graph->raw_cuda_graph();
  size_t n = 0;
  TORCH_CHECK(cudaGraphGetNodes(g, nullptr, &n) == cudaSuccess, "cudaGraphGetNodes");
  std::vector<cudaGraphNode_t> nodes(n);
  if (n > 0) TORCH_CHECK(cudaGraphGetNodes(g, nodes.data(), &n) == cudaSuccess, "cudaGraphGetNodes");
  int64_t kernels = 0, memcpys = 0;
  for (auto node : nodes) {
    cudaGraphNodeType type;
    if (cudaGraphNodeGetType(node, &type) != cudaSuccess) continue;
    kernels += type == cudaGraphNodeTypeKernel;
    memcpys += type == cudaGraphNodeTypeMemcpy;
  }
  if (std::getenv("LOPT_CUDA_GRAPH_VERBOSE"))
    std::fprintf(stderr, "captured inner step: %zu nodes, %lld kernels, %lld memcpy\n", n,
                 (long long)kernels, (long long)memcpys);
  ds->nodes = int64_t(n);
  ds->kernel_nodes = kernels;
#else
  (void)ds;
#endif
}

void EloUnroller::CaptureDeviceChunk(DeviceSteps* ds, int64_t steps) {
#ifdef LOPT_WITH_CUDA
  const int64_t T = num_tasks_;
  ds->chunk_graph = std::make_unique<at::cuda::CUDAGraph>(/*keep_graph=*/true);
  ds->chunk_steps = steps;
  LoptStepCudaBeginCapture(device_, std::max<int64_t>(int64_t(1) << 20, steps * (int64_t(64) << 10)));
  Batch one = ds->batch;
  ds->chunk_graph->capture_begin({0, 0}, cudaStreamCaptureModeThreadLocal);
  for (int64_t j = 0; j < steps; ++j) {
    // Step j reads rows [j T, (j+1) T) of the chunk in place: no copy node.
    ds->batch.x = ds->chunk.x.narrow(0, j * T, T);
    if (ds->chunk.y.defined()) ds->batch.y = ds->chunk.y.narrow(0, j * T, T);
    DeviceStep(ds);
  }
  ds->chunk_graph->capture_end();
  ds->batch = one;
  ds->keep.push_back(LoptStepCudaFinishCapture());
  ds->chunk_graph->instantiate();
  size_t n = 0;
  TORCH_CHECK(cudaGraphGetNodes(ds->chunk_graph->raw_cuda_graph(), nullptr, &n) == cudaSuccess,
              "cudaGraphGetNodes");
  ds->chunk_nodes = int64_t(n);
  if (std::getenv("LOPT_CUDA_GRAPH_VERBOSE"))
    std::fprintf(stderr, "captured %lld inner steps in one graph: %zu nodes\n", (long long)steps, n);
#else
  (void)ds;
  (void)steps;
#endif
}

TruncationResult EloUnroller::RunTruncation(const torch::Tensor& theta, double alpha,
                                            int64_t outer_step) {
  torch::NoGradGuard no_grad;
  torch::Generator gen = MakeGenerator(seed_, kStreamUnroll, uint64_t(outer_step));
  if (!initialized_) InitAll(gen, outer_step);
  const bool bc = job_.elo().behavior_cloning().enabled();
  const int64_t T = num_tasks_, K = job_.pes().truncation_length();
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64).device(device_);
  if (!device_steps_) {
    auto ds = std::make_unique<DeviceSteps>();
    ds->theta = torch::zeros({2 * T, lopt_.theta_size()}, torch::device(device_));
    ds->step = torch::zeros({2 * T}, torch::device(device_));
    ds->alpha = torch::zeros({}, torch::device(device_));
    ds->teacher_lr = torch::full({2 * T}, double(job_.elo().behavior_cloning().teacher_lr()),
                                 torch::device(device_));
    ds->sum_meta = torch::zeros({}, f64);
    ds->sum_task = torch::zeros({}, f64);
    ds->sum_bc = torch::zeros({}, f64);
#ifdef LOPT_WITH_CUDA
    if (device_.is_cuda()) ds->stream = c10::cuda::getStreamFromPool(false, device_.index());
#endif
    device_steps_ = std::move(ds);
  }
  DeviceSteps* ds = device_steps_.get();
#ifdef LOPT_WITH_CUDA
  // The truncation runs on the unroller's own stream (a capture needs one
  // that is not the default), after what the caller queued before.
  std::optional<c10::cuda::CUDAStreamGuard> stream_guard;
  if (ds->stream) {
    at::cuda::CUDAEvent ready;
    ready.record(c10::cuda::getCurrentCUDAStream(device_.index()));
    ready.block(*ds->stream);
    stream_guard.emplace(*ds->stream);
  }
#endif

  TruncationResult r;
  buffer_failures_ = 0;
  buffer_error_.clear();
  ds->theta.copy_(pes_.BeginTruncation(theta, gen));
  ds->alpha.fill_(alpha);
  ds->sum_meta.zero_();
  ds->sum_task.zero_();
  ds->sum_bc.zero_();
  ds->step.copy_(StepTensor());
  // The truncation's K batches, drawn at once: nothing random is left to a
  // replay.
  Batch all = task_->SampleBatch(T * K, gen);
  if (!ds->batch.x.defined()) {
    ds->batch.x = all.x.narrow(0, 0, T).clone();
    if (all.y.defined()) ds->batch.y = all.y.narrow(0, 0, T).clone();
  }
  int64_t C = std::min<int64_t>(graph_steps_, K);
#ifdef LOPT_WITH_CUDA
  if (ds->chunk_graph) C = ds->chunk_steps;  // captured for this many
#endif
  for (int64_t k = 0; k < K;) {
    if (cancel_check_ && cancel_check_()) {
      r.cancelled = true;
      break;
    }
    bool restarted = false;
    for (int64_t i = 0; i < T; ++i) {
      if (buffer_ && step_[i] == push_at_[i]) {
        if (Push(i)) ++r.pushes;
        push_at_[i] = -1;
      }
      if (step_[i] >= end_[i]) {
        UnrollStart u = StartUnroll(i, gen, outer_step);
        if (u.restored) ++r.restores; else ++r.fresh_starts;
        r.unroll_starts.push_back(u);
        restarted = true;
      }
    }
    if (restarted) ds->step.copy_(StepTensor());
#ifdef LOPT_WITH_CUDA
    // C steps in one replay where no task resets or pushes before step k + C.
    if (C > 1 && use_cuda_graph_ && device_.is_cuda() && ds->graph) {
      int64_t free = K - k;
      for (int64_t i = 0; i < T; ++i) {
        free = std::min(free, end_[i] - step_[i]);
        if (buffer_ && push_at_[i] > step_[i]) free = std::min(free, push_at_[i] - step_[i]);
      }
      if (free >= C) {
        if (!ds->chunk.x.defined()) {
          ds->chunk.x = all.x.narrow(0, k * T, C * T).clone();
          if (all.y.defined()) ds->chunk.y = all.y.narrow(0, k * T, C * T).clone();
        }
        ds->chunk.x.copy_(all.x.narrow(0, k * T, C * T));
        if (all.y.defined()) ds->chunk.y.copy_(all.y.narrow(0, k * T, C * T));
        if (!ds->chunk_graph) CaptureDeviceChunk(ds, C);
        ds->chunk_graph->replay();
        pes_.CountSteps(C);
        for (auto& s : step_) s += C;
        k += C;
        continue;
      }
    }
#endif
    ds->batch.x.copy_(all.x.narrow(0, k * T, T));
    if (all.y.defined()) ds->batch.y.copy_(all.y.narrow(0, k * T, T));
#ifdef LOPT_WITH_CUDA
    if (use_cuda_graph_ && device_.is_cuda()) {
      if (!ds->graph && ds->eager_steps > 0) CaptureDeviceStep(ds);
      if (ds->graph) {
        ds->graph->replay();
      } else {
        DeviceStep(ds);
        ++ds->eager_steps;
      }
    } else {
      DeviceStep(ds);
      ++ds->eager_steps;
    }
#else
    DeviceStep(ds);
    ++ds->eager_steps;
#endif
    pes_.CountSteps(1);
    for (auto& s : step_) ++s;
    ++k;
  }
  if (!r.cancelled) {
    r.grad = pes_.EndTruncation().cpu();
    r.task_loss = ds->sum_task.item<double>() / K;
    r.meta_loss = bc ? ds->sum_meta.item<double>() / K : r.task_loss;
    r.bc_loss = bc ? ds->sum_bc.item<double>() / K : 0;
    r.particle_steps = 2 * T * K;
  }
  r.buffer_failures = buffer_failures_;
  r.buffer_error = buffer_error_;
#ifdef LOPT_WITH_CUDA
  if (ds->stream) {
    at::cuda::CUDAEvent done;
    done.record(*ds->stream);
    stream_guard.reset();
    done.block(c10::cuda::getCurrentCUDAStream(device_.index()));
  }
#endif
  return r;
}

NamedTensors EloUnroller::SaveState() const {
  NamedTensors s = SaveStateOnDevice();
  for (auto& [name, t] : s) t = t.cpu();  // the same tensors on the CPU
  return s;
}

NamedTensors EloUnroller::SaveStateOnDevice() const {
  NamedTensors s;
  if (!initialized_) return s;
  for (size_t j = 0; j < state_.params.size(); ++j) {
    s.emplace_back(absl::StrCat("params/", j), state_.params[j]);
    s.emplace_back(absl::StrCat("adam_m/", j), adam_state_.m[j]);
    s.emplace_back(absl::StrCat("adam_v/", j), adam_state_.v[j]);
  }
  for (size_t j = 0; j < state_.aux.size(); ++j)
    s.emplace_back(absl::StrCat("aux/", j), state_.aux[j]);
  std::vector<torch::Tensor> lo_flat = FlattenLoptState(lopt_state_);
  for (size_t j = 0; j < lo_flat.size(); ++j) s.emplace_back(absl::StrCat("lopt/", j), lo_flat[j]);
  s.emplace_back("step", torch::tensor(step_, torch::kInt64));
  s.emplace_back("end", torch::tensor(end_, torch::kInt64));
  s.emplace_back("push_at", torch::tensor(push_at_, torch::kInt64));
  s.emplace_back("xi", pes_.xi());
  return s;
}

absl::Status EloUnroller::LoadState(const NamedTensors& s) {
  if (s.empty()) {
    initialized_ = false;
    return absl::OkStatus();
  }
  // Shapes come from a fresh init; the saved tensors must match them.
  torch::Generator gen = MakeGenerator(seed_, kStreamUnroll, 0);
  InitAll(gen, 0);
  auto load = [&](const std::string& name, torch::Tensor& dst) -> absl::Status {
    auto t = Find(s, name);
    if (!t.ok()) return t.status();
    if (t->sizes() != dst.sizes())
      return absl::InvalidArgumentError(absl::StrCat(
          "checkpoint tensor ", name, " has shape ", c10::str(t->sizes()), ", expected ",
          c10::str(dst.sizes())));
    dst.copy_(*t);
    return absl::OkStatus();
  };
  absl::Status st;
  for (size_t j = 0; j < state_.params.size() && st.ok(); ++j) {
    st.Update(load(absl::StrCat("params/", j), state_.params[j]));
    st.Update(load(absl::StrCat("adam_m/", j), adam_state_.m[j]));
    st.Update(load(absl::StrCat("adam_v/", j), adam_state_.v[j]));
  }
  for (size_t j = 0; j < state_.aux.size() && st.ok(); ++j)
    st.Update(load(absl::StrCat("aux/", j), state_.aux[j]));
  std::vector<torch::Tensor> lo_flat = FlattenLoptState(lopt_state_);
  for (size_t j = 0; j < lo_flat.size() && st.ok(); ++j)
    st.Update(load(absl::StrCat("lopt/", j), lo_flat[j]));
  torch::Tensor step = torch::zeros({num_tasks_}, torch::kInt64);
  torch::Tensor end = step.clone(), push = step.clone();
  torch::Tensor xi = pes_.xi().clone();
  st.Update(load("step", step));
  st.Update(load("end", end));
  st.Update(load("push_at", push));
  st.Update(load("xi", xi));
  if (!st.ok()) return st;
  for (int64_t i = 0; i < num_tasks_; ++i) {
    step_[i] = step[i].item<int64_t>();
    end_[i] = end[i].item<int64_t>();
    push_at_[i] = push[i].item<int64_t>();
  }
  pes_.set_xi(xi);
  return absl::OkStatus();
}

}  // namespace lopt
