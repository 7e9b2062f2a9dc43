#include "cli/inspect_compare.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "cli/exit_code.h"
#include "common/elo/evaluation.h"
#include "common/elo/optimizer_file.h"
#include "common/spec/job_spec.h"
#include "common/util/checkpoint.h"
#include "common/util/flags.h"
#include "common/util/run_files.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/json_util.h"
#include "learner/lhopt_job.h"
#include "lopt/v1/optimizer_file.pb.h"

namespace lopt {
namespace {

constexpr char kInspectUsage[] = R"(usage: lopt inspect FILE [--job]
  Prints what a trained file holds: a learned optimizer (.lopt: architecture,
  theta's layers, options) or an LHOPT controller (.lhopt: the policy's
  sizes), and its provenance (the job that trained it, the outer step or PPO
  iteration, the meta-loss or mean reward, when and with which lopt).
  --job prints only the job that trained it, as a text proto that
  `lopt train --job` and `lopt validate` read.
)";

constexpr char kCompareUsage[] = R"(usage: lopt compare RUN... [--names A,B,...] [--out DIR]
  Puts the meta-test reports of several runs side by side. RUN is a run
  directory (`lopt train --out RUN` wrote RUN/eval/report.json), an eval
  directory (`lopt eval --out RUN`) or a report.json. Prints a table (every
  learned optimizer of each report and its best AdamW of the grid: final
  train loss, test loss and accuracy, mean +- std over seeds) and writes
  DIR/compare.txt and DIR/compare.png (each run's trained optimizer and its
  best AdamW over inner steps). DIR defaults to runs/compare.
)";

int Fail(const absl::Status& s) { return FailCommand("lopt", s); }

// "job: name, task fmnist_mlp { ... }" on one line.
std::string OneLine(const google::protobuf::Message& m) {
  google::protobuf::TextFormat::Printer p;
  p.SetSingleLineMode(true);
  std::string out;
  p.PrintToString(m, &out);
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

// Every field of `m` with its value, set or default, "name: value" a line.
std::string AllFields(const google::protobuf::Message& m, const std::string& indent) {
  const auto* d = m.GetDescriptor();
  const auto* r = m.GetReflection();
  std::string out;
  for (int i = 0; i < d->field_count(); ++i) {
    const auto* f = d->field(i);
    if (f->is_repeated() || f->cpp_type() == google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE)
      continue;
    std::string v;
    google::protobuf::TextFormat::PrintFieldValueToString(m, f, -1, &v);
    absl::StrAppend(&out, indent, f->name(), ": ", v, r->HasField(m, f) ? "" : "  (default)",
                    "\n");
  }
  return out;
}

std::string JobText(const v1::JobSpec& job) {
  std::string text;
  google::protobuf::TextFormat::PrintToString(job, &text);
  return text;
}

std::string Indent(const std::string& text, const std::string& indent) {
  std::string out;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty()))
    absl::StrAppend(&out, indent, line, "\n");
  return out;
}

std::string Provenance(const v1::JobSpec& job, const std::string& step_name, int64_t step,
                       int64_t total, const std::string& loss_name, double loss,
                       const std::string& created_at, const std::string& version) {
  std::string out = "provenance:\n";
  absl::StrAppend(&out, "  job: ", job.name(), " (seed ", job.seed(), ")\n");
  absl::StrAppend(&out, "  task: ", OneLine(job.task()), "\n");
  absl::StrAppend(&out, "  ", step_name, ": ", step, " of ", total, "\n");
  absl::StrAppend(&out, "  ", loss_name, ": ", absl::StrFormat("%.6g", loss), "\n");
  absl::StrAppend(&out, "  created: ", created_at.empty() ? "?" : created_at, " by lopt ",
                  version.empty() ? "?" : version, "\n");
  return out;
}

std::string DescribeOptimizer(const std::string& path, const TrainedOptimizer& t) {
  const auto& f = t.file;
  const int64_t H = f.options().hidden_size();
  std::string out = absl::StrCat(path, ": learned optimizer (lopt.v1.OptimizerFile, format ",
                                 f.format_version(), ")\n");
  absl::StrAppend(&out, "architecture: ", f.architecture(), ", a per-parameter MLP 39 -> ", H,
                  " -> ", H, " -> 2 (update direction and magnitude)\n");
  torch::Tensor th = t.theta;
  absl::StrAppend(&out, absl::StrFormat("theta: %d values, L2 norm %.4g, max |x| %.4g\n",
                                        th.numel(), th.norm().item<double>(),
                                        th.abs().max().item<double>()));
  // The layers, in the file's order (proto/lopt/v1/optimizer_file.proto).
  const std::vector<std::pair<std::string, std::vector<int64_t>>> layers = {
      {"w0", {39, H}}, {"b0", {H}}, {"w1", {H, H}}, {"b1", {H}}, {"w2", {H, 2}}, {"b2", {2}}};
  int64_t at = 0;
  for (const auto& [name, shape] : layers) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    torch::Tensor part = th.narrow(0, at, n);
    absl::StrAppend(&out, absl::StrFormat("  %-3s [%s]  norm %.4g\n", name,
                                          absl::StrJoin(shape, ", "), part.norm().item<double>()));
    at += n;
  }
  absl::StrAppend(&out, "options:\n", AllFields(f.options(), "  "));
  absl::StrAppend(&out, Provenance(f.job(), "outer step", f.outer_step(),
                                   f.job().budget().outer_steps(), "meta-loss", f.meta_loss(),
                                   f.created_at(), f.lopt_version()));
  absl::StrAppend(&out, "  meta-training horizon: ", MetaTrainingHorizon(f.job()),
                  " inner steps (pes.max_unroll_length)\n");
  absl::StrAppend(&out, "job (lopt inspect --job ", path, " prints it alone):\n",
                  Indent(JobText(f.job()), "  "));
  return out;
}

std::string DescribeController(const std::string& path, const v1::LhoptControllerFile& f) {
  std::string out = absl::StrCat(path, ": LHOPT controller (lopt.v1.LhoptControllerFile, format ",
                                 f.format_version(), ")\n");
  absl::StrAppend(&out, "architecture: ", f.architecture(), ", an LSTM policy: ", f.input_size(),
                  " features -> LSTM(", f.hidden_size(), ") -> action heads [",
                  absl::StrJoin(f.head_sizes(), ", "), "], value head (+", f.value_extra_size(),
                  " inputs)\n");
  auto weights = DeserializeTensors(f.weights());
  if (weights.ok()) {
    int64_t policy = 0, normalizer = 0;
    for (const auto& [k, v] : *weights)
      (k.rfind("policy/", 0) == 0 ? policy : normalizer) += v.numel();
    absl::StrAppend(&out, "weights: ", policy, " policy values, ", normalizer,
                    " input-normaliser values\n");
  } else {
    absl::StrAppend(&out, "weights: unreadable (", weights.status().message(), ")\n");
  }
  absl::StrAppend(&out, Provenance(f.job(), "PPO iteration", f.iteration(),
                                   f.job().lhopt().iterations(), "mean episode reward",
                                   f.mean_reward(), f.created_at(), f.lopt_version()));
  absl::StrAppend(&out, "job (lopt inspect --job ", path, " prints it alone):\n",
                  Indent(JobText(f.job()), "  "));
  return out;
}

// ---- compare ---------------------------------------------------------------

struct Arm {
  std::string label;  // "lopt", "adamw lr=0.001"
  bool adamw = false;
  std::vector<double> train, test, acc;  // over seeds
  std::vector<double> hr, ndcg;  // ranking families (neumf) only
  std::vector<double> cer;       // transcription families (speech_ctc) only
};

struct Report {
  std::string name, dir, task;
  int64_t steps = 0;
  std::vector<Arm> arms;
  const Arm* best_adamw = nullptr;
};

std::pair<double, double> MeanStd(const std::vector<double>& v) {
  if (v.empty()) return {NAN, NAN};
  double m = 0, sq = 0;
  for (double x : v) m += x;
  m /= v.size();
  for (double x : v) sq += (x - m) * (x - m);
  return {m, v.size() > 1 ? std::sqrt(sq / (v.size() - 1)) : 0.0};
}

double Num(const google::protobuf::Value& v) {
  return v.kind_case() == google::protobuf::Value::kNumberValue ? v.number_value() : NAN;
}

absl::StatusOr<Report> LoadReport(const std::string& run) {
  std::string path = run;
  if (FileExists(run + "/eval/report.json")) path = run + "/eval/report.json";
  else if (FileExists(run + "/report.json")) path = run + "/report.json";
  else if (!FileExists(run))
    return absl::NotFoundError(absl::StrCat(run, ": no such run (", std::strerror(ENOENT), ")"));
  else if (FileExists(run + "/."))
    return absl::NotFoundError(absl::StrCat(
        run, " holds no eval/report.json or report.json: run `lopt eval --optimizer ", run,
        "/optimizer.lopt --out ", run, "/eval` first"));
  auto text = ReadFile(path);
  if (!text.ok()) return text.status();
  google::protobuf::Struct json;
  if (auto s = google::protobuf::util::JsonStringToMessage(*text, &json); !s.ok())
    return absl::DataLossError(absl::StrCat(path, " is not a meta-test report: ", s.ToString()));
  const auto& fields = json.fields();
  if (!fields.count("runs") || !fields.count("task"))
    return absl::DataLossError(absl::StrCat(path, " is not a meta-test report (no task or runs)"));
  Report r;
  r.dir = path.substr(0, path.rfind('/') == std::string::npos ? 0 : path.rfind('/'));
  r.task = fields.at("task").string_value();
  r.steps = int64_t(Num(fields.at("steps")));
  std::map<std::string, size_t> index;
  for (const auto& v : fields.at("runs").list_value().values()) {
    const auto& f = v.struct_value().fields();
    if (!f.count("optimizer")) continue;
    const std::string opt = f.at("optimizer").string_value();
    // AdamW's arms (constant, and cosine where the meta-test ran it): the
    // best of them all is the one compared.
    const bool adamw = IsAdamWArm(opt);
    const std::string label =
        adamw ? absl::StrFormat("%s lr=%g", opt, Num(f.at("lr"))) : opt;
    auto [it, fresh] = index.emplace(label, r.arms.size());
    if (fresh) r.arms.push_back({label, adamw, {}, {}, {}, {}, {}});
    Arm& a = r.arms[it->second];
    a.train.push_back(f.count("final_train_loss") ? Num(f.at("final_train_loss")) : NAN);
    a.test.push_back(f.count("test_loss") ? Num(f.at("test_loss")) : NAN);
    a.acc.push_back(f.count("test_accuracy") ? Num(f.at("test_accuracy")) : NAN);
    if (f.count("test_hit_rate")) a.hr.push_back(Num(f.at("test_hit_rate")));
    if (f.count("test_ndcg")) a.ndcg.push_back(Num(f.at("test_ndcg")));
    if (f.count("test_cer")) a.cer.push_back(Num(f.at("test_cer")));
  }
  if (r.arms.empty()) return absl::DataLossError(absl::StrCat(path, " holds no runs"));
  return r;
}

// Mean training loss over seeds of one arm, by step, from <dir>/curves.csv.
std::map<int64_t, double> MeanCurve(const std::string& dir, const std::string& label) {
  std::map<int64_t, std::pair<double, int>> acc;
  auto text = ReadFile(dir + "/curves.csv");
  if (!text.ok()) return {};
  bool header = true;
  for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
    if (header) {
      header = false;
      continue;
    }
    std::vector<std::string> c = absl::StrSplit(line, ',');
    if (c.size() < 5) continue;
    const std::string l = IsAdamWArm(c[0])
                              ? absl::StrFormat("%s lr=%g", c[0], std::atof(c[1].c_str()))
                              : c[0];
    if (l != label) continue;
    double v = std::atof(c[4].c_str());
    if (!std::isfinite(v)) continue;
    auto& [sum, n] = acc[std::atoll(c[3].c_str())];
    sum += v;
    ++n;
  }
  std::map<int64_t, double> out;
  for (const auto& [step, sn] : acc) out[step] = sn.first / sn.second;
  return out;
}

}  // namespace

int RunInspectCommand(int argc, char** argv) {
  auto f = ParseFlags(argc, argv, 2, {}, {"job", "help"});
  if (!f.ok()) return Fail(f.status());
  if (f->Has("help")) return std::printf("%s", kInspectUsage), 0;
  if (f->positional.size() != 1)
    return Fail(absl::InvalidArgumentError(absl::StrCat("lopt inspect takes one FILE\n", kInspectUsage)));
  const std::string path = f->positional[0];
  auto bytes = ReadFile(path);
  if (!bytes.ok()) return Fail(bytes.status());
  // Both formats start with format_version (1) and architecture (2).
  v1::OptimizerFile probe;
  std::string arch;
  if (probe.ParseFromString(*bytes) && probe.has_format_version()) arch = probe.architecture();
  if (arch == kSmallFcLoptArchitecture) {
    auto t = LoadOptimizerFile(path);
    if (!t.ok()) return Fail(t.status());
    if (f->Has("job")) return std::printf("%s", JobText(t->file.job()).c_str()), 0;
    std::printf("%s", DescribeOptimizer(path, *t).c_str());
    return 0;
  }
  if (arch == kLhoptArchitecture) {
    v1::LhoptControllerFile c;
    if (!c.ParseFromString(*bytes))
      return Fail(absl::DataLossError(absl::StrCat(path, " is a damaged LHOPT controller file")));
    if (f->Has("job")) return std::printf("%s", JobText(c.job()).c_str()), 0;
    std::printf("%s", DescribeController(path, c).c_str());
    return 0;
  }
  return Fail(absl::DataLossError(absl::StrCat(
      path, " is neither a learned optimizer (.lopt) nor an LHOPT controller (.lhopt)",
      arch.empty() ? "" : absl::StrCat(": unknown architecture '", arch, "'"))));
}

int RunCompareCommand(int argc, char** argv) {
  auto f = ParseFlags(argc, argv, 2, {"names", "out"}, {"help"});
  if (!f.ok()) return Fail(f.status());
  if (f->Has("help")) return std::printf("%s", kCompareUsage), 0;
  if (f->positional.empty())
    return Fail(absl::InvalidArgumentError(absl::StrCat("lopt compare needs at least one RUN\n",
                                                        kCompareUsage)));
  std::vector<std::string> names = f->positional;
  if (f->Has("names")) {
    names = std::vector<std::string>(absl::StrSplit(f->Get("names"), ','));
    if (names.size() != f->positional.size())
      return Fail(absl::InvalidArgumentError(absl::StrCat(
          "--names has ", names.size(), " labels for ", f->positional.size(), " runs")));
  }
  std::vector<Report> reports;
  for (size_t i = 0; i < f->positional.size(); ++i) {
    auto r = LoadReport(f->positional[i]);
    if (!r.ok()) return Fail(r.status());
    r->name = names[i];
    reports.push_back(std::move(*r));
    Report& back = reports.back();
    double best = INFINITY;
    for (const Arm& a : back.arms)
      if (a.adamw && std::isfinite(MeanStd(a.train).first) && MeanStd(a.train).first < best) {
        best = MeanStd(a.train).first;
        back.best_adamw = &a;
      }
  }
  const std::string out = f->Get("out", "runs/compare");
  if (auto s = MakeDirs(out); !s.ok()) return Fail(s);

  size_t w = 4;
  for (const auto& r : reports) w = std::max(w, r.name.size());
  std::string table;
  for (const auto& r : reports)
    absl::StrAppend(&table, absl::StrFormat("%-*s  %s, %d steps, %d seeds\n", int(w), r.name, r.task,
                                            r.steps, r.arms[0].train.size()));
  bool same_task = true;
  for (const auto& r : reports) same_task &= r.task == reports[0].task && r.steps == reports[0].steps;
  if (!same_task)
    absl::StrAppend(&table, "note: the runs were meta-tested on different tasks or budgets\n");
  // Ranking reports (neumf) add HR@10 and NDCG@10 columns.
  bool ranking = false;
  for (const auto& r : reports)
    for (const Arm& a : r.arms) ranking |= !a.hr.empty();
  // Transcription reports (speech_ctc) add a CER column.
  bool transcription = false;
  for (const auto& r : reports)
    for (const Arm& a : r.arms) transcription |= !a.cer.empty();
  absl::StrAppend(&table, "\n", absl::StrFormat("%-*s  %-22s %-22s %-22s %-16s%s%s\n", int(w), "run",
                                                "optimizer", "final train loss", "test loss",
                                                "test accuracy", ranking ? " HR@10    NDCG@10" : "",
                                                transcription ? " CER" : ""));
  for (const auto& r : reports) {
    std::vector<const Arm*> shown;
    for (const Arm& a : r.arms)
      if (!a.adamw) shown.push_back(&a);
    if (r.best_adamw) shown.push_back(r.best_adamw);
    for (const Arm* a : shown) {
      auto [tr, trs] = MeanStd(a->train);
      auto [te, tes] = MeanStd(a->test);
      auto [ac, acs] = MeanStd(a->acc);
      // No accuracy (a family without labels, e.g. neumf): a dash.
      const std::string acc = std::isfinite(ac) ? absl::StrFormat("%6.2f%% +- %.2f", 100 * ac, 100 * acs)
                                                : std::string("     -");
      absl::StrAppend(&table, absl::StrFormat("%-*s  %-22s %8.4f +- %-9.4f %8.4f +- %-9.4f %s",
                                              int(w), r.name,
                                              a == r.best_adamw ? a->label + " (best)" : a->label,
                                              tr, trs, te, tes,
                                              ranking || transcription ? absl::StrFormat("%-16s", acc) : acc));
      if (ranking && !a->hr.empty())
        absl::StrAppend(&table, absl::StrFormat(" %.4f   %.4f", MeanStd(a->hr).first,
                                                MeanStd(a->ndcg).first));
      if (transcription && !a->cer.empty())
        absl::StrAppend(&table, absl::StrFormat(" %.2f%%", 100 * MeanStd(a->cer).first));
      table += "\n";
    }
  }

  // One plot: each run's trained optimizer (solid) and its best AdamW
  // (dashed), in the run's colour.
  static const char* kColors[] = {"#0072b2", "#d55e00", "#009e73", "#cc79a7",
                                  "#e69f00", "#56b4e9", "#000000", "#f0e442"};
  std::string dat, gp = absl::StrCat(
      "set terminal pngcairo size 1100,700 noenhanced\nset output '", out, "/compare.png'\n",
      "set title 'meta-test: training loss, mean over seeds (solid: learned optimizer, dashed: "
      "best AdamW of its grid)'\nset xlabel 'inner step'\nset ylabel 'training loss'\n"
      "set logscale y\nset key outside right\nset grid\nset datafile missing 'NaN'\nplot ");
  int block = 0;
  for (size_t i = 0; i < reports.size(); ++i) {
    const Report& r = reports[i];
    std::vector<std::pair<std::string, const Arm*>> lines;
    for (const Arm& a : r.arms)
      if (a.label == "lopt") lines.push_back({"lopt", &a});
    if (r.best_adamw) lines.push_back({r.best_adamw->label, r.best_adamw});
    for (const auto& [label, arm] : lines) {
      auto curve = MeanCurve(r.dir, arm->label);
      if (curve.empty()) continue;
      for (const auto& [step, v] : curve) absl::StrAppend(&dat, step, " ", absl::StrFormat("%.6g", v), "\n");
      dat += "\n\n";
      absl::StrAppend(&gp, block ? ", " : "", "'", out, "/compare.dat' index ", block,
                      " using 1:2 with lines lw ", arm->adamw ? 2 : 3, " dt ", arm->adamw ? 2 : 1,
                      " lc rgb '", kColors[i % 8], "' title '", r.name, ": ", label, "'");
      ++block;
    }
  }
  bool plotted = false;
  if (block > 0 && WriteFileAtomically(out + "/compare.dat", dat).ok())
    plotted = RunGnuplot(out + "/compare.gp", gp + "\n");
  absl::StrAppend(&table, "wrote ", out, "/compare.txt",
                  plotted ? absl::StrCat(", ", out, "/compare.png") : " (no plot: gnuplot or curves.csv missing)",
                  "\n");
  if (auto s = WriteFileAtomically(out + "/compare.txt", table); !s.ok()) return Fail(s);
  std::printf("%s", table.c_str());
  return 0;
}

}  // namespace lopt
