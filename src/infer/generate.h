// Autoregressive generation for the demo and quick checks. Each step runs the model over the
// last R tokens, where R = L·(w−1)+1 is the receptive field of a SWAT model (exact: attention
// depends only on relative positions, so older tokens cannot change the next logits).
// The constant-memory KV ring-buffer engine (DESIGN.md §2.2) replaces this for serving.
#pragma once
#include <functional>
#include <vector>

#include "infer/sampler.h"
#include "model/model.h"

namespace longctx {

// Receptive field of the model in tokens (capped at max_context).
int receptive_field(const Config& c, int max_context);

// Appends up to max_new tokens to `tokens`, stopping after `eos` (if ≥ 0). on_token is called
// with each new token; returning false stops early.
void generate(Model& m, std::vector<int32_t>& tokens, int max_new, Sampler& sampler, int32_t eos,
              int max_context, const std::function<bool(int32_t)>& on_token);

}  // namespace longctx
