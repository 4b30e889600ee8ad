// AWS client costs, each beside a baseline measured in the same run:
//   SigV4 signatures per second        vs the SHA-256 of the same payload alone (the floor of any signer)
//   SQS requests per second, keep-alive vs a new TCP connection per request (against the SQS emulator)
// Usage: aws_bench [--seconds N]  (default 3 per figure)
#include <chrono>
#include <cstdio>
#include <cstring>

#include "bootstrap/aws/sigv4.h"
#include "bootstrap/aws/sqs_client.h"
#include "bootstrap/common/crypto.h"
#include "tests/support/sqs_emulator.h"
#include "tests/support/temp_dir.h"

namespace {

using namespace std::chrono;

// Calls f until `budget` has passed; returns calls per second.
template <typename F>
double Rate(double budget_s, F f) {
  const auto start = steady_clock::now();
  long n = 0;
  while (duration<double>(steady_clock::now() - start).count() < budget_s) {
    for (int i = 0; i < 16; ++i) f();
    n += 16;
  }
  return n / duration<double>(steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  double seconds_each = 3;
  for (int i = 1; i + 1 < argc; ++i) {
    if (!std::strcmp(argv[i], "--seconds")) seconds_each = std::atof(argv[i + 1]);
  }
  using namespace dlagent;
  const AwsCredentials creds{"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "session-token", std::nullopt, "bench"};
  // A typical discovery HELLO send: ~600 bytes of JSON.
  const std::string body =
      R"({"QueueUrl":"https://sqs.us-east-1.amazonaws.com/123456789012/dlagent-demo","MessageBody":")" + std::string(500, 'h') + "\"}";
  const SigV4Request req{
      "POST",
      "/",
      "",
      {{"Host", "sqs.us-east-1.amazonaws.com"}, {"Content-Type", "application/x-amz-json-1.0"}, {"X-Amz-Target", "AmazonSQS.SendMessage"}},
      body};
  const WallTime now = system_clock::now();
  volatile size_t sink = 0;
  const double sign_rate = Rate(seconds_each, [&] { sink = sink + SignV4(req, creds, "us-east-1", "sqs", now).signature.size(); });
  const double sha_rate = Rate(seconds_each, [&] { sink = sink + Sha256(body).size(); });

  std::printf("%-44s %14s   %-34s %14s %8s\n", "figure", "measured", "baseline (same run)", "baseline", "ratio");
  std::printf("%-44s %12.0f/s   %-34s %12.0f/s %7.1fx\n", "SigV4 signatures (600-byte SQS request)", sign_rate, "SHA-256 of the body alone", sha_rate,
              sha_rate / sign_rate);

  testing::TempDir dir;
  std::string error;
  auto emulator = testing::SqsEmulator::Start(dir.path(), &error);
  if (!emulator) {
    std::printf("SQS figures skipped: %s\n", error.c_str());
    return 0;
  }
  auto env = NewPosixEnv();
  StaticCredentials static_creds(creds);
  auto measure = [&](bool keep_alive) {
    auto http = NewCurlHttpClient({.reuse_connections = keep_alive});
    SqsClient sqs(*http, static_creds, *env, {emulator->endpoint(), "us-east-1"});
    (void)sqs.CreateQueue("dlagent-bench");
    return Rate(seconds_each, [&] { (void)sqs.GetQueueUrl("dlagent-bench"); });
  };
  const double kept = measure(true);
  const double fresh = measure(false);
  std::printf("%-44s %12.0f/s   %-34s %12.0f/s %7.2fx\n", "SQS GetQueueUrl, one kept-alive connection", kept, "a new connection per request", fresh,
              kept / fresh);
  return 0;
}
