#include "common/lhopt/lhopt_schedule.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/util/checkpoint.h"
#include "google/protobuf/util/json_util.h"

namespace lopt {

absl::Status ValidateSchedule(const v1::LhoptSchedule& s) {
  if (s.points_size() == 0) return absl::InvalidArgumentError("schedule has no points");
  if (s.points(0).progress() != 0)
    return absl::InvalidArgumentError(
        absl::StrCat("points[0].progress must be 0, got ", s.points(0).progress()));
  for (int i = 0; i < s.points_size(); ++i) {
    const auto& p = s.points(i);
    const std::string at = absl::StrCat("points[", i, "]");
    if (!(p.progress() >= 0 && p.progress() < 1))
      return absl::InvalidArgumentError(
          absl::StrCat(at, ".progress must be in [0, 1), got ", p.progress()));
    if (i > 0 && !(p.progress() > s.points(i - 1).progress()))
      return absl::InvalidArgumentError(absl::StrCat(at, ".progress must exceed points[", i - 1,
                                                     "].progress, got ", p.progress()));
    const std::pair<const char*, double> values[] = {
        {"lr", p.lr()},   {"one_minus_beta1", p.one_minus_beta1()},
        {"one_minus_beta2", p.one_minus_beta2()}, {"eps", p.eps()},
        {"weight_decay", p.weight_decay()}, {"clip_fraction", p.clip_fraction()}};
    for (const auto& [name, v] : values)
      if (!(v > 0) || !std::isfinite(v))
        return absl::InvalidArgumentError(absl::StrCat(at, ".", name, " must be > 0, got ", v));
    if (p.clip_fraction() > 1)
      return absl::InvalidArgumentError(
          absl::StrCat(at, ".clip_fraction must be <= 1, got ", p.clip_fraction()));
  }
  return absl::OkStatus();
}

CiaoHyperparameters PointHparams(const v1::LhoptSchedulePoint& p) {
  CiaoHyperparameters h;
  h.lr = p.lr();
  h.one_minus_beta1 = p.one_minus_beta1();
  h.one_minus_beta2 = p.one_minus_beta2();
  h.eps = p.eps();
  h.weight_decay = p.weight_decay();
  h.clip_fraction = p.clip_fraction();
  return h;
}

v1::LhoptSchedulePoint SchedulePoint(double progress, const CiaoHyperparameters& h) {
  v1::LhoptSchedulePoint p;
  p.set_progress(progress);
  p.set_lr(h.lr);
  p.set_one_minus_beta1(h.one_minus_beta1);
  p.set_one_minus_beta2(h.one_minus_beta2);
  p.set_eps(h.eps);
  p.set_weight_decay(h.weight_decay);
  p.set_clip_fraction(h.clip_fraction);
  return p;
}

CiaoHyperparameters ScheduleAt(const v1::LhoptSchedule& s, double progress) {
  progress = std::min(1.0, std::max(0.0, progress));
  // Last point with progress <= the current one (binary search).
  int lo = 0, hi = s.points_size() - 1;
  while (lo < hi) {
    int mid = (lo + hi + 1) / 2;
    if (s.points(mid).progress() <= progress)
      lo = mid;
    else
      hi = mid - 1;
  }
  return PointHparams(s.points(lo));
}

absl::Status SaveScheduleJson(const std::string& path, const v1::LhoptSchedule& s) {
  google::protobuf::util::JsonPrintOptions o;
  o.add_whitespace = true;
  o.preserve_proto_field_names = true;
  std::string json;
  auto st = google::protobuf::util::MessageToJsonString(s, &json, o);
  if (!st.ok()) return absl::InternalError(std::string(st.message()));
  return WriteFileAtomically(path, json);
}

absl::StatusOr<v1::LhoptSchedule> LoadScheduleJson(const std::string& path) {
  auto bytes = ReadFile(path);
  if (!bytes.ok()) return absl::NotFoundError(absl::StrCat("cannot read schedule ", path));
  v1::LhoptSchedule s;
  auto st = google::protobuf::util::JsonStringToMessage(*bytes, &s);
  if (!st.ok())
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a schedule: ", std::string(st.message())));
  if (s.format_version() > kScheduleFormatVersion)
    return absl::FailedPreconditionError(absl::StrCat(
        path, " has schedule format ", s.format_version(), "; this lopt reads up to ",
        kScheduleFormatVersion));
  if (absl::Status v = ValidateSchedule(s); !v.ok())
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", v.message()));
  return s;
}

std::string ScheduleCsv(const v1::LhoptSchedule& s) {
  std::string csv = "progress,lr,one_minus_beta1,one_minus_beta2,eps,weight_decay,clip_fraction\n";
  for (const auto& p : s.points())
    absl::StrAppend(&csv, absl::StrFormat("%.6f,%.9g,%.9g,%.9g,%.9g,%.9g,%.9g\n", p.progress(),
                                          p.lr(), p.one_minus_beta1(), p.one_minus_beta2(),
                                          p.eps(), p.weight_decay(), p.clip_fraction()));
  return csv;
}

}  // namespace lopt
