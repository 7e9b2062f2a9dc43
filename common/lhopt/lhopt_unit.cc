#include "common/lhopt/lhopt_unit.h"

#include <algorithm>
#include <cmath>

#include <torch/torch.h>

namespace lopt {
namespace {

double Uniform(torch::Generator& g) { return torch::rand({1}, g, torch::kFloat64).item<double>(); }

int64_t LogUniformInt(torch::Generator& g, int64_t lo, int64_t hi) {
  double u = Uniform(g);
  double v = std::exp(std::log(double(lo)) + u * (std::log(double(hi)) - std::log(double(lo))));
  return std::min(hi, std::max(lo, int64_t(std::llround(v))));
}

}  // namespace

LhoptInstance DrawLhoptInstance(const v1::LhoptSpec& l, int32_t task_index, torch::Generator& g) {
  LhoptInstance y;
  y.task_index = task_index;
  y.task = l.tasks(task_index).task();
  y.task_seed = g.current_seed();
  y.inner_steps = LogUniformInt(g, l.min_inner_steps(), l.max_inner_steps());
  y.decisions = std::min<int64_t>(LogUniformInt(g, l.min_decisions(), l.max_decisions()),
                                  y.inner_steps - 1);
  if (l.tasks(task_index).random_activation()) {
    static const v1::Activation kActs[] = {v1::RELU, v1::TANH, v1::GELU, v1::SIGMOID};
    v1::Activation a = kActs[std::min<int64_t>(3, int64_t(Uniform(g) * 4))];
    if (y.task.has_fmnist_mlp()) y.task.mutable_fmnist_mlp()->set_activation(a);
    if (y.task.has_fmnist_cnn()) y.task.mutable_fmnist_cnn()->set_activation(a);
  }
  return y;
}

}  // namespace lopt
