#include <gtest/gtest.h>

#include "agent/daemon/membership.h"
#include "bootstrap/common/fake_env.h"

namespace dlagent {
namespace {

TEST(ClusterKeysTest, OneKeyALineThePrimaryFirstAndClearRefusals) {
  FakeEnv env;
  const std::string a(64, 'a'), b = std::string(32, '0') + std::string(32, 'f');
  env.PutFile("/k", a + "\n\n  " + b + "  \n");
  Result<std::vector<std::string>> keys = LoadClusterKeys(env, "/k");
  ASSERT_TRUE(keys.ok()) << keys.status().ToString();
  ASSERT_EQ(keys->size(), 2u);
  EXPECT_EQ((*keys)[0], std::string(32, '\xaa')) << "raw bytes, the primary first";
  EXPECT_EQ((*keys)[1].substr(16), std::string(16, '\xff'));
  struct Case {
    std::string text, why;
  } cases[] = {{"", "holds no key; make one with: openssl rand -hex 32 > /k"},
               {a + "\n" + std::string(63, 'b') + "\n", "/k line 2 is not 64 hex characters"},
               {std::string(64, 'g') + "\n", "/k line 1 is not 64 hex characters"}};
  for (const Case& c : cases) {
    env.PutFile("/k", c.text);
    Result<std::vector<std::string>> r = LoadClusterKeys(env, "/k");
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_NE(r.status().ToString().find(c.why), std::string::npos) << r.status().ToString();
  }
  EXPECT_EQ(LoadClusterKeys(env, "/missing").status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace dlagent
