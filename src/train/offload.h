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

// Eq. 3's constraint, split by direction: the largest r whose copies hide under the compute they
// overlap — the D2H of r·Act(s) under the layer's forward, the H2D prefetch under its backward:
//   r* = clamp(min(T_f(s)·B_d2h, T_b(s)·B_h2d) / Act(s), 0, 1),  T_f = T(s)/3, T_b = 2·T(s)/3
// (forward : backward = 1 : 2 in FLOPs) for per-layer forward+backward seconds T(s), per-layer
// saved bytes Act(s) and bandwidths in bytes/s. Eq. 3 as written, T(s)·min(B)/Act(s), lets the D2H
// hide under the whole T(s); measured on an H100 its r = 0.36 cost +84 % step time
// (bench/results/offload_2026-11-25_h100.md), as the forward alone is ~T(s)/3.
double offload_ratio_auto(double layer_time_s, double layer_act_bytes, double b_d2h, double b_h2d);

}  // namespace longctx
