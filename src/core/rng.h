// Philox4x32-10 counter-based RNG (Salmon et al., SC'11): the stream is a pure function of
// (seed, counter), so any step/rank can reproduce its random numbers without shared state,
// and a checkpoint only needs to store the counter.
#pragma once
#include <array>
#include <cmath>
#include <cstdint>

namespace longctx {

inline std::array<uint32_t, 4> philox4x32(std::array<uint32_t, 4> ctr, std::array<uint32_t, 2> key) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int round = 0; round < 10; round++) {
    uint64_t p0 = uint64_t(M0) * ctr[0], p1 = uint64_t(M1) * ctr[2];
    ctr = {uint32_t(p1 >> 32) ^ ctr[1] ^ key[0], uint32_t(p1), uint32_t(p0 >> 32) ^ ctr[3] ^ key[1],
           uint32_t(p0)};
    key[0] += W0;
    key[1] += W1;
  }
  return ctr;
}

// A sequential stream over Philox: state = (seed, counter). Copyable and serialisable.
struct Rng {
  uint64_t seed = 0;
  uint64_t counter = 0;  // number of 4-word blocks consumed
  std::array<uint32_t, 4> buf{};
  int used = 4;          // words of buf already handed out

  explicit Rng(uint64_t seed_ = 0, uint64_t counter_ = 0) : seed(seed_), counter(counter_) {}

  uint32_t next_u32() {
    if (used == 4) {
      buf = philox4x32({uint32_t(counter), uint32_t(counter >> 32), 0, 0},
                       {uint32_t(seed), uint32_t(seed >> 32)});
      counter++;
      used = 0;
    }
    return buf[used++];
  }
  uint64_t next_u64() { return (uint64_t(next_u32()) << 32) | next_u32(); }
  // uniform in [0, 1) with 24 bits
  float uniform() { return float(next_u32() >> 8) * (1.0f / 16777216.0f); }
  // uniform integer in [0, n)
  uint64_t below(uint64_t n) { return next_u64() % n; }
  // standard normal (Box-Muller)
  float normal() {
    float u1 = (float(next_u32() >> 8) + 1.0f) * (1.0f / 16777217.0f);
    float u2 = uniform();
    return std::sqrt(-2.0f * std::log(u1)) * std::cos(6.283185307179586f * u2);
  }
};

}  // namespace longctx
