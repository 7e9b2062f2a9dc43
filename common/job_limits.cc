#include "common/job_limits.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/utf8.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"

namespace lopt {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;

absl::Status CheckStrings(const Message& m, const std::string& prefix) {
  const auto* refl = m.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  refl->ListFields(m, &fields);
  for (const FieldDescriptor* f : fields) {
    const std::string name = prefix.empty() ? f->name() : absl::StrCat(prefix, ".", f->name());
    const int n = f->is_repeated() ? refl->FieldSize(m, f) : 1;
    for (int i = 0; i < n; ++i) {
      const std::string at = f->is_repeated() ? absl::StrCat(name, "[", i, "]") : name;
      if (f->type() == FieldDescriptor::TYPE_STRING) {
        std::string v = f->is_repeated() ? refl->GetRepeatedString(m, f, i) : refl->GetString(m, f);
        if (auto bad = FirstInvalidUtf8(v))
          return absl::InvalidArgumentError(absl::StrFormat(
              "%s is not valid UTF-8 (byte 0x%02x at offset %d)", at,
              static_cast<unsigned char>(v[*bad]), *bad));
      } else if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
        const Message& sub =
            f->is_repeated() ? refl->GetRepeatedMessage(m, f, i) : refl->GetMessage(m, f);
        if (auto s = CheckStrings(sub, at); !s.ok()) return s;
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateJobStrings(const v1::JobSpec& job) {
  if (job.name().size() > kMaxJobNameBytes)
    return absl::InvalidArgumentError(absl::StrCat("name must be at most ", kMaxJobNameBytes,
                                                   " bytes, got ", job.name().size()));
  return CheckStrings(job, "");
}

}  // namespace lopt
