#include "common/lhopt/lhopt_wire.h"

#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/rpc/tensor_codec.h"

namespace lopt {
namespace {

bool StartsWith(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }

void Put(NamedTensors* out, const std::string& name, const torch::Tensor& t) {
  if (t.defined()) out->emplace_back(name, t);
}

}  // namespace

void EncodeLhoptUnit(const LhoptUnit& u, v1::LhoptUnitInfo* info, NamedTensors* tensors) {
  info->set_lhopt_unit_id(u.unit_id);
  info->set_policy_version(u.policy_version);
  info->set_baseline_generation(u.baseline_generation);
  info->set_task_index(u.task_index);
  *info->mutable_task() = u.task;
  info->set_task_seed(u.task_seed);
  info->set_inner_steps(u.inner_steps);
  info->set_decisions(u.decisions);
  info->set_particles(u.particles);
  info->set_task_key(u.task_key);
  for (const auto& [k, v] : u.policy) tensors->emplace_back("policy/" + k, v);
  for (const auto& [k, v] : u.baseline_policy) tensors->emplace_back("baseline/" + k, v);
}

absl::StatusOr<LhoptUnit> DecodeLhoptUnit(const v1::LhoptUnitInfo& info,
                                          const NamedTensors& tensors) {
  LhoptUnit u;
  u.unit_id = info.lhopt_unit_id();
  u.policy_version = info.policy_version();
  u.baseline_generation = info.baseline_generation();
  u.task_index = info.task_index();
  u.task = info.task();
  u.task_seed = info.task_seed();
  u.inner_steps = info.inner_steps();
  u.decisions = info.decisions();
  u.particles = info.particles();
  u.task_key = info.task_key();
  for (const auto& [k, v] : tensors) {
    if (StartsWith(k, "policy/"))
      u.policy.emplace_back(k.substr(7), v);
    else if (StartsWith(k, "baseline/"))
      u.baseline_policy.emplace_back(k.substr(9), v);
    else
      return absl::InvalidArgumentError(
          absl::StrCat("LHOPT unit payload has an unknown tensor '", k, "'"));
  }
  if (u.policy.empty())
    return absl::InvalidArgumentError("LHOPT unit payload has no policy weights");
  return u;
}

void EncodeLhoptResult(const LhoptUnitResult& r, v1::LhoptResultInfo* info,
                       NamedTensors* tensors) {
  info->set_lhopt_unit_id(r.unit_id);
  info->set_policy_version(r.policy_version);
  info->set_task_index(r.task_index);
  info->set_num_segments(static_cast<int32_t>(r.segments.size()));
  for (const auto& s : r.segments) info->add_segment_policy_versions(s.policy_version);
  for (int64_t c : r.curve_steps) info->add_curve_steps(c);
  info->set_baseline_computed(r.baseline_computed);
  info->set_inner_particle_steps(r.inner_particle_steps);
  info->set_register_saves(r.register_saves);
  info->set_register_loads(r.register_loads);
  for (size_t i = 0; i < r.segments.size(); ++i) {
    const auto& s = r.segments[i];
    const std::string p = absl::StrCat("seg/", i, "/");
    Put(tensors, p + "features", s.features);
    Put(tensors, p + "value_extra", s.value_extra);
    Put(tensors, p + "actions", s.actions);
    Put(tensors, p + "log_probs", s.log_probs);
    Put(tensors, p + "values", s.values);
    Put(tensors, p + "rewards", s.rewards);
    Put(tensors, p + "dones", s.dones);
    Put(tensors, p + "bootstrap_value", s.bootstrap_value);
    Put(tensors, p + "h", s.initial_state.h);
    Put(tensors, p + "c", s.initial_state.c);
    Put(tensors, p + "mask", s.mask);
  }
  Put(tensors, "raw_features", r.raw_features);
  Put(tensors, "episode_rewards", r.episode_rewards);
  Put(tensors, "curve", r.curve);
  Put(tensors, "baseline_curve", r.baseline_curve);
  Put(tensors, "final_hparams", r.final_hparams);
}

absl::StatusOr<LhoptUnitResult> DecodeLhoptResult(const v1::LhoptResultInfo& info,
                                                  const NamedTensors& tensors) {
  LhoptUnitResult r;
  r.unit_id = info.lhopt_unit_id();
  r.policy_version = info.policy_version();
  r.task_index = info.task_index();
  const int32_t n = info.num_segments();
  if (n < 0 || info.segment_policy_versions_size() != n)
    return absl::InvalidArgumentError(absl::StrCat(
        "LHOPT result announces ", n, " segments but carries ",
        info.segment_policy_versions_size(), " segment policy versions"));
  r.segments.resize(n);
  for (int32_t i = 0; i < n; ++i) r.segments[i].policy_version = info.segment_policy_versions(i);
  r.curve_steps.assign(info.curve_steps().begin(), info.curve_steps().end());
  r.baseline_computed = info.baseline_computed();
  r.inner_particle_steps = info.inner_particle_steps();
  r.register_saves = info.register_saves();
  r.register_loads = info.register_loads();
  std::map<std::string, torch::Tensor*> top = {{"raw_features", &r.raw_features},
                                               {"episode_rewards", &r.episode_rewards},
                                               {"curve", &r.curve},
                                               {"baseline_curve", &r.baseline_curve},
                                               {"final_hparams", &r.final_hparams}};
  for (const auto& [k, v] : tensors) {
    if (auto it = top.find(k); it != top.end()) {
      *it->second = v;
      continue;
    }
    auto bad = [&] {
      return absl::InvalidArgumentError(
          absl::StrCat("LHOPT result payload has an unknown tensor '", k, "'"));
    };
    if (!StartsWith(k, "seg/")) return bad();
    size_t slash = k.find('/', 4);
    int32_t i = -1;
    if (slash == std::string::npos || !absl::SimpleAtoi(k.substr(4, slash - 4), &i)) return bad();
    if (i < 0 || i >= n)
      return absl::InvalidArgumentError(absl::StrCat("LHOPT result payload has tensor '", k,
                                                     "' of segment ", i, " but announces ", n,
                                                     " segments"));
    PpoSegment& s = r.segments[i];
    const std::string f = k.substr(slash + 1);
    std::map<std::string, torch::Tensor*> fields = {
        {"features", &s.features}, {"value_extra", &s.value_extra}, {"actions", &s.actions},
        {"log_probs", &s.log_probs}, {"values", &s.values},         {"rewards", &s.rewards},
        {"dones", &s.dones},       {"bootstrap_value", &s.bootstrap_value},
        {"h", &s.initial_state.h}, {"c", &s.initial_state.c},     {"mask", &s.mask}};
    auto it = fields.find(f);
    if (it == fields.end()) return bad();
    *it->second = v;
  }
  for (int32_t i = 0; i < n; ++i) {
    const PpoSegment& s = r.segments[i];
    const std::pair<const char*, const torch::Tensor*> required[] = {
        {"features", &s.features},   {"actions", &s.actions},
        {"log_probs", &s.log_probs}, {"values", &s.values},
        {"rewards", &s.rewards},     {"dones", &s.dones},
        {"bootstrap_value", &s.bootstrap_value},
        {"h", &s.initial_state.h},   {"c", &s.initial_state.c}};
    for (const auto& [name, t] : required)
      if (!t->defined())
        return absl::InvalidArgumentError(
            absl::StrCat("LHOPT result payload lacks 'seg/", i, "/", name, "'"));
  }
  return r;
}

v1::PayloadHeader EncodePayload(const NamedTensors& tensors, std::string* bytes) {
  EncodedItem item = EncodeItem(tensors);
  v1::PayloadHeader h;
  for (auto& t : item.tensors) *h.add_tensors() = std::move(t);
  h.set_payload_bytes(static_cast<int64_t>(item.payload.size()));
  h.set_payload_crc32(item.payload_crc32);
  *bytes = std::move(item.payload);
  return h;
}

absl::StatusOr<PayloadReceiver> PayloadReceiver::Create(const v1::PayloadHeader& header) {
  if (header.payload_bytes() < 0 || header.payload_bytes() > kMaxPayloadBytes)
    return absl::InvalidArgumentError(absl::StrCat("payload of ", header.payload_bytes(),
                                                   " bytes announced; the limit is ",
                                                   kMaxPayloadBytes));
  auto a = ChunkAssembler::Create(header.payload_bytes(), header.payload_crc32(), kMaxPayloadBytes);
  if (!a.ok()) return a.status();
  return PayloadReceiver(header, std::move(*a), header.payload_bytes());
}

absl::Status PayloadReceiver::Add(const v1::Chunk& chunk) { return assembler_.Add(chunk); }

absl::StatusOr<NamedTensors> PayloadReceiver::Finish() {
  if (assembler_.received() < expected_)
    return absl::InvalidArgumentError(absl::StrCat("payload truncated: received ",
                                                   assembler_.received(), " of ", expected_,
                                                   " announced bytes"));
  auto bytes = assembler_.Finish();
  if (!bytes.ok()) return bytes.status();
  std::vector<v1::TensorHeader> headers(header_.tensors().begin(), header_.tensors().end());
  return DecodeItem(headers, *bytes);
}

}  // namespace lopt
