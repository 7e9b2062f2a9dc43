#include "common/spec/job_spec.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>

#include "common/spec/job_limits.h"
#include "kinds/job_door.h"

namespace lopt {
namespace {

std::string ErrorOf(const std::string& text) {
  auto job = JobFromText(text, "job.textproto");
  EXPECT_FALSE(job.ok()) << text;
  EXPECT_EQ(job.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(job.status().message());
}

TEST(JobSpec, DefaultJobIsValidAndFilled) {
  auto job = JobFromText(DefaultJobText(), "<default>");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_TRUE(job->task().has_fmnist_mlp());
  EXPECT_EQ(job->task().fmnist_mlp().image_size(), 8);
  // ELO's grid of 7 with 5e-2, 3e-2 and 2e-2 added, and the scheduled AdamW.
  EXPECT_EQ(job->eval().adamw_lrs_size(), 10);
  EXPECT_TRUE(job->eval().adamw_cosine());
  EXPECT_FLOAT_EQ(job->outer().lr(), 1e-3f);
  EXPECT_FALSE(job->elo().buffer().restore_pes_accumulator());
  EXPECT_EQ(job->pes().truncation_length(), 50);
  EXPECT_FLOAT_EQ(job->elo().buffer().fresh_start_probability(), 0.2f);
}

TEST(JobSpec, EmptyJobGetsDocumentedDefaults) {
  auto job = JobFromText("", "empty");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->task().fmnist_mlp().hidden_sizes_size(), 1);
  EXPECT_EQ(job->task().fmnist_mlp().hidden_sizes(0), 32);
  EXPECT_FLOAT_EQ(job->pes().sigma(), 0.01f);
  EXPECT_FLOAT_EQ(job->outer().lr(), 0.003f);
  EXPECT_EQ(job->elo().buffer().capacity(), 4);
  EXPECT_FLOAT_EQ(job->elo().behavior_cloning().teacher_lr(), 0.001f);
  EXPECT_EQ(EvalSteps(*job), 10 * job->pes().max_unroll_length());
}

TEST(JobSpec, NamesTheFieldAndTheValue) {
  EXPECT_EQ(ErrorOf("pes { truncation_length: -3 }"),
            "job.textproto: pes.truncation_length must be > 0, got -3");
  EXPECT_EQ(ErrorOf("budget { outer_steps: 0 }"),
            "job.textproto: budget.outer_steps must be > 0, got 0");
  EXPECT_NE(ErrorOf("pes { sigma: 0 }").find("pes.sigma must be > 0"), std::string::npos);
  EXPECT_NE(ErrorOf("pes { min_unroll_length: 10 truncation_length: 50 }")
                .find("pes.min_unroll_length must be >= pes.truncation_length (50), got 10"),
            std::string::npos);
  EXPECT_NE(ErrorOf("pes { min_unroll_length: 200 max_unroll_length: 100 }")
                .find("pes.max_unroll_length"),
            std::string::npos);
  EXPECT_NE(ErrorOf("elo { buffer { fresh_start_probability: 1.5 } }")
                .find("elo.buffer.fresh_start_probability must be in [0, 1], got 1.5"),
            std::string::npos);
  EXPECT_NE(ErrorOf("task { fmnist_mlp { image_size: 9 } }")
                .find("task.fmnist_mlp.image_size must be 8, 14 or 28, got 9"),
            std::string::npos);
  EXPECT_NE(ErrorOf("eval { adamw_lrs: 0.01 adamw_lrs: -1 }").find("eval.adamw_lrs[1] must be > 0"),
            std::string::npos);
  EXPECT_NE(ErrorOf("task { noisy_quadratic { min_dim: 10 max_dim: 5 } }")
                .find("task.noisy_quadratic.max_dim must be >= min_dim (10), got 5"),
            std::string::npos);
}

TEST(JobSpec, SyntaxErrorsGiveLineAndColumn) {
  std::string e = ErrorOf("name: \"x\"\npes { truncation_lenght: 5 }\n");
  EXPECT_EQ(e.rfind("job.textproto:2:", 0), 0u) << e;
  EXPECT_NE(e.find("truncation_lenght"), std::string::npos) << e;
  e = ErrorOf("pes { sigma: \"big\" }");
  EXPECT_EQ(e.rfind("job.textproto:1:", 0), 0u) << e;
}

TEST(JobSpec, ResnetDefaultsAndRanges) {
  auto job = JobFromText("task { fmnist_resnet {} }", "resnet");
  ASSERT_TRUE(job.ok()) << job.status();
  const auto& r = job->task().fmnist_resnet();
  EXPECT_EQ(std::vector<int>(r.channels().begin(), r.channels().end()), (std::vector<int>{16, 32}));
  EXPECT_EQ(r.image_size(), 28);
  EXPECT_EQ(r.batch_size(), 128);
  EXPECT_EQ(r.activation(), v1::RELU);
  EXPECT_EQ(ErrorOf("task { fmnist_resnet { image_size: 9 } }"),
            "job.textproto: task.fmnist_resnet.image_size must be 8, 14 or 28, got 9");
  EXPECT_EQ(ErrorOf("task { fmnist_resnet { channels: 8 channels: 0 } }"),
            "job.textproto: task.fmnist_resnet.channels[1] must be in [1, 4096], got 0");
  EXPECT_EQ(ErrorOf("task { fmnist_resnet { batch_size: 0 } }"),
            "job.textproto: task.fmnist_resnet.batch_size must be in [1, 60000], got 0");
  EXPECT_EQ(ErrorOf("task { fmnist_resnet { data_dir: \"\" } }"),
            "job.textproto: task.fmnist_resnet.data_dir must not be empty");
}

TEST(JobSpec, AugmentationIsForImageFamiliesWithinHalfTheImage) {
  auto job = JobFromText("task { fmnist_cnn { image_size: 14 } augmentation { enabled: true } }",
                         "aug");
  ASSERT_TRUE(job.ok()) << job.status();
  const auto& a = job->task().augmentation();
  EXPECT_TRUE(a.horizontal_flip());
  EXPECT_EQ(a.crop_padding(), 2);
  EXPECT_EQ(a.max_translation(), 0);
  EXPECT_TRUE(JobFromText("task { fmnist_mlp { image_size: 8 } augmentation { enabled: true "
                          "crop_padding: 4 max_translation: 4 } }", "aug").ok());
  EXPECT_EQ(ErrorOf("task { fmnist_mlp { image_size: 8 } augmentation { enabled: true "
                    "crop_padding: 5 } }"),
            "job.textproto: task.augmentation.crop_padding must be in [0, 4], got 5");
  EXPECT_EQ(ErrorOf("task { fmnist_resnet { image_size: 28 } augmentation { enabled: true "
                    "max_translation: -1 } }"),
            "job.textproto: task.augmentation.max_translation must be in [0, 14], got -1");
  std::string e = ErrorOf("task { noisy_quadratic {} augmentation { enabled: true } }");
  EXPECT_NE(e.find("task.augmentation applies to the image families"), std::string::npos) << e;
  e = ErrorOf("lhopt { tasks { task { byte_lm {} augmentation { enabled: true } } } }");
  EXPECT_NE(e.find("lhopt.tasks[0].task.augmentation applies to the image families"),
            std::string::npos) << e;
  // Switched off, it is ignored wherever it is.
  EXPECT_TRUE(JobFromText("task { noisy_quadratic {} augmentation { crop_padding: 99 } }", "off").ok());
}

TEST(JobSpec, MissingFileIsNotFound) {
  auto job = LoadJobFile("/nonexistent/job.textproto");
  EXPECT_EQ(job.status().code(), absl::StatusCode::kNotFound);
}

TEST(JobSpec, EveryStringMustBeValidUtf8) {
  // A byte that is not UTF-8, an overlong '/', a UTF-16 surrogate.
  EXPECT_EQ(ErrorOf("name: \"bad\\377name\""),
            "job.textproto: name is not valid UTF-8 (byte 0xff at offset 3)");
  EXPECT_EQ(ErrorOf("name: \"x\" task { fmnist_mlp { data_dir: \"/a\\300\\257\" } }"),
            "job.textproto: task.fmnist_mlp.data_dir is not valid UTF-8 (byte 0xc0 at offset 2)");
  EXPECT_EQ(ErrorOf("name: \"x\\355\\240\\200\""),
            "job.textproto: name is not valid UTF-8 (byte 0xed at offset 1)");
  EXPECT_EQ(ErrorOf(std::string("name: \"") + std::string(300, 'n') + "\""),
            "job.textproto: name must be at most 256 bytes, got 300");
  // Valid multi-byte UTF-8 passes.
  auto job = JobFromText("name: \"Gr\\303\\266\\303\\237e \\360\\237\\232\\200\"", "job");
  EXPECT_TRUE(job.ok()) << job.status();
}

TEST(JobSpec, DataPathsMustBeRegularFilesOrDirectories) {
  EXPECT_EQ(ErrorOf("name: \"x\" task { byte_lm { data_path: \"/dev/zero\" } }"),
            "job.textproto: task.byte_lm.data_path must be a regular file or a directory of "
            "them, got /dev/zero: a character device");
  EXPECT_EQ(ErrorOf("name: \"x\" task { fmnist_mlp { data_dir: \"/dev/null\" } }"),
            "job.textproto: task.fmnist_mlp.data_dir must be a regular file or a directory of "
            "them, got /dev/null: a character device");
  // Paths this host does not have may be the workers': checked at load.
  EXPECT_TRUE(JobFromText("name: \"x\" task { byte_lm { data_path: \"/no/such/corpus\" } }", "j").ok());
  EXPECT_EQ(CheckDataFile("/dev/zero").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CheckDataFile("/no/such/file").code(), absl::StatusCode::kNotFound);
}

// Found by the soak test: job text that is not UTF-8 (a Latin-1 comment)
// passed validate, and submit got INTERNAL with no message (gRPC cannot parse
// a proto3 string that is not UTF-8). The parser now says where it is.
TEST(JobSpec, JobTextMustBeUtf8AndTheErrorSaysWhere) {
  EXPECT_EQ(ErrorOf("# caf\xe9\nname: \"x\""),
            "job.textproto:1:6: the job text is not valid UTF-8 (byte 0xe9)");
  EXPECT_EQ(ErrorOf("name: \"x\"\n\n  # \xff\xfe"),
            "job.textproto:3:5: the job text is not valid UTF-8 (byte 0xff)");
  EXPECT_TRUE(CheckJobTextUtf8("# caf\xc3\xa9\n", "j").ok());
}

// Found by tests/fuzz/fuzz_job_spec (its seed tests/data/resnet_eval_job.textproto):
// the estimate had no case for fmnist_resnet, so a ResNet unit counted 0 bytes
// and passed the door at any size.
TEST(JobSpec, EveryTaskFamilyHasAUnitEstimateAndAHugeResnetIsRefused) {
  const auto* family = v1::TaskSpec::descriptor()->FindOneofByName("family");
  ASSERT_NE(family, nullptr);
  for (int i = 0; i < family->field_count(); ++i) {
    v1::JobSpec job;
    job.mutable_task()->GetReflection()->MutableMessage(job.mutable_task(), family->field(i));
    FillJobDefaults(&job);
    EXPECT_GT(EstimateUnitBytes(job), 0) << family->field(i)->name();
  }
  auto smoke = JobFromText(
      "name: \"r\" task { fmnist_resnet { image_size: 8 channels: 4 channels: 8 batch_size: 16 } }",
      "j");
  ASSERT_TRUE(smoke.ok()) << smoke.status();
  EXPECT_LT(EstimateUnitBytes(*smoke), kMaxUnitBytes);
  const std::string e = ErrorOf(
      "name: \"x\" task { fmnist_resnet { image_size: 28 channels: 4096 channels: 4096 "
      "batch_size: 60000 } } pes { num_tasks: 64 }");
  EXPECT_NE(e.find("one work unit of this job would need about "), std::string::npos) << e;
  EXPECT_NE(e.find("task.fmnist_resnet.{image_size, channels, batch_size}"), std::string::npos) << e;
}

TEST(JobSpec, AUnitsEstimateCoversItsTaskDistributionAndAdmissionComparesItWithTheWorker) {
  auto base = JobFromText("name: \"x\" task { fmnist_mlp { hidden_sizes: 128 } } pes { num_tasks: 4 }", "j");
  ASSERT_TRUE(base.ok()) << base.status();
  // ELO over a distribution: any PES task may draw its widest member.
  auto mixed = *base;
  auto* wide = mixed.mutable_elo()->add_tasks();
  wide->mutable_task()->mutable_fmnist_mlp()->add_hidden_sizes(2048);
  wide->set_weight(1);
  const int64_t b = EstimateUnitBytes(*base), m = EstimateUnitBytes(mixed);
  EXPECT_GT(m, 8 * b) << b << " " << m;
  EXPECT_EQ(UnitParticles(mixed), 8);
  EXPECT_EQ(WhyWorkerCannotHold(0, 0, mixed), "");  // reports nothing: trusted
  EXPECT_EQ(WhyWorkerCannotHold(m, 0, mixed), "");
  EXPECT_NE(WhyWorkerCannotHold(m - 1, 0, mixed).find("a unit needs about"), std::string::npos);
  EXPECT_EQ(WhyWorkerCannotHold(m - 1, 0, *base), "");
  EXPECT_EQ(WhyWorkerCannotHold(m - 1, 7, *base),
            "a unit has 8 particles, the worker takes at most 7 (--max-particles)");
}

TEST(JobSpec, AUnitThatNoWorkerCanHoldIsRefusedWithItsEstimate) {
  // Each field within its own range; their product is not (issue 12).
  const std::string e = ErrorOf(
      "name: \"x\" task { fmnist_mlp { hidden_sizes: 4096 } } pes { num_tasks: 4096 }");
  EXPECT_NE(e.find("one work unit of this job would need about "), std::string::npos) << e;
  EXPECT_NE(e.find("GiB of memory, more than the 8.0 GiB a worker is allowed"), std::string::npos) << e;
  EXPECT_NE(e.find("pes.num_tasks"), std::string::npos) << e;
  EXPECT_NE(e.find("task.fmnist_mlp.{image_size, hidden_sizes, batch_size}"), std::string::npos) << e;
  // The same widths with few tasks fit; the estimate grows with the tasks.
  auto small = JobFromText("name: \"x\" task { fmnist_mlp { hidden_sizes: 4096 } } pes { num_tasks: 4 }", "j");
  ASSERT_TRUE(small.ok()) << small.status();
  auto bigger = *small;
  bigger.mutable_pes()->set_num_tasks(40);
  EXPECT_NEAR(double(EstimateUnitBytes(bigger)) / double(EstimateUnitBytes(*small)), 10.0, 1e-6);
  EXPECT_LT(EstimateUnitBytes(*small), kMaxUnitBytes);
  // LHOPT: particles x the largest task of the mixture.
  EXPECT_NE(ErrorOf("name: \"x\" lhopt { tasks { task { byte_lm { model_dim: 4096 num_heads: 1 "
                    "context_length: 4096 } } weight: 1 } particles: 64 episodes_per_iteration: 64 }")
                .find("lhopt.particles, lhopt.tasks[0].task.byte_lm"),
            std::string::npos);
}

TEST(JobSpec, EveryShippedJobFileIsWithinTheLimits) {
  const char* src = std::getenv("LOPT_SOURCE_DIR");
  if (!src) GTEST_SKIP() << "LOPT_SOURCE_DIR not set (ctest sets it)";
  // Every job file the tree ships, by folder, so that a new one is checked too.
  std::vector<std::string> files = {"common/spec/default_job.textproto", "tests/data/smoke_job.textproto"};
  for (const char* dir : {"deploy/jobs", "examples", "models", "bench/elo/jobs", "bench/lhopt",
                          "bench/neumf"}) {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(std::string(src) + "/" + dir, ec)) {
      const std::string name = e.path().filename().string();
      if (e.is_regular_file() && name.size() > 10 &&
          name.compare(name.size() - 10, 10, ".textproto") == 0)
        files.push_back(std::string(dir) + "/" + name);
    }
  }
  EXPECT_GT(files.size(), 20u);
  for (const auto& f : files) {
    auto job = LoadJobFile(std::string(src) + "/" + f);
    EXPECT_TRUE(job.ok()) << f << ": " << job.status();
  }
}

}  // namespace
}  // namespace lopt
