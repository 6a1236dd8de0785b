// BackendOptions that apply to every backend: --max-model-len caps the context, and the
// CUDA backend is a clear error, not a crash, where it cannot run.
#include <string>
#include <vector>

#include "engine/backend.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace flute {
namespace {

TEST(BackendOptions, MaxModelLenCapsTheContextAndIsEnforced) {
  BackendOptions o;
  o.kv_cache_bytes = 16 << 20;
  o.max_model_len = 40;
  auto backend = CreateBackend(flute::testing::TestDataPath("reference/data/tiny-llama"), o);
  ASSERT_TRUE(backend.ok()) << backend.status();
  EXPECT_EQ((*backend)->config().max_position_embeddings, 40);
  std::vector<int32_t> table(8);
  for (int i = 0; i < 8; ++i) table[i] = i;
  BatchEntry e;
  e.tokens.assign(41, 5);
  e.block_table = &table;
  ForwardOutput out;
  const absl::Status status = (*backend)->Forward({e}, &out);
  EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;
  EXPECT_NE(status.message().find("context of 40 tokens"), std::string::npos) << status;
}

TEST(BackendOptions, NegativeMaxModelLenIsRejected) {
  BackendOptions o;
  o.max_model_len = -1;
  auto backend = CreateBackend(flute::testing::TestDataPath("reference/data/tiny-llama"), o);
  ASSERT_FALSE(backend.ok());
  EXPECT_NE(backend.status().message().find("max_model_len"), std::string::npos) << backend.status();
}

TEST(BackendOptions, CudaWithoutAGpuOrPluginIsAClearError) {
  BackendOptions o;
  o.device = "cuda";
  auto backend = CreateBackend(flute::testing::TestDataPath("reference/data/tiny-llama"), o);
  if (backend.ok()) GTEST_SKIP() << "a CUDA GPU is present: the error path is not reachable here";
  // No plugin (a CPU-only build), no GPU, or a model the CUDA kernels cannot run (head_dim
  // 16 here): each is named, none crashes.
  EXPECT_FALSE(backend.status().message().empty());
  std::printf("cuda unavailable: %s\n", std::string(backend.status().message()).c_str());
}

}  // namespace
}  // namespace flute
