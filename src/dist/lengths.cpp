// Length distributions (lengths.h). Each is a mixture of log-uniform pieces [lo, hi] with a
// probability per sequence; a piece with lo == hi is a point mass.
#include "dist/lengths.h"

#include <algorithm>
#include <cmath>
#include <fstream>

#include "core/error.h"
#include "core/rng.h"

namespace longctx {

namespace {

struct Piece {
  double p;
  double lo, hi;
};

// ByteScale §2 / Fig. 2 (production data): 80 % of sequences ≤ 4K; 1 % ≥ 128K holding 44 % of
// tokens; 0.05 % at 2M holding 12 %. With mean length L: 0.0005·2M = 0.12·L gives L ≈ 8.7K, and
// the 0.95 % in [128K, 2M) must average ≈ 0.32·L/0.0095 ≈ 294K: log-uniform [128K, 560K].
// The 99 % below 128K then average ≈ 4.9K: 80 % log-uniform [128, 4K], 17 % [4K, 32K],
// 2 % [32K, 128K]. (lengths_sample checks nothing; tests/test_planner.cpp checks the shares.)
const std::vector<Piece> kByteScale = {{0.80, 128, 4096},       {0.17, 4096, 32768},
                                       {0.02, 32768, 131072}, {0.0095, 131072, 573440},
                                       {0.0005, 2097152, 2097152}};
// GitHub-like (code repositories concatenated per repo): a heavier middle and tail — our
// assumption, not the paper's numbers: 55 % ≤ 4K, 30 % 4K–32K, 12 % 32K–256K, 3 % 256K–2M.
const std::vector<Piece> kGithub = {{0.55, 128, 4096},
                                    {0.30, 4096, 32768},
                                    {0.12, 32768, 262144},
                                    {0.03, 262144, 2097152}};

}  // namespace

std::vector<std::string> lengths_dist_names() { return {"bytescale", "github", "uniform"}; }

std::vector<int64_t> lengths_sample(const std::string& dist, int64_t tokens, int64_t context,
                                    uint64_t seed) {
  LCX_CHECK(tokens > 0, "global batch must hold > 0 tokens, got {}", tokens);
  LCX_CHECK(context > 0, "context must be > 0, got {}", context);
  std::vector<Piece> pieces;
  if (dist == "bytescale") pieces = kByteScale;
  else if (dist == "github") pieces = kGithub;
  else if (dist == "uniform") pieces = {{1.0, 1, double(context)}};
  else fail("unknown length distribution '{}' (expected one of: bytescale, github, uniform, or --lengths FILE)", dist);
  Rng rng(seed);
  std::vector<int64_t> out;
  int64_t total = 0;
  while (total < tokens) {
    double u = rng.uniform(), acc = 0;
    const Piece* pc = &pieces.back();
    for (const auto& p : pieces) {
      acc += p.p;
      if (u < acc) { pc = &p; break; }
    }
    double len = pc->lo;
    if (pc->hi > pc->lo) {
      if (dist == "uniform") len = pc->lo + rng.uniform() * (pc->hi - pc->lo);
      else len = pc->lo * std::exp(rng.uniform() * std::log(pc->hi / pc->lo));
    }
    int64_t s = std::clamp<int64_t>(int64_t(len), 1, context);
    s = std::min(s, tokens - total);
    out.push_back(s);
    total += s;
  }
  return out;
}

std::vector<int64_t> lengths_read(const std::string& path) {
  std::ifstream in(path);
  LCX_CHECK(in.good(), "cannot open lengths file {}", path);
  std::vector<int64_t> out;
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    lineno++;
    size_t a = line.find_first_not_of(" \t\r");
    if (a == std::string::npos || line[a] == '#') continue;
    size_t b = line.find_last_not_of(" \t\r");
    std::string tok = line.substr(a, b - a + 1);
    bool digits = !tok.empty() && tok.size() <= 15 &&
                  std::all_of(tok.begin(), tok.end(), [](char c) { return c >= '0' && c <= '9'; });
    LCX_CHECK(digits, "{}:{}: expected one positive integer (a sequence length in tokens), got '{}'",
              path, lineno, tok.size() > 40 ? tok.substr(0, 40) + "…" : tok);
    int64_t v = std::stoll(tok);
    LCX_CHECK(v > 0, "{}:{}: sequence length must be > 0, got {}", path, lineno, v);
    out.push_back(v);
  }
  LCX_CHECK(!out.empty(), "{}: no sequence lengths (expected one positive integer per line)", path);
  return out;
}

}  // namespace longctx
