// Rendering plots with gnuplot (Debian gnuplot-nox): quoting for its scripts, and running one.
#pragma once
#include <filesystem>
#include <string>

namespace longctx {

// A gnuplot single-quoted string (also a safe shell word for paths without newlines).
std::string gp_quote(const std::string& s);
// Runs `gnuplot script`; throws Error naming `out` if gnuplot is missing or fails.
void run_gnuplot(const std::filesystem::path& script, const std::string& out);

}  // namespace longctx
