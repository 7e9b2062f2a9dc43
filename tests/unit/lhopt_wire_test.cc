// LHOPT units and results through the wire form (common/lhopt/lhopt_wire.h): every
// field survives, tensors bit for bit, through the payload's chunks; broken
// payloads give clear errors.
#include "common/lhopt/lhopt_wire.h"

#include <gtest/gtest.h>

#include <cstring>

#include <torch/torch.h>

#include "common/lhopt/lhopt_episode.h"
#include "common/rpc/rpc.h"
#include "kinds/job_door.h"
#include "learner/lhopt_job.h"

namespace lopt {
namespace {

constexpr char kJob[] = R"(
    name: "wire" seed: 4
    task { noisy_quadratic { min_dim: 5 max_dim: 10 } }
    lhopt {
      tasks { task { noisy_quadratic { min_dim: 5 max_dim: 10 } } weight: 1 }
      min_inner_steps: 20 max_inner_steps: 30 min_decisions: 2 max_decisions: 4
      particles: 2 episodes_per_iteration: 4 iterations: 2 hidden_size: 16
      curve_points: 4 baseline_refresh_iterations: 1 instances_per_task: 1
    })";

// Same names, dtypes, shapes and bytes (NaN included) in the same order.
void ExpectSame(const NamedTensors& a, const NamedTensors& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].first, b[i].first);
    ASSERT_EQ(a[i].second.scalar_type(), b[i].second.scalar_type()) << a[i].first;
    ASSERT_EQ(a[i].second.sizes(), b[i].second.sizes()) << a[i].first;
    torch::Tensor x = a[i].second.contiguous(), y = b[i].second.contiguous();
    EXPECT_EQ(0, std::memcmp(x.data_ptr(), y.data_ptr(), x.nbytes())) << a[i].first;
  }
}
void ExpectSame(const torch::Tensor& a, const torch::Tensor& b, const char* what) {
  ASSERT_EQ(a.defined(), b.defined()) << what;
  if (!a.defined()) return;
  ExpectSame(NamedTensors{{what, a}}, NamedTensors{{what, b}});
}

// Through EncodePayload, MakeChunks and a PayloadReceiver.
NamedTensors ThroughChunks(const NamedTensors& tensors) {
  std::string bytes;
  v1::PayloadHeader h = EncodePayload(tensors, &bytes);
  auto rx = PayloadReceiver::Create(h);
  EXPECT_TRUE(rx.ok()) << rx.status();
  for (const auto& c : MakeChunks(bytes, 4096)) EXPECT_TRUE(rx->Add(c).ok());
  auto out = rx->Finish();
  EXPECT_TRUE(out.ok()) << out.status();
  return *out;
}

TEST(LhoptWire, UnitAndResultRoundTripBitExact) {
  v1::JobSpec spec = JobFromText(kJob, "wire").value();
  LhoptJob job(spec);
  InMemoryReplayBuffer buffer;
  LhoptEpisodeRunner runner(spec, &buffer, "t");
  LhoptUnit unit = job.Start();

  v1::LhoptUnitInfo uinfo;
  NamedTensors ut;
  EncodeLhoptUnit(unit, &uinfo, &ut);
  v1::LhoptUnitInfo uinfo2;
  ASSERT_TRUE(uinfo2.ParseFromString(uinfo.SerializeAsString()));
  auto u2 = DecodeLhoptUnit(uinfo2, ThroughChunks(ut));
  ASSERT_TRUE(u2.ok()) << u2.status();
  EXPECT_EQ(u2->unit_id, unit.unit_id);
  EXPECT_EQ(u2->policy_version, unit.policy_version);
  EXPECT_EQ(u2->baseline_generation, unit.baseline_generation);
  EXPECT_EQ(u2->task_index, unit.task_index);
  EXPECT_EQ(u2->task.SerializeAsString(), unit.task.SerializeAsString());
  EXPECT_EQ(u2->task_seed, unit.task_seed);
  EXPECT_EQ(u2->inner_steps, unit.inner_steps);
  EXPECT_EQ(u2->decisions, unit.decisions);
  EXPECT_EQ(u2->particles, unit.particles);
  EXPECT_EQ(u2->task_key, unit.task_key);
  ExpectSame(u2->policy, unit.policy);
  ExpectSame(u2->baseline_policy, unit.baseline_policy);

  auto res = runner.Run(unit);
  ASSERT_TRUE(res.ok()) << res.status();
  LhoptUnitResult r = *res;
  // Fields the run may leave at defaults get distinctive values.
  r.register_saves = 7;
  r.register_loads = 3;
  r.segments[0].mask = torch::ones({r.segments[0].rewards.size(0)});
  r.segments[0].rewards[0] = NAN;  // NaN travels bit for bit too
  v1::LhoptResultInfo rinfo;
  NamedTensors rt;
  EncodeLhoptResult(r, &rinfo, &rt);
  v1::LhoptResultInfo rinfo2;
  ASSERT_TRUE(rinfo2.ParseFromString(rinfo.SerializeAsString()));
  auto r2 = DecodeLhoptResult(rinfo2, ThroughChunks(rt));
  ASSERT_TRUE(r2.ok()) << r2.status();
  EXPECT_EQ(r2->unit_id, r.unit_id);
  EXPECT_EQ(r2->policy_version, r.policy_version);
  EXPECT_EQ(r2->task_index, r.task_index);
  EXPECT_EQ(r2->curve_steps, r.curve_steps);
  EXPECT_EQ(r2->baseline_computed, r.baseline_computed);
  EXPECT_EQ(r2->inner_particle_steps, r.inner_particle_steps);
  EXPECT_EQ(r2->register_saves, 7);
  EXPECT_EQ(r2->register_loads, 3);
  ExpectSame(r2->raw_features, r.raw_features, "raw_features");
  ExpectSame(r2->episode_rewards, r.episode_rewards, "episode_rewards");
  ExpectSame(r2->curve, r.curve, "curve");
  ExpectSame(r2->baseline_curve, r.baseline_curve, "baseline_curve");
  ExpectSame(r2->final_hparams, r.final_hparams, "final_hparams");
  ASSERT_EQ(r2->segments.size(), r.segments.size());
  for (size_t i = 0; i < r.segments.size(); ++i) {
    const auto &a = r2->segments[i], &b = r.segments[i];
    EXPECT_EQ(a.policy_version, b.policy_version);
    ExpectSame(a.features, b.features, "features");
    ExpectSame(a.value_extra, b.value_extra, "value_extra");
    ExpectSame(a.actions, b.actions, "actions");
    ExpectSame(a.log_probs, b.log_probs, "log_probs");
    ExpectSame(a.values, b.values, "values");
    ExpectSame(a.rewards, b.rewards, "rewards");
    ExpectSame(a.dones, b.dones, "dones");
    ExpectSame(a.bootstrap_value, b.bootstrap_value, "bootstrap_value");
    ExpectSame(a.initial_state.h, b.initial_state.h, "h");
    ExpectSame(a.initial_state.c, b.initial_state.c, "c");
    ExpectSame(a.mask, b.mask, "mask");
  }
  // The policy weights alone exceed the message limit: hence the payload.
  // (Here, a tiny policy: just check the payload is cut into several chunks.)
  std::string bytes;
  EncodePayload(ut, &bytes);
  EXPECT_GT(MakeChunks(bytes, 4096).size(), 1u);
}

TEST(LhoptWire, BrokenPayloadsAndMessagesGiveClearErrors) {
  NamedTensors t = {{"curve", torch::rand({100, 2}, torch::kFloat64)}};
  std::string bytes;
  v1::PayloadHeader h = EncodePayload(t, &bytes);
  auto chunks = MakeChunks(bytes, 512);
  ASSERT_GT(chunks.size(), 2u);
  {  // Truncated.
    auto rx = PayloadReceiver::Create(h).value();
    ASSERT_TRUE(rx.Add(chunks[0]).ok());
    EXPECT_FALSE(rx.complete());
    auto out = rx.Finish();
    EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(out.status().message().find("truncated"), std::string::npos) << out.status();
  }
  {  // A corrupt chunk.
    auto rx = PayloadReceiver::Create(h).value();
    v1::Chunk bad = chunks[1];
    ASSERT_TRUE(rx.Add(chunks[0]).ok());
    (*bad.mutable_data())[3] ^= 1;
    EXPECT_EQ(rx.Add(bad).code(), absl::StatusCode::kDataLoss);
  }
  {  // An absurd announcement.
    v1::PayloadHeader huge = h;
    huge.set_payload_bytes(kMaxPayloadBytes + 1);
    EXPECT_EQ(PayloadReceiver::Create(huge).status().code(), absl::StatusCode::kInvalidArgument);
  }
  // Unknown names and missing fields.
  v1::LhoptResultInfo info;
  info.set_num_segments(1);
  info.add_segment_policy_versions(0);
  auto r = DecodeLhoptResult(info, {{"seg/0/features", torch::zeros({2, 3})}});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("lacks 'seg/0/actions'"), std::string::npos) << r.status();
  r = DecodeLhoptResult(info, {{"seg/3/features", torch::zeros({2, 3})}});
  EXPECT_NE(r.status().message().find("segment 3"), std::string::npos) << r.status();
  r = DecodeLhoptResult(info, {{"bogus", torch::zeros({1})}});
  EXPECT_NE(r.status().message().find("unknown tensor 'bogus'"), std::string::npos) << r.status();
  v1::LhoptUnitInfo uinfo;
  EXPECT_EQ(DecodeLhoptUnit(uinfo, {}).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace lopt
