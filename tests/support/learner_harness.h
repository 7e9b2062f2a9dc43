// The learner's gRPC doors in-process on loopback (a JobManager with the
// real JobService and WorkService on 127.0.0.1:0) and a worker written by
// hand that speaks the real WorkService protocol: what the learner's
// integration tests and its stress test (tests/stress) drive.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/rpc/rpc.h"
#include "common/rpc/tensor_codec.h"
#include "learner/job_manager.h"
#include "learner/learner_services.h"
#include "lopt/v1/job_service.grpc.pb.h"
#include "lopt/v1/work_service.grpc.pb.h"

namespace lopt::testing {

using namespace std::chrono_literals;

class LearnerServer {
 public:
  // `dir`: the state directory (empty: a new one). `meta_test`: ELO jobs
  // end with a worker's meta-test (LearnerOptions::meta_test).
  explicit LearnerServer(const std::string& token = "", const std::string& dir = "",
                         int64_t worker_timeout_ms = 2000, bool meta_test = false)
      : token_(token), dir_(dir) {
    if (dir_.empty()) {
      // A new directory each time: a name made of the pid alone met an old
      // run's jobs when the pid came round again (pid_max 32768).
      std::string tmpl = absl::StrCat(::testing::TempDir(), "lopt_learner_svc_XXXXXX");
      EXPECT_NE(::mkdtemp(tmpl.data()), nullptr) << tmpl;
      dir_ = tmpl;
    }
    LearnerOptions opt;
    opt.state_dir = dir_;
    opt.worker_timeout_ms = worker_timeout_ms;
    opt.heartbeat_interval_ms = 100;
    opt.meta_test = meta_test;
    auto m = JobManager::Create(opt);
    EXPECT_TRUE(m.ok()) << m.status();
    manager_ = std::move(*m);
    jobs_ = std::make_unique<JobServiceImpl>(manager_.get(), token);
    work_ = std::make_unique<WorkServiceImpl>(manager_.get(), token, 100);
    grpc::ServerBuilder b;
    ConfigureServer(b, {"127.0.0.1:0", token}, &port_);
    b.RegisterService(jobs_.get());
    b.RegisterService(work_.get());
    server_ = b.BuildAndStart();
  }
  ~LearnerServer() {
    manager_->Shutdown();
    server_->Shutdown(std::chrono::system_clock::now() + 2s);
  }
  ClientConfig client(const std::string& token = "") const {
    return {absl::StrCat("127.0.0.1:", port_), token, 5000};
  }
  JobManager& manager() { return *manager_; }
  const std::string& dir() const { return dir_; }

 private:
  std::string token_, dir_;
  int port_ = 0;
  std::unique_ptr<JobManager> manager_;
  std::unique_ptr<JobServiceImpl> jobs_;
  std::unique_ptr<WorkServiceImpl> work_;
  std::unique_ptr<grpc::Server> server_;
};

inline std::string Submit(const LearnerServer& s, const std::string& text) {
  auto stub = v1::JobService::NewStub(MakeChannel(s.client()));
  v1::SubmitJobRequest req;
  req.set_job_text(text);
  v1::SubmitJobResponse resp;
  auto ctx = MakeContext(s.client());
  grpc::Status st = stub->Submit(ctx.get(), req, &resp);
  EXPECT_TRUE(st.ok()) << st.error_message();
  return resp.job_id();
}

// A worker written by hand: registers, receives units, sends what the test says.
class FakeWorker {
 public:
  explicit FakeWorker(const ClientConfig& cfg) {
    stub_ = v1::WorkService::NewStub(MakeChannel(cfg));
    ctx_ = MakeStreamContext(cfg);
    ctx_->set_deadline(std::chrono::system_clock::now() + 60s);
    stream_ = stub_->Connect(ctx_.get());
  }
  bool Register(const std::string& name = "fake") {
    v1::WorkerMessage m;
    m.mutable_register_()->set_name(name);
    v1::LearnerMessage r;
    if (!Write(m) || !stream_->Read(&r) || !r.has_registered()) return false;
    worker_id_ = r.registered().worker_id();
    return true;
  }
  // One message on the stream; thread-safe (a heartbeat thread may write
  // beside the thread that sends results and reads).
  bool Write(const v1::WorkerMessage& m) {
    std::lock_guard<std::mutex> l(write_mu_);
    return stream_->Write(m);
  }
  bool Heartbeat() {
    v1::WorkerMessage hb;
    hb.mutable_heartbeat();
    return Write(hb);
  }
  const std::string& worker_id() const { return worker_id_; }
  // The next unit (and its payload), or none once the stream ended
  // (cancelled, or the learner went away).
  std::optional<v1::WorkUnit> TryNextUnit() {
    v1::LearnerMessage m;
    while (pending_.empty() && stream_->Read(&m)) Take(m);
    if (pending_.empty()) return std::nullopt;
    v1::WorkUnit u = pending_.front();
    pending_.pop_front();
    while (u.has_payload() && int64_t(payloads_[u.unit_id()].size()) < u.payload().payload_bytes() &&
           stream_->Read(&m))
      Take(m);
    return u;
  }
  // Ends the stream from any thread: a blocked TryNextUnit returns none.
  void Cancel() { ctx_->TryCancel(); }
  v1::WorkUnit NextUnit() {
    v1::LearnerMessage m;
    while (pending_.empty() && stream_->Read(&m)) Take(m);
    if (pending_.empty()) {
      ADD_FAILURE() << "stream ended before a unit";
      return {};
    }
    v1::WorkUnit u = pending_.front();
    pending_.pop_front();
    // A unit's payload chunks follow it back to back.
    while (u.has_payload() && int64_t(payloads_[u.unit_id()].size()) < u.payload().payload_bytes() &&
           stream_->Read(&m))
      Take(m);
    return u;
  }
  // The payload that came with unit `unit_id`, decoded.
  NamedTensors Payload(const v1::WorkUnit& u) {
    std::vector<v1::TensorHeader> h(u.payload().tensors().begin(), u.payload().tensors().end());
    auto t = DecodeItem(h, payloads_[u.unit_id()]);
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? *t : NamedTensors{};
  }
  // Sends a result and then the chunks (of chunk_bytes) of `payload`;
  // `chunks_to_send` < 0: all of them. Does not wait for an ack.
  void SendWithPayload(const v1::WorkResult& r, const std::string& payload, int64_t chunk_bytes,
                       int chunks_to_send = -1, int corrupt_chunk = -1) {
    v1::WorkerMessage m;
    *m.mutable_result() = r;
    EXPECT_TRUE(Write(m));
    auto chunks = MakeChunks(payload, chunk_bytes);
    for (int i = 0; i < int(chunks.size()) && (chunks_to_send < 0 || i < chunks_to_send); ++i) {
      v1::WorkerMessage c;
      *c.mutable_chunk() = chunks[i];
      if (i == corrupt_chunk) (*c.mutable_chunk()->mutable_data())[0] ^= 0x5a;
      EXPECT_TRUE(Write(c));
    }
  }
  v1::ResultAck NextAck() {
    v1::LearnerMessage a;
    while (stream_->Read(&a)) {
      if (a.has_ack()) return a.ack();
      Take(a);  // the next unit may overtake the ack
    }
    ADD_FAILURE() << "stream ended before an ack";
    return {};
  }
  void Take(const v1::LearnerMessage& m) {
    if (m.has_unit()) {
      pending_.push_back(m.unit());
      last_unit_ = m.unit().unit_id();
    } else if (m.has_chunk()) {
      payloads_[last_unit_] += m.chunk().data();
    }
  }
  v1::ResultAck Send(const v1::WorkResult& r) {
    v1::WorkerMessage m;
    *m.mutable_result() = r;
    EXPECT_TRUE(Write(m));
    return NextAck();
  }
  grpc::Status Finish() {
    {
      std::lock_guard<std::mutex> l(write_mu_);
      stream_->WritesDone();
    }
    return stream_->Finish();
  }
  std::mutex write_mu_;
  std::string worker_id_;
  std::deque<v1::WorkUnit> pending_;
  std::map<uint64_t, std::string> payloads_;
  uint64_t last_unit_ = 0;
  std::unique_ptr<v1::WorkService::Stub> stub_;
  std::unique_ptr<grpc::ClientContext> ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::WorkerMessage, v1::LearnerMessage>> stream_;
};

inline v1::WorkResult GoodResult(const v1::WorkUnit& u) {
  v1::WorkResult r;
  r.set_unit_id(u.unit_id());
  r.set_job_id(u.job_id());
  r.set_shard(u.shard());
  r.set_theta_version(u.theta_version());
  v1::EloResultInfo& e = *r.mutable_elo();
  *e.mutable_grad() = EncodeTensor(torch::full({u.elo().theta().shape(0)}, 0.01f), "grad");
  e.set_meta_loss(1.0);
  e.set_task_loss(1.0);
  r.set_particle_steps(40);
  return r;
}

}  // namespace lopt::testing
