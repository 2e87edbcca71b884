// Process memory as the kernel reports it (/proc/self/status), for benchmarks that show memory
// staying flat: resident set now (VmRSS) and its high-water mark (VmHWM), which can be reset.
#pragma once
#include <cstring>
#include <fstream>
#include <string>

namespace longctx {

// A field of /proc/self/status ("VmRSS:", "VmHWM:") in MiB; -1 where unavailable.
inline double proc_status_mb(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(key, 0) == 0) return std::stod(line.substr(std::strlen(key))) / 1024.0;
  return -1;
}

// Resets VmHWM to the current VmRSS (Linux ≥ 4.0); false where not permitted.
inline bool reset_peak_rss() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
  return bool(f.flush());
}

}  // namespace longctx
