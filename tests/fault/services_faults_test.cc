// Issue 12's defects, each reproduced with real processes (lopt-learner,
// lopt-buffer, lopt-worker, loptctl, lopt) the way a careless or hostile
// operator met them: two learners on one state directory, a full disk at a
// job's end, invalid UTF-8 in a job's name, a second server on a taken port,
// data paths and spec sizes that exhaust a worker's memory.
//
// The full disk is a file-size limit (RLIMIT_FSIZE, set on the running
// learner with prlimit(2)) with SIGXFSZ ignored: every write past the limit
// fails with EFBIG, which stops root too (chmod does not), needs no mount
// and can be lifted without a restart, as freeing space would be.
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <thread>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/elo/optimizer_file.h"
#include "common/rpc/buffer_client.h"
#include "common/spec/job_spec.h"
#include "common/util/checkpoint.h"
#include "tests/support/buffer_items.h"
#include "tests/support/child_process.h"
#include "tests/support/service_cluster.h"

namespace lopt {
namespace {

using lopt::testing::ChildProcess;
using lopt::testing::FreePort;
using lopt::testing::HttpGet;
using lopt::testing::RunCommand;
using lopt::testing::Scrape;
using namespace std::chrono_literals;

using lopt::testing::MetricValue;
using lopt::testing::WriteTextFile;

std::string JobText(const std::string& name, int steps, int checkpoint_every) {
  return testing::SmallJobText(name, steps, 1, 0, checkpoint_every, /*seed=*/5);
}

// A learner, optionally a buffer and workers, on loopback; loptctl drives
// them. The binaries are this build's or LOPT_TEST_BIN_DIR's.
class Services : public testing::ServiceCluster {
 public:
  explicit Services(const std::string& name)
      : ServiceCluster({LOPT_BUFFER_BINARY, LOPT_LEARNER_BINARY, LOPT_WORKER_BINARY,
                        LOPT_LOPTCTL_BINARY},
                       testing::MakeTestDir("lopt_faults", name)) {}
};

std::string Bin(const char* built) { return testing::TestBinary(built); }

// --- 1. Two learners on one --state-dir ------------------------------------

TEST(ServicesFaults, SecondLearnerOnAStateDirInUseRefusesToStartAndNamesTheHolder) {
  Services s("twolearners");
  s.StartLearner();
  const pid_t holder = s.learner().pid();
  // The second learner, on another port, the same directory.
  std::string cmd;
  for (const auto& a : s.LearnerArgs(FreePort())) absl::StrAppend(&cmd, a, " ");
  auto [code, out] = RunCommand("timeout 60 " + cmd);
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find(absl::StrCat("--state-dir ", s.state_dir(), " is in use by another process (pid ",
                                  holder, " on host ")),
            std::string::npos)
      << out;
  EXPECT_EQ(out.find("msg=serving"), std::string::npos) << out;
  EXPECT_TRUE(s.learner().running());
  // The lock dies with its holder, however it ends: a LOCK file left by a
  // kill -9 does not block the next learner.
  s.learner().Kill9();
  s.StartLearner();
  EXPECT_TRUE(s.learner().running());
}

// --- Lesser: a learner told to stop checkpoints its jobs --------------------

TEST(ServicesFaults, SigtermStopsTheLearnerCleanlyAndItCheckpointsItsJobsFirst) {
  Services s("sigterm");
  s.StartBuffer();
  s.StartLearner();
  s.StartWorker("w1");
  // No periodic checkpoint before the end: only the stop can save progress.
  const std::string id = s.Submit(JobText("stop", 400, 1000));
  ASSERT_TRUE(s.learner().WaitForLine("step=5 ", 120s)) << s.learner().Output();
  EXPECT_EQ(s.learner().Stop(), 0) << "a SIGTERM must end the learner with a clean exit";
  EXPECT_TRUE(s.learner().WaitForLine("msg=\"checkpointed the unfinished jobs\" jobs=1", 1s))
      << s.learner().Output();
  s.StartLearner();
  ASSERT_TRUE(s.learner().WaitForLine("msg=\"resuming job from its checkpoint\"", 5s));
  std::smatch m;
  const std::string out = s.learner().Output();
  ASSERT_TRUE(std::regex_search(out, m, std::regex("resuming job from its checkpoint\" job=" + id +
                                                   " outer_step=([0-9]+)")))
      << out;
  EXPECT_GE(std::stoi(m[1]), 5) << "the steps done before the SIGTERM were lost";
}

// --- Lesser: a worker's late put after its job ended --------------------------

// The learner deletes a job's buffer tables when it ends; a put that arrives
// after that (a worker that was still running a unit of the job) used to
// create the table again, an orphan nobody deletes. It is refused now, also
// after the buffer restarts, and only under the ended job's prefix.
TEST(ServicesFaults, ALatePutToAnEndedJobsTableIsRefusedAndCreatesNoOrphanTable) {
  Services s("lateput");
  s.StartBuffer();
  s.StartLearner();
  s.StartWorker("w1");
  const std::string id = s.Submit(JobText("late", 6, 2));
  RemoteReplayBuffer buffer(ClientConfig{absl::StrCat("127.0.0.1:", s.buffer_port()), "", 10000});
  // A table of the job, as its worker made it (its first pushes come after a
  // few inner steps).
  std::string table;
  for (int i = 0; i < 1200 && table.empty(); ++i) {
    auto stats = buffer.Stats(id + "/");
    ASSERT_TRUE(stats.ok()) << stats.status();
    if (stats->tables_size() > 0)
      table = stats->tables(0).name();
    else
      std::this_thread::sleep_for(100ms);
  }
  ASSERT_FALSE(table.empty()) << "the worker put nothing under " << id << "/";
  auto [code, out] = s.RunCtl(absl::StrCat("watch ", id, " --no-progress"));
  ASSERT_EQ(code, 0) << out;
  ASSERT_TRUE(s.learner().WaitForLine(absl::StrCat("deleted the job's buffer tables\" prefix=", id, "/"), 10s))
      << s.learner().Output();

  // The late put: refused with a reason, and no table comes back.
  auto late = buffer.PutEncoded(table, 8, testing::FilledItem(4096, 7));
  EXPECT_EQ(late.status().code(), absl::StatusCode::kFailedPrecondition) << late.status();
  EXPECT_NE(late.status().message().find(absl::StrCat("is under '", id,
                                                      "/', whose tables were deleted when its job ended")),
            std::string::npos)
      << late.status();
  auto stats = buffer.Stats(id + "/");
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->tables_size(), 0) << "an orphan table: " << stats->DebugString();
  EXPECT_GE(MetricValue(testing::Scrape(s.buffer().metrics_port()), "lopt_buffer_rejected_total",
                        "reason=\"closed\""),
            1);

  // Only that job's prefix is closed: another job's table, and a name that
  // merely starts with the same characters, still take puts.
  EXPECT_TRUE(buffer.PutEncoded("other-job/states", 8, testing::FilledItem(64, 1)).ok());
  EXPECT_TRUE(buffer.PutEncoded(id + "x/states", 8, testing::FilledItem(64, 1)).ok());

  // And the buffer remembers it across a kill -9 and a restart.
  s.buffer().Kill9();
  s.StartBuffer();
  late = buffer.PutEncoded(table, 8, testing::FilledItem(4096, 7));
  EXPECT_EQ(late.status().code(), absl::StatusCode::kFailedPrecondition) << late.status();
  stats = buffer.Stats(id + "/");
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->tables_size(), 0) << stats->DebugString();
}

// --- 3b. Cancel stops a running unit within seconds --------------------------

// `loptctl cancel` used to end the job at the learner only: its worker ran
// the unit to its end (here minutes) before it took new work. Now the reply
// to the worker's next heartbeat cancels the unit, which stops before its
// next inner step; the worker sends no result and takes the next job's unit.
TEST(ServicesFaults, CancelStopsARunningUnitWithinSecondsAndTheWorkerTakesNewWork) {
  Services s("cancel");
  s.StartBuffer();
  s.StartLearner();
  s.StartWorker("w1");
  // One truncation of 6000 inner steps of a 512-wide MLP: minutes on a CPU
  // worker (3000 took 110 s with main's worker, which ran it to its end).
  const std::string slow =
      "name: \"slow\"\nseed: 3\n"
      "task { fmnist_mlp { image_size: 8 hidden_sizes: 512 batch_size: 32 } }\n"
      "pes { num_tasks: 2 truncation_length: 6000 min_unroll_length: 6000 max_unroll_length: 12000 }\n"
      "budget { outer_steps: 2 }\n";
  const std::string id = s.Submit(slow);
  std::string st = s.PollStatus(id, "state: RUNNING", 60s);
  ASSERT_NE(st.find("state: RUNNING"), std::string::npos) << st;
  // Well into its inner steps (its data is loaded within a second or two).
  std::this_thread::sleep_for(5s);
  ASSERT_FALSE(s.worker("w1").WaitForLine("msg=\"unit stopped", 0s));
  const auto t0 = std::chrono::steady_clock::now();
  auto [code, out] = s.RunCtl("cancel " + id);
  ASSERT_EQ(code, 0) << out;
  // "Within seconds": a heartbeat (every second) and one inner step; 20 s is
  // far above that and far below the unit's length.
  EXPECT_TRUE(s.worker("w1").WaitForLine("msg=\"unit stopped: the learner cancelled it\" job=" + id, 20s))
      << s.worker("w1").Output();
  const double stop_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("the cancelled unit stopped %.1f s after loptctl cancel\n", stop_s);
  EXPECT_TRUE(s.worker("w1").running());
  const std::string wm = testing::Scrape(s.worker("w1").metrics_port());
  EXPECT_EQ(MetricValue(wm, "lopt_worker_units_total", "result=\"cancelled\""), 1) << wm;

  // The worker takes new work at once: a small job succeeds on it, well
  // before the cancelled unit would have ended.
  const std::string next = s.Submit(JobText("after", 3, 3));
  std::tie(code, out) = s.RunCtl(absl::StrCat("watch ", next, " --no-progress"));
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("succeeded at outer step 3/3"), std::string::npos) << out;
  const double next_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("the next job succeeded %.1f s after the cancel\n", next_s);
  EXPECT_LT(next_s, 120) << "the worker did not take new work soon after the cancel";
  st = s.RunCtl("status " + id).second;
  EXPECT_NE(st.find("state: CANCELLED"), std::string::npos) << st;
}

// --- Lesser: loptctl watch follows a job across a learner restart ----------

TEST(ServicesFaults, WatchFollowsTheJobAcrossAKillNineOfTheLearner) {
  Services s("watch");
  s.StartBuffer();
  s.StartLearner();
  s.StartWorker("w1");
  const int kSteps = 30;
  const std::string id = s.Submit(JobText("watched", kSteps, 4));
  auto watch = ChildProcess::Start(
      "watch", {Bin(LOPT_LOPTCTL_BINARY), "--learner=" + s.learner_target(), "watch", id, "--no-progress"},
      id);
  ASSERT_TRUE(watch.ok()) << watch.status();
  ASSERT_TRUE(s.learner().WaitForLine("step=5 ", 120s));
  s.learner().Kill9();
  std::this_thread::sleep_for(1s);  // the watcher notices the learner is gone
  s.StartLearner();                 // same port and state directory
  EXPECT_TRUE((*watch)->WaitForLine(
      absl::StrCat("job ", id, " succeeded at outer step ", kSteps, "/", kSteps), 180s))
      << (*watch)->Output();
  for (int i = 0; i < 100 && (*watch)->running(); ++i) std::this_thread::sleep_for(50ms);
  EXPECT_EQ((*watch)->Stop(), 0) << "loptctl watch's exit code";
  EXPECT_EQ((*watch)->CountLines("reconnecting"), 1) << (*watch)->Output();
}

// --- 4. A second server on a taken gRPC port -------------------------------

TEST(ServicesFaults, ServersRefuseAPortAnotherServerHolds) {
  Services s("port");
  const int taken = FreePort();
  auto first = ChildProcess::Start(
      "buffer1",
      {Bin(LOPT_BUFFER_BINARY), absl::StrCat("--listen=127.0.0.1:", taken), "--metrics-listen=",
       "--db-path=" + s.dir() + "/buffer1"},
      "msg=serving");
  ASSERT_TRUE(first.ok()) << first.status();
  auto [code, out] = RunCommand(absl::StrCat("timeout 30 ", Bin(LOPT_BUFFER_BINARY),
                                             " --listen=127.0.0.1:", taken,
                                             " --metrics-listen= --db-path=", s.dir(), "/buffer2"));
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find(absl::StrCat("cannot listen on 127.0.0.1:", taken, ": the port is in use")),
            std::string::npos)
      << out;
  // The learner's builder is the same one: a learner on the buffer's port.
  std::string cmd;
  for (const auto& a : s.LearnerArgs(taken)) absl::StrAppend(&cmd, a, " ");
  std::tie(code, out) = RunCommand("timeout 60 " + cmd);
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find(absl::StrCat("cannot listen on 127.0.0.1:", taken)), std::string::npos) << out;
  EXPECT_TRUE((*first)->running());
}

// --- 2. A full disk at a job's end -----------------------------------------

// The soft limit only: raising it again needs no privilege.
void SetFileSizeLimit(pid_t pid, rlim_t bytes) {
  rlimit lim{};
  ASSERT_EQ(prlimit(pid, RLIMIT_FSIZE, nullptr, &lim), 0) << std::strerror(errno);
  lim.rlim_cur = bytes;
  ASSERT_EQ(prlimit(pid, RLIMIT_FSIZE, &lim, nullptr), 0) << std::strerror(errno);
}

TEST(ServicesFaults, AJobSucceedsOnlyOnceItsResultIsOnDiskAndRetriesUntilItIs) {
  Services s("fulldisk");
  s.StartBuffer();
  s.StartLearner(/*ignore_sigxfsz=*/true);
  const int kSteps = 6;
  const std::string text = JobText("fulldisk", kSteps, 2);
  const std::string id = s.Submit(text);  // its first checkpoint is on disk
  const std::string job_dir = s.state_dir() + "/jobs/" + id;
  // The disk fills: no write of the learner's gets past 16 bytes.
  SetFileSizeLimit(s.learner().pid(), 16);
  auto [code, out] = s.TrySubmit(JobText("refused", 2, 1));
  EXPECT_NE(code, 0) << out;
  EXPECT_NE(out.find("RESOURCE_EXHAUSTED"), std::string::npos) << out;
  EXPECT_NE(out.find("File too large"), std::string::npos) << out;

  s.StartWorker("w1");
  // Every step is done and the worker's meta-test is in, yet the job is not
  // succeeded: its result is not saved.
  std::string st = s.PollStatus(id, absl::StrCat("outer_step: ", kSteps), 120s);
  ASSERT_NE(st.find(absl::StrCat("outer_step: ", kSteps)), std::string::npos) << st;
  st = s.PollStatus(id, "its steps are done", 120s);
  EXPECT_NE(st.find("state: RUNNING"), std::string::npos) << st;
  EXPECT_NE(st.find("its steps are done but its result is not saved yet"), std::string::npos) << st;
  EXPECT_NE(st.find("optimizer.lopt"), std::string::npos) << st;
  EXPECT_NE(st.find("File too large (errno 27)"), std::string::npos) << st;
  EXPECT_FALSE(FileExists(job_dir + "/optimizer.lopt"));
  // The learner retries every second while the disk stays full: wait for the
  // second try rather than race it (the status shows the first).
  absl::StatusOr<std::string> metrics;
  for (int i = 0; i < 100; ++i) {
    metrics = HttpGet(s.learner().metrics_port(), "/metrics");
    ASSERT_TRUE(metrics.ok()) << metrics.status();
    if (MetricValue(*metrics, "lopt_checkpoint_failures_total", "file=\"trained\"") >= 2) break;
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_GE(MetricValue(*metrics, "lopt_checkpoint_failures_total", "file=\"trained\""), 2)
      << "retried while the disk stays full";
  EXPECT_GE(MetricValue(*metrics, "lopt_checkpoint_failures_total", "file=\"checkpoint\""), 1)
      << "the checkpoint at step 2 or 4 failed";
  std::tie(code, out) = s.RunCtl(absl::StrCat("export ", id, " --out ", s.dir(), "/x.lopt"));
  EXPECT_NE(code, 0) << out;
  EXPECT_NE(out.find("File too large"), std::string::npos) << out;

  // Space comes back: the job succeeds by itself, its result exports.
  SetFileSizeLimit(s.learner().pid(), RLIM_INFINITY);
  std::tie(code, out) = s.RunCtl(absl::StrCat("watch ", id, " --no-progress"));
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find(absl::StrCat("succeeded at outer step ", kSteps, "/", kSteps)), std::string::npos)
      << out;
  EXPECT_TRUE(FileExists(job_dir + "/optimizer.lopt"));
  // The meta-test report that came in while the disk was full was kept and
  // written before the checkpoint that says SUCCEEDED.
  EXPECT_TRUE(FileExists(job_dir + "/eval/report.json")) << s.learner().Output();
  EXPECT_TRUE(FileExists(job_dir + "/eval/table.txt"));
  const std::string exported = s.dir() + "/trained.lopt";
  std::tie(code, out) = s.RunCtl(absl::StrCat("export ", id, " --out ", exported));
  ASSERT_EQ(code, 0) << out;
  auto file = LoadOptimizerFile(exported);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->file.outer_step(), kSteps);

  // And it stays succeeded across a restart (its checkpoint says so).
  s.learner().Kill9();
  s.StartLearner();
  st = s.RunCtl("status " + id).second;
  EXPECT_NE(st.find("state: SUCCEEDED"), std::string::npos) << st;
  EXPECT_NE(st.find(absl::StrCat("outer_step: ", kSteps)), std::string::npos) << st;
  EXPECT_EQ(st.find("error:"), std::string::npos) << st;
}

// --- 3. Invalid UTF-8 in a job --------------------------------------------

TEST(ServicesFaults, AJobNameThatIsNotUtf8IsRefusedAndABadStoredRecordIsSkipped) {
  Services s("utf8");
  s.StartLearner();
  const std::string good = s.Submit(JobText("good", 4, 2));
  // A name that is not UTF-8 is refused at the door, naming the field...
  auto [code, out] = s.TrySubmit(JobText("bad\\377name", 4, 2));
  EXPECT_NE(code, 0) << out;
  EXPECT_NE(out.find("INVALID_ARGUMENT"), std::string::npos) << out;
  EXPECT_NE(out.find("name is not valid UTF-8 (byte 0xff at offset 3)"), std::string::npos) << out;
  // ...and list still answers.
  std::tie(code, out) = s.RunCtl("list");
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find(good), std::string::npos) << out;

  // A record stored before names were checked (its checkpoint edited to one).
  const std::string other = s.Submit(JobText("other", 4, 2));
  s.learner().Kill9();  // both jobs are on disk since their submission
  const std::string path = s.state_dir() + "/jobs/" + other + "/checkpoint.pt";
  auto bytes = ReadFile(path);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  auto tensors = DeserializeTensors(*bytes);
  ASSERT_TRUE(tensors.ok()) << tensors.status();
  for (auto& [k, v] : *tensors)
    if (k == "spec") {
      v1::JobSpec spec;
      ASSERT_TRUE(spec.ParseFromString(TensorString(v)));
      spec.set_name("other\xff");
      v = StringTensor(spec.SerializeAsString());
    }
  auto edited = SerializeTensors(*tensors);
  ASSERT_TRUE(edited.ok());
  ASSERT_TRUE(WriteFileAtomically(path, *edited).ok());

  s.StartLearner();
  std::tie(code, out) = s.RunCtl("list");
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find(good), std::string::npos) << out;
  EXPECT_EQ(out.find(other), std::string::npos) << out;
  std::tie(code, out) = s.RunCtl("status " + good);
  EXPECT_EQ(code, 0) << out;
  EXPECT_TRUE(s.learner().WaitForLine(
      absl::StrCat("skipping a job whose stored spec is invalid\" job=", other), 1s))
      << s.learner().Output();
}

// --- 5. Specs that exhaust a worker's memory --------------------------------

TEST(ServicesFaults, DevZeroDataAndOversizedUnitsAreRefusedByValidateSubmitAndEval) {
  Services s("memory");
  s.StartLearner();
  const std::string dev_zero =
      "name: \"z\"\ntask { byte_lm { data_path: \"/dev/zero\" } }\n"
      "lhopt { tasks { task { byte_lm { data_path: \"/dev/zero\" } } weight: 1 } }\n";
  const std::string huge =
      "name: \"huge\"\ntask { fmnist_mlp { hidden_sizes: 4096 } }\npes { num_tasks: 4096 }\n";
  for (const auto& [text, want] :
       std::vector<std::pair<std::string, std::string>>{
           {dev_zero, "task.byte_lm.data_path must be a regular file or a directory of them, got "
                      "/dev/zero: a character device"},
           {huge, "one work unit of this job would need about "}}) {
    const std::string path = s.dir() + "/spec.textproto";
    WriteTextFile(path, text);
    auto [code, out] = RunCommand(absl::StrCat(Bin(LOPT_LOPT_BINARY), " validate ", path));
    EXPECT_NE(code, 0) << out;
    EXPECT_NE(out.find(want), std::string::npos) << out;
    std::tie(code, out) = s.TrySubmit(text);
    EXPECT_NE(code, 0) << out;
    EXPECT_NE(out.find("INVALID_ARGUMENT"), std::string::npos) << out;
    EXPECT_NE(out.find(want), std::string::npos) << out;
  }
  auto [code, out] = s.RunCtl("list");
  EXPECT_EQ(code, 0) << out;
  EXPECT_EQ(out.find("huge"), std::string::npos) << out;
}

// Admission against what the workers report (--memory, --max-particles): a
// job that no connected worker can hold is refused at the door, one that
// waits for such a worker says why in its status, and units go only to
// workers that can hold them.
TEST(ServicesFaults, AdmissionRefusesWhatNoConnectedWorkerCanHoldAndRoutesUnitsToOneThatCan) {
  Services s("admission");
  s.StartLearner();
  // No worker yet: accepted (workers may connect later).
  const std::string waiting = s.Submit(JobText("waits", 4, 2));
  s.StartWorker("small", {"--memory=64K"});
  ASSERT_TRUE(s.worker("small").WaitForLine("memory_bytes=65536", 5s)) << s.worker("small").Output();
  std::string st = s.PollStatus(waiting, "waiting: no connected worker can run a unit", 10s);
  EXPECT_NE(st.find("state: QUEUED"), std::string::npos) << st;
  EXPECT_NE(st.find("small: a unit needs about"), std::string::npos) << st;
  EXPECT_NE(st.find("the worker has 0.1 MiB (--memory)"), std::string::npos) << st;
  // With only the small worker connected a new job is refused, and nothing is kept of it.
  auto [code, out] = s.TrySubmit(JobText("refused", 4, 2));
  EXPECT_NE(code, 0) << out;
  EXPECT_NE(out.find("FAILED_PRECONDITION"), std::string::npos) << out;
  EXPECT_NE(out.find("no connected worker can run a unit of this job (1 worker; small: a unit "
                     "needs about"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("connect a worker with more memory"), std::string::npos) << out;
  std::tie(code, out) = s.RunCtl("list");
  EXPECT_EQ(out.find("refused"), std::string::npos) << out;
  EXPECT_NE(out.find("waiting: no connected worker"), std::string::npos) << out;
  // Too many particles for --max-particles is the same refusal.
  s.StartWorker("narrow", {"--max-particles=2"});
  std::tie(code, out) = s.TrySubmit(JobText("refused2", 4, 2));
  EXPECT_NE(code, 0) << out;
  EXPECT_NE(out.find("(2 workers; "), std::string::npos) << out;
  EXPECT_NE(out.find("narrow: a unit has 4 particles, the worker takes at most 2 "
                     "(--max-particles)"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("small: a unit needs about"), std::string::npos) << out;
  // A worker that can hold it takes every unit; the small ones take none.
  s.StartWorker("big", {"--memory=64G"});
  auto [wcode, watch] = s.RunCtl(absl::StrCat("watch ", waiting, " --no-progress"));
  EXPECT_EQ(wcode, 0) << watch;
  EXPECT_NE(watch.find("succeeded at outer step 4/4"), std::string::npos) << watch;
  auto units = [&](const std::string& w) {
    return MetricValue(Scrape(s.worker(w).metrics_port()), "lopt_worker_units_total",
                       "result=\"ok\"");
  };
  EXPECT_GE(units("big"), 4);
  EXPECT_LE(units("small"), 0);
  EXPECT_LE(units("narrow"), 0);
  // And a new job is admitted now.
  std::tie(code, out) = s.TrySubmit(JobText("admitted", 2, 2));
  EXPECT_EQ(code, 0) << out;
}

// --- 6. A wrong token is reported as such ----------------------------------

TEST(ServicesFaults, AWorkerWithAWrongTokenLogsUnauthenticatedNotCancelled) {
  Services s("token");
  WriteTextFile(s.dir() + "/right", "right-token\n");
  WriteTextFile(s.dir() + "/wrong", "wrong-token\n");
  const int port = FreePort();
  std::vector<std::string> args = s.LearnerArgs(port);
  args.push_back("--auth-token-file=" + s.dir() + "/right");
  auto learner = ChildProcess::Start("learner", args, "msg=serving");
  ASSERT_TRUE(learner.ok()) << learner.status();
  auto worker = ChildProcess::Start(
      "worker",
      {Bin(LOPT_WORKER_BINARY), absl::StrCat("--learner=127.0.0.1:", port), "--metrics-listen=",
       "--name=w", "--threads=1", "--auth-token-file=" + s.dir() + "/wrong"},
      "the learner refused this worker's credentials", 20s);
  ASSERT_TRUE(worker.ok()) << worker.status();
  EXPECT_TRUE((*worker)->WaitForLine("code=UNAUTHENTICATED", 1s)) << (*worker)->Output();
  EXPECT_EQ((*worker)->CountLines("code=1 "), 0) << "CANCELLED: " << (*worker)->Output();
  auto [code, out] = RunCommand(absl::StrCat(Bin(LOPT_LOPTCTL_BINARY), " --learner=127.0.0.1:", port,
                                             " --auth-token-file=", s.dir(), "/wrong list"));
  EXPECT_NE(code, 0) << out;
  EXPECT_NE(out.find("UNAUTHENTICATED: wrong bearer token"), std::string::npos) << out;
}

// --- 7. A buffer that is down is visible -------------------------------------

// A worker whose replay buffer is unreachable runs its units on with fresh
// starts; it counts each failed call by kind on its /metrics and in its log,
// and the job's status says the buffer is failing (loptctl: BUFFER FAILING),
// instead of the job silently running ELO without a buffer.
TEST(ServicesFaults, AnUnreachableBufferShowsInTheJobsStatusAndTheWorkersMetrics) {
  Services s("bufferdown");
  s.StartBuffer();
  s.StartLearner();
  s.buffer().Kill9();  // the worker is told its port: nothing answers there
  s.StartWorker("w1");
  // The buffer is on (SmallJobText's default), 4 steps: puts are due.
  std::string id = s.Submit(JobText("bufferdown", 4, 2));
  std::string st = s.PollStatus(id, "SUCCEEDED", 180s);
  ASSERT_NE(st.find("SUCCEEDED"), std::string::npos) << st;
  EXPECT_NE(st.find("buffer_failures: "), std::string::npos) << st;
  EXPECT_NE(st.find(" on table " + id + "/"), std::string::npos) << st;  // buffer_error
  EXPECT_NE(st.find("UNAVAILABLE"), std::string::npos) << st;
  auto [code, list] = s.RunCtl("list");
  EXPECT_NE(list.find("BUFFER FAILING"), std::string::npos) << list;
  const std::string metrics = testing::Scrape(s.worker("w1").metrics_port());
  const double puts = MetricValue(metrics, "lopt_worker_buffer_errors_total", "op=\"put\"");
  EXPECT_GE(puts, 1) << metrics;
  EXPECT_GE(MetricValue(metrics, "lopt_worker_buffer_errors_total", "code=\"UNAVAILABLE\""), 1)
      << metrics;
  EXPECT_GE(s.worker("w1").CountLines("replay buffer call failed"), static_cast<int>(puts));
  EXPECT_GE(s.LearnerMetric("lopt_buffer_failures_total", ""), puts);
}

}  // namespace
}  // namespace lopt
