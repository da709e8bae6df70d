// Strict parsing of the numbers and booleans in attribute and option strings,
// as MXNet's own parameter parser accepts them: decimal numbers only (no hex,
// no "inf"/"nan" words), surrounding whitespace allowed, nothing else.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace bnq {

std::string Trim(const std::string& s);

// A decimal floating-point number; underflow to a denormal or zero is fine,
// overflow is not.
bool ParseDecimal(const std::string& text, double* value);

// A decimal integer within int's range.
bool ParseInteger(const std::string& text, int* value);

// true/false/1/0, case-insensitive.
bool ParseBool(const std::string& text, bool* value);

// MXNet's hidden attributes ("__name__"), which no op parses.
bool IsHiddenAttribute(const std::string& key);

// A tuple of integers as MXNet writes it: "(3, 3)", "[3,3]", "(3,)" or "3".
bool ParseTuple(const std::string& text, std::vector<int64_t>* out);

}  // namespace bnq
