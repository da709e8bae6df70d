// Error reporting to MXNet through lib_api's message list.
//
// lib_api (MXNet 1.9.1) appends every MX_ERROR_MSG to one process-wide list
// that it never clears, and MXNet prints the whole list with each failure:
// the tenth error would show all nine earlier ones first, and the list grows
// for ever.  ReportError() keeps one entry and rewrites its text.  It never
// deletes or removes an entry: MXNet may be reading the list on another
// engine thread, without any lock.
#pragma once

#include <string>

namespace bnq {

// Replaces any earlier messages with "<op>: <message>".  Thread-safe with
// respect to other ReportError() calls.
void ReportError(const std::string& op, const std::string& message);

}  // namespace bnq
