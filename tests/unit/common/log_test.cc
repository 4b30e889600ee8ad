#include "bootstrap/common/log.h"

#include <unistd.h>

#include <cstdio>

#include <gtest/gtest.h>

#include "tests/support/temp_dir.h"

namespace dlagent {
namespace {

// Sends stderr to a file while alive; Text() returns what was written.
class CaptureStderr {
 public:
  explicit CaptureStderr(const std::string& path) : path_(path) {
    std::fflush(stderr);
    saved_ = ::dup(2);
    FILE* f = std::fopen(path.c_str(), "w");
    ::dup2(::fileno(f), 2);
    std::fclose(f);
  }
  ~CaptureStderr() { Restore(); }
  std::string Text() {
    Restore();
    FILE* f = std::fopen(path_.c_str(), "r");
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
    std::fclose(f);
    return out;
  }

 private:
  void Restore() {
    if (saved_ < 0) return;
    std::fflush(stderr);
    ::dup2(saved_, 2);
    ::close(saved_);
    saved_ = -1;
  }
  std::string path_;
  int saved_ = -1;
};

TEST(LogTest, StderrRecordsCarryLevelAndFields) {
  testing::TempDir dir;
  InitLogging(LogTarget::kStderr, spdlog::level::info);
  CaptureStderr cap(dir.Join("err"));
  SetLogField("PHASE", "discover");
  spdlog::info("nodes {}/{}", 3, 8);
  {
    ScopedLogFields f({{"PEER", "i-0abc"}});
    spdlog::warn("peer suspect");
  }
  spdlog::debug("hidden at info");
  spdlog::error("after scope");
  SetLogField("PHASE", "");
  std::string text = cap.Text();
  EXPECT_NE(text.find(" I nodes 3/8 phase=discover\n"), std::string::npos) << text;
  EXPECT_NE(text.find(" W peer suspect phase=discover peer=i-0abc\n"), std::string::npos) << text;
  EXPECT_NE(text.find(" E after scope phase=discover\n"), std::string::npos) << text;
  EXPECT_EQ(text.find("hidden"), std::string::npos) << text;
}

TEST(LogTest, ParseLogLevel) {
  EXPECT_EQ(*ParseLogLevel("debug"), spdlog::level::debug);
  EXPECT_EQ(*ParseLogLevel("error"), spdlog::level::err);
  Result<spdlog::level::level_enum> bad = ParseLogLevel("verbose");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().ToString().find("trace, debug, info, warn or error"), std::string::npos);
}

}  // namespace
}  // namespace dlagent
