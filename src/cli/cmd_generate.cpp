// `longctx generate`: sample a continuation of a prompt from a checkpoint.
#include <algorithm>
#include <cstdio>

#include "cli/commands.h"
#include "core/error.h"
#include "infer/generate.h"
#include "kernels/profile.h"
#include "model/checkpoint.h"
#include "tokenizer/tokenizer.h"

namespace longctx {

void register_generate(CLI::App& app) {
  auto* cmd = app.add_subcommand("generate", "Generate text from a checkpoint");
  struct Opts {
    std::string ckpt, prompt, device = "cpu";
    int max_tokens = 100, max_context = 1 << 16;
    bool profile_ops = false;
    SamplerParams sp;
  };
  auto o = std::make_shared<Opts>();
  o->sp.temperature = 0.8f;
  o->sp.top_k = 40;
  o->sp.top_p = 0.95f;
  cmd->add_option("--ckpt", o->ckpt, "Checkpoint directory (model.safetensors, config.json, tokenizer.model)")->required();
  cmd->add_option("--prompt", o->prompt, "Prompt text")->required();
  cmd->add_option("--max-tokens", o->max_tokens, "Tokens to generate")->capture_default_str();
  cmd->add_option("--temperature", o->sp.temperature, "Sampling temperature (0 = greedy)")->capture_default_str();
  cmd->add_option("--top-k", o->sp.top_k, "Keep the k most likely tokens (0 = all)")->capture_default_str();
  cmd->add_option("--top-p", o->sp.top_p, "Nucleus sampling mass")->capture_default_str();
  cmd->add_option("--seed", o->sp.seed, "Sampling seed")->capture_default_str();
  cmd->add_option("--max-context", o->max_context, "Longest context the model attends to")->capture_default_str();
  cmd->add_option("--device", o->device, "Backend: cpu | cpu_ref | cuda")->capture_default_str();
  cmd->add_flag("--profile-ops", o->profile_ops,
                "Then print a per-op table on stderr (each op timed between device syncs; ms per generated "
                "token, the prefill included)");
  cmd->callback([o] {
    LCX_CHECK(o->max_tokens > 0, "--max-tokens must be > 0, got {}", o->max_tokens);
    LoadedModel lm = checkpoint_load(o->ckpt);
    Tokenizer tok = Tokenizer::load(o->ckpt + "/tokenizer.model");
    LCX_CHECK(tok.vocab_size() == lm.config.vocab_size,
              "{}: tokenizer.model has {} pieces but config.json says vocab_size {}", o->ckpt,
              tok.vocab_size(), lm.config.vocab_size);
    OpProfile prof;  // before m: the profiled table charges it while m runs
    Model m(lm.config, backend_get(o->device.c_str()));
    m.params.upload(lm.params.data(), lm.params.size());
    if (o->profile_ops) m.backend = &backend_profiled(*m.backend, prof);
    int generated = 0;
    Sampler sampler(o->sp);
    std::vector<int32_t> ids = {tok.bos_id()};
    for (int32_t t : tok.encode(o->prompt)) ids.push_back(t);
    // Print the decoded text beyond the prompt's: decoding the continuation on its own would
    // drop the leading space SentencePiece folds into its first piece.
    const std::string prompt_text = tok.decode(std::vector<int32_t>(ids.begin() + 1, ids.end()));
    std::fputs(prompt_text.c_str(), stdout);
    size_t shown = prompt_text.size();
    generate(m, ids, o->max_tokens, sampler, tok.eos_id(), o->max_context, [&](int32_t) {
      generated++;
      // Decode the whole text each time: pieces may merge across token boundaries.
      std::vector<int32_t> all(ids.begin() + 1, ids.end());
      if (!all.empty() && all.back() == tok.eos_id()) all.pop_back();
      std::string text = tok.decode(all);
      if (text.size() > shown) {
        std::fputs(text.c_str() + shown, stdout);
        std::fflush(stdout);
        shown = text.size();
      }
      return true;
    });
    std::fputs("\n", stdout);
    if (o->profile_ops) {
      prof.steps = std::max(1, generated);
      print_op_table(stderr, prof.to_json());
    }
  });
}

}  // namespace longctx
