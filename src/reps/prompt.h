// Prompts of LongRePS (DESIGN.md §4 steps 1 and 4), as pure functions so `reps sample`,
// `reps judge` and the tests share one text. The context is qa_context(ex): the filter checks
// quotes against exactly what the sampler showed the model.
#pragma once
#include <string>

#include "reps/qa_data.h"

namespace longctx {

// Asks for {"reasoning": ..., "answer": ...} with evidence quoted as [Excerpt k] `text`
// (at most `max_quotes`), the answer as a short span.
std::string reps_sample_prompt(const QaExample& ex, int max_quotes = 10);

// A base model's reading prompt: the passages, then "Question: q\nAnswer:" — the form of the
// reading exercises in tools/reps_render_docs.py (qa mode), for `longctx eval --completion`.
std::string reps_completion_prompt(const QaExample& ex);

// One user turn in the chat template of `longctx serve` (ServerOptions::message_template and
// assistant_prefix): "user: <text>\nassistant:". The assistant's reply follows directly; SFT
// trains on exactly this text and `reps sample --chat` / `longctx eval --chat` prompt with it.
std::string reps_chat_prompt(const std::string& user);

// The assistant reply SFT trains on: {"reasoning": ..., "answer": ...} for a reasoning path, or
// {"answer": ...} for outcome supervision (empty reasoning).
std::string reps_reply(const std::string& reasoning, const std::string& answer);

// Asks a judge to rate one path's coherence, completeness and conciseness 1–100 and to end
// with "Rating: [[score]]" (parsed by rating_parse).
std::string reps_judge_prompt(const QaExample& ex, const std::string& reasoning, const std::string& answer);

}  // namespace longctx
