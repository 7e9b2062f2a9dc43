// The learner under concurrent load, in the style of Reverb's stress tests:
// many workers (threads, each with its own gRPC stream to the learner on
// loopback) and watchers on several jobs, one of them an LHOPT job whose
// PPO updates and checkpoints are the learner's slowest work. Checks
// behaviour, not timings: every result sent gets an ack and every accepted
// one is counted in its job's status, every watcher sees its job end with
// those counts, nothing deadlocks, and no heartbeat, ack or status call
// waits longer than a generous bound (2 s). The latencies (heartbeat as
// the WorkService door handles one, ELO result acks and JobService.Get
// over gRPC, overall and while a PPO update runs) are printed for
// README.md's Benchmarks; LOPT_STRESS_SECONDS (default 8), LOPT_STRESS_WORKERS
// (12) and LOPT_STRESS_WATCHERS (8) size the run.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/elo/replay_buffer.h"
#include "common/lhopt/lhopt_episode.h"
#include "common/lhopt/lhopt_wire.h"
#include "kinds/job_door.h"
#include "tests/support/learner_harness.h"

namespace lopt {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

int EnvInt(const char* name, int def) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : def;
}

std::string EloJob(int i) {
  return absl::StrCat(
      "name: \"stress_elo", i, "\"\nseed: ", 20 + i, "\n",
      "task { fmnist_mlp { image_size: 8 hidden_sizes: 16 batch_size: 32 } }\n",
      "pes { num_tasks: 2 truncation_length: 10 min_unroll_length: 20 max_unroll_length: 40 }\n",
      "elo { buffer { enabled: false } }\n",
      "budget { outer_steps: 1000000 checkpoint_every: 5 }\n",
      "cluster { shards: 4 max_staleness: 2 }\n");
}

// Sized so that one PPO update (8 epochs over 32 episodes of 40 decisions
// through a 256-wide LSTM) takes a good part of a second on one core,
// followed by a checkpoint of the policy.
const char kLhoptJob[] = R"(
    name: "stress_lhopt" seed: 7
    task { noisy_quadratic { min_dim: 5 max_dim: 10 } }
    lhopt {
      tasks { task { noisy_quadratic { min_dim: 5 max_dim: 10 } } weight: 1 }
      min_inner_steps: 40 max_inner_steps: 40 min_decisions: 40 max_decisions: 40
      particles: 8 episodes_per_iteration: 32 iterations: 100000 hidden_size: 256
      curve_points: 4 baseline_refresh_iterations: 1000 instances_per_task: 2
      checkpoint_every: 1
      ppo { epochs: 8 max_staleness: 1000 }
    })";

double Seconds(Clock::time_point t0, Clock::time_point t) {
  return std::chrono::duration<double>(t - t0).count();
}

// Latency samples: (start, seconds since t0; milliseconds).
class Samples {
 public:
  void Add(double start, double ms) {
    std::lock_guard<std::mutex> l(mu_);
    v_.emplace_back(start, ms);
  }
  std::vector<std::pair<double, double>> Get() {
    std::lock_guard<std::mutex> l(mu_);
    return v_;
  }

 private:
  std::mutex mu_;
  std::vector<std::pair<double, double>> v_;
};

struct Summary {
  size_t n = 0;
  double p50 = 0, p99 = 0, max = 0;
};
Summary Summarize(std::vector<double> ms) {
  Summary s;
  s.n = ms.size();
  if (ms.empty()) return s;
  std::sort(ms.begin(), ms.end());
  auto at = [&](double q) { return ms[std::min(ms.size() - 1, size_t(q * (ms.size() - 1) + 0.5))]; };
  s.p50 = at(0.5);
  s.p99 = at(0.99);
  s.max = ms.back();
  return s;
}

struct PerJob {
  std::atomic<int64_t> sent{0}, acks{0}, accepted{0}, stale{0}, rejected{0};
};

TEST(LearnerStress, ManyWorkersAndWatchersOnSeveralJobsWhileAPpoUpdateRuns) {
  const int seconds = EnvInt("LOPT_STRESS_SECONDS", 8);
  const int num_workers = EnvInt("LOPT_STRESS_WORKERS", 12);
  const int num_watchers = EnvInt("LOPT_STRESS_WATCHERS", 8);
  testing::LearnerServer s("", "", /*worker_timeout_ms=*/30000);
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(testing::Submit(s, EloJob(i)));
  const std::string lhopt_id = testing::Submit(s, kLhoptJob);
  ids.push_back(lhopt_id);
  const v1::JobSpec lhopt_spec = JobFromText(kLhoptJob, "job").value();
  std::map<std::string, PerJob> per_job;
  for (const auto& id : ids) per_job[id];

  const auto t0 = Clock::now();
  std::atomic<bool> stop{false};
  Samples heartbeat, elo_ack, get_rpc, lhopt_ack;

  // The workers: ELO results are made up (GoodResult); LHOPT units run
  // their episodes for real (LhoptEpisodeRunner, as lopt-worker does).
  struct WorkerSlot {
    std::mutex mu;
    enum { kIdle, kWaiting, kRunning, kDone } state = kIdle;
    bool cancelled = false;
    testing::FakeWorker* w = nullptr;
  };
  std::vector<WorkerSlot> slots(num_workers);
  std::atomic<int> protocol_errors{0};
  auto work = [&](int k) {
    WorkerSlot& slot = slots[k];
    testing::FakeWorker w(s.client());
    if (!w.Register(absl::StrCat("stress", k))) {
      ++protocol_errors;
      std::lock_guard<std::mutex> l(slot.mu);
      slot.state = WorkerSlot::kDone;
      return;
    }
    std::atomic<bool> beating{true};
    std::thread hb([&] {
      while (beating) {
        w.Heartbeat();
        std::this_thread::sleep_for(20ms);
      }
    });
    InMemoryReplayBuffer buffer;
    std::unique_ptr<LhoptEpisodeRunner> runner;
    {
      std::lock_guard<std::mutex> l(slot.mu);
      slot.w = &w;
    }
    while (true) {
      {
        std::lock_guard<std::mutex> l(slot.mu);
        if (stop || slot.cancelled) break;
        slot.state = WorkerSlot::kWaiting;
      }
      std::optional<v1::WorkUnit> u = w.TryNextUnit();
      {
        std::lock_guard<std::mutex> l(slot.mu);
        if (!u || slot.cancelled) break;
        slot.state = WorkerSlot::kRunning;
      }
      PerJob& pj = per_job.at(u->job_id());
      v1::WorkResult r;
      std::string payload;
      const bool lhopt = u->algorithm() == v1::LHOPT_PPO;
      if (lhopt) {
        if (!runner) runner = std::make_unique<LhoptEpisodeRunner>(lhopt_spec, &buffer, "stress");
        auto lu = DecodeLhoptUnit(u->lhopt(), w.Payload(*u));
        ASSERT_TRUE(lu.ok()) << lu.status();
        auto res = runner->Run(*lu);
        ASSERT_TRUE(res.ok()) << res.status();
        r.set_unit_id(u->unit_id());
        r.set_job_id(u->job_id());
        r.set_shard(u->shard());
        NamedTensors t;
        EncodeLhoptResult(*res, r.mutable_lhopt(), &t);
        *r.mutable_payload() = EncodePayload(t, &payload);
      } else {
        r = testing::GoodResult(*u);
      }
      const auto sent = Clock::now();
      ++pj.sent;
      if (lhopt)
        w.SendWithPayload(r, payload, 1 << 20);
      else
        w.SendWithPayload(r, "", 1 << 20);
      v1::ResultAck a = w.NextAck();
      const auto acked = Clock::now();
      if (a.unit_id() != r.unit_id()) {
        ++protocol_errors;
        break;
      }
      ++pj.acks;
      if (a.accepted()) ++pj.accepted;
      else if (a.dropped_stale()) ++pj.stale;
      else ++pj.rejected;
      const double ms = std::chrono::duration<double, std::milli>(acked - sent).count();
      (lhopt ? lhopt_ack : elo_ack).Add(Seconds(t0, sent), ms);
    }
    beating = false;
    hb.join();
    {
      std::lock_guard<std::mutex> l(slot.mu);
      slot.state = WorkerSlot::kDone;
      slot.w = nullptr;
    }
    // Cancelled, not half-closed: the learner may be writing the next unit
    // (an LHOPT payload of megabytes) to this stream, which nobody reads now.
    w.Cancel();
    w.Finish();
  };

  // Watchers: JobService.Watch streams on every job until it ends; the
  // last status each saw.
  std::vector<v1::JobStatus> last_seen(num_watchers);
  auto watch = [&](int k) {
    const std::string& id = ids[k % ids.size()];
    auto stub = v1::JobService::NewStub(MakeChannel(s.client()));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds + 120));
    v1::WatchJobRequest req;
    req.set_job_id(id);
    auto reader = stub->Watch(&ctx, req);
    v1::JobStatus st;
    while (reader->Read(&st)) last_seen[k] = st;
    grpc::Status fin = reader->Finish();
    EXPECT_TRUE(fin.ok()) << fin.error_message();
  };

  // Probes: a heartbeat as the WorkService door handles one (the call its
  // reader thread makes for every heartbeat message), and JobService.Get
  // over gRPC, each every 5 ms.
  const std::string probe = s.manager().RegisterWorker([] {
    v1::WorkerInfo i;
    i.set_name("probe");
    return i;
  }());
  std::thread hb_probe([&] {
    while (!stop) {
      auto a = Clock::now();
      s.manager().Heartbeat(probe);
      heartbeat.Add(Seconds(t0, a), std::chrono::duration<double, std::milli>(Clock::now() - a).count());
      std::this_thread::sleep_for(5ms);
    }
  });
  std::thread get_probe([&] {
    auto stub = v1::JobService::NewStub(MakeChannel(s.client()));
    int i = 0;
    while (!stop) {
      v1::GetJobRequest req;
      req.set_job_id(ids[i++ % ids.size()]);
      v1::JobStatus st;
      auto ctx = MakeContext(s.client());
      auto a = Clock::now();
      grpc::Status g = stub->Get(ctx.get(), req, &st);
      get_rpc.Add(Seconds(t0, a), std::chrono::duration<double, std::milli>(Clock::now() - a).count());
      EXPECT_TRUE(g.ok()) << g.error_message();
      std::this_thread::sleep_for(5ms);
    }
  });

  std::vector<std::thread> threads;
  for (int k = 0; k < num_workers; ++k) threads.emplace_back(work, k);
  std::vector<std::thread> watchers;
  for (int k = 0; k < num_watchers; ++k) watchers.emplace_back(watch, k);

  std::this_thread::sleep_for(std::chrono::seconds(seconds));
  stop = true;
  const double run_s = Seconds(t0, Clock::now());
  // Workers finish the unit they run (its result is acked); those waiting
  // for a unit are cancelled. A worker still busy after 60 s: a deadlock.
  const auto deadline = Clock::now() + 60s;
  while (true) {
    int done = 0;
    for (auto& slot : slots) {
      std::lock_guard<std::mutex> l(slot.mu);
      if (slot.state == WorkerSlot::kDone) ++done;
      else if (slot.state == WorkerSlot::kWaiting && !slot.cancelled && slot.w) {
        slot.cancelled = true;
        slot.w->Cancel();
      }
    }
    if (done == num_workers) break;
    if (Clock::now() > deadline) {
      ADD_FAILURE() << "workers still busy 60 s after the stop: the learner is stuck";
      std::abort();  // joining would hang
    }
    std::this_thread::sleep_for(50ms);
  }
  for (auto& t : threads) t.join();
  const double workers_stopped_s = Seconds(t0, Clock::now()) - run_s;
  hb_probe.join();
  get_probe.join();
  s.manager().DisconnectWorker(probe);
  EXPECT_EQ(protocol_errors.load(), 0);

  // Every result accounted for, in the job's own status.
  for (const auto& id : ids) {
    PerJob& pj = per_job[id];
    EXPECT_EQ(pj.acks.load(), pj.sent.load()) << id;
    auto st = s.manager().Get(id, false);
    ASSERT_TRUE(st.ok()) << st.status();
    EXPECT_EQ(st->results_accepted(), pj.accepted.load()) << id;
    EXPECT_EQ(st->results_dropped_stale(), pj.stale.load()) << id;
    EXPECT_EQ(pj.rejected.load(), 0) << id;
    EXPECT_GT(pj.accepted.load(), 0) << id << ": no result accepted in " << seconds << " s";
  }
  const int64_t lhopt_updates = s.manager().Get(lhopt_id, false)->outer_step();
  EXPECT_GE(lhopt_updates, 1) << "no PPO update ran: the stress missed its point";
  // Cancelled, every job's watchers see it end with those counts.
  for (const auto& id : ids) ASSERT_TRUE(s.manager().Cancel(id).ok());
  for (auto& t : watchers) t.join();
  const double watchers_done_s = Seconds(t0, Clock::now()) - run_s;
  for (int k = 0; k < num_watchers; ++k) {
    const std::string& id = ids[k % ids.size()];
    EXPECT_EQ(last_seen[k].state(), v1::CANCELLED) << id;
    EXPECT_EQ(last_seen[k].results_accepted(), per_job[id].accepted.load()) << id;
  }

  // The figures: overall, and while an LHOPT result waits for its ack
  // longer than 50 ms (the last of an iteration: its PPO update and the
  // checkpoint after it).
  std::vector<std::pair<double, double>> windows;
  for (auto [start, ms] : lhopt_ack.Get())
    if (ms > 50) windows.emplace_back(start, start + ms / 1000);
  auto in_window = [&](double t) {
    for (auto [a, b] : windows)
      if (t >= a && t <= b) return true;
    return false;
  };
  double window_s = 0, window_max = 0;
  for (auto [a, b] : windows) {
    window_s += b - a;
    window_max = std::max(window_max, b - a);
  }
  std::printf("stress: %.1f s, %d workers, %d watchers, 3 ELO jobs + 1 LHOPT job; %lld PPO updates "
              "(%zu acks over 50 ms, %.2f s in all, longest %.2f s); workers stopped %.1f s and "
              "watchers saw the end %.1f s after the stop\n",
              run_s, num_workers, num_watchers, static_cast<long long>(lhopt_updates),
              windows.size(), window_s, window_max, workers_stopped_s, watchers_done_s);
  double worst = 0;
  for (auto* p : {&heartbeat, &elo_ack, &get_rpc}) {
    const char* name = p == &heartbeat ? "heartbeat" : p == &elo_ack ? "elo_result_ack" : "get_rpc";
    std::vector<double> all, during;
    for (auto [t, ms] : p->Get()) {
      all.push_back(ms);
      if (in_window(t)) during.push_back(ms);
      worst = std::max(worst, ms);
    }
    Summary a = Summarize(all), d = Summarize(during);
    std::printf("stress: %-15s all: n=%zu p50=%.3f ms p99=%.3f ms max=%.1f ms | during PPO "
                "update: n=%zu p50=%.3f ms p99=%.3f ms max=%.1f ms\n",
                name, a.n, a.p50, a.p99, a.max, d.n, d.p50, d.p99, d.max);
  }
  std::fflush(stdout);
  EXPECT_LT(worst, 2000) << "a heartbeat, an ELO ack or a Get waited over 2 s";
}

}  // namespace
}  // namespace lopt
