// dlps-train: trains softmax regression or a small MLP on the job's parameter servers (docs/ps.md,
// "dlps-train"). Every worker runs it with the DLPS_* environment (the agents write it into the node environment);
// --local trains in this process alone.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <numeric>
#include <random>

#include <cblas.h>
#include <CLI/CLI.hpp>

#include "agent/ps/client.h"
#include "agent/ps/report.h"
#include "agent/ps/train/data.h"
#include "agent/ps/train/model.h"

namespace dlagent::ps::train {
namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  std::string model = "softmax";
  size_t hidden = 64;
  std::string data = "synthetic";
  size_t samples = 20000, features = 64, classes = 10;
  uint64_t seed = 1;
  int epochs = 5;
  size_t batch = 256;
  std::string optimizer = "sgd";
  float lr = 0.1f, momentum = 0.9f, weight_decay = 0;
  bool local = false, verify = false;
  double tolerance = 1e-5;
  std::string progress = "auto";
  std::string checkpoint, restore;
};

struct EpochTimes {
  double compute = 0, wait = 0;
  size_t rounds = 0;
};

double Seconds(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Where each update happens: on the servers, or in this process (--local and
// --verify).
class Updater {
 public:
  virtual ~Updater() = default;
  // Applies grads to m.params; returns the seconds spent waiting (0 locally).
  virtual Status Step(Model& m, std::vector<std::vector<float>>& grads) = 0;
};

class LocalUpdater final : public Updater {
 public:
  explicit LocalUpdater(const OptimizerConfig& c) : config_(c) {}
  Status Step(Model& m, std::vector<std::vector<float>>& grads) override {
    states_.resize(m.params.size());
    for (size_t i = 0; i < m.params.size(); ++i) {
      const float* g[] = {grads[i].data()};
      ApplyUpdate(config_, m.params[i].data(), m.params[i].data(), g, m.params[i].size(), &states_[i]);
    }
    return Status::Ok();
  }

 private:
  OptimizerConfig config_;
  std::vector<OptimizerState> states_;
};

class ServerUpdater final : public Updater {
 public:
  explicit ServerUpdater(PsClient& c) : client_(c) {}
  Status Step(Model& m, std::vector<std::vector<float>>& grads) override {
    std::vector<Ticket> tickets;
    for (size_t i = 0; i < m.params.size(); ++i) {
      tickets.push_back(client_.PushPull(i, grads[i].data(), m.params[i].data(), m.params[i].size()));
    }
    Status first;
    for (Ticket t : tickets) {
      Status st = client_.Wait(t);
      if (first.ok() && !st.ok()) first = st;
    }
    return first;
  }

 private:
  PsClient& client_;
};

// The rows of global batch b that this worker trains on: [begin, end) of `order`.
std::pair<size_t, size_t> MyRows(size_t batch_begin, size_t batch_rows, uint32_t rank, uint32_t workers) {
  return {batch_begin + batch_rows * rank / workers, batch_begin + batch_rows * (rank + 1) / workers};
}

class Progress {
 public:
  Progress(bool on, size_t total) : on_(on), total_(total) {}
  void Update(size_t done, double loss) {
    if (!on_ || (done != total_ && done % std::max<size_t>(1, total_ / 50) != 0)) return;
    const int width = 30, filled = static_cast<int>(width * done / total_);
    std::fprintf(stderr, "\r  [%s%s] %3zu%%  loss %.4f", std::string(filled, '=').c_str(), std::string(width - filled, ' ').c_str(),
                 100 * done / total_, loss);
    if (done == total_) std::fprintf(stderr, "\r%*s\r", width + 30, "");
    std::fflush(stderr);
  }

 private:
  bool on_;
  size_t total_;
};

void Report(const Options& o, const Dataset& d, const Model& m, int epoch, double took, const EpochTimes& times, PsClient* client,
            uint64_t server_micros0, Workspace* ws);

// Trains for the options' epochs on the shares [first, last) of `workers` (a worker: its own; --verify's
// reference: all of them, summed in rank order as the servers sum them, so that a correct job matches it to the
// bit); rank 0 (or the only process) prints each epoch's figures when `report`.
Status Train(const Options& o, const Dataset& d, Model& m, Updater& updater, uint32_t first, uint32_t last, uint32_t workers, bool report,
             PsClient* client) {
  std::vector<size_t> order(d.rows());
  std::iota(order.begin(), order.end(), 0);
  std::vector<float> xb(o.batch * d.features);
  std::vector<int32_t> yb(o.batch);
  std::vector<std::vector<float>> grads, part;
  Workspace ws;
  const size_t steps = (d.rows() + o.batch - 1) / o.batch;
  const bool bar = report && (o.progress == "always" || (o.progress == "auto" && isatty(STDERR_FILENO)));
  const ps::TrainingReporter reporter;
  // At most 10 reports a second (and the last step of each epoch): a step can take well under a millisecond,
  // and each report wakes the agent.
  Clock::time_point last_report{};
  for (int epoch = 1; epoch <= o.epochs; ++epoch) {
    std::shuffle(order.begin(), order.end(),
                 std::mt19937_64(o.seed * 1000003 + epoch));  // the same on every worker
    Progress progress(bar, steps);
    EpochTimes times;
    const uint64_t server_micros0 = client ? client->ServerUpdateMicros() : 0;
    const auto t0 = Clock::now();
    double running_loss = 0;
    size_t running_rows = 0;
    for (size_t step = 0; step < steps; ++step) {
      const size_t begin = step * o.batch, rows = std::min(o.batch, d.rows() - begin);
      const auto c0 = Clock::now();
      for (uint32_t r = first; r < last; ++r) {
        const auto [lo, hi] = MyRows(begin, rows, r, workers);
        for (size_t i = lo; i < hi; ++i) {
          std::copy_n(&d.x[order[i] * d.features], d.features, &xb[(i - lo) * d.features]);
          yb[i - lo] = d.y[order[i]];
        }
        auto& g = r == first ? grads : part;
        if (hi > lo) {
          const BatchStats s = Backprop(m, xb.data(), yb.data(), hi - lo, 1.0f / static_cast<float>(rows), &g, &ws);
          running_loss += s.loss;
          running_rows += hi - lo;
        } else {  // more workers than rows in this batch: zeros (the round still needs every worker)
          g.resize(m.params.size());
          for (size_t i = 0; i < m.params.size(); ++i) g[i].assign(m.params[i].size(), 0.0f);
        }
        if (r == first) continue;
        for (size_t i = 0; i < grads.size(); ++i) {
          for (size_t j = 0; j < grads[i].size(); ++j) grads[i][j] += part[i][j];
        }
      }
      const auto w0 = Clock::now();
      times.compute += std::chrono::duration<double>(w0 - c0).count();
      RETURN_IF_ERROR(updater.Step(m, grads).Annotate("epoch " + std::to_string(epoch) + " step " + std::to_string(step + 1)));
      times.wait += Seconds(w0);
      ++times.rounds;
      progress.Update(step + 1, running_rows ? running_loss / static_cast<double>(running_rows) : 0);
      if (report && reporter.enabled() && (step + 1 == steps || Clock::now() - last_report >= std::chrono::milliseconds(100))) {
        // rank 0 tells its agent (DLAGENT_METRICS_SOCKET): agentctl jobs, /metrics
        last_report = Clock::now();
        const double rate = static_cast<double>(std::min(d.rows(), begin + rows)) / std::max(Seconds(t0), 1e-9);
        reporter.Report(
            static_cast<uint64_t>(epoch - 1) * steps + step + 1,
            {{"loss", running_rows ? running_loss / static_cast<double>(running_rows) : 0}, {"samples_per_second", rate}, {"epoch", epoch}});
      }
    }
    const double took = Seconds(t0);
    if (report) Report(o, d, m, epoch, took, times, client, server_micros0, &ws);
    if (client && !o.checkpoint.empty()) {
      // Every worker between steps, then one writes: every slice is at the same version.
      const std::string name = o.checkpoint + "-epoch" + std::to_string(epoch);
      RETURN_IF_ERROR(client->Barrier());
      if (first == 0) RETURN_IF_ERROR(client->Checkpoint(name));
      RETURN_IF_ERROR(client->Barrier());
      if (report) {
        std::printf("checkpoint %s written\n", name.c_str());
        std::fflush(stdout);
      }
    }
  }
  return Status::Ok();
}

void Report(const Options& o, const Dataset& d, const Model& m, int epoch, double took, const EpochTimes& times, PsClient* client,
            uint64_t server_micros0, Workspace* ws) {
  {
    const BatchStats all = Evaluate(m, d.x.data(), d.y.data(), d.rows(), ws);
    const double ms = 1e3 / static_cast<double>(times.rounds);
    std::printf("epoch %d/%d: loss %.4f  accuracy %.4f  | %.3f s, %.0f samples/s | per round: compute %.2f ms, ", epoch, o.epochs,
                all.loss / static_cast<double>(d.rows()), static_cast<double>(all.correct) / static_cast<double>(d.rows()), took,
                static_cast<double>(d.rows()) / took, times.compute * ms);
    if (client) {
      const double server = static_cast<double>(client->ServerUpdateMicros() - server_micros0) / 1e3 / static_cast<double>(times.rounds);
      std::printf(
          "push+pull %.2f ms (servers' sum+optimizer %.2f ms, network "
          "and waiting the rest)\n",
          times.wait * ms, server);
    } else {
      std::printf("optimizer %.2f ms\n", times.wait * ms);
    }
    std::fflush(stdout);
  }
}

// ||a - b||_inf / ||b||_inf over all parameters.
double LargestRelativeDifference(const Model& a, const Model& b) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.params.size(); ++i) {
    for (size_t j = 0; j < a.params[i].size(); ++j) {
      diff = std::max(diff, static_cast<double>(std::fabs(a.params[i][j] - b.params[i][j])));
      scale = std::max(scale, static_cast<double>(std::fabs(b.params[i][j])));
    }
  }
  return scale > 0 ? diff / scale : diff;
}

int Run(const Options& o) {
  openblas_set_num_threads(1);  // workers share the machine's cores; one BLAS thread each
  OptimizerConfig opt;
  opt.kind = o.optimizer == "adam" ? OptimizerConfig::Kind::kAdam : OptimizerConfig::Kind::kSgd;
  opt.learning_rate = o.lr;
  opt.momentum = opt.kind == OptimizerConfig::Kind::kSgd ? o.momentum : 0;
  opt.weight_decay = o.weight_decay;

  Dataset d;
  if (o.data == "synthetic") {
    d = Synthetic(o.seed, o.samples, o.features, o.classes);
  } else {
    Result<Dataset> loaded = LoadLibsvm(o.data);
    if (!loaded.ok()) {
      std::cerr << "dlps-train: " << loaded.status().ToString() << "\n";
      return 2;
    }
    d = std::move(*loaded);
  }
  const ModelKind kind = o.model == "mlp" ? ModelKind::kMlp : ModelKind::kSoftmax;
  const Model initial = Model::Create(kind, d.features, o.hidden, d.classes, o.seed);
  Model m = initial;

  std::unique_ptr<PsClient> client;
  uint32_t rank = 0, workers = 1;
  if (!o.local) {
    Result<PsClientOptions> env = PsClientOptions::FromEnv();
    if (!env.ok()) {
      std::cerr << "dlps-train: " << env.status().ToString()
                << " (start it on every node with agentctl run --launcher dlps, source /etc/dlagent/cluster.env on a cluster node, "
                   "set DLPS_SERVERS, DLPS_NUM_WORKERS and DLPS_RANK, or pass --local)\n";
      return 2;
    }
    auto c = PsClient::Connect(*env);
    if (!c.ok()) {
      std::cerr << "dlps-train: " << c.status().ToString() << "\n";
      return 1;
    }
    client = std::move(*c);
    rank = env->rank;
    workers = env->num_workers;
    for (size_t i = 0; i < m.params.size(); ++i) {
      if (Status st = client->Init(i, m.params[i].size(), m.params[i].data(), opt); !st.ok()) {
        std::cerr << "dlps-train: rank " << rank << ": " << st.ToString() << "\n";
        return 1;
      }
    }
  }
  if (client && !o.restore.empty()) {
    Status st = rank == 0 ? client->Restore(o.restore) : Status::Ok();
    if (st.ok()) st = client->Barrier();
    for (size_t i = 0; st.ok() && i < m.params.size(); ++i) st = client->Wait(client->Pull(i, m.params[i].data(), m.params[i].size()));
    if (!st.ok()) {
      std::cerr << "dlps-train: rank " << rank << ": restore " << o.restore << ": " << st.ToString() << "\n";
      return 1;
    }
  }
  const bool report = rank == 0;
  if (report && !o.restore.empty()) std::printf("restored from checkpoint %s\n", o.restore.c_str());
  if (report) {
    std::printf(
        "dlps-train: %s on %zu samples x %zu features, %zu classes; "
        "%s; %u worker%s, global batch %zu, %s lr %g\n",
        o.model.c_str(), d.rows(), d.features, d.classes,
        o.data == "synthetic" ? ("synthetic seed " + std::to_string(o.seed)).c_str() : o.data.c_str(), workers, workers == 1 ? "" : "s", o.batch,
        o.optimizer.c_str(), o.lr);
    std::fflush(stdout);
  }
  std::unique_ptr<Updater> updater;
  if (client) {
    updater = std::make_unique<ServerUpdater>(*client);
  } else {
    updater = std::make_unique<LocalUpdater>(opt);
  }
  if (Status st = Train(o, d, m, *updater, rank, rank + 1, workers, report, client.get()); !st.ok()) {
    std::cerr << "dlps-train: rank " << rank << ": " << st.ToString() << "\n";
    return 1;
  }
  if (client) {
    if (Status st = client->Barrier(); !st.ok()) {  // no worker leaves while another still needs the servers
      std::cerr << "dlps-train: rank " << rank << ": final barrier: " << st.ToString() << "\n";
      return 1;
    }
  }
  if (o.verify && report) {
    Model single = initial;
    LocalUpdater reference(opt);
    (void)Train(o, d, single, reference, 0, workers, workers, /*report=*/false, nullptr);
    const double diff = LargestRelativeDifference(m, single);
    const bool ok = diff <= o.tolerance;
    std::printf(
        "verify: the largest relative difference from training in one process (the %u workers' shares summed in rank order, as the "
        "servers sum them) is %.3g (max |a-b| / max |b| over all weights; tolerance %g): %s\n",
        workers, diff, o.tolerance, ok ? "ok" : "FAILED");
    if (!ok) return 3;
  }
  return 0;
}

}  // namespace
}  // namespace dlagent::ps::train

int main(int argc, char** argv) {
  dlagent::ps::train::Options o;
  CLI::App app{
      "dlps-train: train softmax regression or a small MLP with the "
      "job's parameter servers.\n"
      "Each worker runs it with DLPS_SERVERS, DLPS_RANK and "
      "DLPS_NUM_WORKERS set: agentctl run --launcher dlps [--per-node K] -- dlps-train ... starts it on every node with them\n"
      "(a cluster node's /etc/dlagent/cluster.env has them for one worker a node);\n"
      "each takes its share of every global batch. --local trains in "
      "this process without servers."};
  app.add_option("--model", o.model, "softmax or mlp")->check(CLI::IsMember({"softmax", "mlp"}))->capture_default_str();
  app.add_option("--hidden", o.hidden, "Hidden units of the MLP")->check(CLI::Range(1, 1 << 16))->capture_default_str();
  app.add_option("--data", o.data, "synthetic, or a LIBSVM file (every worker reads it; shared storage)")->capture_default_str();
  app.add_option("--samples", o.samples, "Synthetic: samples")->check(CLI::Range(1, 1 << 26))->capture_default_str();
  app.add_option("--features", o.features, "Synthetic: features")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  app.add_option("--classes", o.classes, "Synthetic: classes")->check(CLI::Range(2, 1 << 16))->capture_default_str();
  app.add_option("--seed", o.seed, "Seed of the synthetic data, the initial weights and the shuffles")->capture_default_str();
  app.add_option("--epochs", o.epochs, "Passes over the data")->check(CLI::Range(1, 100000))->capture_default_str();
  app.add_option("--batch", o.batch, "Global batch (split over the workers)")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  app.add_option("--optimizer", o.optimizer, "sgd (with --momentum) or adam; run by the servers")
      ->check(CLI::IsMember({"sgd", "adam"}))
      ->capture_default_str();
  app.add_option("--lr", o.lr, "Learning rate")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--momentum", o.momentum, "SGD momentum")->check(CLI::Range(0.0, 0.999))->capture_default_str();
  app.add_option("--weight-decay", o.weight_decay, "Weight decay")->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_flag("--local", o.local, "Train in this process, without parameter servers");
  app.add_flag("--verify", o.verify,
               "Rank 0 also trains the same model in one process and reports the "
               "largest relative difference "
               "of the final weights (exit 3 above --tolerance; sync mode matches)");
  app.add_option("--tolerance", o.tolerance, "--verify's limit")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--checkpoint", o.checkpoint,
                 "Checkpoint the servers after every epoch as NAME-epochE "
                 "(servers need --checkpoint-dir)");
  app.add_option("--restore", o.restore,
                 "Start from checkpoint NAME (a whole one; a partial or "
                 "corrupt one is refused)");
  app.add_option("--progress", o.progress, "Progress bar on stderr: auto (when a terminal), always, never")
      ->check(CLI::IsMember({"auto", "always", "never"}))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  return dlagent::ps::train::Run(o);
}
