#include "cli/data_parallel.h"

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/torch.h>

#include "absl/strings/str_cat.h"

namespace lopt {
namespace {

absl::Status NcclError(const char* what, ncclResult_t r, ncclComm_t comm = nullptr) {
  const char* last = comm ? ncclGetLastError(comm) : ncclGetLastError(nullptr);
  return absl::InternalError(absl::StrCat(what, ": ", ncclGetErrorString(r),
                                          (last && *last) ? absl::StrCat(" (", last, ")") : ""));
}

#define LOPT_NCCL(call, comm)                                \
  do {                                                       \
    ncclResult_t r_ = (call);                                \
    if (r_ != ncclSuccess) return NcclError(#call, r_, comm); \
  } while (0)

absl::StatusOr<ncclDataType_t> NcclType(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat: return ncclFloat32;
    case torch::kDouble: return ncclFloat64;
    case torch::kHalf: return ncclFloat16;
    case torch::kBFloat16: return ncclBfloat16;
    case torch::kInt: return ncclInt32;
    case torch::kLong: return ncclInt64;
    default:
      return absl::InvalidArgumentError(absl::StrCat("NCCL: unsupported dtype ", c10::toString(t)));
  }
}

// Consecutive runs of same-dtype tensors, at most `max_bytes` each (a bigger
// tensor gets a run of its own).
std::vector<std::vector<torch::Tensor>> Buckets(const std::vector<torch::Tensor>& tensors,
                                                int64_t max_bytes) {
  std::vector<std::vector<torch::Tensor>> out;
  int64_t bytes = 0;
  for (const auto& t : tensors) {
    if (!t.defined() || t.numel() == 0) continue;
    const int64_t b = t.numel() * static_cast<int64_t>(t.element_size());
    if (out.empty() || out.back().front().scalar_type() != t.scalar_type() ||
        bytes + b > max_bytes) {
      out.emplace_back();
      bytes = 0;
    }
    out.back().push_back(t);
    bytes += b;
  }
  return out;
}

absl::Status CheckTensor(const torch::Tensor& t, int device) {
  if (!t.is_cuda() || t.get_device() != device)
    return absl::InvalidArgumentError(
        absl::StrCat("NCCL: tensor on ", t.device().str(), ", communicator on cuda:", device));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> NcclCommunicator::NewUniqueId() {
  ncclUniqueId id;
  LOPT_NCCL(ncclGetUniqueId(&id), nullptr);
  static const char* kHex = "0123456789abcdef";
  std::string hex;
  for (size_t i = 0; i < sizeof(id.internal); ++i) {
    const auto c = static_cast<unsigned char>(id.internal[i]);
    hex.push_back(kHex[c >> 4]);
    hex.push_back(kHex[c & 15]);
  }
  return hex;
}

absl::StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Create(
    const std::string& unique_id, int rank, int world_size, int device) {
  ncclUniqueId id;
  if (unique_id.size() != 2 * sizeof(id.internal))
    return absl::InvalidArgumentError(absl::StrCat("NCCL unique id: ", unique_id.size(),
                                                   " hex characters, want ",
                                                   2 * sizeof(id.internal)));
  auto nibble = [](char c) {
    return c >= 'a' ? c - 'a' + 10 : c >= 'A' ? c - 'A' + 10 : c - '0';
  };
  for (size_t i = 0; i < sizeof(id.internal); ++i)
    id.internal[i] = static_cast<char>(nibble(unique_id[2 * i]) << 4 | nibble(unique_id[2 * i + 1]));
  if (rank < 0 || rank >= world_size)
    return absl::InvalidArgumentError(absl::StrCat("rank ", rank, " of ", world_size));
  if (cudaSetDevice(device) != cudaSuccess)
    return absl::InvalidArgumentError(absl::StrCat("cudaSetDevice(", device, ")"));
  std::unique_ptr<NcclCommunicator> c(new NcclCommunicator());
  c->rank_ = rank;
  c->world_size_ = world_size;
  c->device_ = device;
  ncclComm_t comm = nullptr;
  LOPT_NCCL(ncclCommInitRank(&comm, world_size, id, rank), nullptr);
  c->comm_ = comm;
  return c;
}

NcclCommunicator::~NcclCommunicator() {
  if (comm_) ncclCommDestroy(static_cast<ncclComm_t>(comm_));
}

absl::Status NcclCommunicator::Reduce(const std::vector<torch::Tensor>& tensors, bool average) {
  auto comm = static_cast<ncclComm_t>(comm_);
  c10::cuda::CUDAGuard guard(device_);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device_).stream();
  torch::NoGradGuard no_grad;
  for (const auto& t : tensors)
    if (t.defined()) {
      auto st = CheckTensor(t, device_);
      if (!st.ok()) return st;
    }
  for (const auto& bucket : Buckets(tensors, bucket_bytes_)) {
    auto type = NcclType(bucket.front().scalar_type());
    if (!type.ok()) return type.status();
    const bool floating = torch::isFloatingType(bucket.front().scalar_type());
#if defined(NCCL_VERSION_CODE) && NCCL_VERSION_CODE >= NCCL_VERSION(2, 10, 0)
    const ncclRedOp_t op = average && floating ? ncclAvg : ncclSum;
    const bool divide = average && !floating;
#else
    const ncclRedOp_t op = ncclSum;
    const bool divide = average;
#endif
    // One contiguous tensor: reduce it where it lies; else pack, reduce, unpack.
    const bool direct = bucket.size() == 1 && bucket.front().is_contiguous();
    torch::Tensor flat;
    if (direct) {
      flat = bucket.front();
    } else {
      std::vector<torch::Tensor> parts;
      parts.reserve(bucket.size());
      for (const auto& t : bucket) parts.push_back(t.reshape({-1}));
      flat = torch::cat(parts);
    }
    LOPT_NCCL(ncclAllReduce(flat.data_ptr(), flat.data_ptr(), flat.numel(), *type, op, comm,
                            stream),
              comm);
    if (divide) flat.div_(world_size_);
    if (!direct) {
      int64_t off = 0;
      for (const auto& t : bucket) {
        t.copy_(flat.narrow(0, off, t.numel()).view(t.sizes()));
        off += t.numel();
      }
    }
  }
  return absl::OkStatus();
}

absl::Status NcclCommunicator::AllReduceMean(const std::vector<torch::Tensor>& tensors) {
  return Reduce(tensors, /*average=*/true);
}

absl::Status NcclCommunicator::AllReduceSum(const std::vector<torch::Tensor>& tensors) {
  return Reduce(tensors, /*average=*/false);
}

absl::Status NcclCommunicator::AverageGradients(const std::vector<torch::Tensor>& params) {
  std::vector<torch::Tensor> grads;
  grads.reserve(params.size());
  for (const auto& p : params)
    if (p.grad().defined()) grads.push_back(p.mutable_grad());
  return AllReduceMean(grads);
}

absl::Status NcclCommunicator::Broadcast(const std::vector<torch::Tensor>& tensors, int root) {
  auto comm = static_cast<ncclComm_t>(comm_);
  c10::cuda::CUDAGuard guard(device_);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device_).stream();
  torch::NoGradGuard no_grad;
  for (const auto& t : tensors) {
    if (!t.defined() || t.numel() == 0) continue;
    auto st = CheckTensor(t, device_);
    if (!st.ok()) return st;
    auto type = NcclType(t.scalar_type());
    if (!type.ok()) return type.status();
    torch::Tensor buf = t.is_contiguous() ? t : t.contiguous();
    LOPT_NCCL(ncclBroadcast(buf.data_ptr(), buf.data_ptr(), buf.numel(), *type, root, comm,
                            stream),
              comm);
    if (!buf.is_same(t)) t.copy_(buf);
  }
  return absl::OkStatus();
}

}  // namespace lopt
