#include "error_reporting.h"

#include <mutex>
#include <sstream>
#include <vector>

#include "mxnet/lib_api.h"

namespace bnq {
namespace {

using MessageList = std::vector<std::stringstream*>;
using MessagesMember = MessageList mxnet::ext::MXerrorMsgs::*;

// MXerrorMsgs::messages is private and has no clear(); an explicit template
// instantiation may name a private member, which gives us its pointer.
MessagesMember messages_member = nullptr;

template <MessagesMember Member>
struct MessagesAccess {
  MessagesAccess() { messages_member = Member; }
  static MessagesAccess instance;
};
template <MessagesMember Member>
MessagesAccess<Member> MessagesAccess<Member>::instance;
template struct MessagesAccess<&mxnet::ext::MXerrorMsgs::messages>;

std::mutex& ErrorMutex() {
  static std::mutex mutex;
  return mutex;
}

}  // namespace

void ReportError(const std::string& op, const std::string& message) {
  std::lock_guard<std::mutex> lock(ErrorMutex());
  mxnet::ext::MXerrorMsgs* errors = mxnet::ext::MXerrorMsgs::get();
  std::stringstream* entry = nullptr;
  if (messages_member != nullptr && !(errors->*messages_member).empty()) {
    entry = (errors->*messages_member).front();
  } else {
    entry = &errors->add("", 0);
  }
  entry->str("");  // drop add()'s "file[line]: " prefix, or the previous error
  *entry << op << ": " << message;
}

}  // namespace bnq
