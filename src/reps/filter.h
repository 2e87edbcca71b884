// LongRePS path filters (DESIGN.md §4 steps 2–3): robust JSON extraction from raw model output,
// the answer filter (LongBench F1 = 1.0 against any gold), and the faithfulness filter (every
// `[Excerpt k] `text`` quote, normalised, is a substring of the normalised context).
// Every rejection is a named reason, counted; no input makes these functions throw.
#pragma once
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "reps/qa_data.h"

namespace longctx {

// Rejection reasons, in the order the checks run (the first failing check is counted).
enum class PathReject {
  None = 0,
  NoJson,            // no '{' in the output
  TruncatedJson,     // a '{' whose object never closes (output cut at max tokens)
  InvalidJson,       // balanced braces, but no candidate parses (even after repair)
  MissingAnswer,     // parsed object without "answer"
  MissingReasoning,  // parsed object without "reasoning"
  BadAnswer,         // "answer" not a string or number, or empty
  BadReasoning,      // "reasoning" not a string
  WrongAnswer,       // F1 < 1 against every gold answer and alias
  NoQuotes,          // fewer than min_quotes quotes
  TooManyQuotes,     // more than max_quotes quotes
  MalformedQuote,    // "[Excerpt k]" not followed by a `backtick-quoted` span
  EmptyQuote,        // a quote that normalises to nothing
  UnfaithfulQuote,   // a quote not found in the context
};
constexpr int kPathRejectCount = 14;
const char* path_reject_name(PathReject r);  // "no_json", "truncated_json", ...

// JSON extraction. Tries, in order: the body of each ``` / ```json fence, then the whole text;
// in each, every balanced {...} object (string- and escape-aware) from the first '{' on. A
// candidate that fails to parse is retried with raw control characters inside strings escaped
// (models often emit literal newlines in "reasoning"). The first candidate that parses to an
// object wins. Never throws.
struct JsonExtract {
  PathReject reject = PathReject::None;  // None, NoJson, TruncatedJson or InvalidJson
  nlohmann::json value;                  // the object when reject == None
};
JsonExtract json_extract(std::string_view text);

// The predicted answer of a model output for evaluation: the "answer" (string or number) of the
// extracted JSON object when there is one, else the first non-blank line of the text, trimmed.
std::string reps_prediction(std::string_view text);

// Quotes in a reasoning text: "[Excerpt k]" (optionally followed by ':'), whitespace, then a
// span between backticks. `malformed` counts markers without such a span.
struct Quotes {
  std::vector<std::string> spans;
  int malformed = 0;
};
Quotes quotes_extract(std::string_view reasoning);

// Faithfulness of one quote: qa_normalize(quote) is non-empty and a substring of
// `normalized_context` (= qa_normalize(context), computed once per question).
bool quote_faithful(std::string_view quote, std::string_view normalized_context);

struct FilterOptions {
  int min_quotes = 1;   // a path without evidence is rejected (0 = allow)
  int max_quotes = 10;  // DESIGN.md §4: ≤ 10 quotes
};

// One path through all checks.
struct PathVerdict {
  PathReject reject = PathReject::None;
  bool parsed = false;    // JSON extraction succeeded with answer + reasoning
  std::string answer, reasoning;
  double f1 = 0;          // best F1 against the golds (when parsed)
  bool em = false;
  int quotes = 0;
  std::string detail;     // e.g. the first unfaithful quote
};
PathVerdict filter_path(std::string_view raw, const std::vector<std::string>& golds,
                        std::string_view normalized_context, const FilterOptions& opt = {});

// Filters every sample against its question; samples whose id is not among the examples are an
// Error naming the sample; a duplicate (id, path) is an Error too.
struct FilterReport {
  int64_t samples = 0, kept = 0, parsed = 0, answer_correct = 0, em = 0;
  double f1_sum = 0;                      // over parsed samples
  int64_t questions = 0, questions_with_sample = 0, questions_with_kept = 0;
  int64_t rejected[kPathRejectCount] = {};
};
struct FilterResult {
  FilterReport report;
  std::vector<nlohmann::json> kept;  // {id, path, temperature, seed, answer, reasoning, f1, em, quotes, text}
};
FilterResult filter_samples(const std::vector<QaExample>& examples, const std::vector<SampleRecord>& samples,
                            const FilterOptions& opt = {});
// {"samples", "kept", "parsed", "answer_correct", "em", "mean_f1", "questions", ...,
//  "rejected": {"no_json": n, ...}} (every reason present, zero or not).
nlohmann::json filter_report_json(const FilterReport& r);

}  // namespace longctx
