// Helpers shared by the test programs: scratch directories, files, and running the CLI.
#pragma once
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "kernels/backend.h"

// CUDA tests skip, with a message, on machines (and builds) without a GPU (CI).
#define SKIP_WITHOUT_GPU() \
  if (!::longctx::cuda_available()) \
  GTEST_SKIP() << "no CUDA device (or no CUDA backend in this build): skipped"

namespace longctx::testing {

// A fresh directory under the system temp dir, removed when the object goes out of scope.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& tag = "test") {
    static int counter = 0;
    path = std::filesystem::temp_directory_path() /
           ("longctx_" + tag + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (path / name).string(); }
};

// n standard-normal values (× scale) from a seeded Philox stream: test inputs, never zeros.
template <class T>
std::vector<T> randn(size_t n, uint64_t seed, T scale = T(1)) {
  Rng r(seed);
  std::vector<T> v(n);
  for (auto& x : v) x = scale * T(r.normal());
  return v;
}

// Writes `bytes` to `path`, creating parent directories.
// max |a − b| / max(|b|, 1e-3): the largest error relative to the reference's scale.
inline double max_rel_err(const float* a, const float* b, int n) {
  double diff = 0, mag = 1e-3;
  for (int i = 0; i < n; i++) {
    diff = std::max(diff, double(std::fabs(a[i] - b[i])));
    mag = std::max(mag, double(std::fabs(b[i])));
  }
  return diff / mag;
}

// The AttnShape of one packed stream whose documents are `cu` (cu.back() tokens), scale 1/√D.
inline AttnShape stream_shape(const std::vector<int32_t>& cu, int H, int Hkv, int D, int window,
                              const float* slopes, float bias = 0.0f) {
  AttnShape s;
  s.T = cu.back();
  s.H = H;
  s.Hkv = Hkv;
  s.D = D;
  s.window = window;
  s.cu_seqlens = cu.data();
  s.n_docs = int(cu.size()) - 1;
  s.slopes = slopes;
  s.bias = bias;
  s.scale = 1.0f / std::sqrt(float(D));
  return s;
}

inline void write_file(const std::string& path, const std::string& bytes) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << bytes;
}

inline std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// The message of the longctx::Error that f throws, or "(no error)".
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// Runs f, expects a longctx::Error whose message contains every one of `parts`; returns it.
template <class F>
std::string expect_error(F&& f, std::initializer_list<std::string> parts) {
  try {
    f();
  } catch (const Error& e) {
    std::string msg = e.what();
    for (const auto& p : parts)
      EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
    return msg;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected longctx::Error, got std::exception: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected an Error containing '" << *parts.begin() << "', nothing was thrown";
  return "";
}

struct CliRun {
  int code;         // exit code (128 + signal if killed)
  std::string out;  // stdout and stderr together
};

// Runs `longctx ARGS` from the build tree.
inline CliRun run_cli(const std::string& args) {
  std::string cmd = std::string(LONGCTX_BINARY_DIR) + "/longctx " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int status = pclose(p);
  return CliRun{WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), out};
}

}  // namespace longctx::testing

// A CLI run that failed cleanly: exit code 1, the message contains `needle`, no crash.
#define EXPECT_CLI_ERROR(r, needle)                                            \
  do {                                                                         \
    EXPECT_EQ((r).code, 1) << (r).out;                                         \
    EXPECT_NE((r).out.find(needle), std::string::npos) << (r).out;             \
    EXPECT_EQ((r).out.find("terminate called"), std::string::npos) << (r).out; \
  } while (0)
