// A small BPE (vocab 320, byte fallback) trained in a second on a few sentences of English, for
// tests that need a real tokenizer.model but not a real corpus (server, sampling).
#pragma once
#include <string>

#include "tokenizer/tokenizer.h"

namespace longctx::testing {

// Trains a BPE of `vocab` pieces on one text (tests with their own prose); returns `path`.
inline std::string train_tokenizer_on(const std::string& text, const std::string& path, int vocab) {
  bool given = false;
  TokenizerTrainOptions opt;
  opt.vocab_size = vocab;
  tokenizer_train(
      [&](std::string& out) {
        if (given) return false;
        out = text;
        given = true;
        return true;
      },
      path, opt);
  return path;
}

inline void train_tiny_tokenizer(const std::string& path) {
  const char* lines[] = {"The jury said it did find that the city election was conducted well.",
                         "Hello there, how are you today? I am fine, thank you.",
                         "A sliding window of keys with a sigmoid instead of a softmax.",
                         "Numbers 0123456789 and punctuation: ; , . ! ? ( ) [ ] { }",
                         "Read the passages below and answer the question that follows them.",
                         "Reply with one JSON object: {\"reasoning\": \"[Excerpt 1] `quote`\", \"answer\": \"x\"}"};
  const int n_lines = int(sizeof lines / sizeof lines[0]);
  int k = 0;
  TokenizerTrainOptions opt;
  opt.vocab_size = 320;
  tokenizer_train(
      [&](std::string& out) {
        if (k >= 600) return false;
        out = lines[k++ % n_lines];
        return true;
      },
      path, opt);
}

}  // namespace longctx::testing
