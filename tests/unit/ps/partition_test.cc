#include "agent/ps/partition.h"

#include <map>

#include <gtest/gtest.h>

namespace dlagent::ps {
namespace {

// Chunks cover [0, length) in order, without gaps or overlap, each at most chunk_floats.
void ExpectCovers(const std::vector<Chunk>& chunks, uint64_t length, uint64_t chunk_floats) {
  uint64_t next = 0;
  for (size_t i = 0; i < chunks.size(); ++i) {
    EXPECT_EQ(chunks[i].index, i);
    EXPECT_EQ(chunks[i].offset, next);
    EXPECT_LE(chunks[i].length, chunk_floats);
    next += chunks[i].length;
  }
  EXPECT_EQ(next, length);
}

TEST(PartitionTest, LargeTensorsAreCutEvenlyOverAllServers) {
  const auto chunks = PlaceKey(1, 10'000'001, 3, /*split_floats=*/1000, /*chunk_floats=*/1'000'000);
  ExpectCovers(chunks, 10'000'001, 1'000'000);
  std::map<uint32_t, uint64_t> per_server;
  for (const Chunk& c : chunks) per_server[c.server] += c.length;
  ASSERT_EQ(per_server.size(), 3u);
  EXPECT_EQ(per_server[0], 3'333'334u);  // the remainder of 2 goes to the first two parts
  EXPECT_EQ(per_server[1], 3'333'334u);
  EXPECT_EQ(per_server[2], 3'333'333u);
  // Parts are contiguous: the server never goes back to an earlier one.
  for (size_t i = 1; i < chunks.size(); ++i) EXPECT_GE(chunks[i].server, chunks[i - 1].server);
}

TEST(PartitionTest, SmallTensorsStayWholeAndSpreadByHash) {
  std::map<uint32_t, int> count;
  for (uint64_t key = 0; key < 3000; ++key) {
    const auto chunks = PlaceKey(key, 100, 4);
    ASSERT_EQ(chunks.size(), 1u);
    EXPECT_EQ(chunks[0].server, ServerForKey(key, 4));
    ++count[chunks[0].server];
  }
  for (uint32_t s = 0; s < 4; ++s) EXPECT_NEAR(count[s], 750, 120) << "server " << s;
}

TEST(PartitionTest, ChunksBoundMessagesAndEmptyTensorsHaveOneChunk) {
  ExpectCovers(PlaceKey(9, 2'500'000, 1, 1000, 1'000'000), 2'500'000, 1'000'000);
  EXPECT_EQ(PlaceKey(9, 2'500'000, 1, 1000, 1'000'000).size(), 3u);
  const auto empty = PlaceKey(9, 0, 2);
  ASSERT_EQ(empty.size(), 1u);
  EXPECT_EQ(empty[0].length, 0u);
  // Fewer floats than servers: no empty parts.
  for (const Chunk& c : PlaceKey(3, 2, 5, 1, 10)) EXPECT_GT(c.length, 0u);
}

}  // namespace
}  // namespace dlagent::ps
