#include "learner/learner_services.h"

#include <mutex>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/lhopt/lhopt_wire.h"
#include "common/rpc/rpc.h"
#include "common/rpc/tensor_codec.h"
#include "common/util/log.h"
#include "kinds/job_door.h"

namespace lopt {
namespace {
constexpr char kJobService[] = "lopt.v1.JobService";
constexpr char kWorkService[] = "lopt.v1.WorkService";

bool Terminal(v1::JobState s) {
  return s == v1::SUCCEEDED || s == v1::FAILED || s == v1::CANCELLED;
}

grpc::Status RequireId(const std::string& id) {
  if (id.empty())
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "job_id must not be empty");
  return grpc::Status::OK;
}
}  // namespace

grpc::Status JobServiceImpl::Submit(grpc::ServerContext* ctx, const v1::SubmitJobRequest* req,
                                    v1::SubmitJobResponse* resp) {
  RpcTimer t(kJobService, "Submit");
  if (auto s = CheckAuth(*ctx, token_); !s.ok()) return t.Done(s);
  absl::StatusOr<v1::JobSpec> job;
  if (req->has_job()) {
    v1::JobSpec spec = req->job();
    FillJobDefaults(&spec);
    absl::Status s = ValidateJob(spec);
    if (!s.ok()) return t.Done(ToGrpcStatus(s));
    job = spec;
  } else if (req->spec_case() == v1::SubmitJobRequest::kJobText) {
    job = JobFromText(req->job_text(),
                      req->source_name().empty() ? "job" : req->source_name());
  } else {
    return t.Done(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                               "set job (a JobSpec) or job_text (its text proto)"));
  }
  if (!job.ok()) return t.Done(ToGrpcStatus(job.status()));
  auto id = manager_->Submit(*job);
  if (!id.ok()) return t.Done(ToGrpcStatus(id.status()));
  resp->set_job_id(*id);
  return t.Done(grpc::Status::OK);
}

grpc::Status JobServiceImpl::Get(grpc::ServerContext* ctx, const v1::GetJobRequest* req,
                                 v1::JobStatus* resp) {
  RpcTimer t(kJobService, "Get");
  if (auto s = CheckAuth(*ctx, token_); !s.ok()) return t.Done(s);
  if (auto s = RequireId(req->job_id()); !s.ok()) return t.Done(s);
  auto st = manager_->Get(req->job_id(), /*with_spec=*/true);
  if (!st.ok()) return t.Done(ToGrpcStatus(st.status()));
  *resp = *st;
  return t.Done(grpc::Status::OK);
}

grpc::Status JobServiceImpl::List(grpc::ServerContext* ctx, const v1::ListJobsRequest*,
                                  v1::ListJobsResponse* resp) {
  RpcTimer t(kJobService, "List");
  if (auto s = CheckAuth(*ctx, token_); !s.ok()) return t.Done(s);
  for (auto& j : manager_->List()) *resp->add_jobs() = std::move(j);
  return t.Done(grpc::Status::OK);
}

grpc::Status JobServiceImpl::Cancel(grpc::ServerContext* ctx, const v1::CancelJobRequest* req,
                                    v1::JobStatus* resp) {
  RpcTimer t(kJobService, "Cancel");
  if (auto s = CheckAuth(*ctx, token_); !s.ok()) return t.Done(s);
  if (auto s = RequireId(req->job_id()); !s.ok()) return t.Done(s);
  auto st = manager_->Cancel(req->job_id());
  if (!st.ok()) return t.Done(ToGrpcStatus(st.status()));
  *resp = *st;
  return t.Done(grpc::Status::OK);
}

grpc::Status JobServiceImpl::Watch(grpc::ServerContext* ctx, const v1::WatchJobRequest* req,
                                   grpc::ServerWriter<v1::JobStatus>* writer) {
  RpcTimer t(kJobService, "Watch");
  if (auto s = CheckAuth(*ctx, token_); !s.ok()) return t.Done(s);
  if (auto s = RequireId(req->job_id()); !s.ok()) return t.Done(s);
  int64_t version = -1;
  while (!ctx->IsCancelled()) {
    auto st = manager_->WaitForChange(req->job_id(), &version, std::chrono::milliseconds(1000));
    if (!st.ok()) return t.Done(ToGrpcStatus(st.status()));
    if (!writer->Write(*st)) break;
    if (Terminal(st->state())) break;
  }
  return t.Done(grpc::Status::OK);
}

grpc::Status JobServiceImpl::ExportOptimizer(grpc::ServerContext* ctx,
                                             const v1::ExportOptimizerRequest* req,
                                             grpc::ServerWriter<v1::Chunk>* writer) {
  RpcTimer t(kJobService, "ExportOptimizer");
  if (auto s = CheckAuth(*ctx, token_); !s.ok()) return t.Done(s);
  if (auto s = RequireId(req->job_id()); !s.ok()) return t.Done(s);
  auto bytes = req->file().empty() ? manager_->ExportOptimizer(req->job_id())
                                   : manager_->ExportFile(req->job_id(), req->file());
  if (!bytes.ok()) return t.Done(ToGrpcStatus(bytes.status()));
  for (const auto& c : MakeChunks(*bytes, kChunkBytes))
    if (!writer->Write(c)) break;
  if (bytes->empty()) writer->Write(v1::Chunk());
  return t.Done(grpc::Status::OK);
}

grpc::Status WorkServiceImpl::Connect(
    grpc::ServerContext* ctx,
    grpc::ServerReaderWriter<v1::LearnerMessage, v1::WorkerMessage>* stream) {
  RpcTimer t(kWorkService, "Connect");
  if (auto s = CheckAuth(*ctx, token_); !s.ok()) return t.Done(s);
  v1::WorkerMessage first;
  if (!stream->Read(&first))
    return t.Done(grpc::Status(grpc::StatusCode::CANCELLED, "stream ended before registering"));
  if (!first.has_register_())
    return t.Done(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                               "the first message of a worker must be register"));
  if (first.register_().name().empty())
    return t.Done(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                               "register.name must not be empty"));
  const std::string id = manager_->RegisterWorker(first.register_());
  std::mutex write_mu;  // the sync API allows one Write at a time
  {
    v1::LearnerMessage m;
    m.mutable_registered()->set_worker_id(id);
    m.mutable_registered()->set_heartbeat_interval_ms(heartbeat_ms_);
    if (!stream->Write(m)) {
      manager_->DisconnectWorker(id);
      return t.Done(grpc::Status::OK);
    }
  }
  std::thread reader([&] {
    // A result that announced a payload waits here for its chunks; a new
    // result before they are all in means the payload was truncated.
    std::optional<v1::WorkResult> pending;
    std::optional<PayloadReceiver> receiver;
    bool discarding = false;  // the rest of a payload already rejected
    auto ack = [&](const v1::WorkResult& r, const absl::StatusOr<NamedTensors>& payload) {
      v1::LearnerMessage out;
      *out.mutable_ack() = manager_->HandleResult(id, r, payload);
      std::lock_guard<std::mutex> l(write_mu);
      return stream->Write(out);
    };
    v1::WorkerMessage m;
    bool ok = true;
    while (ok && stream->Read(&m)) {
      if (m.has_chunk()) {
        if (!pending) {
          if (!discarding) LogWarning("chunk without an announced payload", {{"worker", id}});
          continue;
        }
        absl::Status s = receiver->Add(m.chunk());
        if (!s.ok()) {
          ok = ack(*pending, absl::Status(s.code(), absl::StrCat("payload chunk at offset ",
                                                                  m.chunk().offset(), ": ",
                                                                  s.message())));
          pending.reset();
          receiver.reset();
          discarding = true;
        } else if (receiver->complete()) {
          ok = ack(*pending, receiver->Finish());
          pending.reset();
          receiver.reset();
        }
        continue;
      }
      if (m.has_result()) {
        discarding = false;
        if (pending) {  // the previous result's payload never completed
          ok = ack(*pending, absl::InvalidArgumentError(absl::StrCat(
                                 "payload truncated: received ", receiver->received(), " of ",
                                 receiver->expected(), " announced bytes")));
          pending.reset();
          receiver.reset();
          if (!ok) break;
        }
        if (m.result().has_payload() && m.result().error().empty()) {
          auto r = PayloadReceiver::Create(m.result().payload());
          if (!r.ok()) {
            ok = ack(m.result(), r.status());
            discarding = true;
          } else if (r->complete()) {
            ok = ack(m.result(), r->Finish());
          } else {
            pending = m.result();
            receiver.emplace(std::move(*r));
          }
          continue;
        }
        ok = ack(m.result(), NamedTensors{});
      } else if (m.has_heartbeat()) {
        // A unit the worker runs that is no longer its own (its job was
        // cancelled, say): tell it to stop, as a ResultAck with CANCELLED for
        // that unit, so that it takes new work instead of finishing it.
        const std::string why = manager_->Heartbeat(id, m.heartbeat().unit_id());
        if (!why.empty()) {
          v1::LearnerMessage out;
          out.mutable_ack()->set_unit_id(m.heartbeat().unit_id());
          out.mutable_ack()->set_accepted(false);
          out.mutable_ack()->set_code(static_cast<int>(grpc::StatusCode::CANCELLED));
          out.mutable_ack()->set_error(why);
          std::lock_guard<std::mutex> l(write_mu);
          ok = stream->Write(out);
        }
      } else {
        manager_->Heartbeat(id);
      }
    }
    manager_->DisconnectWorker(id);
  });
  while (true) {
    std::string payload;
    auto unit = manager_->NextUnit(id, std::chrono::milliseconds(500), &payload);
    if (!unit.ok()) break;  // gone: disconnected, timed out or shutting down
    // Asked only while no unit comes: IsCancelled polls the call's queue,
    // on which the reader thread's Read waits, and a unit on a cancelled
    // stream is over anyway (its Write fails; the reader drops the worker).
    if (!unit->has_value()) {
      if (ctx->IsCancelled()) break;
      continue;
    }
    v1::LearnerMessage m;
    const bool chunks = (*unit)->has_payload();
    *m.mutable_unit() = std::move(**unit);
    // The unit and its payload's chunks go out back to back.
    std::lock_guard<std::mutex> l(write_mu);
    if (!stream->Write(m)) break;
    bool ok = true;
    if (chunks)
      for (auto& c : MakeChunks(payload, kChunkBytes)) {
        v1::LearnerMessage cm;
        *cm.mutable_chunk() = std::move(c);
        if (!(ok = stream->Write(cm))) break;
      }
    if (!ok) break;
  }
  ctx->TryCancel();
  reader.join();
  return t.Done(grpc::Status::OK);
}

}  // namespace lopt
