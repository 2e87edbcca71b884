// Sequence-length lists for planning and simulation: named distributions and files.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace longctx {

// Draw sequences from a named distribution until they hold `tokens` tokens (the last one is
// cut to fit), each capped at `context`. Deterministic in `seed`. Names:
//   bytescale  the paper's production mix: 80 % of sequences ≤ 4K, 1 % ≥ 128K holding ~44 %
//              of tokens, 0.05 % at 2M holding ~12 % (log-uniform pieces, see lengths.cpp)
//   github     a code-like mix with a heavier mid/long tail (our assumption, see lengths.cpp)
//   uniform    uniform in [1, context]
// Throws Error for an unknown name (listing the known ones).
std::vector<int64_t> lengths_sample(const std::string& dist, int64_t tokens, int64_t context,
                                    uint64_t seed);
std::vector<std::string> lengths_dist_names();

// One positive integer per line; blank lines and lines starting with '#' are skipped.
// Throws Error naming the file and line of anything else.
std::vector<int64_t> lengths_read(const std::string& path);

}  // namespace longctx
