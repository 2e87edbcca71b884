#include "infer/generate.h"

#include <algorithm>
#include <numeric>

#include "core/error.h"

namespace longctx {

int receptive_field(const Config& c, int max_context) {
  long r = long(c.num_hidden_layers) * (c.window - 1) + 1;
  return int(std::min<long>(r, max_context));
}

void generate(Model& m, std::vector<int32_t>& tokens, int max_new, Sampler& sampler, int32_t eos,
              int max_context, const std::function<bool(int32_t)>& on_token) {
  LCX_CHECK(!tokens.empty(), "generate: the prompt is empty (it needs at least a BOS token)");
  LCX_CHECK(max_new >= 0, "generate: max_new must be ≥ 0, got {}", max_new);
  const int R = receptive_field(m.config, max_context);
  m.reserve(R);
  std::vector<float> logits(m.config.vocab_size);
  std::vector<int32_t> pos(R);
  std::iota(pos.begin(), pos.end(), 0);
  for (int i = 0; i < max_new; i++) {
    const int T = int(std::min<size_t>(tokens.size(), size_t(R)));
    const int32_t cu[2] = {0, T};
    TokenBatch b;
    b.tokens = tokens.data() + tokens.size() - T;
    b.pos = pos.data();
    b.cu_seqlens = cu;
    b.T = T;
    b.n_docs = 1;
    model_logits_last(m, b, logits.data());
    const int32_t next = sampler.sample(logits.data(), m.config.vocab_size);
    tokens.push_back(next);
    if (on_token && !on_token(next)) break;
    if (next == eos) break;
  }
}

}  // namespace longctx
