// Helpers shared by the test suites.
#pragma once

#include <string>

#include "gtest/gtest.h"

namespace flute::testing {

// The shared reference folder (models, data), or "" when absent: FLUTE_SHARED_DIR, else
// ../shared beside the source checkout.
std::string SharedDir();

// Path of a file under tests/ in the source tree.
std::string TestDataPath(const std::string& relative);

// A fresh empty directory under the system temp dir, removed by the caller if it wants.
std::string MakeTempDir(const std::string& prefix);

}  // namespace flute::testing

// Skips the current test, with the reason, when ../shared is not available.
#define FLUTE_REQUIRE_SHARED()                                                      \
  do {                                                                              \
    if (::flute::testing::SharedDir().empty())                                      \
      GTEST_SKIP() << "../shared (reference models and data) not found; set "       \
                      "FLUTE_SHARED_DIR to run this test";                          \
  } while (0)
