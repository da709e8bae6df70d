#include "number_parsing.h"

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>

namespace bnq {
namespace {

bool OnlyDecimalCharacters(const std::string& s, bool allow_fraction) {
  for (char ch : s) {
    const bool digit = ch >= '0' && ch <= '9';
    const bool sign = ch == '+' || ch == '-';
    const bool fraction = ch == '.' || ch == 'e' || ch == 'E';
    if (!digit && !sign && !(allow_fraction && fraction)) return false;
  }
  return !s.empty();
}

}  // namespace

std::string Trim(const std::string& s) {
  const char* ws = " \t\n\r";
  const size_t begin = s.find_first_not_of(ws);
  if (begin == std::string::npos) return "";
  const size_t end = s.find_last_not_of(ws);
  return s.substr(begin, end - begin + 1);
}

bool ParseDecimal(const std::string& text, double* value) {
  const std::string s = Trim(text);
  if (!OnlyDecimalCharacters(s, true)) return false;
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size()) return false;
  if (errno == ERANGE && std::fabs(v) == HUGE_VAL) return false;
  *value = v;
  return true;
}

bool ParseInteger(const std::string& text, int* value) {
  const std::string s = Trim(text);
  if (!OnlyDecimalCharacters(s, false)) return false;
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(s.c_str(), &end, 10);
  if (end != s.c_str() + s.size() || errno == ERANGE || v < std::numeric_limits<int>::min() ||
      v > std::numeric_limits<int>::max()) {
    return false;
  }
  *value = static_cast<int>(v);
  return true;
}

bool ParseBool(const std::string& text, bool* value) {
  std::string s = Trim(text);
  for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (s == "true" || s == "1") {
    *value = true;
    return true;
  }
  if (s == "false" || s == "0") {
    *value = false;
    return true;
  }
  return false;
}

bool ParseTuple(const std::string& text, std::vector<int64_t>* out) {
  std::string s = Trim(text);
  if (!s.empty() && (s.front() == '(' || s.front() == '[')) {
    if (s.size() < 2 || (s.back() != ')' && s.back() != ']')) return false;
    s = s.substr(1, s.size() - 2);
  }
  out->clear();
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find(',', start);
    if (end == std::string::npos) end = s.size();
    const std::string item = Trim(s.substr(start, end - start));
    if (!item.empty()) {
      int v = 0;
      if (!ParseInteger(item, &v)) return false;
      out->push_back(v);
    } else if (end != s.size()) {
      return false;  // an empty item before a comma
    }
    start = end + 1;
  }
  return true;
}

bool IsHiddenAttribute(const std::string& key) {
  return key.size() > 4 && key.compare(0, 2, "__") == 0 &&
         key.compare(key.size() - 2, 2, "__") == 0;
}

}  // namespace bnq
