// The safetensors reader and writer: round trips, sharded directories, and every kind of
// malformed file rejected with a message that names what is wrong.
#include "engine/safetensors.h"

#include <filesystem>
#include <fstream>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/engine/checkpoint_builder.h"
#include "tests/test_util.h"

namespace flute {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = testing::MakeTempDir("flute-safetensors"); }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Path(const std::string& name) const { return (fs::path(dir_) / name).string(); }

  // A file made of the 8-byte length `header_length`, then `header`, then `data`.
  std::string WriteRaw(const std::string& name, uint64_t header_length, const std::string& header,
                       const std::string& data) {
    std::ofstream out(Path(name), std::ios::binary);
    for (int i = 0; i < 8; ++i) out.put(static_cast<char>(header_length >> (8 * i)));
    out << header << data;
    return Path(name);
  }
  std::string WriteRaw(const std::string& name, const std::string& header,
                       const std::string& data) {
    return WriteRaw(name, header.size(), header, data);
  }

  std::string OpenError(const std::string& path) {
    auto file = SafetensorsFile::Open(path);
    EXPECT_FALSE(file.ok()) << path << " opened but should not have";
    return file.ok() ? "" : std::string(file.status().message());
  }

  std::string dir_;
};

TEST_F(SafetensorsTest, WriteThenOpenRoundTripsEveryDType) {
  std::mt19937 rng(1);
  std::vector<testing::FloatTensor> tensors = {
      testing::RandomTensor("a.f32", {3, 5}, DType::kF32, rng),
      testing::RandomTensor("b.f16", {7}, DType::kF16, rng),
      testing::RandomTensor("c.bf16", {2, 3, 4}, DType::kBF16, rng),
  };
  std::vector<std::vector<uint8_t>> bytes;
  std::vector<TensorToWrite> to_write;
  for (const auto& t : tensors) bytes.push_back(testing::EncodeTensor(t));
  for (size_t i = 0; i < tensors.size(); ++i) {
    to_write.push_back(
        {tensors[i].name, tensors[i].dtype, tensors[i].shape, bytes[i].data(), bytes[i].size()});
  }
  const std::vector<int32_t> ints = {-1, 2, 1 << 30};
  to_write.push_back({"d.i32", DType::kI32, {3}, ints.data(), ints.size() * 4});
  to_write.push_back({"e.empty", DType::kF32, {0, 4}, nullptr, 0});
  ASSERT_TRUE(WriteSafetensors(Path("x.safetensors"), to_write, {{"format", "pt"}}).ok());

  // The header is padded so that the data starts 8-byte aligned.
  std::ifstream in(Path("x.safetensors"), std::ios::binary);
  uint64_t header_length = 0;
  in.read(reinterpret_cast<char*>(&header_length), 8);
  EXPECT_EQ(header_length % 8, 0u);

  auto file = SafetensorsFile::Open(Path("x.safetensors"));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
  ASSERT_EQ((*file)->tensors().size(), 5u);
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorView& view = (*file)->tensors().at(tensors[i].name);
    EXPECT_EQ(view.dtype, tensors[i].dtype);
    EXPECT_EQ(view.shape, tensors[i].shape);
    EXPECT_EQ(view.file, Path("x.safetensors"));
    ASSERT_EQ(view.num_bytes, bytes[i].size());
    std::vector<float> values(tensors[i].values.size());
    ConvertToFloat(view.dtype, view.data, values.size(), values.data());
    EXPECT_EQ(values, tensors[i].values) << view.name;
  }
  const TensorView& ints_view = (*file)->tensors().at("d.i32");
  EXPECT_EQ(std::memcmp(ints_view.data, ints.data(), 12), 0);
  EXPECT_EQ((*file)->tensors().at("c.bf16").ShapeString(), "[2, 3, 4]");
  EXPECT_EQ((*file)->tensors().at("c.bf16").num_elements(), 24);
  EXPECT_EQ((*file)->tensors().at("e.empty").num_elements(), 0);
}

TEST_F(SafetensorsTest, ReadsAFileWrittenByHand) {
  // Two F16 values (1.0, -2.0) for "w", then two BF16 values (0.5, 3.0) for "v".
  const std::string data("\x00\x3c\x00\xc0\x00\x3f\x40\x40", 8);
  const std::string path = WriteRaw(
      "hand.safetensors",
      R"({"v":{"dtype":"BF16","shape":[2],"data_offsets":[4,8]},"w":{"dtype":"F16","shape":[1,2],"data_offsets":[0,4]}})",
      data);
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  float w[2], v[2];
  ConvertToFloat(DType::kF16, (*file)->tensors().at("w").data, 2, w);
  ConvertToFloat(DType::kBF16, (*file)->tensors().at("v").data, 2, v);
  EXPECT_EQ(w[0], 1.0f);
  EXPECT_EQ(w[1], -2.0f);
  EXPECT_EQ(v[0], 0.5f);
  EXPECT_EQ(v[1], 3.0f);
  EXPECT_TRUE((*file)->metadata().empty());
}

TEST_F(SafetensorsTest, MissingFileIsNotFound) {
  auto file = SafetensorsFile::Open(Path("absent.safetensors"));
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(file.status().message()), HasSubstr("absent.safetensors"));
}

TEST_F(SafetensorsTest, FileShorterThanTheLengthFieldIsRejected) {
  std::ofstream(Path("short.safetensors"), std::ios::binary) << "abc";
  const std::string message = OpenError(Path("short.safetensors"));
  EXPECT_THAT(message, HasSubstr("short.safetensors"));
  EXPECT_THAT(message, HasSubstr("3 bytes"));
}

TEST_F(SafetensorsTest, HeaderLengthBeyondTheFileIsRejected) {
  const std::string path = WriteRaw("long.safetensors", 1000, "{}", "");
  const std::string message = OpenError(path);
  EXPECT_THAT(message, HasSubstr("header length 1000 beyond file size 10"));
  EXPECT_THAT(message, HasSubstr("long.safetensors"));
  // A huge length must not overflow the check.
  EXPECT_THAT(OpenError(WriteRaw("huge.safetensors", ~uint64_t{0}, "{}", "")),
              HasSubstr("beyond file size"));
}

TEST_F(SafetensorsTest, MalformedHeaderJsonIsRejectedNamingTheFile) {
  const std::string message =
      OpenError(WriteRaw("bad.safetensors", R"({"w": {"dtype": "F32",)", ""));
  EXPECT_THAT(message, HasSubstr("bad.safetensors"));
  EXPECT_THAT(message, HasSubstr("malformed JSON"));
  EXPECT_THAT(OpenError(WriteRaw("array.safetensors", "[1, 2]", "")),
              HasSubstr("not a JSON object"));
}

TEST_F(SafetensorsTest, UnknownDTypeIsRejectedNamingTensorAndDType) {
  const std::string message = OpenError(WriteRaw(
      "dtype.safetensors", R"({"w":{"dtype":"F8_E5M2","shape":[2],"data_offsets":[0,2]}})", "ab"));
  EXPECT_THAT(message, HasSubstr("\"w\""));
  EXPECT_THAT(message, HasSubstr("F8_E5M2"));
}

TEST_F(SafetensorsTest, TruncatedDataIsRejectedWithBytesNeededAndPresent) {
  std::vector<float> values(16, 1.0f);
  ASSERT_TRUE(
      WriteSafetensors(Path("t.safetensors"), {{"w", DType::kF32, {4, 4}, values.data(), 64}})
          .ok());
  fs::resize_file(Path("t.safetensors"), fs::file_size(Path("t.safetensors")) - 10);
  const std::string message = OpenError(Path("t.safetensors"));
  EXPECT_THAT(message, HasSubstr("truncated"));
  EXPECT_THAT(message, HasSubstr("\"w\""));
  EXPECT_THAT(message, HasSubstr("[0, 64)"));
  EXPECT_THAT(message, HasSubstr("only 54 data bytes"));
}

TEST_F(SafetensorsTest, InconsistentEntriesAreRejected) {
  // data_offsets span disagrees with dtype × shape.
  EXPECT_THAT(
      OpenError(WriteRaw("span.safetensors",
                         R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", "abcdefgh")),
      HasSubstr("span 4 bytes but F32 [2] needs 8"));
  EXPECT_THAT(
      OpenError(WriteRaw("neg.safetensors",
                         R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", "abcd")),
      HasSubstr("non-negative integers"));
  EXPECT_THAT(
      OpenError(WriteRaw("frac.safetensors",
                         R"({"w":{"dtype":"U8","shape":[1.5],"data_offsets":[0,1]}})", "a")),
      HasSubstr("non-negative integers"));
  EXPECT_THAT(OpenError(WriteRaw("order.safetensors",
                                 R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[1,0]}})", "a")),
              HasSubstr("data_offsets"));
  EXPECT_THAT(OpenError(WriteRaw("noshape.safetensors",
                                 R"({"w":{"dtype":"U8","data_offsets":[0,1]}})", "a")),
              HasSubstr("\"shape\" missing"));
  EXPECT_THAT(OpenError(WriteRaw("meta.safetensors", R"({"__metadata__":{"n":1}})", "")),
              HasSubstr("__metadata__"));
  EXPECT_THAT(
      OpenError(WriteRaw(
          "huge.safetensors",
          R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", "abcd")),
      HasSubstr("too large"));
}

TEST_F(SafetensorsTest, WriterRejectsSizeMismatch) {
  std::vector<float> values(3);
  absl::Status status =
      WriteSafetensors(Path("w.safetensors"), {{"w", DType::kF32, {4}, values.data(), 12}});
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(std::string(status.message()), HasSubstr("\"w\""));
}

// --- TensorStore -----------------------------------------------------------------------

class TensorStoreTest : public SafetensorsTest {
 protected:
  void WriteShard(const std::string& name, const std::vector<std::string>& tensor_names) {
    std::mt19937 rng(static_cast<uint32_t>(tensor_names.size()));
    std::vector<testing::FloatTensor> tensors;
    for (const auto& tensor : tensor_names)
      tensors.push_back(testing::RandomTensor(tensor, {2, 3}, DType::kBF16, rng));
    testing::WriteFloatTensors(Path(name), tensors);
  }
  void WriteIndex(const nlohmann::json& weight_map) {
    testing::WriteTextFile(
        Path("model.safetensors.index.json"),
        nlohmann::json{{"metadata", nlohmann::json::object()}, {"weight_map", weight_map}}.dump());
  }
  std::string StoreError() {
    auto store = TensorStore::OpenDirectory(dir_);
    EXPECT_FALSE(store.ok());
    return store.ok() ? "" : std::string(store.status().message());
  }
};

TEST_F(TensorStoreTest, OpensASingleFile) {
  WriteShard("model.safetensors", {"a", "b"});
  auto store = TensorStore::OpenDirectory(dir_);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->tensors().size(), 2u);
  ASSERT_NE((*store)->Find("a"), nullptr);
  EXPECT_EQ((*store)->Find("a")->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ((*store)->Find("c"), nullptr);
}

TEST_F(TensorStoreTest, OpensShardsThroughTheIndexAndExposesUnindexedTensors) {
  WriteShard("s1.safetensors", {"a", "b"});
  WriteShard("s2.safetensors", {"c", "stray"});
  WriteIndex({{"a", "s1.safetensors"}, {"b", "s1.safetensors"}, {"c", "s2.safetensors"}});
  auto store = TensorStore::OpenDirectory(dir_);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->tensors().size(), 4u);
  EXPECT_EQ((*store)->Find("a")->file, Path("s1.safetensors"));
  EXPECT_EQ((*store)->Find("c")->file, Path("s2.safetensors"));
  ASSERT_NE((*store)->Find("stray"), nullptr);  // so that the loader reports it as extra
}

TEST_F(TensorStoreTest, IndexTakesPrecedenceOverASingleFile) {
  WriteShard("model.safetensors", {"single"});
  WriteShard("s1.safetensors", {"sharded"});
  WriteIndex({{"sharded", "s1.safetensors"}});
  auto store = TensorStore::OpenDirectory(dir_);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_NE((*store)->Find("sharded"), nullptr);
  EXPECT_EQ((*store)->Find("single"), nullptr);
}

TEST_F(TensorStoreTest, EmptyDirectoryIsNotFoundNamingBothFiles) {
  auto store = TensorStore::OpenDirectory(dir_);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kNotFound);
  const std::string message(store.status().message());
  EXPECT_THAT(message, HasSubstr(dir_));
  EXPECT_THAT(message, HasSubstr("model.safetensors.index.json"));
  EXPECT_THAT(message, HasSubstr("model.safetensors"));
}

TEST_F(TensorStoreTest, IndexNamingAMissingShardIsRejected) {
  WriteShard("s1.safetensors", {"a"});
  WriteIndex({{"a", "s1.safetensors"}, {"b", "s2.safetensors"}});
  const std::string message = StoreError();
  EXPECT_THAT(message, HasSubstr("s2.safetensors"));
  EXPECT_THAT(message, HasSubstr("model.safetensors.index.json"));
}

TEST_F(TensorStoreTest, IndexNamingTheWrongShardIsRejected) {
  WriteShard("s1.safetensors", {"a"});
  WriteShard("s2.safetensors", {"b"});
  WriteIndex({{"a", "s2.safetensors"}, {"b", "s2.safetensors"}});
  const std::string message = StoreError();
  EXPECT_THAT(message, HasSubstr("\"a\""));
  EXPECT_THAT(message, HasSubstr("s2.safetensors"));
}

TEST_F(TensorStoreTest, MalformedIndexJsonIsRejectedNamingTheIndex) {
  testing::WriteTextFile(Path("model.safetensors.index.json"), R"({"weight_map": {"a": )");
  const std::string message = StoreError();
  EXPECT_THAT(message, HasSubstr("model.safetensors.index.json"));
  EXPECT_THAT(message, HasSubstr("malformed JSON"));
  testing::WriteTextFile(Path("model.safetensors.index.json"), R"({"weights": {}})");
  EXPECT_THAT(StoreError(), HasSubstr("weight_map"));
  WriteIndex({{"a", "../elsewhere.safetensors"}});
  EXPECT_THAT(StoreError(), HasSubstr("file name in the same directory"));
}

TEST_F(TensorStoreTest, SameTensorInTwoShardsIsRejected) {
  WriteShard("s1.safetensors", {"a", "dup"});
  WriteShard("s2.safetensors", {"b", "dup"});
  WriteIndex({{"a", "s1.safetensors"}, {"b", "s2.safetensors"}});
  const std::string message = StoreError();
  EXPECT_THAT(message, HasSubstr("\"dup\""));
  EXPECT_THAT(message, HasSubstr("s1.safetensors"));
  EXPECT_THAT(message, HasSubstr("s2.safetensors"));
}

TEST_F(TensorStoreTest, FromFilesIndexesEveryFile) {
  WriteShard("x.safetensors", {"a"});
  WriteShard("y.safetensors", {"b"});
  std::vector<std::unique_ptr<SafetensorsFile>> files;
  for (const char* name : {"x.safetensors", "y.safetensors"}) {
    auto file = SafetensorsFile::Open(Path(name));
    ASSERT_TRUE(file.ok()) << file.status();
    files.push_back(*std::move(file));
  }
  auto store = TensorStore::FromFiles(std::move(files));
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->Find("b")->file, Path("y.safetensors"));
}

}  // namespace
}  // namespace flute
