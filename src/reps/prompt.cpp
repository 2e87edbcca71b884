#include "reps/prompt.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "infer/server.h"  // ServerOptions: the chat template

namespace longctx {

std::string reps_sample_prompt(const QaExample& ex, int max_quotes) {
  return fmt::format(
      "Read the passages below and answer the question that follows them.\n\n"
      "{}\n\n"
      "Question: {}\n\n"
      "Think step by step. In your reasoning, quote the sentences you rely on exactly as they appear in the "
      "passages, each as [Excerpt k] `quoted text` (k = 1, 2, ...; at most {} excerpts). The answer is a short "
      "name or phrase, not a sentence. Reply with one JSON object and nothing else:\n"
      "{{\"reasoning\": \"...\", \"answer\": \"...\"}}\n",
      qa_context(ex), ex.question, max_quotes);
}

std::string reps_completion_prompt(const QaExample& ex) {
  return fmt::format("{}\n\nQuestion: {}\nAnswer:", qa_context(ex), ex.question);
}

std::string reps_chat_prompt(const std::string& user) {
  const ServerOptions chat;  // the template `longctx serve` renders /v1/chat/completions with
  return chat_render_message(chat, "user", user) + chat.assistant_prefix;
}

std::string reps_reply(const std::string& reasoning, const std::string& answer) {
  nlohmann::ordered_json j;
  if (!reasoning.empty()) j["reasoning"] = reasoning;
  j["answer"] = answer;
  return fmt::format(" {}", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

std::string reps_judge_prompt(const QaExample& ex, const std::string& reasoning, const std::string& answer) {
  return fmt::format(
      "You are grading a reasoning path for a question about a long document.\n\n"
      "Question: {}\n\nReasoning: {}\n\nAnswer: {}\n\n"
      "Rate the reasoning from 1 to 100 for coherence (each step follows from the quoted evidence), "
      "completeness (every step needed to reach the answer is there) and conciseness (no irrelevant "
      "steps). Explain briefly, then end with your score in exactly this format: Rating: [[score]]\n",
      ex.question, reasoning, answer);
}

}  // namespace longctx
