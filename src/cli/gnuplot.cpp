#include "cli/gnuplot.h"

#include <cstdlib>
#include <fmt/format.h>

#include "core/error.h"

namespace longctx {

std::string gp_quote(const std::string& s) {
  std::string r = "'";
  for (char c : s) r += (c == '\'') ? std::string("''") : std::string(1, c);
  return r + "'";
}

void run_gnuplot(const std::filesystem::path& script, const std::string& out) {
  std::string cmdline = fmt::format("gnuplot {} 2>&1", gp_quote(script.string()));
  int rc = std::system(cmdline.c_str());
  LCX_CHECK(rc == 0, "gnuplot failed (exit {}) writing {}; is gnuplot installed? (apt-get install gnuplot-nox)",
            rc, out);
  fmt::print("wrote {}\n", out);
}

}  // namespace longctx
