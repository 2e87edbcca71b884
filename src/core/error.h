// longctx::Error — every user-facing failure carries a message the user can act on:
// the file, the field or tensor, what was expected and what was found (DESIGN.md §1).
#pragma once
#include <fmt/format.h>
#include <stdexcept>
#include <string>

namespace longctx {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <class... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace longctx

// LCX_CHECK(cond, "fmt", args...): throw longctx::Error with the formatted message if !cond.
#define LCX_CHECK(cond, ...)                 \
  do {                                       \
    if (!(cond)) ::longctx::fail(__VA_ARGS__); \
  } while (0)
