#include "agent/daemon/agent_metrics.h"

#include <unistd.h>

#include <gtest/gtest.h>

#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"

namespace dlagent {
namespace {

// A dlps shard that served a job (the input points to it).
const ps::PsStats& BusyDlps() {
  static ps::PsStats* const p = [] {
    auto* s = new ps::PsStats;
    s->connections = 8, s->pushes = 100, s->pulls = 90, s->controls = 12, s->bytes_in = 4000, s->bytes_out = 3600, s->rounds = 50;
    s->apply.Observe(200), s->apply.Observe(30000000);  // 0.2 ms; 30 s, above every bound
    s->round.Observe(1500);
    s->refused_hello = 1, s->refused_push = 2;
    return s;
  }();
  return *p;
}

// An agent in the middle of things: formed, gossiping, coordinating jobs.
AgentMetricsInput Busy() {
  AgentMetricsInput in;
  in.status.version = "0.1.0 \"quoted\"";
  in.status.started_unix_ms = 1700000000123;
  in.status.rss_bytes = 30 << 20;
  in.status.heap_in_use_bytes = 5 << 20;
  in.status.config_generation = 3;
  in.status.phase = AgentPhase::kReady;
  in.status.phase_changes = 5;
  in.status.ready_after_ms = 12345;
  in.status.identity = {"i-0abc", "p4d.24xlarge", "10.0.1.17", "us-east-1", "us-east-1a", 8};
  ClusterSnapshot c;
  c.generation = 2;
  c.rank = 1;
  c.roster = {{0, "i-0aaa", "10.0.1.16", 8, true}, {1, "i-0abc", "10.0.1.17", 8, true}};
  c.dead = {"i-0aaa"};
  c.alive = 1;
  c.expected = 2;
  c.sqs_requests = 40;
  c.hellos_sent = 3;
  c.hellos_accepted = 2;
  c.hellos_refused = 1;
  in.status.cluster = c;
  in.members.enabled = true;
  in.members.members = {{"i-0aaa", "10.0.1.16:7946", "dead", "master", "us-east-1a", "0.1.0", 8, 4, 2, 10},
                        {"i-0abc", "10.0.1.17:7946", "alive", "worker", "us-east-1a", "0.1.0", 8, 1, 1, 10}};
  in.members.counters = {100, 120, 5, 6, 7, 8, 9, 10};
  in.gossip_health = 2;
  jobs::Jobs::Metrics j;
  j.coordinated = {{"running", 2}, {"failed", 1}};
  j.coordinator = {3, 1};
  j.node = {4, 2048, 12, 5, 2, 1, 1000, 65536, 7};
  j.refused_calls = 11;
  in.jobs = j;
  in.http = {50, 2, 1, 0};
  in.gpus.nvml = true;
  in.gpus.read_unix_ms = 1700000000500;
  GpuStat g0, g1;
  g0.index = 0, g0.utilization = 0.4, g0.memory_used_bytes = 1ULL << 30, g0.ecc_corrected = 7, g0.ecc_uncorrected = 1, g0.power_watts = 312.5;
  g1.index = 1, g1.utilization = 0.9, g1.memory_used_bytes = 2ULL << 30;
  in.gpus.gpus = {g0, g1};
  jobs::v1::Training t;
  t.set_step(120), t.set_step_unix_ms(1700000000000), t.set_reports(9);
  (*t.mutable_values())["loss"] = 0.53;
  (*t.mutable_values())["samples_per_second"] = 1200;
  in.jobs->training["j-0123456789ab"] = t;
  MeteredHttpClient::ServiceCounts sqs{"sqs"};
  sqs.calls = {40, 2, 1, 3, 0};
  sqs.buckets[0] = 30, sqs.buckets[11] = 15, sqs.buckets[12] = 1;
  sqs.seconds = 321.5;
  sqs.retries = 4;
  in.aws = {sqs};
  in.dlps = &BusyDlps();
  in.storage = StorageWatch::Snapshot{true, true, false, 10.0, 1700000000250};  // mounted, and its probe timed out
  return in;
}

bool Has(const std::string& text, const std::string& line) { return text.find("\n" + line + "\n") != std::string::npos; }

TEST(AgentMetricsTest, SaysWhatTheSnapshotsSay) {
  const std::string t = RenderAgentMetrics(Busy());
  EXPECT_TRUE(Has(t, "dlagent_build_info{version=\"0.1.0 \\\"quoted\\\"\"} 1")) << t;
  EXPECT_TRUE(Has(t, "dlagent_start_time_seconds 1700000000.123"));
  EXPECT_TRUE(Has(t, "dlagent_config_reloads_total 2"));
  EXPECT_TRUE(Has(t, "dlagent_phase{phase=\"ready\"} 1"));
  EXPECT_TRUE(Has(t, "dlagent_phase_changes_total 5"));
  EXPECT_TRUE(Has(t, "dlagent_ready_seconds 12.345"));
  EXPECT_TRUE(Has(t, "dlagent_phase{phase=\"discover\"} 0"));
  EXPECT_TRUE(Has(t, "dlagent_gpus 8"));
  EXPECT_TRUE(
      Has(t, "dlagent_node_info{instance_id=\"i-0abc\",instance_type=\"p4d.24xlarge\",availability_zone=\"us-east-1a\",address=\"10.0.1.17\"} 1"));
  EXPECT_TRUE(Has(t, "dlagent_roster_generation 2"));
  EXPECT_TRUE(Has(t, "dlagent_roster_members 2"));
  EXPECT_TRUE(Has(t, "dlagent_roster_dead_members 1"));
  EXPECT_TRUE(Has(t, "dlagent_formation_hellos_received_total{outcome=\"refused\"} 1"));
  EXPECT_TRUE(Has(t, "dlagent_members{state=\"alive\"} 1"));
  EXPECT_TRUE(Has(t, "dlagent_members{state=\"dead\"} 1"));
  EXPECT_TRUE(Has(t, "dlagent_members{state=\"suspect\"} 0"));
  EXPECT_TRUE(Has(t, "dlagent_member_flaps 3"));
  EXPECT_TRUE(Has(t, "dlagent_gossip_packets_dropped_total{reason=\"replay\"} 6"));
  EXPECT_TRUE(Has(t, "dlagent_gossip_push_pulls_refused_total 10"));
  EXPECT_TRUE(Has(t, "dlagent_gossip_health_score 2"));
  EXPECT_TRUE(Has(t, "dlagent_jobs{state=\"running\"} 2"));
  EXPECT_TRUE(Has(t, "dlagent_jobs{state=\"restarting\"} 0"));
  EXPECT_TRUE(Has(t, "dlagent_job_restarts_total 3"));
  EXPECT_TRUE(Has(t, "dlagent_job_takeovers_total 1"));
  EXPECT_TRUE(Has(t, "dlagent_ranks_running 4"));
  EXPECT_TRUE(Has(t, "dlagent_rank_exits_total{how=\"signal\"} 1"));
  EXPECT_TRUE(Has(t, "dlagent_job_output_dropped_lines_total 7"));
  EXPECT_TRUE(Has(t, "dlagent_job_calls_refused_total 11"));
  EXPECT_TRUE(Has(t, "dlagent_metrics_requests_refused_total{reason=\"bad_request\"} 2"));
  EXPECT_TRUE(Has(t, "dlagent_gpu_utilization_ratio{gpu=\"1\"} 0.9"));
  EXPECT_TRUE(Has(t, "dlagent_gpu_memory_used_bytes{gpu=\"0\"} 1073741824"));
  EXPECT_TRUE(Has(t, "dlagent_gpu_ecc_errors_total{gpu=\"0\",type=\"uncorrected\"} 1"));
  EXPECT_EQ(t.find("dlagent_gpu_ecc_errors_total{gpu=\"1\""), std::string::npos) << "GPU 1 gives no ECC count: missing, not zero";
  EXPECT_EQ(t.find("dlagent_gpu_temperature_celsius"), std::string::npos) << "no GPU gives it: no family";
  EXPECT_TRUE(Has(t, "dlagent_gpu_stats_timestamp_seconds 1700000000.5"));
  EXPECT_TRUE(Has(t, "dlagent_training_step{job_id=\"j-0123456789ab\"} 120"));
  EXPECT_TRUE(Has(t, "dlagent_aws_requests_total{service=\"sqs\",outcome=\"throttled\"} 2"));
  EXPECT_TRUE(Has(t, "dlagent_aws_retries_total{service=\"sqs\"} 4"));
  EXPECT_TRUE(Has(t, "dlagent_aws_request_duration_seconds_bucket{service=\"sqs\",le=\"0.005\"} 30"));
  EXPECT_TRUE(Has(t, "dlagent_aws_request_duration_seconds_bucket{service=\"sqs\",le=\"30\"} 45"));
  EXPECT_TRUE(Has(t, "dlagent_aws_request_duration_seconds_bucket{service=\"sqs\",le=\"+Inf\"} 46"));
  EXPECT_TRUE(Has(t, "dlagent_aws_request_duration_seconds_count{service=\"sqs\"} 46"));
  EXPECT_TRUE(Has(t, "dlagent_training_last_step_timestamp_seconds{job_id=\"j-0123456789ab\"} 1700000000"));
  EXPECT_TRUE(Has(t, "dlagent_training_value{job_id=\"j-0123456789ab\",name=\"loss\"} 0.53"));
  EXPECT_TRUE(Has(t, "dlagent_dlps_connections_total 8"));
  EXPECT_TRUE(Has(t, "dlagent_dlps_requests_total{kind=\"pull\"} 90"));
  EXPECT_TRUE(Has(t, "dlagent_dlps_bytes_total{direction=\"out\"} 3600"));
  EXPECT_TRUE(Has(t, "dlagent_dlps_rounds_total 50"));
  EXPECT_TRUE(Has(t, "dlagent_dlps_apply_duration_seconds_bucket{le=\"0.00025\"} 1"));
  EXPECT_TRUE(Has(t, "dlagent_dlps_apply_duration_seconds_bucket{le=\"10\"} 1"));
  EXPECT_TRUE(Has(t, "dlagent_dlps_apply_duration_seconds_bucket{le=\"+Inf\"} 2"));
  EXPECT_TRUE(Has(t, "dlagent_dlps_apply_duration_seconds_sum 30.0002"));
  EXPECT_TRUE(Has(t, "dlagent_dlps_round_duration_seconds_bucket{le=\"0.001\"} 0"));
  EXPECT_TRUE(Has(t, "dlagent_dlps_round_duration_seconds_bucket{le=\"0.0025\"} 1"));
  EXPECT_TRUE(Has(t, "dlagent_dlps_refused_total{reason=\"push\"} 2"));
  EXPECT_TRUE(Has(t, "dlagent_storage_mounted 1"));
  EXPECT_TRUE(Has(t, "dlagent_storage_probe_ok 0"));
  EXPECT_TRUE(Has(t, "dlagent_storage_probe_duration_seconds 10"));
  EXPECT_TRUE(Has(t, "dlagent_storage_check_timestamp_seconds 1700000000.25"));
  AgentMetricsInput unmounted = Busy();
  unmounted.storage = StorageWatch::Snapshot{true, false, false, 0, 1700000000250};
  const std::string u = RenderAgentMetrics(unmounted);
  EXPECT_TRUE(Has(u, "dlagent_storage_mounted 0"));
  EXPECT_EQ(u.find("dlagent_storage_probe_ok"), std::string::npos) << "not probed: missing, not zero";
}

TEST(AgentMetricsTest, WhatDoesNotRunIsMissingNotZero) {
  AgentMetricsInput in;
  in.status.version = "0.1.0";
  in.status.phase = AgentPhase::kServing;
  const std::string t = RenderAgentMetrics(in);
  EXPECT_TRUE(Has(t, "dlagent_phase{phase=\"serving\"} 1"));
  for (const char* family : {"dlagent_aws_requests_total", "dlagent_ready_seconds", "dlagent_gpus", "dlagent_node_info", "dlagent_roster_generation",
                             "dlagent_members", "dlagent_gossip_packets_total", "dlagent_gossip_health_score", "dlagent_jobs",
                             "dlagent_ranks_running", "dlagent_dlps_rounds_total", "dlagent_storage_mounted"}) {
    EXPECT_EQ(t.find("\n" + std::string(family) + "{"), std::string::npos) << family;
    EXPECT_EQ(t.find("\n" + std::string(family) + " "), std::string::npos) << family;
  }
}

// The real Prometheus's linter (Debian's prometheus package) on both: names, types, units, HELP, suffixes.
TEST(AgentMetricsTest, PromtoolAcceptsEveryFamily) {
  if (::access("/usr/bin/promtool", X_OK) != 0) GTEST_SKIP() << "promtool is not installed (Debian: prometheus)";
  testing::TempDir dir;
  for (const auto& [name, in] : {std::pair{"busy", Busy()}, std::pair{"idle", AgentMetricsInput{}}}) {
    dir.Write(name, RenderAgentMetrics(in));
    const testing::RunResult r = testing::RunCommand({"/bin/sh", "-c", "promtool check metrics < " + dir.Join(name)});
    EXPECT_EQ(r.exit_code, 0) << name << ": " << r.output;
    EXPECT_EQ(r.output, "") << name << ": promtool's findings";
  }
}

}  // namespace
}  // namespace dlagent
