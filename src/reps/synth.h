// `reps synth`: multi-hop long-context QA from real prose (DESIGN.md §4, last paragraph).
//
// Each question is a chain of 2–4 invented facts ("Orlan Vesk was born in the town of
// Dravenmoor." → "Dravenmoor lies on the river Quill."); the question names only the chain's
// first entity ("What is the river that runs through the birthplace of Orlan Vesk?") and the
// answer is the last. Every fact sentence is planted at a sentence boundary of a stretch of real
// text (consecutive Brown paragraphs, cut into MuSiQue paragraphs of ~paragraph_words words,
// titled by their Brown file); the paragraphs holding a chain fact are is_supporting. Distractor
// facts: a parallel chain from another entity of the same kind along the same relations, side
// facts about the chain's own entities (relations the question does not ask), and unrelated facts.
// Every (entity, relation) pair has at most one fact, so the answer is unique.
// Names are invented from syllables, checked against every word of the source text and never
// reused. Splits: train / dev / test share a name style and question phrasings; test_unseen uses
// another syllable inventory (no name or name token shared with the other splits) and question
// phrasings that never occur in them.
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "data/corpus.h"
#include "reps/qa_data.h"

namespace longctx {

struct SynthOptions {
  uint64_t seed = 1;
  int train = 1000, dev = 100, test = 100, test_unseen = 100;  // questions per split
  std::vector<int64_t> lengths = {2048, 4096, 8192, 16384, 32768, 65536};  // target context tokens
  int min_hops = 2, max_hops = 4;
  int paragraph_words = 200;  // real text per MuSiQue paragraph (≥ this many words, one document)
  int distractors_per_1k = 1; // unrelated distractor facts per 1K target tokens (plus the fixed ones)
};

// Counts tokens of a text; `synth_generate` uses it for the filler and the final context.
using TokenCounter = std::function<int64_t(std::string_view)>;
// The fallback when no tokenizer is given: whitespace-separated words × 1.3, rounded up.
int64_t approx_tokens(std::string_view text);

struct SynthSplit {
  std::string name;  // "train", "dev", "test", "test_unseen"
  std::vector<QaExample> examples;
};

// Deterministic in (documents, options, counter). Errors: no documents, options out of range.
// `on_question` (optional) is called after each question, e.g. to advance a progress bar.
std::vector<SynthSplit> synth_generate(const std::vector<Document>& documents, const SynthOptions& opt,
                                       const TokenCounter& count_tokens,
                                       const std::function<void()>& on_question = {});

// Per split: {"n", "by_hops": {"2": n...}, "by_length": {"2048": n...},
//  "context_tokens": {"min", "p50", "mean", "max"}}.
nlohmann::json synth_stats(const std::vector<SynthSplit>& splits);

// The entity names of an example (from its "facts"), for split-disjointness checks.
std::vector<std::string> synth_entity_names(const QaExample& ex);

}  // namespace longctx
