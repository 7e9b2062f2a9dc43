// The job manager's API from many threads at once, in-process: workers
// (NextUnit, HandleResult, Heartbeat; one of them leaves with a unit in
// hand and comes back), watchers (WaitForChange), a client (Get, List,
// exports, SaveAll) on two ELO jobs and an LHOPT job in PPO updates, then
// every result accounted for. No gRPC, so that the tsan label's build
// (ThreadSanitizer) sees only the learner's own synchronisation: the
// system's gRPC is not instrumented and its internal locks are invisible to
// TSAN, which would drown the learner's reports in false ones.
#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <filesystem>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/elo/replay_buffer.h"
#include "common/lhopt/lhopt_episode.h"
#include "common/lhopt/lhopt_wire.h"
#include "common/rpc/tensor_codec.h"
#include "common/util/remove_tree.h"
#include "kinds/job_door.h"
#include "learner/job_manager.h"

namespace lopt {
namespace {

using namespace std::chrono_literals;

std::string EloJob(int i) {
  return absl::StrCat(
      "name: \"conc_elo", i, "\"\nseed: ", 30 + i, "\n",
      "task { fmnist_mlp { image_size: 8 hidden_sizes: 16 batch_size: 32 } }\n",
      "pes { num_tasks: 2 truncation_length: 10 min_unroll_length: 20 max_unroll_length: 40 }\n",
      "elo { buffer { enabled: false } }\n",
      "budget { outer_steps: 1000000 checkpoint_every: 3 }\n",
      "cluster { shards: 2 max_staleness: 1 }\n");
}

const char kLhoptJob[] = R"(
    name: "conc_lhopt" seed: 5
    task { noisy_quadratic { min_dim: 5 max_dim: 10 } }
    lhopt {
      tasks { task { noisy_quadratic { min_dim: 5 max_dim: 10 } } weight: 1 }
      min_inner_steps: 20 max_inner_steps: 30 min_decisions: 2 max_decisions: 4
      particles: 2 episodes_per_iteration: 4 iterations: 100000 hidden_size: 16
      curve_points: 4 baseline_refresh_iterations: 1 instances_per_task: 2
      checkpoint_every: 1
      ppo { max_staleness: 1000 }
    })";

struct Counts {
  std::atomic<int64_t> sent{0}, accepted{0}, stale{0}, rejected{0};
};

TEST(JobManagerConcurrency, WorkersWatchersAndClientsOnSeveralJobsAccountForEveryResult) {
  torch::set_num_threads(1);
  LearnerOptions opt;
  opt.state_dir = absl::StrCat(::testing::TempDir(), "lopt_conc_", getpid());
  lopt::RemoveTree(opt.state_dir).IgnoreError();  // an old run's, if the pid came round again
  opt.worker_timeout_ms = 60000;
  auto created = JobManager::Create(opt);
  ASSERT_TRUE(created.ok()) << created.status();
  JobManager& m = **created;
  std::vector<std::string> ids;
  for (int i = 0; i < 2; ++i) {
    v1::JobSpec spec = JobFromText(EloJob(i), "job").value();
    ids.push_back(m.Submit(spec).value());
  }
  const v1::JobSpec lhopt_spec = JobFromText(kLhoptJob, "job").value();
  ids.push_back(m.Submit(lhopt_spec).value());
  std::map<std::string, Counts> counts;
  for (const auto& id : ids) counts[id];

  std::atomic<bool> stop{false};
  std::atomic<int> errors{0};
  auto work = [&](int k) {
    v1::WorkerInfo info;
    info.set_name(absl::StrCat("conc", k));
    std::string id = m.RegisterWorker(info);
    InMemoryReplayBuffer buffer;
    std::unique_ptr<LhoptEpisodeRunner> runner;
    int done = 0;
    while (!stop) {
      m.Heartbeat(id);
      std::string bytes;
      auto u = m.NextUnit(id, 50ms, &bytes);
      if (!u.ok()) {
        ++errors;
        break;
      }
      if (!u->has_value()) continue;
      const v1::WorkUnit& unit = **u;
      if (k == 0 && ++done % 7 == 0) {
        // Gone with the unit in hand (its job may be busy): the unit goes
        // back to the pool; then back as a new worker.
        m.DisconnectWorker(id);
        id = m.RegisterWorker(info);
        continue;
      }
      v1::WorkResult r;
      r.set_unit_id(unit.unit_id());
      r.set_job_id(unit.job_id());
      r.set_shard(unit.shard());
      NamedTensors payload;
      if (unit.algorithm() == v1::LHOPT_PPO) {
        std::vector<v1::TensorHeader> h(unit.payload().tensors().begin(),
                                        unit.payload().tensors().end());
        auto weights = DecodeItem(h, bytes);
        auto lu = weights.ok() ? DecodeLhoptUnit(unit.lhopt(), *weights)
                               : absl::StatusOr<LhoptUnit>(weights.status());
        if (!lu.ok()) {
          ADD_FAILURE() << lu.status();
          ++errors;
          break;
        }
        if (!runner) runner = std::make_unique<LhoptEpisodeRunner>(lhopt_spec, &buffer, "conc");
        auto res = runner->Run(*lu);
        if (!res.ok()) {
          ADD_FAILURE() << res.status();
          ++errors;
          break;
        }
        EncodeLhoptResult(*res, r.mutable_lhopt(), &payload);
        std::string out;
        *r.mutable_payload() = EncodePayload(payload, &out);
      } else {
        r.set_theta_version(unit.theta_version());
        v1::EloResultInfo& e = *r.mutable_elo();
        *e.mutable_grad() = EncodeTensor(torch::full({unit.elo().theta().shape(0)}, 0.01f), "grad");
        e.set_meta_loss(1.0);
        e.set_task_loss(1.0);
        r.set_particle_steps(40);
      }
      Counts& c = counts.at(unit.job_id());
      ++c.sent;
      v1::ResultAck a = m.HandleResult(id, r, payload);
      if (a.unit_id() != r.unit_id()) ++errors;
      if (a.accepted()) ++c.accepted;
      else if (a.dropped_stale()) ++c.stale;
      else ++c.rejected;
    }
    m.DisconnectWorker(id);
  };
  std::vector<v1::JobStatus> last(ids.size());
  auto watch = [&](size_t j) {
    int64_t version = -1;
    while (true) {
      auto st = m.WaitForChange(ids[j], &version, 200ms);
      if (!st.ok()) {
        ++errors;
        return;
      }
      last[j] = *st;
      if (st->state() == v1::CANCELLED) return;
    }
  };
  auto client = [&] {
    int loops = 0;
    while (!stop) {
      for (const auto& id : ids) {
        if (!m.Get(id, true).ok()) ++errors;
        if (!m.ExportOptimizer(id).ok()) ++errors;
        if (!m.ExportFile(id, "job.textproto").ok()) ++errors;
      }
      if (m.List().size() != ids.size()) ++errors;
      if (++loops % 10 == 0) m.SaveAll();
      std::this_thread::sleep_for(20ms);
    }
  };
  std::vector<std::thread> threads;
  for (int k = 0; k < 6; ++k) threads.emplace_back(work, k);
  std::vector<std::thread> watchers;
  for (size_t j = 0; j < ids.size(); ++j) watchers.emplace_back(watch, j);
  std::thread c(client);
  std::this_thread::sleep_for(std::chrono::seconds(4));
  stop = true;
  for (auto& t : threads) t.join();
  c.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(m.ConnectedWorkers(), 0);
  for (const auto& id : ids) {
    auto st = m.Get(id, false);
    ASSERT_TRUE(st.ok());
    const Counts& n = counts.at(id);
    EXPECT_EQ(n.sent.load(), n.accepted + n.stale + n.rejected) << id;
    EXPECT_EQ(st->results_accepted(), n.accepted.load()) << id;
    EXPECT_EQ(st->results_dropped_stale(), n.stale.load()) << id;
    EXPECT_EQ(n.rejected.load(), 0) << id;
    EXPECT_GT(n.accepted.load(), 0) << id;
    EXPECT_EQ(st->workers(), 0) << id;
    ASSERT_TRUE(m.Cancel(id).ok()) << id;
  }
  for (auto& t : watchers) t.join();
  for (size_t j = 0; j < ids.size(); ++j) {
    EXPECT_EQ(last[j].state(), v1::CANCELLED) << ids[j];
    EXPECT_EQ(last[j].results_accepted(), counts.at(ids[j]).accepted.load()) << ids[j];
  }
}

}  // namespace
}  // namespace lopt
