// The kernel trace is off in a default build: the kernels carry no trace code, and enabling it
// fails with a message that says how to get it (or that there are no CUDA kernels at all).
#include "kernels/kernel_trace.h"

#include <gtest/gtest.h>

#include <string>

namespace flute::trace {
namespace {

TEST(KernelTraceTest, RecordLayoutIsWhatTheTimelineToolReads) {
  // tools/trace_timeline.py reads the CSV the engine writes from these records; the engine
  // copies them as raw bytes, so the layout is part of the contract.
  EXPECT_EQ(sizeof(Record), 48u);
  EXPECT_EQ(BufferBytes(), kHeaderBytes + size_t{kMaxRecords} * 48u);
}

TEST(KernelTraceTest, DefaultBuildHasNoTraceCodeAndSaysSo) {
  if (Compiled()) GTEST_SKIP() << "this build was configured with -DFLUTE_KERNEL_TRACE=ON";
  const absl::Status st = Enable(nullptr);
  EXPECT_EQ(st.code(), absl::StatusCode::kUnimplemented) << st;
  const std::string message(st.message());
  EXPECT_TRUE(message.find("FLUTE_KERNEL_TRACE") != std::string::npos || message.find("no CUDA") != std::string::npos)
      << message;
}

}  // namespace
}  // namespace flute::trace
