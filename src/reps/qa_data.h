// Long-context QA data for LongRePS (DESIGN.md §4): MuSiQue and LongBench JSONL readers, the
// MuSiQue-format writer used by `reps synth`, and the sample-record JSONL of `reps sample`.
//
// MuSiQue line:  {"id", "paragraphs": [{"idx", "title", "paragraph_text", "is_supporting"}],
//                 "question", "answer", "answer_aliases", "answerable", ...}
//   "id" is optional (default "<file>:<line>"), "answer_aliases" defaults to [], "answerable" to
//   true. Hops come from an explicit "hops" field (synth writes it) or an id like "3hop1__...".
//   Synth also writes "context_tokens", "length_bucket", "question_decomposition" and "facts".
// LongBench line: {"_id", "input", "context", "answers": [...], "dataset", "length"?}
//   question = input, answer = answers[0], answer_aliases = answers[1..].
// A bad line is an Error naming "<file>:<line>" and the field.
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace longctx {

struct QaParagraph {
  int idx = 0;
  std::string title;
  std::string text;  // "paragraph_text"
  bool is_supporting = false;
};

struct QaExample {
  std::string id;
  std::string question;
  std::string answer;
  std::vector<std::string> answer_aliases;
  bool answerable = true;
  std::vector<QaParagraph> paragraphs;  // MuSiQue; empty for LongBench
  std::string context;                  // LongBench; empty for MuSiQue (see qa_context)
  std::string dataset;                  // LongBench "dataset"; "musique" otherwise
  int hops = 0;                         // 0 = unknown
  int64_t context_tokens = 0;           // 0 = unknown
  int64_t length_bucket = 0;            // synth: target context length; 0 = unknown
  nlohmann::json extra = nlohmann::json::object();  // other fields, written back unchanged
};

enum class QaFormat { Auto, Musique, LongBench };

// Reads every line of `path` (blank lines skipped). Auto decides per line: "paragraphs" →
// MuSiQue, "input" + "context" → LongBench, else an error listing the expected fields.
std::vector<QaExample> qa_read(const std::string& path, QaFormat format = QaFormat::Auto);
// One parsed line; `where` ("file:line") prefixes every error.
QaExample qa_from_json(const nlohmann::json& j, QaFormat format, const std::string& where);
// MuSiQue-format JSON (extra fields merged in).
nlohmann::json qa_to_json(const QaExample& ex);
void qa_write(const std::string& path, const std::vector<QaExample>& examples);

// The context shown to a model: LongBench's `context`, or the paragraphs rendered as
// "Passage k: <title>\n<paragraph_text>" (k = 1, 2, ...) joined by blank lines.
std::string qa_context(const QaExample& ex);
// Gold answers: answer followed by the aliases.
std::vector<std::string> qa_golds(const QaExample& ex);

// One raw reasoning path, as `reps sample` writes it (one JSON object per line):
//   {"id": question id, "path": path index (0-based), "text": raw model output,
//    "temperature": float, "seed": integer}   (other fields are kept and ignored)
struct SampleRecord {
  std::string id;
  int path = 0;
  std::string text;
  double temperature = 0;
  uint64_t seed = 0;
  std::string where;  // "file:line" when read from a file (for error messages; not written)
};
std::vector<SampleRecord> sample_read(const std::string& path);
SampleRecord sample_from_json(const nlohmann::json& j, const std::string& where);
nlohmann::json sample_to_json(const SampleRecord& s);

// Reads a JSONL file: calls `on_line(json, "file:line")` for each non-blank line; a line that
// is not valid JSON is an Error naming the file and line.
void jsonl_for_each(const std::string& path,
                    const std::function<void(const nlohmann::json&, const std::string&)>& on_line);

}  // namespace longctx
