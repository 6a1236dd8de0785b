// Shared by `flute client` and `flute bench serve`: channel creation and the health check
// (through the generic stub: grpc.health.v1 messages are one field each, encoded by hand,
// so no health .proto has to be compiled in).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"

namespace flute::server {

// A channel to `address` (HOST:PORT), TLS when `tls_ca_file` is given (its PEM roots).
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const std::string& address,
                                                           const std::string& tls_ca_file);

// grpc.health.v1.Health/Check for `service`: true when SERVING.
absl::StatusOr<bool> CheckHealth(grpc::Channel& channel, const std::string& service,
                                 absl::Duration timeout);

}  // namespace flute::server
