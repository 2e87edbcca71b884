#include "core/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

namespace longctx {

bool progress_is_tty() { return isatty(fileno(stderr)) == 1; }

Progress::Progress(std::string label, uint64_t total, std::string unit, bool quiet)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total), quiet_(quiet),
      tty_(progress_is_tty()), start_(std::chrono::steady_clock::now()), last_draw_(start_) {
  if (!quiet_ && tty_) draw(false);
}

Progress::~Progress() {
  if (!finished_ && !quiet_ && tty_) std::fputc('\n', stderr);  // leave the terminal tidy
}

void Progress::update(uint64_t done) {
  done_ = done;
  if (quiet_ || finished_) return;
  auto now = std::chrono::steady_clock::now();
  if (tty_) {
    if (now - last_draw_ >= std::chrono::milliseconds(100)) {
      last_draw_ = now;
      draw(false);
    }
  } else if (total_ > 0) {
    int decile = int(10 * std::min(done_, total_) / total_);
    if (decile > last_decile_ && decile < 10) {
      last_decile_ = decile;
      draw(false);
    }
  }
}

void Progress::finish() {
  if (finished_) return;
  if (done_ < total_) done_ = total_;
  if (!quiet_) draw(true);
  finished_ = true;
}

void Progress::draw(bool final) {
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  double frac = total_ ? double(std::min(done_, total_)) / double(total_) : 1.0;
  double rate = secs > 0 ? double(done_) / secs : 0.0;
  const char* sp = unit_.empty() ? "" : " ";
  if (tty_) {
    constexpr int width = 30;
    int fill = int(frac * width);
    std::string bar(size_t(fill), '#');
    bar.append(size_t(width - fill), '.');
    double eta = (rate > 0 && total_ > done_) ? double(total_ - done_) / rate : 0.0;
    std::fprintf(stderr, "\r%s [%s] %3.0f%% %llu/%llu%s%s  %.1fs  eta %.0fs\033[K%s", label_.c_str(),
                 bar.c_str(), 100 * frac, (unsigned long long)done_, (unsigned long long)total_, sp,
                 unit_.c_str(), secs, eta, final ? "\n" : "");
  } else {
    std::fprintf(stderr, "%s: %3.0f%% %llu/%llu%s%s (%.1fs)\n", label_.c_str(), 100 * frac,
                 (unsigned long long)done_, (unsigned long long)total_, sp, unit_.c_str(), secs);
  }
  std::fflush(stderr);
}

}  // namespace longctx
