#include <gtest/gtest.h>

#include "agent/ctl/commands.h"

namespace dlagent {
namespace {

TEST(ForTerminalTest, ControlCharactersShowInsteadOfActing) {
  struct Case {
    std::string in, out;
  } cases[] = {
      {"epoch 3 loss 0.25\tok", "epoch 3 loss 0.25\tok"},                                              // text and tabs stay
      {"\x1b]0;owned\x07title", "\\x1b]0;owned\\x07title"},                                            // OSC: set the title
      {"\x1b[2J\x1b[Hj-000000000000 backup running", "\\x1b[2J\\x1b[Hj-000000000000 backup running"},  // clear, home
      {"50%\r100%", "50%\\x0d100%"},
      {std::string("nul\0here", 8), "nul\\x00here"},
      {"del\x7f", "del\\x7f"},
      {"c1 \xc2\x9b"
       "2J",
       "c1 \\xc2\\x9b2J"},                                                         // U+009B, CSI, as UTF-8
      {"caf\xc3\xa9 \xe2\x9c\x93 \xc2\xa0", "caf\xc3\xa9 \xe2\x9c\x93 \xc2\xa0"},  // other UTF-8 stays
      {"\xc2", "\xc2"},                                                            // a lone lead byte at the end
  };
  for (const Case& c : cases) EXPECT_EQ(ForTerminal(c.in), c.out) << c.in;
}

}  // namespace
}  // namespace dlagent
