// The shims' error convention: a C++ exception becomes a malloc'ed message in `*err` (freed by
// rlvr_c10d_free_error) and a 0 return, never an unwind into Rust.
#pragma once

#include <cstdlib>
#include <cstring>
#include <exception>

#include <c10/util/Exception.h>

namespace rlvr {

inline char* copy_message(const char* what) {
  size_t n = std::strlen(what);
  char* out = static_cast<char*>(std::malloc(n + 1));
  if (out != nullptr) {
    std::memcpy(out, what, n + 1);
  }
  return out;
}

// Run `f`: 1 when it returned, 0 with `*err` set when it threw.
template <typename F>
int guarded(char** err, F&& f) {
  try {
    f();
    return 1;
  } catch (const c10::Error& e) {
    *err = copy_message(e.what_without_backtrace());
  } catch (const std::exception& e) {
    *err = copy_message(e.what());
  } catch (...) {
    *err = copy_message("unknown C++ exception");
  }
  return 0;
}

}  // namespace rlvr
