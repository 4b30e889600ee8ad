#include "bootstrap/aws/sqs_client.h"

#include "bootstrap/aws/aws_json.h"
#include "bootstrap/aws/sigv4.h"
#include "bootstrap/common/crypto.h"

namespace dlagent {
namespace {

constexpr std::string_view kSqs = "sqs";

Status ValidateQueueName(const std::string& name) {
  bool ok = !name.empty() && name.size() <= 80;
  for (size_t i = 0; ok && i < name.size(); ++i) {
    char c = name[i];
    ok = std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || (c == '.' && name.ends_with(".fifo") && i == name.size() - 5);
  }
  if (ok) return Status::Ok();
  return Status::InvalidArgument(kSqs,
                                 "queue name \"" + name.substr(0, 100) + "\" must be 1-80 letters, digits, '-' or '_' (a FIFO queue ends in .fifo)");
}

}  // namespace

Result<std::string> ResolveSqsEndpoint(const std::string& configured_endpoint, const std::string& region) {
  if (!configured_endpoint.empty()) {
    RETURN_IF_ERROR(ParseUrl(configured_endpoint).status());
    return configured_endpoint;
  }
  if (region.empty()) {
    return Status::InvalidArgument(kSqs, "no region for SQS: set aws.region or AWS_REGION, or let the agent read it from instance metadata");
  }
  return "https://sqs." + region + ".amazonaws.com";
}

Result<std::string> ResolveAwsRegion(const std::string& configured_region, ImdsClient* imds) {
  if (!configured_region.empty()) return configured_region;
  const std::string advice = "set aws.region or AWS_REGION";
  if (!imds) return Status::InvalidArgument("aws", "no region: " + advice);
  Result<std::string> region = imds->Get("meta-data/placement/region");
  if (!region.ok()) return region.status().Annotate("no region configured and none from instance metadata (" + advice + ")");
  return *region;
}

SqsClient::SqsClient(HttpClient& http, CredentialsProvider& credentials, Env& env, SqsOptions options)
    : http_(http), credentials_(credentials), env_(env), options_(std::move(options)) {
  Result<Url> url = ParseUrl(options_.endpoint);
  if (url.ok()) {
    host_header_ = url->HostHeader();
    path_ = url->path;
  }
}

Result<nlohmann::json> SqsClient::Call(const std::string& action, const nlohmann::json& input, Duration extra_timeout,
                                       const std::atomic<bool>* call_cancel) {
  const std::atomic<bool>* cancel = call_cancel ? call_cancel : options_.cancel;
  if (host_header_.empty()) return Status::InvalidArgument(kSqs, "bad SQS endpoint \"" + options_.endpoint + "\"");
  if (options_.region.empty()) return Status::InvalidArgument(kSqs, "no signing region for SQS");
  const std::string body = input.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  nlohmann::json output;
  int attempt = 0;
  Status st = Retry(
      env_, options_.retry,
      [&]() -> Status {
        ASSIGN_OR_RETURN(AwsCredentials creds, credentials_.Get());
        SignedJsonPost post{options_.endpoint,
                            host_header_,
                            path_,
                            options_.region,
                            "sqs",
                            "application/x-amz-json-1.0",
                            "AmazonSQS." + action,
                            {{"x-amzn-query-mode", "true"}},
                            options_.call_timeout + extra_timeout,
                            cancel,
                            24 << 20};
        post.retry = attempt++ > 0;
        ++requests_;
        ASSIGN_OR_RETURN(HttpResponse resp, SendSignedJson(http_, creds, env_.NowWall(), post, body));
        if (resp.status != 200) {
          return SqsErrorToStatus(ParseSqsError(resp.status, resp.Header("x-amzn-query-error"), resp.body), action);
        }
        if (resp.body.empty()) {
          output = nlohmann::json::object();
          return Status::Ok();
        }
        ASSIGN_OR_RETURN(output, ParseJsonObject(resp.body, kSqs, action + " answer", 24 << 20));
        return Status::Ok();
      },
      cancel);
  if (!st.ok()) return st;
  return output;
}

Result<std::string> SqsClient::GetQueueUrl(const std::string& queue_name) {
  RETURN_IF_ERROR(ValidateQueueName(queue_name));
  ASSIGN_OR_RETURN(nlohmann::json out, Call("GetQueueUrl", {{"QueueName", queue_name}}, Duration(0)));
  return JsonString(out, "QueueUrl", true, kSqs, "GetQueueUrl answer");
}

Result<std::string> SqsClient::CreateQueue(const std::string& queue_name, const std::map<std::string, std::string>& attributes) {
  RETURN_IF_ERROR(ValidateQueueName(queue_name));
  nlohmann::json in = {{"QueueName", queue_name}};
  if (!attributes.empty()) in["Attributes"] = attributes;
  ASSIGN_OR_RETURN(nlohmann::json out, Call("CreateQueue", in, Duration(0)));
  return JsonString(out, "QueueUrl", true, kSqs, "CreateQueue answer");
}

Result<std::string> SqsClient::SendMessage(const std::string& queue_url, const std::string& body,
                                           const std::map<std::string, std::string>& string_attributes) {
  RETURN_IF_ERROR(ValidateSqsMessageBody(body));
  nlohmann::json in = {{"QueueUrl", queue_url}, {"MessageBody", body}};
  for (const auto& [k, v] : string_attributes) in["MessageAttributes"][k] = {{"DataType", "String"}, {"StringValue", v}};
  ASSIGN_OR_RETURN(nlohmann::json out, Call("SendMessage", in, Duration(0)));
  ASSIGN_OR_RETURN(std::string md5, JsonString(out, "MD5OfMessageBody", false, kSqs, "SendMessage answer"));
  if (!md5.empty() && md5 != HexEncode(Md5(body))) {
    return Status::Unavailable(kSqs, "SendMessage: the body's MD5 in the answer does not match what was sent (corrupted in transit)");
  }
  return JsonString(out, "MessageId", true, kSqs, "SendMessage answer");
}

Result<std::vector<SqsMessage>> SqsClient::ReceiveMessage(const std::string& queue_url, const ReceiveOptions& o) {
  using std::chrono::seconds;
  const auto wait_s = std::chrono::duration_cast<seconds>(o.wait).count();
  if (o.max_messages < 1 || o.max_messages > 10) {
    return Status::InvalidArgument(kSqs, "ReceiveMessage: max_messages " + std::to_string(o.max_messages) + " is outside 1..10");
  }
  if (wait_s < 0 || wait_s > 20) {
    return Status::InvalidArgument(kSqs, "ReceiveMessage: wait of " + std::to_string(wait_s) + " s is outside 0..20 s");
  }
  nlohmann::json in = {
      {"QueueUrl", queue_url}, {"MaxNumberOfMessages", o.max_messages}, {"WaitTimeSeconds", wait_s}, {"MessageAttributeNames", {"All"}}};
  if (o.visibility_timeout) in["VisibilityTimeout"] = std::chrono::duration_cast<seconds>(*o.visibility_timeout).count();
  ASSIGN_OR_RETURN(nlohmann::json out, Call("ReceiveMessage", in, o.wait, o.cancel));
  // Re-serialised only to reuse the one bounded parser for messages.
  return ParseReceiveMessage(out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

Status SqsClient::DeleteMessage(const std::string& queue_url, const std::string& receipt_handle) {
  return Call("DeleteMessage", {{"QueueUrl", queue_url}, {"ReceiptHandle", receipt_handle}}, Duration(0)).status();
}

Status SqsClient::ChangeMessageVisibility(const std::string& queue_url, const std::string& receipt_handle, Duration timeout) {
  const auto s = std::chrono::duration_cast<std::chrono::seconds>(timeout).count();
  if (s < 0 || s > 43200) return Status::InvalidArgument(kSqs, "visibility timeout of " + std::to_string(s) + " s is outside 0..43200 s");
  return Call("ChangeMessageVisibility", {{"QueueUrl", queue_url}, {"ReceiptHandle", receipt_handle}, {"VisibilityTimeout", s}}, Duration(0))
      .status();
}

}  // namespace dlagent
