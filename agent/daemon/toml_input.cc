#include "agent/daemon/toml_input.h"

#include <cctype>
#include <cstdio>

namespace dlagent {

Result<std::string> PrepareForToml(std::string_view original, const std::string& path) {
  std::string text(original);
  enum class In { kCode, kComment, kBasic, kLiteral, kMultiBasic, kMultiLiteral } in = In::kCode;
  size_t line = 1, column = 0;
  bool line_start = true;  // only blanks so far on this line, outside strings
  auto refuse = [&](const std::string& what) {
    return Status::InvalidArgument("config", path + ":" + std::to_string(line) + ":" + std::to_string(column) + ": " + what);
  };
  for (size_t i = 0; i < text.size(); ++i) {
    const unsigned char ch = static_cast<unsigned char>(text[i]);
    ++column;
    if ((ch < 0x20 && ch != '\t' && ch != '\n' && ch != '\r') || ch == 0x7f) {
      char code[8];
      std::snprintf(code, sizeof code, "0x%02x", ch);
      return refuse(std::string("control character ") + code + " (TOML allows none but tab; is this a text file?)");
    }
    if (ch == '\n') {
      if (in == In::kComment || in == In::kBasic || in == In::kLiteral) in = In::kCode;  // (an unclosed string is toml++'s to report)
      ++line;
      column = 0;
      line_start = in == In::kCode;
      continue;
    }
    if (ch >= 0x80) {
      if (in != In::kComment) return refuse("a non-ASCII character (this file is ASCII, but for comments)");
      text[i] = ' ';
      continue;
    }
    const std::string_view rest = std::string_view(text).substr(i);
    switch (in) {
      case In::kComment: break;
      case In::kBasic:
      case In::kMultiBasic:
        if (ch == '\\' && i + 1 < text.size() && text[i + 1] != '\n') {
          ++i, ++column;  // the escaped character
        } else if (in == In::kBasic && ch == '"') {
          in = In::kCode;
        } else if (in == In::kMultiBasic && rest.starts_with("\"\"\"")) {
          in = In::kCode, i += 2, column += 2;
        }
        break;
      case In::kLiteral:
        if (ch == '\'') in = In::kCode;
        break;
      case In::kMultiLiteral:
        if (rest.starts_with("'''")) in = In::kCode, i += 2, column += 2;
        break;
      case In::kCode:
        if (ch == '#') {
          in = In::kComment;
        } else if (rest.starts_with("\"\"\"")) {
          in = In::kMultiBasic, i += 2, column += 2;
        } else if (ch == '"') {
          in = In::kBasic;
        } else if (rest.starts_with("'''")) {
          in = In::kMultiLiteral, i += 2, column += 2;
        } else if (ch == '\'') {
          in = In::kLiteral;
        } else if (ch == '[' && line_start) {
          size_t j = i + 1;  // past '[' or '[['
          if (j < text.size() && text[j] == '[') ++j;
          while (j < text.size() && (text[j] == ' ' || text[j] == '\t')) ++j;
          const char next = j < text.size() ? text[j] : '\n';
          if (!(std::isalnum(static_cast<unsigned char>(next)) || next == '_' || next == '-' || next == '"' || next == '\'')) {
            column += j - i;
            return refuse("a table header needs a name after its '[' (e.g. [cluster])");
          }
        }
        break;
    }
    if (ch != ' ' && ch != '\t') line_start = false;
  }
  return text;
}

}  // namespace dlagent
