// Wall-clock intervals for timings and progress (steady clock: never jumps).
#pragma once
#include <chrono>

namespace longctx {

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace longctx
