// Throughput of a real lopt-buffer on loopback: put and sample MiB/s for
// 1 MiB and 100 MiB states (median of several repetitions) and items/s for
// small items, through RemoteReplayBuffer's raw calls (no torch encoding in
// the timed part). Starts the binary on a temporary directory unless
// --target names a running server.
//
//   bench_buffer [--reps 5] [--large-mib 100] [--small-count 500]
//                [--target host:port] [--binary path] [--db-path dir]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "buffer_server/testing/buffer_process.h"
#include "common/rpc/buffer_client.h"
#include "common/rpc/tensor_codec.h"
#include "common/util/flags.h"
#include "common/util/remove_tree.h"

namespace lopt {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

EncodedItem RandomItem(size_t bytes, uint64_t seed) {
  std::mt19937_64 rng(seed);
  EncodedItem item;
  item.payload.resize(bytes);
  for (size_t i = 0; i < bytes; i += 8) {
    uint64_t v = rng();
    std::memcpy(&item.payload[i], &v, std::min<size_t>(8, bytes - i));
  }
  v1::TensorHeader h;
  h.set_name("state");
  h.set_dtype(v1::FLOAT32);
  h.add_shape(static_cast<int64_t>(bytes / 4));
  h.set_num_bytes(static_cast<int64_t>(bytes / 4 * 4));
  item.payload.resize(bytes / 4 * 4);
  item.tensors.push_back(h);
  item.payload_crc32 = Crc32(item.payload.data(), item.payload.size());
  return item;
}

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

int Run(int argc, char** argv) {
  auto flags = ParseFlags(argc, argv, 1,
                          {"reps", "large-mib", "small-count", "small-bytes", "target", "binary",
                           "db-path", "threads"},
                          {"help"});
  if (!flags.ok()) {
    std::fprintf(stderr, "bench_buffer: %s\n", std::string(flags.status().message()).c_str());
    return 2;
  }
  if (flags->Has("help")) {
    std::printf(
        "bench_buffer [--reps 5] [--large-mib 100] [--small-count 500] [--small-bytes 1024]\n"
        "             [--threads 4] [--target host:port] [--binary %s] [--db-path dir]\n",
        LOPT_BUFFER_BINARY);
    return 0;
  }
  const int reps = static_cast<int>(flags->GetInt("reps", 5).value_or(5));
  const int64_t large_mib = flags->GetInt("large-mib", 100).value_or(100);
  const int small_count = static_cast<int>(flags->GetInt("small-count", 500).value_or(500));
  const int64_t small_bytes = flags->GetInt("small-bytes", 1024).value_or(1024);
  const int threads = static_cast<int>(flags->GetInt("threads", 4).value_or(4));

  std::unique_ptr<BufferProcess> server;
  std::string target = flags->Get("target");
  std::string tmp_dir;
  if (target.empty()) {
    std::string db = flags->Get("db-path");
    if (db.empty()) {
      std::string tmpl = (std::filesystem::temp_directory_path() / "lopt_bench_XXXXXX").string();
      tmp_dir = mkdtemp(tmpl.data());
      db = tmp_dir + "/db";
    }
    auto p = BufferProcess::Start({flags->Get("binary", LOPT_BUFFER_BINARY), db, {}, 30000});
    if (!p.ok()) {
      std::fprintf(stderr, "bench_buffer: %s\n", p.status().ToString().c_str());
      return 1;
    }
    server = std::move(*p);
    target = server->target();
  }
  RemoteReplayBufferOptions copts;
  copts.read_timeout_ms = 600000;
  auto client_ptr =
      std::make_unique<RemoteReplayBuffer>(ClientConfig{target, "", 60000}, copts);
  RemoteReplayBuffer& client = *client_ptr;
  if (!client.WaitForConnected(10000)) {
    std::fprintf(stderr, "bench_buffer: cannot connect to %s\n", target.c_str());
    return 1;
  }
  std::printf("lopt-buffer at %s; %u hardware threads; load average %s\n", target.c_str(),
              std::thread::hardware_concurrency(), LoadAverage().c_str());
  std::printf("%-22s %12s %12s %12s %12s\n", "workload", "median", "min", "max", "unit");

  std::mt19937 rng(1);
  for (int64_t mib : {int64_t{1}, large_mib}) {
    const size_t bytes = static_cast<size_t>(mib) << 20;
    const std::string table = "bench/" + std::to_string(mib) + "MiB";
    std::vector<double> put_rate, sample_rate;
    for (int r = 0; r < reps; ++r) {
      EncodedItem item = RandomItem(bytes, 100 * mib + r);
      auto t0 = Clock::now();
      auto put = client.PutEncoded(table, 3, item);
      auto t1 = Clock::now();
      if (!put.ok()) {
        std::fprintf(stderr, "put failed: %s\n", put.status().ToString().c_str());
        return 1;
      }
      put_rate.push_back(item.payload.size() / double(1 << 20) / Seconds(t0, t1));
    }
    for (int r = 0; r < reps; ++r) {
      auto t0 = Clock::now();
      auto got = client.SampleEncoded(table, std::uniform_real_distribution<double>(0, 1)(rng));
      auto t1 = Clock::now();
      if (!got.ok()) {
        std::fprintf(stderr, "sample failed: %s\n", got.status().ToString().c_str());
        return 1;
      }
      sample_rate.push_back(got->payload.size() / double(1 << 20) / Seconds(t0, t1));
    }
    for (auto [name, v] : {std::pair<const char*, std::vector<double>&>{"put", put_rate},
                           {"sample", sample_rate}}) {
      std::string label = std::string(name) + " " + std::to_string(mib) + " MiB";
      std::printf("%-22s %12.1f %12.1f %12.1f %12s\n", label.c_str(), Median(v),
                  *std::min_element(v.begin(), v.end()), *std::max_element(v.begin(), v.end()),
                  "MiB/s");
    }
    if (!client.DeleteTables(table).ok()) return 1;
  }

  // Small items: sequential (latency-bound) and from several threads (the
  // synced writes of concurrent puts can share a WAL fsync).
  const std::string small = "bench/small";
  EncodedItem item = RandomItem(static_cast<size_t>(small_bytes), 7);
  for (int nthreads : {1, threads}) {
    std::vector<double> put_rate, sample_rate;
    for (int r = 0; r < std::max(1, reps / 2); ++r) {
      auto run = [&](auto&& op) {
        auto t0 = Clock::now();
        std::vector<std::thread> ts;
        for (int t = 0; t < nthreads; ++t)
          ts.emplace_back([&] {
            for (int i = 0; i < small_count / nthreads; ++i) op();
          });
        for (auto& t : ts) t.join();
        return (small_count / nthreads) * nthreads / Seconds(t0, Clock::now());
      };
      put_rate.push_back(run([&] {
        if (!client.PutEncoded(small, 1000, item).ok()) std::abort();
      }));
      sample_rate.push_back(run([&] {
        thread_local std::mt19937 trng(std::hash<std::thread::id>()(std::this_thread::get_id()));
        if (!client.SampleEncoded(small, std::uniform_real_distribution<double>(0, 1)(trng)).ok())
          std::abort();
      }));
    }
    for (auto [name, v] : {std::pair<const char*, std::vector<double>&>{"put", put_rate},
                           {"sample", sample_rate}}) {
      std::string label = std::string(name) + " " + std::to_string(small_bytes) + " B x" +
                          std::to_string(nthreads);
      std::printf("%-22s %12.0f %12.0f %12.0f %12s\n", label.c_str(), Median(v),
                  *std::min_element(v.begin(), v.end()), *std::max_element(v.begin(), v.end()),
                  "items/s");
    }
  }
  client_ptr.reset();  // an idle connection would hold the server's shutdown
  if (server) server->Stop();
  if (!tmp_dir.empty()) lopt::RemoveTree(tmp_dir).IgnoreError();
  return 0;
}

}  // namespace
}  // namespace lopt

int main(int argc, char** argv) { return lopt::Run(argc, argv); }
