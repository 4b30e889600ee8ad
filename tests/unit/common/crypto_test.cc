#include "bootstrap/common/crypto.h"

#include <gtest/gtest.h>

namespace dlagent {
namespace {

TEST(CryptoTest, HexRoundTripsAndRefusesWhatIsNotHex) {
  const std::string bytes("\x00\x7f\xff\xab", 4);
  EXPECT_EQ(HexEncode(bytes), "007fffab");
  EXPECT_EQ(HexDecode("007FffAB"), bytes);
  EXPECT_EQ(HexDecode(""), std::string());
  for (const char* bad : {"0", "0g", "zz", "12 4"}) EXPECT_FALSE(HexDecode(bad).has_value()) << bad;
}

}  // namespace
}  // namespace dlagent
