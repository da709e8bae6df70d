// Library entry point: MXNet calls initialize() from mx.library.load().
#include <iostream>

#include "mxnet/lib_api.h"

// MXNET_VERSION of the wheel whose headers and lib_api.cc this library is
// built with (MAJOR * 10000 + MINOR * 100 + PATCH).
constexpr int kBuiltForMXNet = 10901;

mxnet::ext::MXReturnValue initialize(int version) {
  if (version != kBuiltForMXNet) {
    MX_ERROR_MSG << "mxnet_bnq was built for MXNet " << kBuiltForMXNet << " but is loaded by MXNet "
                 << version << "; rebuild it (pip install .)";
    return mxnet::ext::MX_FAIL;
  }
  return mxnet::ext::MX_SUCCESS;
}
