#include "common/util/checkpoint.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"

namespace lopt {

absl::StatusOr<std::string> SerializeTensors(const NamedTensors& tensors) {
  try {
    torch::serialize::OutputArchive archive;
    archive.write("__names__", StringTensor([&] {
                    std::string names;
                    for (const auto& [k, v] : tensors) names += k + "\n";
                    return names;
                  }()));
    for (const auto& [k, v] : tensors) archive.write(k, v);
    std::ostringstream out;
    archive.save_to(out);
    return out.str();
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("serialising tensors: ", e.what()));
  }
}

absl::StatusOr<NamedTensors> DeserializeTensors(const std::string& bytes) {
  try {
    torch::serialize::InputArchive archive;
    std::istringstream in(bytes);
    archive.load_from(in);
    torch::Tensor names_t;
    archive.read("__names__", names_t);
    std::string names = TensorString(names_t);
    NamedTensors out;
    size_t start = 0;
    while (start < names.size()) {
      size_t nl = names.find('\n', start);
      std::string k = names.substr(start, nl - start);
      start = nl + 1;
      torch::Tensor v;
      archive.read(k, v);
      out.emplace_back(k, v);
    }
    return out;
  } catch (const std::exception& e) {
    return absl::DataLossError(absl::StrCat("not a lopt tensor archive: ", e.what()));
  }
}

torch::Tensor StringTensor(const std::string& s) {
  torch::Tensor t = torch::empty({int64_t(s.size())}, torch::kUInt8);
  if (!s.empty()) std::memcpy(t.data_ptr(), s.data(), s.size());
  return t;
}

std::string TensorString(const torch::Tensor& t) {
  torch::Tensor c = t.contiguous().to(torch::kUInt8);
  return std::string(reinterpret_cast<const char*>(c.data_ptr()), c.numel());
}

}  // namespace lopt
