#include "bootstrap/common/duration.h"

#include <gtest/gtest.h>

namespace dlagent {
namespace {

using namespace std::chrono;

TEST(DurationTest, ParsesUnitsAndSums) {
  struct Case {
    const char* text;
    Duration want;
  } cases[] = {
      {"500ms", milliseconds(500)},        {"30s", seconds(30)}, {"5m", minutes(5)}, {"2h", hours(2)}, {"1h30m", minutes(90)},
      {"1m30s250ms", milliseconds(90250)}, {"0s", seconds(0)},
  };
  for (const auto& c : cases) {
    Result<Duration> d = ParseDuration(c.text);
    ASSERT_TRUE(d.ok()) << c.text << ": " << d.status().ToString();
    EXPECT_EQ(*d, c.want) << c.text;
  }
}

TEST(DurationTest, RejectsBadTextWithAHint) {
  for (const char* bad : {"", "5", "m", "5 m", "-5s", "5x", "1.5s", "99999999999999999999h"}) {
    Result<Duration> d = ParseDuration(bad);
    ASSERT_FALSE(d.ok()) << bad;
    EXPECT_EQ(d.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(d.status().message().find("1h30m"), std::string_view::npos) << d.status().ToString();
  }
}

TEST(DurationTest, FormatsForPeople) {
  EXPECT_EQ(FormatDuration(milliseconds(850)), "850ms");
  EXPECT_EQ(FormatDuration(seconds(12)), "12s");
  EXPECT_EQ(FormatDuration(seconds(252)), "4m12s");
  EXPECT_EQ(FormatDuration(minutes(185)), "3h05m");
  EXPECT_EQ(FormatDuration(hours(52)), "2d04h");
  EXPECT_EQ(FormatDuration(-seconds(3)), "-3s");
}

}  // namespace
}  // namespace dlagent
