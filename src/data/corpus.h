// Corpus readers: turn input paths into documents (UTF-8 text, one string per document).
//   text   a file is one document
//   jsonl  one JSON object per line with a string field "text"; blank lines are skipped
//   brown  the POS-tagged Brown corpus (word/tag tokens), detokenised into plain prose
//   auto   per file: *.jsonl / *.json → jsonl; content that looks like Brown tagging → brown;
//          else text. A folder in which any file is Brown-tagged is read as a Brown corpus: its
//          other files (README, CONTENTS, cats.txt, categories.pickle, …) are skipped.
// A folder is walked recursively in sorted path order; hidden files and folders (".x") are
// skipped. Every document must be valid UTF-8 (the error names the file and byte offset);
// empty/whitespace-only documents are dropped; no documents at all is an error.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace longctx {

enum class CorpusFormat { Auto, Text, Jsonl, Brown };

CorpusFormat corpus_format_parse(const std::string& name);  // "auto|text|jsonl|brown", else Error
const char* corpus_format_name(CorpusFormat f);

struct Document {
  std::string source;  // "path" or "path:line" (JSONL)
  std::string text;
};

std::vector<Document> corpus_read(const std::vector<std::string>& inputs,
                                  CorpusFormat format = CorpusFormat::Auto);

// Byte offset of the first invalid UTF-8 sequence (overlong forms, surrogates and code points
// above U+10FFFF are invalid), or -1 when `s` is valid.
int64_t utf8_invalid_offset(std::string_view s);

// True when `text` looks like Brown word/tag tokens (used by auto-detection).
bool brown_detect(std::string_view text);

// Brown tagged text → prose: strip "/tag" (after the last '/'), `` and '' become ", closing
// punctuation (. , ; : ? ! ) ] '' and a closing ') attaches to the previous word, opening
// quotes/brackets to the next; a "." right after a word ending in "." is dropped ("Jr. ."
// → "Jr."). Paragraphs (blocks separated by blank lines) are joined with "\n\n"; a headline
// line (all tags *-hl) is its own paragraph.
std::string brown_detokenize(std::string_view tagged);

}  // namespace longctx
