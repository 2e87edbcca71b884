#include "infer/generate.h"

#include "core/error.h"
#include "infer/engine.h"

namespace longctx {

void generate(Model& m, std::vector<int32_t>& tokens, int max_new, Sampler& sampler, int32_t eos,
              int max_context, const std::function<bool(int32_t)>& on_token) {
  LCX_CHECK(!tokens.empty(), "generate: the prompt is empty (it needs at least a BOS token)");
  LCX_CHECK(max_new >= 0, "generate: max_new must be ≥ 0, got {}", max_new);
  if (max_new == 0) return;
  EngineOptions opt;
  opt.max_context = max_context;
  Engine e(m, opt);
  KvCache cache = e.new_cache();
  LCX_CHECK(int64_t(tokens.size()) + max_new <= cache.room(),
            "generate: prompt ({} tokens) + {} new tokens exceed --max-context {}", tokens.size(),
            max_new, max_context);
  std::vector<float> logits(m.config.vocab_size);
  e.prefill(cache, tokens.data(), int(tokens.size()), logits.data());
  for (int i = 0; i < max_new; i++) {
    const int32_t next = sampler.sample(logits.data(), m.config.vocab_size);
    tokens.push_back(next);
    if (on_token && !on_token(next)) break;
    if (next == eos || i + 1 == max_new) break;
    Segment s{&cache, &tokens.back(), 1};
    e.forward(&s, 1, logits.data());
  }
}

}  // namespace longctx
