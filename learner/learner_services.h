// The learner's two gRPC services, thin doors onto JobManager: JobService
// for users (loptctl) and WorkService for workers.
#pragma once

#include <string>

#include "learner/job_manager.h"
#include "lopt/v1/job_service.grpc.pb.h"
#include "lopt/v1/work_service.grpc.pb.h"

namespace lopt {

class JobServiceImpl final : public v1::JobService::Service {
 public:
  JobServiceImpl(JobManager* manager, std::string auth_token)
      : manager_(manager), token_(std::move(auth_token)) {}

  grpc::Status Submit(grpc::ServerContext* ctx, const v1::SubmitJobRequest* req,
                      v1::SubmitJobResponse* resp) override;
  grpc::Status Get(grpc::ServerContext* ctx, const v1::GetJobRequest* req,
                   v1::JobStatus* resp) override;
  grpc::Status List(grpc::ServerContext* ctx, const v1::ListJobsRequest* req,
                    v1::ListJobsResponse* resp) override;
  grpc::Status Cancel(grpc::ServerContext* ctx, const v1::CancelJobRequest* req,
                      v1::JobStatus* resp) override;
  grpc::Status Watch(grpc::ServerContext* ctx, const v1::WatchJobRequest* req,
                     grpc::ServerWriter<v1::JobStatus>* writer) override;
  grpc::Status ExportOptimizer(grpc::ServerContext* ctx, const v1::ExportOptimizerRequest* req,
                               grpc::ServerWriter<v1::Chunk>* writer) override;

 private:
  JobManager* manager_;
  std::string token_;
};

class WorkServiceImpl final : public v1::WorkService::Service {
 public:
  WorkServiceImpl(JobManager* manager, std::string auth_token, int32_t heartbeat_interval_ms)
      : manager_(manager), token_(std::move(auth_token)), heartbeat_ms_(heartbeat_interval_ms) {}

  grpc::Status Connect(
      grpc::ServerContext* ctx,
      grpc::ServerReaderWriter<v1::LearnerMessage, v1::WorkerMessage>* stream) override;

 private:
  JobManager* manager_;
  std::string token_;
  int32_t heartbeat_ms_;
};

}  // namespace lopt
