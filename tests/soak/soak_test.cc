// The services under abuse for LOPT_SOAK_MINUTES (default 3): a real
// lopt-learner, lopt-buffer and three lopt-workers on loopback, all with a
// bearer token, while
//   * one of them is killed with SIGKILL and restarted, in turn (learner,
//     buffer, a worker, and a disk-full episode of the buffer's disk: a
//     tmpfs that a file fills, then freed; root only, skipped otherwise),
//   * good small jobs are submitted, and hostile submissions between them:
//     names that are not UTF-8 or too long, a 5 MiB spec, a unit no worker
//     can hold (an MLP and a ResNet), /dev/zero data, NaN fields, syntax
//     garbage, a binary spec with a bad name, no token and a wrong token,
//   * a client puts items into the buffer and remembers what was
//     acknowledged.
// Then, with every process up: every good job ends succeeded (its result
// exported with loptctl and read back) or failed with a reason, none of the
// acknowledged job ids is lost, every hostile submission was refused with a
// clear code (never INTERNAL or UNKNOWN) and none is listed, and every
// acknowledged put reads back bit-identical after a last kill -9 of the
// buffer. It prints the counts: faults injected, jobs completed, items
// verified.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/elo/optimizer_file.h"
#include "common/rpc/buffer_client.h"
#include "common/rpc/rpc.h"
#include "lopt/v1/job_service.grpc.pb.h"
#include "tests/support/buffer_items.h"
#include "tests/support/child_process.h"
#include "tests/support/service_cluster.h"

namespace lopt {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using testing::ServiceCluster;

constexpr char kToken[] = "soak-token";

double SoakMinutes() {
  const char* m = std::getenv("LOPT_SOAK_MINUTES");
  return m != nullptr && *m != '\0' ? std::atof(m) : 3.0;
}

// A gRPC client of the learner's JobService that waits out its restarts:
// calls that fail with UNAVAILABLE or DEADLINE_EXCEEDED are retried for up
// to a minute.
class Jobs {
 public:
  Jobs(const std::string& target, const std::string& token)
      : config_{target, token, 10000},
        stub_(v1::JobService::NewStub(MakeChannel(config_))) {}

  grpc::Status Submit(const v1::SubmitJobRequest& req, std::string* id) {
    v1::SubmitJobResponse resp;
    grpc::Status s = Retry([&](grpc::ClientContext* ctx) { return stub_->Submit(ctx, req, &resp); });
    if (s.ok()) *id = resp.job_id();
    return s;
  }
  grpc::Status Get(const std::string& id, v1::JobStatus* out) {
    v1::GetJobRequest req;
    req.set_job_id(id);
    return Retry([&](grpc::ClientContext* ctx) { return stub_->Get(ctx, req, out); });
  }
  grpc::Status List(v1::ListJobsResponse* out) {
    return Retry([&](grpc::ClientContext* ctx) {
      out->Clear();
      return stub_->List(ctx, v1::ListJobsRequest(), out);
    });
  }

 private:
  template <typename Fn>
  grpc::Status Retry(Fn&& call) {
    const auto deadline = Clock::now() + 60s;
    for (;;) {
      auto ctx = MakeContext(config_);
      grpc::Status s = call(ctx.get());
      const bool transient = s.error_code() == grpc::StatusCode::UNAVAILABLE ||
                             s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
      if (!transient || Clock::now() > deadline) return s;
      std::this_thread::sleep_for(300ms);
    }
  }

  ClientConfig config_;
  std::unique_ptr<v1::JobService::Stub> stub_;
};

const char* CodeName(grpc::StatusCode c) {
  switch (c) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    default: return "other";
  }
}

// A submission the learner must refuse, and the codes that say why.
struct Hostile {
  std::string what;
  v1::SubmitJobRequest request;
  std::string token;  // kToken, or another / none
  std::set<grpc::StatusCode> codes;
  std::string message_has;  // the refusal names this, when set
  bool via_loptctl = false;  // sent by `loptctl submit` (which must refuse it), not the RPC
};

std::vector<Hostile> HostileSubmissions() {
  const std::set<grpc::StatusCode> invalid = {grpc::StatusCode::INVALID_ARGUMENT};
  auto text = [](const std::string& t) {
    v1::SubmitJobRequest r;
    r.set_job_text(t);
    r.set_source_name("hostile.textproto");
    return r;
  };
  std::vector<Hostile> h;
  h.push_back({"name not UTF-8", text(testing::SmallJobText("hostile\\377\\376name", 4)), kToken,
               invalid});
  h.push_back({"name of 300 bytes", text(testing::SmallJobText("hostile" + std::string(293, 'n'), 4)),
               kToken, invalid});
  h.push_back({"5 MiB spec",
               text("# " + std::string(5 << 20, 'x') + "\n" +
                    testing::SmallJobText("hostile-huge-text", 4)),
               kToken,
               {grpc::StatusCode::RESOURCE_EXHAUSTED, grpc::StatusCode::INVALID_ARGUMENT}});
  h.push_back({"MLP unit over 8 GiB",
               text("name: \"hostile-mlp\" task { fmnist_mlp { hidden_sizes: 4096 } } "
                    "pes { num_tasks: 4096 } cluster { shards: 1 }"),
               kToken, invalid, "one work unit of this job would need about"});
  h.push_back({"ResNet unit over 8 GiB",
               text("name: \"hostile-resnet\" task { fmnist_resnet { image_size: 28 channels: 4096 "
                    "channels: 4096 batch_size: 60000 } } pes { num_tasks: 64 } cluster { shards: 1 }"),
               kToken, invalid, "task.fmnist_resnet.{image_size, channels, batch_size}"});
  h.push_back({"/dev/zero data",
               text("name: \"hostile-zero\" task { byte_lm { data_path: \"/dev/zero\" } }"), kToken,
               invalid, "a character device"});
  h.push_back({"NaN sigma", text("name: \"hostile-nan\" pes { sigma: nan }"), kToken, invalid,
               "pes.sigma must be > 0, got nan"});
  h.push_back({"NaN learning rate", text("name: \"hostile-nan-lr\" outer { lr: nan }"), kToken,
               invalid, "outer.lr"});
  h.push_back({"inf fresh-start probability",
               text("name: \"hostile-inf\" elo { buffer { fresh_start_probability: inf } }"),
               kToken, invalid, "elo.buffer.fresh_start_probability"});
  h.push_back({"syntax garbage", text("name: \"hostile\" \x01\x02{{{ :: }"), kToken, invalid});
  // Not UTF-8: gRPC itself refuses a proto3 string that is not (INTERNAL,
  // no message) before lopt sees it, so loptctl checks before sending.
  h.push_back({"job file not UTF-8", text("# caf\xe9\nname: \"hostile-latin1\"\n"), kToken,
               invalid, "the job text is not valid UTF-8 (byte 0xe9)", /*via_loptctl=*/true});
  {
    v1::SubmitJobRequest r;
    r.mutable_job()->set_name("hostile-binary\xc3\x28");
    h.push_back({"binary spec, name not UTF-8", r, kToken, invalid});
  }
  h.push_back({"no token", text(testing::SmallJobText("hostile-no-token", 4)), "",
               {grpc::StatusCode::UNAUTHENTICATED}});
  h.push_back({"wrong token", text(testing::SmallJobText("hostile-wrong-token", 4)), "not-the-token",
               {grpc::StatusCode::UNAUTHENTICATED}});
  return h;
}

// What the put client saw.
struct PutLog {
  struct Acked {
    uint32_t crc;
    int64_t bytes;
  };
  std::mutex mu;
  std::map<std::string, std::map<uint64_t, Acked>> acked;  // table -> key -> item
  std::map<uint32_t, int64_t> in_flight;                     // crc -> bytes: failed puts
  int64_t acknowledged = 0, refused = 0, verified = 0;
  std::vector<std::string> errors;
};

// Reads back every acknowledged put of `table`: each there, whole and
// bit-identical; anything else there one of the failed puts, whole.
void VerifyTable(RemoteReplayBuffer& reader, const std::string& table, PutLog& log) {
  std::map<uint64_t, PutLog::Acked> acked;
  std::map<uint32_t, int64_t> in_flight;
  {
    std::lock_guard<std::mutex> l(log.mu);
    acked = log.acked[table];
    in_flight = log.in_flight;
  }
  auto keys = reader.ListKeys(table);
  ASSERT_TRUE(keys.ok()) << table << ": " << keys.status();
  std::set<uint64_t> present(keys->begin(), keys->end());
  int64_t verified = 0;
  for (const auto& [key, want] : acked) {
    ASSERT_TRUE(present.count(key)) << "acknowledged put " << key << " of " << table << " was lost";
    auto item = reader.GetEncoded(table, key);  // checks chunk and payload checksums
    ASSERT_TRUE(item.ok()) << table << " key " << key << ": " << item.status();
    ASSERT_EQ(static_cast<int64_t>(item->payload.size()), want.bytes) << key;
    ASSERT_EQ(Crc32(item->payload.data(), item->payload.size()), want.crc) << key;
    ++verified;
  }
  for (uint64_t key : present) {
    if (acked.count(key)) continue;
    auto item = reader.GetEncoded(table, key);
    ASSERT_TRUE(item.ok()) << "unacknowledged item " << key << " is torn: " << item.status();
    const uint32_t crc = Crc32(item->payload.data(), item->payload.size());
    ASSERT_TRUE(in_flight.count(crc)) << "item " << key << " of " << table
                                      << " is none of the puts that failed";
  }
  std::lock_guard<std::mutex> l(log.mu);
  log.verified += verified;
}

TEST(Soak, ServicesUnderKillsFullDisksAndHostileJobsLoseNothing) {
  const double minutes = SoakMinutes();
  const std::string dir = testing::MakeTestDir("lopt_soak", "run");
  ServiceCluster c({LOPT_BUFFER_BINARY, LOPT_LEARNER_BINARY, LOPT_WORKER_BINARY,
                    LOPT_LOPTCTL_BINARY},
                   dir);
  testing::WriteTextFile(dir + "/token", std::string(kToken) + "\n");
  c.SetAuthTokenFile(dir + "/token");
  // The buffer's disk: a 64 MiB tmpfs that a file fills (root), else a directory.
  testing::Tmpfs disk("64m");
  const bool disk_full_episodes = disk.mounted();
  if (disk_full_episodes) c.SetBufferDbPath(disk.dir() + "/db");
  c.SetBufferArgs({"--min-free-bytes=8388608"});
  c.StartBuffer();
  c.StartLearner();
  const std::vector<std::string> workers = {"w1", "w2", "w3"};
  for (const auto& w : workers) c.StartWorker(w);
  ASSERT_FALSE(::testing::Test::HasFatalFailure());
  const std::string buffer_target = absl::StrCat("127.0.0.1:", c.buffer_port());

  const auto soak_end = Clock::now() + std::chrono::milliseconds(int64_t(minutes * 60000));
  std::atomic<bool> stop{false};

  // --- Submissions: a good job every ~8 s, a hostile one every ~2 s. ------
  std::mutex sub_mu;
  std::map<std::string, std::string> good_ids;       // id -> name
  std::map<std::string, int> refused_by_code;        // code name -> count
  std::vector<std::string> submission_failures;      // what should not have happened
  int good_submitted = 0, hostile_submitted = 0;
  std::thread submitter([&] {
    Jobs jobs(c.learner_target(), kToken);
    Jobs no_token(c.learner_target(), "");
    Jobs wrong_token(c.learner_target(), "not-the-token");
    const std::vector<Hostile> hostile = HostileSubmissions();
    std::mt19937 rng(7);
    auto next_good = Clock::now();
    size_t h = 0;
    while (!stop) {
      if (Clock::now() >= next_good) {
        const int n = good_submitted + 1;
        const std::string name = absl::StrCat("soak-good-", n);
        v1::SubmitJobRequest req;
        req.set_job_text(testing::SmallJobText(name, 4 + int(rng() % 5), 1 + int(rng() % 2),
                                               int(rng() % 2), 2, 100 + n));
        req.set_source_name(name + ".textproto");
        std::string id;
        grpc::Status s = jobs.Submit(req, &id);
        std::lock_guard<std::mutex> l(sub_mu);
        ++good_submitted;
        if (s.ok()) {
          good_ids[id] = name;
        } else if (s.error_code() != grpc::StatusCode::UNAVAILABLE &&
                   s.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED &&
                   s.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED) {
          // A learner that cannot write (never here) would say
          // RESOURCE_EXHAUSTED; anything else refuses a good job.
          submission_failures.push_back(absl::StrCat(name, ": ", CodeName(s.error_code()), ": ",
                                                     s.error_message()));
        }
        next_good = Clock::now() + 8s;
      }
      const Hostile& x = hostile[h++ % hostile.size()];
      Jobs& client = x.token == kToken ? jobs : x.token.empty() ? no_token : wrong_token;
      std::string id;
      grpc::Status s;
      if (x.via_loptctl) {
        const std::string path = absl::StrCat(dir, "/hostile_", h, ".textproto");
        testing::WriteTextFile(path, x.request.job_text());
        auto [code, out] = c.RunCtl("submit " + path);
        s = grpc::Status(code == 2 ? grpc::StatusCode::INVALID_ARGUMENT : grpc::StatusCode::UNKNOWN,
                         out);
      } else {
        s = client.Submit(x.request, &id);
      }
      {
        std::lock_guard<std::mutex> l(sub_mu);
        ++hostile_submitted;
        if (s.error_code() == grpc::StatusCode::UNAVAILABLE) {
          // The learner was down for a minute: not a refusal, nor a failure.
        } else if (!x.codes.count(s.error_code())) {
          submission_failures.push_back(absl::StrCat(x.what, ": ", CodeName(s.error_code()), " (",
                                                     int(s.error_code()), "): ",
                                                     s.error_message().substr(0, 300)));
        } else {
          ++refused_by_code[CodeName(s.error_code())];
          if (s.error_message().empty())
            submission_failures.push_back(x.what + ": refused without a reason");
          if (s.error_message().find(x.message_has) == std::string::npos)
            submission_failures.push_back(absl::StrCat(x.what, ": the refusal does not name ",
                                                       x.message_has, ": ", s.error_message()));
        }
      }
      for (int i = 0; i < 20 && !stop; ++i) std::this_thread::sleep_for(100ms);
    }
  });

  // --- Puts: one every ~100 ms; a table verified and deleted every 150. ---
  PutLog puts;
  std::thread putter([&] {
    RemoteReplayBufferOptions once;
    once.max_attempts = 1;  // a failed put is unacknowledged: no retry
    RemoteReplayBuffer writer(ClientConfig{buffer_target, kToken, 5000}, once);
    RemoteReplayBufferOptions patient;
    patient.max_attempts = 60;
    RemoteReplayBuffer reader(ClientConfig{buffer_target, kToken, 10000}, patient);
    std::mt19937 rng(11);
    int table_no = 0;
    int in_table = 0;
    std::string table = "soak/acked-0";
    while (!stop) {
      EncodedItem item = testing::RandomItem(rng, 4 << 10, 32 << 10);
      auto r = writer.PutEncoded(table, 100000, item);
      {
        std::lock_guard<std::mutex> l(puts.mu);
        if (r.ok()) {
          if (puts.acked[table].count(r->key()))
            puts.errors.push_back(absl::StrCat("key handed out twice: ", r->key()));
          puts.acked[table][r->key()] = {item.payload_crc32, int64_t(item.payload.size())};
          ++puts.acknowledged;
          ++in_table;
        } else {
          puts.in_flight[item.payload_crc32] = int64_t(item.payload.size());
          ++puts.refused;
        }
      }
      if (in_table >= 150) {
        VerifyTable(reader, table, puts);
        if (::testing::Test::HasFatalFailure()) return;
        auto d = reader.DeleteTables(table);
        if (!d.ok()) {
          std::lock_guard<std::mutex> l(puts.mu);
          puts.errors.push_back(absl::StrCat("delete ", table, ": ", d.status().ToString()));
        }
        {
          std::lock_guard<std::mutex> l(puts.mu);
          puts.acked.erase(table);
        }
        table = absl::StrCat("soak/acked-", ++table_no);
        in_table = 0;
      }
      std::this_thread::sleep_for(100ms);
    }
  });

  // The threads end with the test, however it ends.
  struct Joiner {
    std::atomic<bool>& stop;
    std::thread& a;
    std::thread& b;
    ~Joiner() {
      stop = true;
      if (a.joinable()) a.join();
      if (b.joinable()) b.join();
    }
  } joiner{stop, submitter, putter};

  // --- Faults, in turn in a shuffled order, every 5-12 s. -----------------
  std::map<std::string, int> faults;
  std::vector<std::string> kinds = {"kill9 learner", "kill9 buffer", "kill9 worker"};
  if (disk_full_episodes) kinds.push_back("buffer disk full");
  std::mt19937 rng(3);
  std::vector<std::string> order;
  std::this_thread::sleep_for(5s);
  while (Clock::now() < soak_end && !::testing::Test::HasFatalFailure()) {
    if (order.empty()) {
      order = kinds;
      std::shuffle(order.begin(), order.end(), rng);
    }
    const std::string kind = order.back();
    order.pop_back();
    const auto pause = std::chrono::milliseconds(300 + rng() % 1500);
    if (kind == "kill9 learner") {
      c.learner().Kill9();
      std::this_thread::sleep_for(pause);
      c.StartLearner();
    } else if (kind == "kill9 buffer") {
      c.buffer().Kill9();
      std::this_thread::sleep_for(pause);
      c.StartBuffer();
    } else if (kind == "kill9 worker") {
      const std::string& w = workers[rng() % workers.size()];
      c.worker(w).Kill9();
      std::this_thread::sleep_for(pause);
      c.StartWorker(w);
    } else {
      ASSERT_TRUE(testing::FillDisk(disk.dir() + "/filler"));
      EXPECT_TRUE(testing::WaitForBufferHealth(buffer_target, "NOT_SERVING", 15, kToken))
          << "the buffer's disk is full: " << testing::BufferHealth(buffer_target, kToken);
      std::this_thread::sleep_for(std::chrono::milliseconds(2000 + rng() % 4000));
      std::filesystem::remove(disk.dir() + "/filler");
      EXPECT_TRUE(testing::WaitForBufferHealth(buffer_target, "SERVING", 20, kToken))
          << "space came back: " << testing::BufferHealth(buffer_target, kToken);
    }
    ++faults[kind];
    std::this_thread::sleep_for(std::chrono::milliseconds(5000 + rng() % 7000));
  }
  stop = true;
  submitter.join();
  putter.join();
  ASSERT_FALSE(::testing::Test::HasFatalFailure());

  // --- The end: every job terminal, good ones exported or failed with a reason.
  Jobs jobs(c.learner_target(), kToken);
  v1::ListJobsResponse list;
  const auto drain_end = Clock::now() + 10min;
  for (;;) {
    grpc::Status s = jobs.List(&list);
    ASSERT_TRUE(s.ok()) << s.error_message();
    int open = 0;
    for (const auto& j : list.jobs())
      open += j.state() == v1::QUEUED || j.state() == v1::RUNNING;
    if (open == 0) break;
    ASSERT_LT(Clock::now(), drain_end) << open << " jobs still open 10 minutes after the soak";
    std::this_thread::sleep_for(1s);
  }
  std::set<std::string> listed;
  int succeeded = 0, failed = 0, unacknowledged_duplicates = 0;
  for (const auto& j : list.jobs()) {
    listed.insert(j.job_id());
    EXPECT_EQ(j.name().rfind("hostile", 0), std::string::npos)
        << "a hostile submission was accepted: " << j.job_id() << " " << j.name();
    if (j.name().rfind("soak-good-", 0) != 0) continue;
    if (!good_ids.count(j.job_id())) ++unacknowledged_duplicates;  // a reply lost in a kill
    if (j.state() == v1::SUCCEEDED) {
      const std::string out = absl::StrCat(dir, "/", j.job_id(), ".lopt");
      auto [code, text] = c.RunCtl(absl::StrCat("export ", j.job_id(), " --out ", out));
      ASSERT_EQ(code, 0) << j.job_id() << ": " << text;
      auto file = LoadOptimizerFile(out);
      ASSERT_TRUE(file.ok()) << j.job_id() << ": " << file.status();
      EXPECT_EQ(file->file.outer_step(), j.total_steps()) << j.job_id();
      ++succeeded;
    } else {
      EXPECT_EQ(j.state(), v1::FAILED) << j.job_id() << " " << j.DebugString();
      EXPECT_FALSE(j.error().empty()) << j.job_id() << " failed without a reason";
      ++failed;
    }
  }
  for (const auto& [id, name] : good_ids)
    EXPECT_TRUE(listed.count(id)) << "acknowledged job " << id << " (" << name << ") was lost";
  EXPECT_TRUE(submission_failures.empty()) << absl::StrJoin(submission_failures, "\n");
  EXPECT_GT(succeeded, 0);

  // --- Nothing acknowledged lost: a last kill -9, then every put re-read. -
  c.buffer().Kill9();
  c.StartBuffer();
  {
    RemoteReplayBufferOptions patient;
    patient.max_attempts = 60;
    RemoteReplayBuffer reader(ClientConfig{buffer_target, kToken, 10000}, patient);
    std::vector<std::string> tables;
    for (const auto& [t, items] : puts.acked) tables.push_back(t);
    for (const auto& t : tables) VerifyTable(reader, t, puts);
  }
  EXPECT_TRUE(puts.errors.empty()) << absl::StrJoin(puts.errors, "\n");
  EXPECT_GT(puts.verified, 0);
  EXPECT_EQ(puts.verified, puts.acknowledged) << "every acknowledged put is read back once";

  int total_faults = 0;
  std::string fault_text, refused_text;
  for (const auto& [k, n] : faults) {
    total_faults += n;
    absl::StrAppend(&fault_text, fault_text.empty() ? "" : ", ", k, " ", n);
  }
  for (const auto& k : kinds) EXPECT_GE(faults[k], minutes >= 1 ? 1 : 0) << k << " never injected";
  int refused = 0;
  for (const auto& [k, n] : refused_by_code) {
    refused += n;
    absl::StrAppend(&refused_text, refused_text.empty() ? "" : ", ", k, " ", n);
  }
  EXPECT_GT(refused, 0);
  std::printf(
      "soak: %.1f minutes; faults injected: %d (%s)%s\n"
      "soak: good jobs: %d submitted, %zu acknowledged, %d completed (%d succeeded and exported, "
      "%d failed with a reason), %d listed without an acknowledgement\n"
      "soak: hostile submissions: %d sent, %d refused (%s), 0 accepted\n"
      "soak: buffer puts: %lld acknowledged, %lld refused or cut off, %lld verified after the "
      "last kill -9\n",
      minutes, total_faults, fault_text.c_str(),
      disk_full_episodes ? "" : "; disk-full episodes skipped (no tmpfs: not root)",
      good_submitted, good_ids.size(), succeeded + failed, succeeded, failed,
      unacknowledged_duplicates, hostile_submitted, refused, refused_text.c_str(),
      static_cast<long long>(puts.acknowledged), static_cast<long long>(puts.refused),
      static_cast<long long>(puts.verified));
}

}  // namespace
}  // namespace lopt
