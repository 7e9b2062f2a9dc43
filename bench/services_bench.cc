// The services' throughput on loopback:
//  1. learner: results accepted per second from N simulated workers (threads
//     speaking the real WorkService protocol to an in-process learner, each
//     answering every unit at once with a gradient of theta's size), and the
//     result latency: from a worker's write of a result to its read of the
//     result's ack (p50, p99, max over the measured seconds);
//  2. scaling: a CPU ELO job's outer steps/s and inner particle-steps/s with
//     1, 2 and 4 real lopt-worker processes (asynchronous: one result per
//     outer step, shards = workers, staleness bound = workers).
//
//   bench_services [--sim-workers 64] [--seconds 10] [--workers 1,2,4]
//                  [--outer-steps 60] [--num-tasks 8]
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <thread>
#include <vector>

#include <torch/torch.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/rpc/rpc.h"
#include "common/rpc/tensor_codec.h"
#include "common/util/flags.h"
#include "kinds/job_door.h"
#include "learner/job_manager.h"
#include "learner/learner_services.h"
#include "tests/support/child_process.h"

namespace lopt {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

std::string TempDir(const std::string& name) {
  std::string d = absl::StrCat("/tmp/lopt_bench_", name, "_", getpid());
  testing::RunCommand("rm -rf '" + d + "' && mkdir -p '" + d + "'");
  return d;
}

void LearnerThroughput(int sim_workers, int seconds) {
  std::string dir = TempDir("learner");
  LearnerOptions opt;
  opt.state_dir = dir;
  auto manager = JobManager::Create(opt);
  if (!manager.ok()) {
    fprintf(stderr, "%s\n", manager.status().ToString().c_str());
    return;
  }
  JobServiceImpl jobs(manager->get(), "");
  WorkServiceImpl work(manager->get(), "", 1000);
  grpc::ServerBuilder b;
  int port = 0;
  ConfigureServer(b, {"127.0.0.1:0", ""}, &port);
  b.RegisterService(&jobs);
  b.RegisterService(&work);
  auto server = b.BuildAndStart();
  auto job = JobFromText(absl::StrCat("name: \"bench\"\nbudget { outer_steps: 100000000 checkpoint_every: 0 }\n",
                                      "cluster { shards: ", sim_workers,
                                      " results_per_step: ", sim_workers, " max_staleness: 4 }\n"),
                         "bench");
  auto id = (*manager)->Submit(*job);
  ClientConfig cfg{absl::StrCat("127.0.0.1:", port), "", 10000};
  std::atomic<bool> stop{false}, measuring{false};
  std::atomic<int64_t> accepted{0}, stale{0}, sent{0};
  // Per worker: the latencies (microseconds) of the results acked while measuring.
  std::vector<std::vector<double>> latency_us(sim_workers);
  std::vector<std::thread> threads;
  for (int w = 0; w < sim_workers; ++w)
    threads.emplace_back([&, w] {
      // Results written and not acked yet: (unit id, when written).
      std::vector<std::pair<uint64_t, Clock::time_point>> out_since;
      auto stub = v1::WorkService::NewStub(MakeChannel(cfg));
      auto ctx = MakeStreamContext(cfg);
      auto stream = stub->Connect(ctx.get());
      v1::WorkerMessage reg;
      reg.mutable_register_()->set_name(absl::StrCat("sim", w));
      v1::LearnerMessage m;
      if (!stream->Write(reg) || !stream->Read(&m)) return;
      v1::TensorProto grad = EncodeTensor(torch::full({2402}, 1e-3f), "grad");
      while (!stop && stream->Read(&m)) {
        if (m.has_ack()) {
          auto now = Clock::now();
          if (m.ack().accepted()) ++accepted;
          if (m.ack().dropped_stale()) ++stale;
          auto it = std::find_if(out_since.begin(), out_since.end(),
                                 [&](const auto& o) { return o.first == m.ack().unit_id(); });
          if (it != out_since.end()) {
            if (measuring)
              latency_us[w].push_back(
                  std::chrono::duration<double, std::micro>(now - it->second).count());
            out_since.erase(it);
          }
          continue;
        }
        if (!m.has_unit()) continue;
        v1::WorkerMessage out;
        auto* r = out.mutable_result();
        r->set_unit_id(m.unit().unit_id());
        r->set_job_id(m.unit().job_id());
        r->set_shard(m.unit().shard());
        r->set_theta_version(m.unit().theta_version());
        v1::EloResultInfo* e = r->mutable_elo();
        *e->mutable_grad() = grad;
        e->set_meta_loss(1.0);
        e->set_task_loss(1.0);
        r->set_particle_steps(800);
        out_since.emplace_back(m.unit().unit_id(), Clock::now());
        if (!stream->Write(out)) break;
        ++sent;
      }
      ctx->TryCancel();
    });
  std::this_thread::sleep_for(2s);  // warm-up
  int64_t a0 = accepted, s0 = stale;
  auto st0 = (*manager)->Get(*id, false);
  auto t0 = Clock::now();
  measuring = true;
  std::this_thread::sleep_for(std::chrono::seconds(seconds));
  measuring = false;
  double dt = std::chrono::duration<double>(Clock::now() - t0).count();
  int64_t a1 = accepted, s1 = stale;
  auto st1 = (*manager)->Get(*id, false);
  stop = true;
  (*manager)->Shutdown();
  server->Shutdown(std::chrono::system_clock::now() + 2s);
  for (auto& t : threads) t.join();
  std::vector<double> lat;
  for (const auto& v : latency_us) lat.insert(lat.end(), v.begin(), v.end());
  std::sort(lat.begin(), lat.end());
  auto pct = [&](double q) {
    return lat.empty() ? 0.0 : lat[std::min(lat.size() - 1, size_t(q * double(lat.size())))] / 1e3;
  };
  printf("learner, %d simulated workers (2402-float gradients, staleness bound 4, %d results a step):\n",
         sim_workers, sim_workers);
  printf("  accepted results/s   %10.0f\n", (a1 - a0) / dt);
  printf("  dropped stale/s      %10.0f\n", (s1 - s0) / dt);
  printf("  outer steps/s        %10.1f\n", (st1->outer_step() - st0->outer_step()) / dt);
  printf("  result latency, ms   p50 %.2f  p99 %.2f  max %.2f  (%zu results: a worker's write "
         "of a result to its read of the ack)\n",
         pct(0.50), pct(0.99), lat.empty() ? 0.0 : lat.back() / 1e3, lat.size());
  fflush(stdout);
}

void Scaling(const std::vector<int>& counts, int outer_steps, int num_tasks) {
  printf("\nscaling of a CPU ELO job (fmnist_mlp 8x8, %d pairs a shard, truncation 50; "
         "one result an outer step; shards = workers, staleness bound = workers):\n",
         num_tasks);
  printf("  %-8s %-14s %-22s %-10s\n", "workers", "outer steps/s", "inner particle-steps/s",
         "dropped");
  for (int n : counts) {
    std::string dir = TempDir(absl::StrCat("scale", n));
    auto buffer = testing::ChildProcess::Start(
        "buffer", {LOPT_BUFFER_BINARY, "--listen=127.0.0.1:0", "--metrics-listen=",
                   "--db-path=" + dir + "/buffer"},
        "msg=serving");
    int lport = testing::FreePort();
    std::string learner_target = absl::StrCat("127.0.0.1:", lport);
    auto learner = testing::ChildProcess::Start(
        "learner", {LOPT_LEARNER_BINARY, "--listen=" + learner_target, "--metrics-listen=",
                    "--state-dir=" + dir + "/learner",
                    absl::StrCat("--buffer=127.0.0.1:", (*buffer)->grpc_port()),
                    // Meta-training's throughput: the job ends with its last step,
                    // not with a worker's meta-test of it.
                    "--meta-test=false"},
        "msg=serving");
    if (!buffer.ok() || !learner.ok()) {
      fprintf(stderr, "cannot start the services\n");
      return;
    }
    std::vector<std::unique_ptr<testing::ChildProcess>> workers;
    for (int w = 0; w < n; ++w) {
      auto p = testing::ChildProcess::Start(
          absl::StrCat("w", w),
          {LOPT_WORKER_BINARY, "--learner=" + learner_target, "--metrics-listen=",
           absl::StrCat("--name=w", w), "--threads=1",
           absl::StrCat("--buffer=127.0.0.1:", (*buffer)->grpc_port())},
          "msg=connected");
      if (p.ok()) workers.push_back(std::move(*p));
    }
    std::string job = absl::StrCat(
        "name: \"scale\"\nseed: 1\ntask { fmnist_mlp { image_size: 8 } }\n",
        "pes { num_tasks: ", num_tasks, " }\n",
        "budget { outer_steps: ", outer_steps, " checkpoint_every: 0 }\n",
        "cluster { shards: ", n, " results_per_step: 1 max_staleness: ", n, " }\n");
    std::string path = dir + "/job.textproto";
    std::ofstream(path) << job;
    auto t0 = Clock::now();
    auto [code, out] = testing::RunCommand(absl::StrCat(LOPT_LOPTCTL_BINARY, " --learner=",
                                                        learner_target, " submit ", path,
                                                        " --watch --no-progress"));
    double dt = std::chrono::duration<double>(Clock::now() - t0).count();
    // Each result is one truncation of num_tasks pairs: 2 * num_tasks * 50 particle-steps;
    // dropped results ran too.
    int accepted = outer_steps;
    std::string id = out.substr(0, out.find('\n'));
    auto [c2, status] = testing::RunCommand(absl::StrCat(LOPT_LOPTCTL_BINARY, " --learner=",
                                                         learner_target, " status ", id));
    int64_t dropped = 0;
    auto p = status.find("results_dropped_stale: ");
    if (p != std::string::npos) dropped = std::stoll(status.substr(p + 23));
    double particle_steps = double(accepted + dropped) * 2 * num_tasks * 50;
    printf("  %-8d %-14.2f %-22.0f %-10lld%s\n", n, outer_steps / dt, particle_steps / dt,
           static_cast<long long>(dropped), code == 0 ? "" : "  (job failed)");
    fflush(stdout);
  }
}

}  // namespace
}  // namespace lopt

int main(int argc, char** argv) {
  const std::vector<lopt::FlagDef> kFlags = {
      {"sim-workers", "64", "simulated workers streaming results to the in-process learner"},
      {"seconds", "10", "how long the learner's throughput is measured"},
      {"workers", "1,2,4", "real lopt-worker counts of the scaling runs"},
      {"outer-steps", "60", "outer steps of each scaling run's ELO job"},
      {"num-tasks", "8", "pes.num_tasks of the scaling runs' job"},
      {"skip-learner", "", "skip the learner throughput measurement", true},
      {"skip-scaling", "", "skip the scaling runs", true}};
  auto f = lopt::ParseFlagDefs(argc, argv, 1, kFlags);
  if (!f.ok()) {
    fprintf(stderr, "%s\n", f.status().ToString().c_str());
    return 2;
  }
  // --help prints the flags instead of running minutes of benchmark.
  if (f->Has("help")) {
    printf("%s", lopt::FlagsHelp("usage: bench_services [flags]\n"
                                 "The services' throughput on loopback: the learner's results/s "
                                 "from simulated workers, then outer steps/s with real workers.",
                                 kFlags)
                     .c_str());
    return 0;
  }
  torch::set_num_threads(1);
  if (!f->Has("skip-learner"))
    lopt::LearnerThroughput(static_cast<int>(*f->GetInt("sim-workers", 64)),
                            static_cast<int>(*f->GetInt("seconds", 10)));
  if (!f->Has("skip-scaling")) {
    std::vector<int> counts;
    for (auto s : absl::StrSplit(f->Get("workers"), ',')) {
      int v;
      if (absl::SimpleAtoi(s, &v)) counts.push_back(v);
    }
    lopt::Scaling(counts, static_cast<int>(*f->GetInt("outer-steps", 60)),
                  static_cast<int>(*f->GetInt("num-tasks", 8)));
  }
  return 0;
}
