// `longctx train`: train a SWAT (or softmax-window) model on prepared token shards.
#include <cmath>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/bench.h"
#include "cli/commands.h"
#include "core/error.h"
#include "dist/chunked_seq.h"
#include "train/trainer.h"

namespace longctx {

void register_train(CLI::App& app) {
  auto* cmd = app.add_subcommand("train", "Train a model on token shards from `longctx data prepare`");
  auto o = std::make_shared<TrainOptions>();
  auto preset = std::make_shared<std::string>("tiny");
  auto config_path = std::make_shared<std::string>();
  auto attention = std::make_shared<std::string>();
  auto alibi = std::make_shared<std::string>();
  auto bias = std::make_shared<std::string>();
  auto window = std::make_shared<int>(0);
  cmd->add_option("--data", o->data_dir, "Directory with train.bin, val.bin, tokenizer.model")->required();
  cmd->add_option("--out", o->out_dir, "Output directory: checkpoint/, metrics.jsonl")->required();
  cmd->add_option("--preset", *preset, "Model preset: tiny | small | swat-340m | swat-760m")->capture_default_str();
  cmd->add_option("--config", *config_path, "Model config JSON (HF names); overrides --preset");
  cmd->add_option("--attention", *attention, "Override attention kind: swat | softmax");
  cmd->add_option("--window", *window, "Override the attention window w");
  cmd->add_option("--alibi", *alibi, "Override ALiBi: balanced | neg | pos | none");
  cmd->add_option("--sigmoid-bias", *bias, "Override sigmoid bias b: a number or 'auto' (= -ln w)");
  cmd->add_option("--device", o->backend, "Backend: cpu | cpu_ref | cuda")->capture_default_str();
  cmd->add_option("--batch", o->batch, "Sequences per micro-batch")->capture_default_str();
  cmd->add_option("--seq", o->seq, "Tokens per sequence")->capture_default_str();
  cmd->add_option("--grad-accum", o->grad_accum, "Micro-batches per step")->capture_default_str();
  cmd->add_option("--steps", o->steps, "Optimizer steps (sets the cosine schedule)")->capture_default_str();
  cmd->add_option("--lr", o->lr, "Peak learning rate")->capture_default_str();
  cmd->add_option("--min-lr", o->min_lr, "Final learning rate of the cosine")->capture_default_str();
  cmd->add_option("--warmup", o->warmup, "Warmup steps")->capture_default_str();
  cmd->add_option("--weight-decay", o->weight_decay, "AdamW weight decay (matrices only)")->capture_default_str();
  cmd->add_option("--clip", o->clip, "Gradient-norm clip (0: off)")->capture_default_str();
  cmd->add_option("--eval-every", o->eval_every, "Steps between validation passes")->capture_default_str();
  cmd->add_option("--eval-tokens", o->eval_tokens, "Validation tokens per pass")->capture_default_str();
  cmd->add_option("--save-every", o->save_every, "Steps between checkpoints")->capture_default_str();
  cmd->add_option("--seed", o->seed, "Seed for init and data order")->capture_default_str();
  cmd->add_option("--max-minutes", o->max_minutes, "Stop (and save) after this many minutes");
  cmd->add_option("--stop-after", o->stop_after, "Stop (and save) after this many steps, keeping the schedule");
  cmd->add_flag("--resume", o->resume, "Continue from OUT/checkpoint (bit-exact)");
  cmd->add_flag("--skip-nonfinite", o->skip_nonfinite, "Skip steps with a non-finite loss or gradient");
  cmd->add_flag("--quiet", o->quiet, "No progress output");
  cmd->add_flag("--recompute", o->recompute, "Recompute each layer's activations in backward (less memory)");
  auto offload = std::make_shared<std::string>("off");
  auto offload_cost = std::make_shared<std::string>();
  cmd->add_option("--offload", *offload, "Activation offloading to pinned host memory: off | auto | ratio r in [0,1]")
      ->capture_default_str();
  cmd->add_option("--offload-cost", *offload_cost, "Profile JSON (`bench profile`) for --offload auto");
  cmd->add_option("--chunk", o->chunk, "Train each micro-batch in chunks of this many tokens, the window's K/V "
                  "halo carried between them (memory of one chunk; ~4/3 the work): contexts beyond one "
                  "device's memory");
  auto halo = std::make_shared<std::string>("device");
  cmd->add_option("--chunk-halo", *halo, "Where --chunk keeps the halo between chunks: device | host (pinned "
                  "host memory: device memory independent of the sequence length)")->capture_default_str();
  const auto hdp = add_train_hdp(cmd);  // --hdp …: cmd_train_hdp.cpp
  cmd->callback([=] {
    Config c = config_path->empty() ? config_preset(*preset) : config_from_file(*config_path);
    if (!attention->empty()) c.attention = attn_kind_from_string(*attention);
    if (*window > 0) c.window = *window;
    if (!alibi->empty()) c.alibi = alibi_from_string(*alibi);
    if (*bias == "auto") {
      c.sigmoid_bias = -std::log(float(c.window));
    } else if (!bias->empty()) {
      try {
        c.sigmoid_bias = std::stof(*bias);
      } catch (const std::exception&) {
        fail("--sigmoid-bias: '{}' is neither a number nor 'auto'", *bias);
      }
    }
    o->config = c;
    o->offload = offload_from_flag(*offload, *offload_cost, o->seq, c.hidden_size, o->recompute);
    LCX_CHECK(o->chunk >= 0, "--chunk must be ≥ 0 tokens (0: whole micro-batches), got {}", o->chunk);
    if (o->chunk > 0)
      o->forward_backward = [step = std::make_shared<ChunkedStep>(ChunkedOptions{
                                 o->chunk, chunk_halo_on_host(*halo)})](
                                Model& m, const TokenBatch& b, float dloss) { return (*step)(m, b, dloss); };
    if (hdp(*o)) return;
    TrainResult r = train(*o);
    fmt::print("trained {} steps, {:.0f} tokens/s{}\n", r.steps_done, r.tokens_per_s,
               r.val_losses.empty() ? "" : fmt::format(", final val_loss {:.4f}", r.val_losses.back()));
  });
}

}  // namespace longctx
