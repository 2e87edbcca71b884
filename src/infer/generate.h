// Autoregressive generation of one sequence for `longctx generate` and quick checks, on the
// inference engine (engine.h): a chunked prefill of the prompt into a KV cache, then one decode
// step per token. Memory is constant in the context length for a SWAT model.
#pragma once
#include <functional>
#include <vector>

#include "infer/sampler.h"
#include "model/model.h"

namespace longctx {

// Appends up to max_new tokens to `tokens`, stopping after `eos` (if ≥ 0). on_token is called
// with each new token; returning false stops early. max_context bounds a softmax-full model's
// growing cache (a SWAT model runs past it with its window-sized ring).
void generate(Model& m, std::vector<int32_t>& tokens, int max_new, Sampler& sampler, int32_t eos,
              int max_context, const std::function<bool(int32_t)>& on_token);

}  // namespace longctx
