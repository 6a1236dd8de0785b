// absl::Status -> grpc::Status, at the service's edge only: the engine speaks absl.
#pragma once

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace flute::server {

// Same code (the two enums share their numbering), same message.
grpc::Status ToGrpcStatus(const absl::Status& status);

// "OK", "INVALID_ARGUMENT", ... for logs and metrics labels.
const char* GrpcCodeName(grpc::StatusCode code);

}  // namespace flute::server
