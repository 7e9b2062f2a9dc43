// Using a trained lopt optimizer in your own LibTorch code: a torch::nn
// module of your own, an ordinary training loop, lopt::LearnedOptimizer in
// place of torch::optim::AdamW.
//
//   train_with_lopt [OPTIMIZER.lopt] [STEPS]
//   (default: models/fmnist8_elo.lopt, 2000 steps)
#include <cstdio>
#include <string>

#include <torch/torch.h>

#include "common/elo/learned_optimizer.h"
#include "common/tasks/idx_dataset.h"

// Your model: nothing lopt-specific about it.
struct NetImpl : torch::nn::Module {
  NetImpl() : fc1(register_module("fc1", torch::nn::Linear(64, 32))),
              fc2(register_module("fc2", torch::nn::Linear(32, 10))) {}
  torch::Tensor forward(torch::Tensor x) { return fc2(torch::relu(fc1(x))); }
  torch::nn::Linear fc1, fc2;
};
TORCH_MODULE(Net);

double Train(Net net, torch::optim::Optimizer& opt, const lopt::ImageDataset& data, int steps) {
  torch::manual_seed(1);  // the same batches for both optimizers
  double recent = 0;
  for (int s = 0; s < steps; ++s) {
    torch::Tensor idx = torch::randint(data.train_x.size(0), {128}, torch::kInt64);
    opt.zero_grad();
    torch::Tensor loss = torch::nn::functional::cross_entropy(
        net->forward(data.train_x.index_select(0, idx)), data.train_y.index_select(0, idx));
    loss.backward();
    opt.step();
    recent = s == 0 ? loss.item<double>() : 0.98 * recent + 0.02 * loss.item<double>();
    if ((s + 1) % 500 == 0) std::printf("  step %5d  train loss (EMA) %.4f\n", s + 1, recent);
  }
  torch::NoGradGuard no_grad;
  torch::Tensor logits = net->forward(data.test_x);
  return logits.argmax(1).eq(data.test_y).to(torch::kFloat32).mean().item<double>();
}

int main(int argc, char** argv) {
  std::string path = argc > 1 ? argv[1] : "models/fmnist8_elo.lopt";
  int steps = argc > 2 ? std::atoi(argv[2]) : 2000;
  auto data = lopt::LoadImageDataset("/usr/share/datasets/fashion-mnist", 8);
  if (!data.ok()) {
    std::fprintf(stderr, "%s\n", std::string(data.status().message()).c_str());
    return 1;
  }
  torch::manual_seed(0);
  Net a, b;
  torch::NoGradGuard guard;
  for (size_t i = 0; i < a->parameters().size(); ++i)
    b->parameters()[i].copy_(a->parameters()[i]);  // the same initialisation

  auto lopt_opt = lopt::LearnedOptimizer::FromFile(a->parameters(), path);
  if (!lopt_opt.ok()) {
    std::fprintf(stderr, "%s\n", std::string(lopt_opt.status().message()).c_str());
    return 1;
  }
  torch::AutoGradMode enable(true);
  std::printf("lopt::LearnedOptimizer (%s):\n", path.c_str());
  double acc_lopt = Train(a, **lopt_opt, **data, steps);
  std::printf("torch::optim::AdamW (lr 1e-3):\n");
  torch::optim::AdamW adamw(b->parameters(), torch::optim::AdamWOptions(1e-3));
  double acc_adamw = Train(b, adamw, **data, steps);
  std::printf("test accuracy after %d steps: lopt %.2f%%, AdamW %.2f%%\n", steps,
              100 * acc_lopt, 100 * acc_adamw);
  return 0;
}
