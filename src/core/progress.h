// Progress reporting for long work (DESIGN.md §5): a redrawn bar on a TTY, plain lines otherwise.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace longctx {

// Progress p("encode", n_docs, "docs");  for (...) p.update(i + 1);  p.finish();
// On a TTY (stderr) it redraws one line at most 10 times a second; when stderr is not a TTY it
// prints a plain line at every 10 % step, so logs stay short. quiet = true prints nothing.
class Progress {
 public:
  Progress(std::string label, uint64_t total, std::string unit = "", bool quiet = false);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  void update(uint64_t done);  // absolute count, monotone
  void add(uint64_t n) { update(done_ + n); }
  void finish();               // draws 100 % and ends the line (idempotent)

 private:
  void draw(bool final);
  std::string label_, unit_;
  uint64_t total_, done_ = 0;
  bool quiet_, tty_, finished_ = false;
  int last_decile_ = -1;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

// True when stderr is a terminal (progress bars are drawn there).
bool progress_is_tty();

}  // namespace longctx
