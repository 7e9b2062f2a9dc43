#include <torch/torch.h>
#include <chrono>
#include <iostream>
#include "common/small_fc_lopt.h"
#include "common/task.h"
#include "common/adam.h"
#include "common/job_spec.h"
using namespace lopt;
double now(){return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();}
#include <malloc.h>
int main(){ mallopt(M_MMAP_THRESHOLD, 1<<30); mallopt(M_TRIM_THRESHOLD, 1<<30); mallopt(M_ARENA_MAX, 2);
  std::cout << "threads " << torch::get_num_threads() << "\n";
  auto job = JobFromText(DefaultJobText(), "d").value();
  auto task = MakeTask(job.task(), 0).value();
  torch::NoGradGuard ng;
  auto gen = MakeGenerator(0,0,0);
  for (int P : {16, 128}) {
  auto st = task->Init(P/2, 2, gen);
  SmallFcLopt lo(job.lopt());
  auto ls = lo.InitState(st.params);
  auto theta = lo.InitTheta(gen).unsqueeze(0).repeat({P,1});
  std::vector<torch::Tensor> grads;
  auto batch = task->SampleBatch(P/2, gen);
  int N=20; double t0=now();
  for(int i=0;i<N;i++) batch = task->SampleBatch(P/2, gen);
  double t1=now();
  for(int i=0;i<N;i++) task->LossAndGrad(st, batch, &grads);
  double t2=now();
  auto step = torch::zeros({P}, torch::kInt64);
  for(int i=0;i<N;i++) lo.Step(st.params, grads, &ls, step, theta);
  double t3=now();
  std::vector<torch::Tensor> feats;
  for(int i=0;i<N;i++){ feats.clear(); for (size_t j=0;j<st.params.size();j++){ SmallFcLopt::Accumulate(grads[j], &ls[j]); feats.push_back(SmallFcLopt::NormalizeFeatures(SmallFcLopt::RawFeatures(st.params[j], grads[j], ls[j])));} }
  double t4=now();
  auto x = torch::cat(feats,1); auto tf = SmallFcLopt::TimeFeatures(step);
  for(int i=0;i<N;i++) lo.Mlp(x, tf, theta);
  double t5=now();
  AdamState as = InitAdamState(st.params); auto lr = torch::full({P}, 1e-3);
  for(int i=0;i<N;i++) AdamUpdates(st.params, grads, &as, lr, step, AdamOptions());
  double t6=now();
  std::cout << "P="<<P<<" batch " << (t1-t0)/N*1e3 << " ms, lossgrad " << (t2-t1)/N*1e3 << " ms, lopt step " << (t3-t2)/N*1e3 << " ms (features " << (t4-t3)/N*1e3 << " mlp " << (t5-t4)/N*1e3 << "), adam " << (t6-t5)/N*1e3 << "\n";
  }
}
