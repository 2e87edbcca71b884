// The training loop: data → forward/backward → clip → AdamW, with periodic validation,
// atomic checkpoints, bit-exact resume, a NaN/Inf guard and JSONL metrics.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "data/loader.h"
#include "model/config.h"
#include "model/model.h"

namespace longctx {

struct TrainOptions {
  std::string data_dir;         // from `longctx data prepare`: train.bin, val.bin, tokenizer.model
  std::string out_dir;          // checkpoint/ (latest), metrics.jsonl
  Config config;                // vocab_size is taken from the data
  std::string backend = "cpu";
  int batch = 4;                // sequences per micro-batch (B)
  int seq = 1024;               // tokens per sequence (S)
  int grad_accum = 1;           // micro-batches per optimizer step
  int64_t steps = 1000;         // optimizer steps in the schedule
  float lr = 1e-3f, min_lr = 1e-4f;
  int64_t warmup = 50;
  float weight_decay = 0.1f, beta1 = 0.9f, beta2 = 0.95f, clip = 1.0f;
  int64_t eval_every = 50;      // steps between validation passes (0: only at the end)
  int64_t eval_tokens = 32768;  // validation tokens per pass (fixed prefix of val.bin)
  int64_t save_every = 200;     // steps between checkpoints (0: only at the end)
  uint64_t seed = 1;
  bool resume = false;          // continue from out_dir/checkpoint
  bool skip_nonfinite = false;  // skip a step with a non-finite loss/gradient instead of stopping
  int64_t stop_after = -1;      // stop (and save) after this many steps, keeping the schedule
  double max_minutes = 0;       // stop (and save) after this wall time; 0 = no limit
  bool quiet = false;           // no progress output (metrics file still written)
  bool recompute = false;       // per-layer activation recompute in backward (Model::recompute)
  double offload = 0;           // activation offloading ratio r (Model::offload; 0: off)
  int64_t inject_nonfinite_at = -1;  // testing the guard: poison a gradient at this step
  // Context parallelism over time (src/dist/chunked_seq.h, `train --chunk`): each micro-batch's
  // forward+backward runs in chunks of `chunk` tokens (0: in one piece) through forward_backward
  // (returns the loss sum, accumulates dloss·∇ into the model's gradients), which the CLI
  // installs (src/train does not depend on src/dist). Activations are reserved for
  // min(chunk, B·S) tokens; validation runs on B sequences of ⌊chunk / B⌋ tokens at most.
  int chunk = 0;
  std::function<double(Model&, const TokenBatch&, float dloss)> forward_backward;
};

struct TrainResult {
  int64_t steps_done = 0;
  std::vector<double> losses;      // training loss per step taken in this run
  std::vector<double> val_losses;  // per validation pass
  double tokens_per_s = 0;
};

TrainResult train(const TrainOptions& o);

// Mean loss over the first `max_tokens` tokens of a validation shard, in B×S batches (forward
// only, documents packed as the training loader does).
double validation_loss(Model& m, const std::string& val_path, int B, int S, int64_t max_tokens);

// The model's view of a loader batch (no copy).
TokenBatch batch_view(const Batch& b);

}  // namespace longctx
