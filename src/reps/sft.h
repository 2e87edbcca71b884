// LongRePS supervised fine-tuning (DESIGN.md §4 step 5): chat-formatted examples with the loss on
// the assistant's tokens only, two stages (a warm-up, then the filtered paths), each with a
// constant learning rate (the paper: lr 1e-5 then 5e-6, constant schedule).
//
// An example is one user turn (reps_sample_prompt of the question, in longctx serve's chat
// template) and the assistant reply (reps_reply): a reasoning path {"reasoning", "answer"} or,
// for outcome supervision, {"answer"} alone:
//   tokens  = BOS · encode(reps_chat_prompt(prompt)) · encode(reply) · EOS
//   targets = −1 on every prompt position, the next token on the reply's positions (the last
//             prompt token predicts the reply's first token; the reply's last predicts EOS)
// so context and question tokens contribute no loss and no gradient of their own.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/model.h"
#include "reps/qa_data.h"
#include "tokenizer/tokenizer.h"

namespace longctx {

struct SftExample {
  std::string id;
  std::vector<int32_t> tokens, targets;
  int prompt_tokens = 0;  // BOS + the chat prompt; targets[t] = −1 for t < prompt_tokens − 1
};
SftExample sft_encode(const Tokenizer& tok, const std::string& prompt, const std::string& reply);

// SFT data: one {"id", "answer", "reasoning"?} per line; "id" names a question of the data file.
// Kept paths from `reps filter` / `reps judge` have a reasoning; a MuSiQue or LongBench file itself
// (no "reasoning"; LongBench's "_id" and "answers") is outcome supervision on the gold answer.
struct SftRecord {
  std::string id, reasoning, answer;
};
std::vector<SftRecord> sft_read(const std::string& path);

// One optimizer step's gradients: zeroes m.grads, packs the examples into one varlen stream
// (positions restart per example) and runs forward + backward of the mean loss over their
// target tokens. Returns that mean loss; *n_targets = the number of target tokens.
double sft_grads(Model& m, const std::vector<const SftExample*>& batch, int64_t* n_targets);

struct SftStage {
  std::string name;  // "warmup", "main"
  std::string data;  // SFT data JSONL
  int64_t steps = 0;
  float lr = 0;
};

struct SftOptions {
  std::string ckpt;           // pretrained checkpoint directory (model + tokenizer.model)
  std::string questions;      // MuSiQue / LongBench JSONL the SFT data's ids refer to
  std::string out;            // OUT/checkpoint, OUT/metrics.jsonl, OUT/sft.json
  std::string device = "cpu";
  std::vector<SftStage> stages;
  int batch = 4;              // examples per optimizer step
  int max_tokens = 2048;      // longer examples are skipped (counted)
  int max_quotes = 10;        // in the prompt (reps_sample_prompt)
  float clip = 1.0f, weight_decay = 0.0f;
  uint64_t seed = 1;          // example order (shuffled every epoch)
  bool quiet = false;
};

struct SftStageReport {
  std::string name;
  int64_t records = 0, examples = 0, skipped_long = 0, steps = 0, target_tokens = 0;
  double epochs = 0, first_loss = 0, last_loss = 0;  // last_loss: mean of the last 10 steps
};
struct SftReport {
  std::vector<SftStageReport> stages;
  double seconds = 0;
};
SftReport sft_run(const SftOptions& o);

}  // namespace longctx
