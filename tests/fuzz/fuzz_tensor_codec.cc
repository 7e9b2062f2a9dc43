// The tensor codec's decoders (common/rpc/tensor_codec.h) on what a peer sends:
// a v1::TensorProto (DecodeTensor, DecodeFloatTensor) or an item's tensor
// headers and payload (DecodeItem). Input (fuzz_input.h): with flags bit 0
// clear, the first message is a TensorProto (the crc repaired when
// kFixChunkCrcs is set); with it set, the messages are TensorHeaders and the
// last one is the payload's bytes. Checks: refusals are INVALID_ARGUMENT or
// DATA_LOSS with a reason; a decoded tensor has the announced shape and
// dtype and exactly the sent bytes; an item re-encodes to the same headers
// and payload.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include <torch/torch.h>

#include "common/rpc/tensor_codec.h"
#include "tests/fuzz/fuzz_common.h"
#include "tests/fuzz/fuzz_input.h"

using namespace lopt::fuzz;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  StreamInput in = SplitStream(data, size);
  if (in.messages.empty()) return 0;
  if (!(in.flags & 0x10)) {
    lopt::v1::TensorProto p;
    if (!p.ParseFromString(in.messages[0])) return 0;
    if (in.flags & kFixChunkCrcs) p.set_crc32(lopt::Crc32(p.data().data(), p.data().size()));
    auto t = lopt::DecodeTensor(p);
    if (!t.ok()) {
      CheckRefusal(t.status(), {absl::StatusCode::kInvalidArgument, absl::StatusCode::kDataLoss});
      return 0;
    }
    FUZZ_CHECK(t->dim() == p.shape_size());
    for (int i = 0; i < p.shape_size(); ++i) FUZZ_CHECK(t->size(i) == p.shape(i));
    FUZZ_CHECK(static_cast<size_t>(t->nbytes()) == p.data().size());
    FUZZ_CHECK(t->numel() == 0 || std::memcmp(t->data_ptr(), p.data().data(), t->nbytes()) == 0);
    lopt::v1::TensorProto back = lopt::EncodeTensor(*t, p.name());
    FUZZ_CHECK(back.data() == p.data() && back.dtype() == p.dtype() && back.crc32() == p.crc32());
    std::vector<int64_t> shape(p.shape().begin(), p.shape().end());
    auto f = lopt::DecodeFloatTensor(p, shape, "fuzzed");
    FUZZ_CHECK(f.ok() == (p.dtype() == lopt::v1::FLOAT32));
    return 0;
  }
  std::vector<lopt::v1::TensorHeader> headers;
  for (size_t i = 0; i + 1 < in.messages.size(); ++i) {
    lopt::v1::TensorHeader h;
    if (h.ParseFromString(in.messages[i])) headers.push_back(std::move(h));
  }
  const std::string& payload = in.messages.back();
  auto item = lopt::DecodeItem(headers, payload);
  if (!item.ok()) {
    CheckRefusal(item.status(), {absl::StatusCode::kInvalidArgument, absl::StatusCode::kDataLoss});
    return 0;
  }
  FUZZ_CHECK(item->size() == headers.size());
  lopt::EncodedItem back = lopt::EncodeItem(*item);
  FUZZ_CHECK(back.payload == payload, "an item re-encodes to other bytes");
  FUZZ_CHECK(back.tensors.size() == headers.size());
  for (size_t i = 0; i < headers.size(); ++i) {
    FUZZ_CHECK(back.tensors[i].name() == headers[i].name());
    FUZZ_CHECK(back.tensors[i].num_bytes() == headers[i].num_bytes());
    FUZZ_CHECK(back.tensors[i].dtype() == headers[i].dtype());
  }
  return 0;
}
