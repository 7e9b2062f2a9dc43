#include "common/rpc/tensor_codec.h"

#include <cstring>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace lopt {
namespace {

struct DTypeInfo {
  v1::DType wire;
  torch::ScalarType torch;
  int64_t bytes;
};
constexpr DTypeInfo kDTypes[] = {
    {v1::FLOAT32, torch::kFloat32, 4}, {v1::FLOAT64, torch::kFloat64, 8},
    {v1::INT64, torch::kInt64, 8},     {v1::INT32, torch::kInt32, 4},
    {v1::UINT8, torch::kUInt8, 1},     {v1::BFLOAT16, torch::kBFloat16, 2},
    {v1::FLOAT16, torch::kFloat16, 2}, {v1::BOOL, torch::kBool, 1},
};

const DTypeInfo* ByTorch(torch::ScalarType t) {
  for (const auto& d : kDTypes)
    if (d.torch == t) return &d;
  return nullptr;
}
const DTypeInfo* ByWire(v1::DType t) {
  for (const auto& d : kDTypes)
    if (d.wire == t) return &d;
  return nullptr;
}

std::string ShapeString(const std::vector<int64_t>& s) {
  return absl::StrCat("[", absl::StrJoin(s, ", "), "]");
}

// Validates dtype and shape; returns the tensor's byte count.
absl::StatusOr<int64_t> CheckedBytes(const std::string& name, v1::DType dtype,
                                     const google::protobuf::RepeatedField<int64_t>& shape,
                                     const DTypeInfo** info) {
  *info = ByWire(dtype);
  if (!*info)
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", name, "' has unknown dtype ", static_cast<int>(dtype)));
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0)
      return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' has a negative dim"));
    if (d > 0 && n > (int64_t{1} << 40) / d)
      return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' is too large"));
    n *= d;
  }
  return n * (*info)->bytes;
}

torch::Tensor FromBytes(const char* data, const DTypeInfo& info,
                        const google::protobuf::RepeatedField<int64_t>& shape) {
  std::vector<int64_t> dims(shape.begin(), shape.end());
  torch::Tensor t = torch::empty(dims, torch::TensorOptions().dtype(info.torch));
  if (t.numel() > 0) std::memcpy(t.data_ptr(), data, t.numel() * info.bytes);
  return t;
}

}  // namespace

v1::TensorProto EncodeTensor(const torch::Tensor& t, const std::string& name) {
  torch::Tensor c = t.detach().to(torch::kCPU).contiguous();
  const DTypeInfo* info = ByTorch(c.scalar_type());
  TORCH_CHECK(info, "EncodeTensor: unsupported dtype ", c.scalar_type());
  v1::TensorProto p;
  p.set_name(name);
  p.set_dtype(info->wire);
  for (int64_t d : c.sizes()) p.add_shape(d);
  p.set_data(static_cast<const char*>(c.data_ptr()), c.numel() * info->bytes);
  p.set_crc32(Crc32(p.data().data(), p.data().size()));
  return p;
}

absl::StatusOr<torch::Tensor> DecodeTensor(const v1::TensorProto& p) {
  const DTypeInfo* info = nullptr;
  auto bytes = CheckedBytes(p.name(), p.dtype(), p.shape(), &info);
  if (!bytes.ok()) return bytes.status();
  if (*bytes != static_cast<int64_t>(p.data().size()))
    return absl::InvalidArgumentError(absl::StrCat("tensor '", p.name(), "' of shape ",
                                                   ShapeString({p.shape().begin(), p.shape().end()}),
                                                   " needs ", *bytes, " bytes, got ",
                                                   p.data().size()));
  if (Crc32(p.data().data(), p.data().size()) != p.crc32())
    return absl::DataLossError(absl::StrCat("tensor '", p.name(), "' fails its checksum"));
  return FromBytes(p.data().data(), *info, p.shape());
}

absl::StatusOr<torch::Tensor> DecodeFloatTensor(const v1::TensorProto& p,
                                                const std::vector<int64_t>& shape,
                                                const std::string& what) {
  std::vector<int64_t> got(p.shape().begin(), p.shape().end());
  if (got != shape)
    return absl::InvalidArgumentError(absl::StrCat(what, " has shape ", ShapeString(got),
                                                   " but must be ", ShapeString(shape)));
  if (p.dtype() != v1::FLOAT32)
    return absl::InvalidArgumentError(absl::StrCat(what, " must be float32, got dtype ",
                                                   v1::DType_Name(p.dtype())));
  return DecodeTensor(p);
}

EncodedItem EncodeItem(const NamedTensors& item) {
  EncodedItem out;
  size_t total = 0;
  std::vector<torch::Tensor> cpu;
  cpu.reserve(item.size());
  for (const auto& [name, t] : item) {
    cpu.push_back(t.detach().to(torch::kCPU).contiguous());
    const DTypeInfo* info = ByTorch(cpu.back().scalar_type());
    TORCH_CHECK(info, "EncodeItem: unsupported dtype ", cpu.back().scalar_type());
    v1::TensorHeader h;
    h.set_name(name);
    h.set_dtype(info->wire);
    for (int64_t d : cpu.back().sizes()) h.add_shape(d);
    h.set_num_bytes(cpu.back().numel() * info->bytes);
    total += h.num_bytes();
    out.tensors.push_back(std::move(h));
  }
  out.payload.resize(total);
  size_t off = 0;
  for (size_t i = 0; i < cpu.size(); ++i) {
    size_t n = out.tensors[i].num_bytes();
    if (n) std::memcpy(&out.payload[off], cpu[i].data_ptr(), n);
    off += n;
  }
  out.payload_crc32 = Crc32(out.payload.data(), out.payload.size());
  return out;
}

absl::StatusOr<NamedTensors> DecodeItem(const std::vector<v1::TensorHeader>& tensors,
                                        const std::string& payload) {
  NamedTensors out;
  int64_t off = 0;
  for (const auto& h : tensors) {
    const DTypeInfo* info = nullptr;
    auto bytes = CheckedBytes(h.name(), h.dtype(), h.shape(), &info);
    if (!bytes.ok()) return bytes.status();
    if (*bytes != h.num_bytes())
      return absl::InvalidArgumentError(absl::StrCat("tensor '", h.name(), "' of shape ",
                                                     ShapeString({h.shape().begin(), h.shape().end()}),
                                                     " needs ", *bytes, " bytes, header says ",
                                                     h.num_bytes()));
    if (off + *bytes > static_cast<int64_t>(payload.size()))
      return absl::InvalidArgumentError(
          absl::StrCat("payload ends inside tensor '", h.name(), "'"));
    out.emplace_back(h.name(), FromBytes(payload.data() + off, *info, h.shape()));
    off += *bytes;
  }
  if (off != static_cast<int64_t>(payload.size()))
    return absl::InvalidArgumentError(absl::StrCat("payload has ", payload.size() - off,
                                                   " bytes beyond its tensors"));
  return out;
}

}  // namespace lopt
