// The activation-offloading policy (ByteScale §5.2, DESIGN.md §3.2): `--offload off | auto | r`.
#pragma once
#include <string>

namespace longctx {

struct OffloadPolicy {
  bool automatic = false;  // r from Eq. 3's constraint and a GPU profile (offload_ratio_auto)
  double r = 0;            // fixed ratio in [0, 1] (0: off)
};

// "off", "auto" or a number in [0, 1]; anything else throws Error naming the flag.
OffloadPolicy offload_policy_from_string(const std::string& s);

// Eq. 3: the largest r whose copies hide under compute, T(s) ≥ Act(s)·r / min(B_d2h, B_h2d):
// r* = clamp(T(s)·min(B_d2h, B_h2d) / Act(s), 0, 1) for per-layer seconds T(s), per-layer saved
// bytes Act(s) and bandwidths in bytes/s.
double offload_ratio_auto(double layer_time_s, double layer_act_bytes, double b_d2h, double b_h2d);

}  // namespace longctx
