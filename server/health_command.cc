// `flute health`: a grpc.health.v1.Health client, for Docker HEALTHCHECK and scripts.
// Prints the serving status; exits 0 only when it is SERVING.
//
// Debian ships no health.proto and the server uses gRPC's built-in health service, so this
// client calls /grpc.health.v1.Health/Check through the generic stub and encodes the two
// one-field messages of the protocol itself:
//   HealthCheckRequest  { string service = 1; }
//   HealthCheckResponse { ServingStatus status = 1; }  UNKNOWN=0 SERVING=1 NOT_SERVING=2
//                                                       SERVICE_UNKNOWN=3
#include <chrono>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "server/commands.h"

namespace flute::cli {
namespace {

struct HealthOptions {
  std::string addr;
  std::string service;      // "" = the server as a whole (liveness)
  double timeout_s = 5;
  bool tls = false;
  std::string ca_cert;      // --tls-ca: PEM root certificates
};

constexpr char kCheckMethod[] = "/grpc.health.v1.Health/Check";

void AppendVarint(uint64_t value, std::string* out) {
  while (value >= 0x80) {
    out->push_back(static_cast<char>((value & 0x7F) | 0x80));
    value >>= 7;
  }
  out->push_back(static_cast<char>(value));
}

// Protobuf wire format of HealthCheckRequest{service}: field 1, wire type 2 (bytes).
std::string EncodeHealthCheckRequest(const std::string& service) {
  std::string out;
  if (service.empty()) return out;  // proto3 leaves empty strings out
  out.push_back(0x0A);
  AppendVarint(service.size(), &out);
  out += service;
  return out;
}

bool ReadVarint(const std::string& in, size_t* pos, uint64_t* value) {
  *value = 0;
  for (int shift = 0; shift < 64 && *pos < in.size(); shift += 7) {
    const auto byte = static_cast<unsigned char>(in[(*pos)++]);
    *value |= static_cast<uint64_t>(byte & 0x7F) << shift;
    if ((byte & 0x80) == 0) return true;
  }
  return false;
}

// The `status` field of a HealthCheckResponse (0 = UNKNOWN when absent); other fields are
// skipped as the wire format allows.
absl::StatusOr<int> DecodeServingStatus(const std::string& in) {
  const absl::Status malformed =
      absl::DataLossError("malformed HealthCheckResponse from the server");
  uint64_t status = 0;
  size_t pos = 0;
  while (pos < in.size()) {
    uint64_t key = 0, value = 0;
    if (!ReadVarint(in, &pos, &key)) return malformed;
    switch (key & 7) {
      case 0:  // varint
        if (!ReadVarint(in, &pos, &value)) return malformed;
        if ((key >> 3) == 1) status = value;
        break;
      case 1: value = 8; break;  // fixed64
      case 5: value = 4; break;  // fixed32
      case 2:  // length-delimited
        if (!ReadVarint(in, &pos, &value)) return malformed;
        break;
      default: return malformed;
    }
    if ((key & 7) != 0) {
      if (value > in.size() - pos) return malformed;
      pos += value;
    }
  }
  return static_cast<int>(status);
}

std::string ServingStatusName(int status) {
  switch (status) {
    case 0: return "UNKNOWN";
    case 1: return "SERVING";
    case 2: return "NOT_SERVING";
    case 3: return "SERVICE_UNKNOWN";
  }
  return absl::StrCat("STATUS_", status);
}

std::string ToString(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string out;
  if (!buffer.Dump(&slices).ok()) return out;
  for (const grpc::Slice& slice : slices) {
    out.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  return out;
}

absl::Status ValidateHealthOptions(const HealthOptions& o) {
  if (o.addr.find(':') == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("--addr: expected HOST:PORT (e.g. 127.0.0.1:50051), got '", o.addr, "'"));
  }
  if (!(o.timeout_s > 0 && o.timeout_s <= 3600)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--timeout: expected seconds in (0, 3600], got ", o.timeout_s));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> Credentials(const HealthOptions& o) {
  if (!o.tls && o.ca_cert.empty()) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions ssl;
  if (!o.ca_cert.empty()) {
    std::ifstream in(o.ca_cert);
    if (!in) {
      return absl::NotFoundError(absl::StrCat("--tls-ca: cannot read '", o.ca_cert, "'"));
    }
    std::ostringstream pem;
    pem << in.rdbuf();
    ssl.pem_root_certs = pem.str();
  }
  return grpc::SslCredentials(ssl);
}

// The serving status name ("SERVING", "NOT_SERVING", ...) of `o.service` at `o.addr`.
absl::StatusOr<std::string> CheckHealth(const HealthOptions& o) {
  auto credentials = Credentials(o);
  if (!credentials.ok()) return credentials.status();
  auto channel = grpc::CreateChannel(o.addr, *credentials);
  grpc::GenericStub stub(channel);

  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::microseconds(static_cast<int64_t>(o.timeout_s * 1e6)));
  context.set_wait_for_ready(true);  // a server still binding its port is not an error yet
  const std::string request_bytes = EncodeHealthCheckRequest(o.service);
  grpc::Slice request_slice(request_bytes);
  grpc::ByteBuffer request(&request_slice, 1);
  grpc::ByteBuffer response;
  grpc::Status status;
  grpc::CompletionQueue queue;
  auto call = stub.PrepareUnaryCall(&context, kCheckMethod, request, &queue);
  call->StartCall();
  call->Finish(&response, &status, /*tag=*/&status);
  void* tag = nullptr;
  bool ok = false;
  if (!queue.Next(&tag, &ok) || tag != &status) {
    return absl::InternalError("health check: the gRPC completion queue closed unexpectedly");
  }
  queue.Shutdown();
  while (queue.Next(&tag, &ok)) {
  }
  if (status.error_code() == grpc::StatusCode::NOT_FOUND) {
    return absl::NotFoundError(absl::StrCat("the server at ", o.addr, " does not know service '",
                                            o.service, "'"));
  }
  if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    return absl::DeadlineExceededError(absl::StrCat("no answer from ", o.addr, " within ",
                                                    o.timeout_s,
                                                    " s (is the server running there?)"));
  }
  if (!status.ok()) {
    return absl::UnavailableError(absl::StrCat("health check of ", o.addr, " failed: ",
                                               status.error_message(), " (gRPC code ",
                                               static_cast<int>(status.error_code()), ")"));
  }
  absl::StatusOr<int> serving = DecodeServingStatus(ToString(response));
  if (!serving.ok()) return serving.status();
  return ServingStatusName(*serving);
}

}  // namespace

void AddHealthCommand(CLI::App& app) {
  auto o = std::make_shared<HealthOptions>();
  CLI::App* cmd = app.add_subcommand(
      "health", "Ask a server's grpc.health.v1.Health service; exit 0 only when SERVING");
  cmd->add_option("--addr", o->addr, "Server address HOST:PORT")->required();
  cmd->add_option("--service", o->service,
                  "Service name: '' (default) = liveness, flute.v1.TextGeneration = readiness");
  cmd->add_option("--timeout", o->timeout_s, "Seconds to wait for an answer (default 5)");
  cmd->add_flag("--tls", o->tls, "Connect with TLS (system root certificates)");
  cmd->add_option("--tls-ca", o->ca_cert, "PEM root certificates for TLS (implies --tls)");
  cmd->callback([o] {
    ExitIfError(ValidateHealthOptions(*o));
    absl::StatusOr<std::string> serving = CheckHealth(*o);
    ExitIfError(serving.status());
    std::cout << *serving << std::endl;
    if (*serving != "SERVING") throw CLI::RuntimeError(1);
  });
}

}  // namespace flute::cli
