#include "agent/ps/checkpoint.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <functional>

#include <gtest/gtest.h>

#include "tests/support/temp_dir.h"

namespace dlagent::ps {
namespace {

std::vector<Shard::SliceState> Sample() {
  Shard::SliceState a;
  a.key = 7;
  a.chunk = 2;
  a.optimizer = {.kind = OptimizerConfig::Kind::kAdam, .learning_rate = 0.5f, .weight_decay = 0.1f};
  a.weights = std::make_shared<const std::vector<float>>(std::vector<float>{1, 2, 3});
  a.state.m = {0.1f, 0.2f, 0.3f};
  a.state.v = {1, 1, 1};
  a.state.steps = 4;
  Shard::SliceState b;
  b.key = 9;
  b.weights = std::make_shared<const std::vector<float>>(std::vector<float>{-1});
  return {a, b};
}

TEST(CheckpointTest, ShardFileRoundTrips) {
  const std::string data = EncodeShardFile(Sample());
  auto back = DecodeShardFile(data, "f");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ASSERT_EQ(back->size(), 2u);
  const auto& a = (*back)[0];
  EXPECT_EQ(a.key, 7u);
  EXPECT_EQ(a.chunk, 2u);
  EXPECT_EQ(a.optimizer, Sample()[0].optimizer);
  EXPECT_EQ(*a.weights, (std::vector<float>{1, 2, 3}));
  EXPECT_EQ(a.state.m, Sample()[0].state.m);
  EXPECT_EQ(a.state.v, Sample()[0].state.v);
  EXPECT_EQ(a.state.steps, 4u);
  EXPECT_EQ(*(*back)[1].weights, std::vector<float>{-1});
}

TEST(CheckpointTest, EveryCutAndEveryFlippedByteIsRefused) {
  const std::string data = EncodeShardFile(Sample());
  for (size_t n = 0; n < data.size(); ++n) {
    auto r = DecodeShardFile(data.substr(0, n), "server-0-of-1.dlps");
    ASSERT_FALSE(r.ok()) << "cut at " << n;
    EXPECT_NE(r.status().ToString().find("server-0-of-1.dlps is"), std::string::npos) << r.status().ToString();
  }
  for (size_t i = 0; i < data.size(); ++i) {
    std::string bad = data;
    bad[i] ^= 0x40;
    EXPECT_FALSE(DecodeShardFile(bad, "f").ok()) << "byte " << i;
  }
}

TEST(CheckpointTest, ManifestNamesWhatIsWrong) {
  const std::string m = EncodeManifest(2, {{"server-0-of-2.dlps", 10, "aa"}, {"server-1-of-2.dlps", 20, "bb"}});
  auto e = ManifestEntry(m, "M", 1, 2);
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ(e->bytes, 20u);
  EXPECT_EQ(e->sha256, "bb");
  EXPECT_NE(ManifestEntry(m, "M", 0, 3).status().ToString().find("was written by 2 servers; this job has 3"), std::string::npos);
  EXPECT_NE(ManifestEntry("{\"format\":1", "M", 0, 2).status().ToString().find("M is not a dlps checkpoint manifest"), std::string::npos);
  // A planted manifest whose fields have other types is refused, not thrown on.
  for (const char* planted : {"{\"format\":{}}", "{\"format\":\"1\",\"servers\":2,\"files\":[]}", "{\"format\":1,\"servers\":\"2\"}"}) {
    EXPECT_NE(ManifestEntry(planted, "M", 0, 2).status().ToString().find("not a dlps checkpoint manifest"), std::string::npos) << planted;
  }
  const std::string partial = EncodeManifest(2, {{"server-0-of-2.dlps", 10, "aa"}});
  EXPECT_NE(ManifestEntry(partial, "M", 1, 2).status().ToString().find("M is incomplete (it lists no server-1-of-2.dlps)"), std::string::npos);
}

TEST(CheckpointTest, ACheckpointDirectoryThatIsALinkIsRefused) {
  testing::TempDir root, elsewhere;
  ASSERT_EQ(::symlink(elsewhere.path().c_str(), root.Join("ck").c_str()), 0);
  Shard shard({.num_workers = 1});
  ASSERT_TRUE(shard.Init(1, 0, 2, {}).ok());
  Result<CheckpointFile> f = WriteShardCheckpoint(shard, root.path(), "ck", 0, 1);
  EXPECT_NE(f.status().ToString().find("/ck is a symbolic link or not a directory"), std::string::npos) << f.status().ToString();
  Status st = WriteManifest(root.path(), "ck", 0, {});
  EXPECT_NE(st.ToString().find("is a symbolic link"), std::string::npos) << st.ToString();
  EXPECT_FALSE(std::filesystem::exists(elsewhere.Join(kManifestName)));
  EXPECT_TRUE(WriteShardCheckpoint(shard, root.path(), "real", 0, 1).ok()) << "a directory of its own is written";
}

// A manifest's entries come from a worker's commit request: only each server's own file name and a hex SHA-256
// are written (a name of invalid UTF-8 used to throw out of the JSON writer and end the server).
TEST(CheckpointTest, AManifestNamesOnlyTheServersFiles) {
  testing::TempDir root;
  Shard shard({.num_workers = 1});
  ASSERT_TRUE(shard.Init(1, 0, 2, {}).ok());
  Result<CheckpointFile> f = WriteShardCheckpoint(shard, root.path(), "ck", 0, 1);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  for (const auto& edit : std::vector<std::function<void(CheckpointFile*)>>{
           [](auto* e) { e->name = "server-0-of-1.dlps\x83"; }, [](auto* e) { e->name = "../../etc/passwd"; }, [](auto* e) { e->sha256 = "not hex"; },
           [](auto* e) { e->sha256.pop_back(); }}) {
    CheckpointFile bad = *f;
    edit(&bad);
    const Status st = WriteManifest(root.path(), "ck", 1, {bad});
    EXPECT_NE(st.ToString().find("entry 0 is not server 0's file"), std::string::npos) << st.ToString();
  }
  EXPECT_FALSE(std::filesystem::exists(root.Join("ck/" + std::string(kManifestName))));
  EXPECT_TRUE(WriteManifest(root.path(), "ck", 1, {*f}).ok());
}

// What a user can put in the checkpoint directory is not restored: another user's file, a link (to /dev/zero,
// which used to be read until the OOM killer came, or to a root-only file, whose size used to be told), a FIFO
// manifest (which used to block the restoring call forever).
TEST(CheckpointTest, RestoreRefusesFifosAndEndlessFilesAtOnce) {
  testing::TempDir root;
  Shard shard({.num_workers = 1});
  ASSERT_TRUE(shard.Init(1, 0, 2, {}).ok());
  Result<CheckpointFile> f = WriteShardCheckpoint(shard, root.path(), "ck", 0, 1);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  ASSERT_TRUE(WriteManifest(root.path(), "ck", 1, {*f}).ok());
  const std::string dir = root.Join("ck");
  Shard into({.num_workers = 1});
  if (::geteuid() == 0) {
    // Another user's file in the server's place (their own weights, or one they may not read) is not restored.
    ASSERT_EQ(::chown((dir + "/" + f->name).c_str(), 65534, 65534), 0);
    Status theirs = RestoreShardCheckpoint(into, root.path(), "ck", 0, 1);
    EXPECT_NE(theirs.ToString().find("belongs to uid 65534, not to the server"), std::string::npos) << theirs.ToString();
  }
  // The server file swapped for a link to /dev/zero.
  std::filesystem::remove(dir + "/" + f->name);
  ASSERT_EQ(::symlink("/dev/zero", (dir + "/" + f->name).c_str()), 0);
  Status st = RestoreShardCheckpoint(into, root.path(), "ck", 0, 1);
  EXPECT_NE(st.ToString().find("is a symbolic link or not a regular file"), std::string::npos) << st.ToString();
  // A link to a file the server may read but the user may not is neither read nor measured.
  std::filesystem::remove(dir + "/" + f->name);
  ASSERT_EQ(::symlink("/etc/shadow", (dir + "/" + f->name).c_str()), 0);
  st = RestoreShardCheckpoint(into, root.path(), "ck", 0, 1);
  EXPECT_NE(st.ToString().find("is a symbolic link"), std::string::npos) << st.ToString();
  EXPECT_EQ(st.ToString().find("bytes"), std::string::npos) << "no size of the target: " << st.ToString();
  // The manifest swapped for a FIFO that nobody writes.
  std::filesystem::remove(dir + "/" + std::string(kManifestName));
  ASSERT_EQ(::mkfifo((dir + "/" + std::string(kManifestName)).c_str(), 0644), 0);
  st = RestoreShardCheckpoint(into, root.path(), "ck", 0, 1);
  EXPECT_NE(st.ToString().find("not a regular file"), std::string::npos) << st.ToString();
}

TEST(CheckpointTest, NamesAreOneSafeComponent) {
  EXPECT_TRUE(CheckCheckpointName("run-3.epoch_7").ok());
  for (const char* bad : {"", ".", "..", "a/b", "../x", "/abs", "sp ace"}) EXPECT_FALSE(CheckCheckpointName(bad).ok()) << bad;
}

TEST(CheckpointTest, ImportRefusesMismatchesAndSlicesThatTrained) {
  Shard shard({.mode = Mode::kSync, .num_workers = 1});
  ASSERT_TRUE(shard.Init(7, 2, 3, Sample()[0].optimizer).ok());
  Status st = shard.Import(Sample());
  EXPECT_EQ(st.code(), StatusCode::kNotFound) << "key 9 is not declared: " << st.ToString();
  ASSERT_TRUE(shard.Init(9, 0, 1, {}).ok());
  ASSERT_TRUE(shard.Import(Sample()).ok());
  EXPECT_EQ(*shard.Export()[0].weights, (std::vector<float>{1, 2, 3}));
  EXPECT_EQ(shard.Export()[0].state.steps, 4u);
  const float g = 1;
  ASSERT_TRUE(shard.Push({9, 0, 0, 1}, &g, 1).ok());
  st = shard.Import(Sample());
  EXPECT_NE(st.ToString().find("key 9 chunk 0 has already taken pushes"), std::string::npos) << st.ToString();
}

// A key's floats on this server, in chunk order, and its optimizer's steps and first moments.
struct KeyState {
  std::vector<float> weights, m;
  uint64_t steps = 0;
};
KeyState Of(Shard& shard, uint64_t key) {
  KeyState k;
  for (const Shard::SliceState& s : shard.Export()) {
    if (s.key != key) continue;
    k.weights.insert(k.weights.end(), s.weights->begin(), s.weights->end());
    k.m.insert(k.m.end(), s.state.m.begin(), s.state.m.end());
    k.steps = s.state.steps;
  }
  return k;
}

// Declares key 5 (10 floats) in chunks of `chunk` floats, numbered from `first`, and pushes the gradients of
// steps `after` + 1 to `after` + `rounds` (element i of step r: (i + 1) r). A restored shard's slices count
// their rounds from 1 again (version 0, as after Init): `restored`.
void Train(Shard& shard, uint64_t chunk, uint32_t first, int rounds, int after = 0, bool declare = true, bool restored = false) {
  const OptimizerConfig sgd{.kind = OptimizerConfig::Kind::kSgd, .learning_rate = 0.5f, .momentum = 0.9f};
  for (uint64_t offset = 0, c = first; offset < 10; offset += chunk, ++c) {
    const uint64_t length = std::min<uint64_t>(chunk, 10 - offset);
    if (declare) {
      ASSERT_TRUE(shard.Init(5, static_cast<uint32_t>(c), length, sgd).ok());
    }
    for (int r = after + 1; r <= after + rounds; ++r) {
      std::vector<float> g(length);
      for (uint64_t i = 0; i < length; ++i) g[i] = static_cast<float>((offset + i + 1) * r);
      const auto round = static_cast<uint64_t>(restored ? r - after : r);
      ASSERT_TRUE(shard.Push({5, static_cast<uint32_t>(c), 0, round}, g.data(), length).ok());
    }
  }
}

TEST(CheckpointTest, ImportRecutsAKeyWrittenWithAnotherChunkSize) {
  Shard wrote({.mode = Mode::kSync, .num_workers = 1});
  Train(wrote, 4, 7, 2);  // chunks 7, 8, 9 of 4, 4 and 2 floats (this server's part of a larger key)
  const KeyState saved = Of(wrote, 5);
  ASSERT_EQ(saved.m.size(), 10u);
  ASSERT_EQ(saved.steps, 2u);

  Shard restored({.mode = Mode::kSync, .num_workers = 1});
  Train(restored, 3, 20, 0);  // the same 10 floats in chunks 20-23 of 3, 3, 3 and 1
  const Status st = restored.Import(wrote.Export());
  ASSERT_TRUE(st.ok()) << st.ToString();
  const KeyState back = Of(restored, 5);
  EXPECT_EQ(back.weights, saved.weights);
  EXPECT_EQ(back.m, saved.m);
  EXPECT_EQ(back.steps, 2u);

  // Training goes on as if never cut otherwise: the momentum came along.
  Train(wrote, 4, 7, 1, 2, /*declare=*/false);
  Train(restored, 3, 20, 1, 2, /*declare=*/false, /*restored=*/true);
  EXPECT_EQ(Of(restored, 5).weights, Of(wrote, 5).weights);

  Shard other({.mode = Mode::kSync, .num_workers = 1});
  ASSERT_TRUE(other.Init(5, 0, 9, {.kind = OptimizerConfig::Kind::kSgd, .learning_rate = 0.5f, .momentum = 0.9f}).ok());
  const Status refused = other.Import(wrote.Export());
  EXPECT_FALSE(refused.ok()) << "9 floats declared, 10 in the checkpoint";
  EXPECT_NE(refused.ToString().find("key 5 chunk 7 is not declared"), std::string::npos) << refused.ToString();
}

}  // namespace
}  // namespace dlagent::ps
