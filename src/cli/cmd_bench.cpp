// `longctx bench attention|train`: benchmarks printing one JSON object per case.
#include <cstdio>
#include <fmt/format.h>

#include "cli/bench.h"
#include "cli/commands.h"
#include "model/config.h"

namespace longctx {

void register_bench(CLI::App& app) {
  auto* cmd = app.add_subcommand("bench", "Benchmarks (JSON output)");
  cmd->require_subcommand(1);

  auto* att = cmd->add_subcommand("attention", "Time attention forward and forward+backward");
  auto ao = std::make_shared<BenchAttentionOpts>();
  auto fwd_only = std::make_shared<bool>(false);
  att->add_option("--device", ao->backend, "Backend: cpu | cpu_ref | cuda")->capture_default_str();
  att->add_option("--kind", ao->kind, "swat | softmax")->capture_default_str();
  att->add_option("--seq,-S", ao->S, "Sequence length")->capture_default_str();
  att->add_option("--window,-w", ao->window, "Window")->capture_default_str();
  att->add_option("--heads", ao->H, "Query heads")->capture_default_str();
  att->add_option("--kv-heads", ao->Hkv, "KV heads (default: = --heads)");
  att->add_option("--head-dim", ao->D, "Head dim")->capture_default_str();
  att->add_option("--repeats", ao->repeats, "Timed repeats (median)")->capture_default_str();
  att->add_flag("--fwd-only", *fwd_only, "Time the forward only");
  att->callback([ao, fwd_only] {
    ao->backward = !*fwd_only;
    if (ao->Hkv == 0) ao->Hkv = ao->H;
    fmt::print("{}\n", bench_attention(*ao).dump());
  });

  auto* tr = cmd->add_subcommand("train", "Time training steps of a preset model");
  auto to = std::make_shared<BenchTrainOpts>();
  tr->add_option("--device", to->backend, "Backend: cpu | cpu_ref | cuda")->capture_default_str();
  tr->add_option("--preset", to->preset, "Model preset")->capture_default_str();
  tr->add_option("--attention", to->attention, "Override attention kind: swat | softmax");
  tr->add_option("--window,-w", to->window, "Override the attention window (0: the preset's)");
  tr->add_flag("--recompute", to->recompute, "Recompute each layer's activations in backward");
  auto offload = std::make_shared<std::string>("off");
  auto cost = std::make_shared<std::string>();
  tr->add_option("--offload", *offload, "Activation offloading: off | auto | ratio r in [0,1]")->capture_default_str();
  tr->add_option("--offload-cost", *cost, "Profile JSON (bench profile) for --offload auto");
  tr->add_option("--chunk", to->chunk, "Forward/backward in chunks of this many tokens, halo carried (0: whole)");
  auto halo = std::make_shared<std::string>("device");
  tr->add_option("--chunk-halo", *halo, "Where --chunk keeps the halo between chunks: device | host (pinned)")
      ->capture_default_str();
  tr->add_option("--batch", to->batch, "Sequences per step")->capture_default_str();
  tr->add_option("--seq,-S", to->S, "Sequence length")->capture_default_str();
  tr->add_option("--steps", to->steps, "Timed steps (median)")->capture_default_str();
  tr->add_option("--warmup", to->warmup, "Untimed steps first")->capture_default_str();
  tr->add_flag("--profile-ops", to->profile_ops,
               "Then time every op-table call over --steps more steps (syncs around each op): "
               "JSON \"profile\", a table on stderr");
  tr->callback([to, offload, cost, halo] {
    to->chunk_halo_host = chunk_halo_on_host(*halo);
    to->offload = offload_from_flag(*offload, *cost, to->S, config_preset(to->preset).hidden_size,
                                    to->recompute);
    fmt::print("{}\n", bench_train(*to).dump());
  });

  auto* pr = cmd->add_subcommand("profile", "Profile per-layer time and activation bytes vs sequence length (fit the HDP cost model) and pinned host<->device bandwidth (offloading)");
  auto po = std::make_shared<BenchProfileOpts>();
  pr->add_option("--device", po->backend, "Backend: cpu | cpu_ref | cuda")->capture_default_str();
  pr->add_option("--preset", po->preset, "Model preset")->capture_default_str();
  pr->add_option("--window,-w", po->window, "Override the attention window (0: the preset's)");
  pr->add_option("--lengths", po->lengths, "Sequence lengths to measure (comma-separated)")
      ->delimiter(',')
      ->capture_default_str();
  pr->add_option("--repeats", po->repeats, "Timed repeats per point (median)")->capture_default_str();
  pr->add_option("--out", po->out, "Write the profile JSON here (read by plan/simulate --cost)");
  pr->callback([po] { fmt::print("{}\n", bench_profile(*po).dump()); });
}

}  // namespace longctx
