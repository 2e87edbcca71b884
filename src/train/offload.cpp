#include "train/offload.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace longctx {

OffloadPolicy offload_policy_from_string(const std::string& s) {
  if (s == "off") return {};
  if (s == "auto") return {true, 0};
  double r = -1;
  size_t used = 0;
  try {
    r = std::stod(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  LCX_CHECK(used == s.size() && used > 0 && r >= 0.0 && r <= 1.0,
            "--offload: '{}' is not 'off', 'auto' or a ratio r in [0, 1]", s);
  return {false, r};
}

double offload_ratio_auto(double layer_time_s, double layer_act_bytes, double b_d2h, double b_h2d) {
  LCX_CHECK(layer_act_bytes > 0 && b_d2h > 0 && b_h2d > 0,
            "offload auto: activation bytes and copy bandwidths must be > 0");
  const double t_fwd = layer_time_s / 3, t_bwd = 2 * layer_time_s / 3;
  return std::clamp(std::min(t_fwd * b_d2h, t_bwd * b_h2d) / layer_act_bytes, 0.0, 1.0);
}

}  // namespace longctx
