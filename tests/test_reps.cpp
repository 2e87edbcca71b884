// LongRePS data (src/reps): MuSiQue/LongBench readers, LongBench normalisation / F1 / EM,
// robust JSON extraction, quote faithfulness, the path filter, the judge's rating parser and
// selection rule, QA metric aggregation, the synthetic multi-hop generator, and `longctx reps`.
// Only ReapsBrown.* needs the Brown corpus (env LONGCTX_BROWN_DIR); it skips without it.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "core/rng.h"
#include "reps/filter.h"
#include "reps/judge.h"
#include "reps/prompt.h"
#include "reps/qa_data.h"
#include "reps/qa_metrics.h"
#include "reps/synth.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace longctx;
using nlohmann::json;

namespace {

using longctx::testing::error_of;
using longctx::testing::run_cli;
using longctx::testing::CliRun;
using longctx::testing::TempDir;






void write_text(const fs::path& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary);
  f << s;
}

// Plain English documents (no invented names), so the generator tests need no corpus.
std::vector<Document> fake_documents(int docs = 12, int paras = 30) {
  const std::vector<std::string> words = {"the", "jury", "said", "city", "was", "ready", "for", "a", "new",
                                          "election", "and", "people", "went", "home", "after", "long", "day",
                                          "of", "work", "in", "state", "house", "with", "their", "friends"};
  Rng rng(7);
  std::vector<Document> out;
  for (int d = 0; d < docs; d++) {
    std::string text;
    for (int p = 0; p < paras; p++) {
      if (p) text += "\n\n";
      for (int s = 0; s < 4; s++) {
        std::string sent;
        const int n = 6 + int(rng.below(8));
        for (int w = 0; w < n; w++) sent += (w ? " " : "") + words[rng.below(words.size())];
        sent[0] = char(std::toupper(uint8_t(sent[0])));
        text += (s ? " " : "") + sent + ".";
      }
    }
    out.push_back(Document{fmt::format("docs/d{:02d}", d), text});
  }
  return out;
}

SynthOptions small_options() {
  SynthOptions o;
  o.train = 24;
  o.dev = 4;
  o.test = 4;
  o.test_unseen = 12;
  o.lengths = {1024, 2048, 4096};
  o.paragraph_words = 80;
  return o;
}

int count_of(const std::string& hay, const std::string& needle) {
  int n = 0;
  for (size_t p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + 1)) n++;
  return n;
}

// Occurrences of `word` as a whole word (not inside a longer word: "Brak" in "Brakmoor" is not one).
int count_word(const std::string& hay, const std::string& word) {
  auto alnum = [](char c) { return std::isalnum(uint8_t(c)) != 0; };
  int n = 0;
  for (size_t p = hay.find(word); p != std::string::npos; p = hay.find(word, p + 1))
    if ((p == 0 || !alnum(hay[p - 1])) && (p + word.size() == hay.size() || !alnum(hay[p + word.size()]))) n++;
  return n;
}

// Every invariant a generated question must satisfy: the chain's facts are in its supporting
// paragraphs, the chain links up from the entity named in the question to the answer, every
// (subject, relation) is stated once, and no entity name appears outside fact sentences.
void check_example(const QaExample& ex, int64_t (*count)(std::string_view)) {
  SCOPED_TRACE(ex.id);
  ASSERT_TRUE(ex.extra.contains("facts"));
  const json& facts = ex.extra["facts"];
  const json& dec = ex.extra["question_decomposition"];
  ASSERT_GE(ex.hops, 2);
  ASSERT_LE(ex.hops, 4);
  ASSERT_EQ(int(dec.size()), ex.hops);
  const std::string ctx = qa_context(ex);
  std::set<std::pair<std::string, std::string>> stated;
  std::set<int> supporting_paras;
  std::map<std::string, int> name_in_facts;
  for (size_t i = 0; i < facts.size(); i++) {
    const json& f = facts[i];
    const std::string s = f["sentence"], subj = f["subject"], obj = f["object"];
    EXPECT_TRUE(stated.insert({subj, f["relation"]}).second) << "two facts for " << subj << " " << f["relation"];
    const int pi = f["paragraph_idx"];
    ASSERT_GE(pi, 0);
    ASSERT_LT(pi, int(ex.paragraphs.size()));
    EXPECT_EQ(count_of(ex.paragraphs[pi].text, s), 1) << s;
    EXPECT_NE(s.find(subj), std::string::npos);
    EXPECT_NE(s.find(obj), std::string::npos);
    EXPECT_EQ(bool(f["supporting"]), int(i) < ex.hops);  // chain facts come first, in hop order
    if (f["supporting"]) {
      supporting_paras.insert(pi);
      EXPECT_TRUE(ex.paragraphs[pi].is_supporting) << pi;
    }
  }
  for (const QaParagraph& p : ex.paragraphs) EXPECT_EQ(p.is_supporting, supporting_paras.count(p.idx) > 0);
  // the chain: question names hop 0's subject; objects link; the last object is the answer
  const std::string start = facts[0]["subject"];
  EXPECT_NE(ex.question.find(start), std::string::npos) << ex.question;
  for (int h = 0; h < ex.hops; h++) {
    EXPECT_EQ(dec[h]["answer"], facts[h]["object"]);
    EXPECT_EQ(dec[h]["paragraph_support_idx"], facts[h]["paragraph_idx"]);
    if (h + 1 < ex.hops) {
      EXPECT_EQ(facts[h]["object"], facts[h + 1]["subject"]);
    }
    const std::string obj = facts[h]["object"];
    EXPECT_EQ(count_word(ex.question, obj), 0) << "question gives away " << obj;
  }
  EXPECT_EQ(ex.answer, facts[ex.hops - 1]["object"]);
  EXPECT_EQ(qa_f1_max(ex.answer, qa_golds(ex)), 1.0);
  // invented names occur only inside fact sentences
  for (const std::string& name : synth_entity_names(ex)) {
    int in_facts = 0;
    for (const json& f : facts) in_facts += count_word(f["sentence"], name);
    EXPECT_EQ(count_word(ctx, name), in_facts) << name;
  }
  EXPECT_EQ(ex.context_tokens, count(ctx));
  EXPECT_GE(ex.context_tokens, ex.length_bucket * 9 / 10);
  EXPECT_LE(ex.context_tokens, ex.length_bucket + std::max<int64_t>(1000, ex.length_bucket / 20));
}

}  // namespace

// ---------------------------------------------------------------- normalisation, F1, EM

TEST(RepsNormalize, LongBenchRules) {
  EXPECT_EQ(qa_normalize("The Quick, brown fox!"), "quick brown fox");
  EXPECT_EQ(qa_normalize("An apple a day keeps THE doctor away."), "apple day keeps doctor away");
  EXPECT_EQ(qa_normalize("theater Anna athens"), "theater anna athens");  // not articles
  EXPECT_EQ(qa_normalize("  many \t spaces\n\nhere  "), "many spaces here");
  EXPECT_EQ(qa_normalize("don't U.S.A. 3.14 e-mail"), "dont usa 314 email");  // punctuation dropped, not spaced
  EXPECT_EQ(qa_normalize("A.N."), "");  // "an" after punctuation removal: an article, as in LongBench
  EXPECT_EQ(qa_normalize(""), "");
  EXPECT_EQ(qa_normalize("the a an"), "");
}

TEST(RepsNormalize, Unicode) {
  EXPECT_EQ(qa_normalize("\xE2\x80\x9C" "Dravenmoor" "\xE2\x80\x9D"), "dravenmoor");      // “Dravenmoor”
  EXPECT_EQ(qa_normalize("Caf\xC3\xA9 \xC3\x89" "CLAIR"), "caf\xC3\xA9 \xC3\xA9" "clair");  // Café ÉCLAIR
  EXPECT_EQ(qa_normalize("\xD0\x9C\xD0\x9E\xD0\xA1\xD0\x9A\xD0\x92\xD0\x90"), "\xD0\xBC\xD0\xBE\xD1\x81\xD0\xBA\xD0\xB2\xD0\xB0");  // МОСКВА
  EXPECT_EQ(qa_normalize("\xCE\x91\xCE\x98\xCE\x97\xCE\x9D\xCE\x91"), "\xCE\xB1\xCE\xB8\xCE\xB7\xCE\xBD\xCE\xB1");  // ΑΘΗΝΑ
  EXPECT_EQ(qa_normalize("well\xE2\x80\x94known \xC2\xABquoted\xC2\xBB \xC2\xBFs\xC3\xAD?"), "wellknown quoted s\xC3\xAD");
  EXPECT_EQ(qa_normalize("non\xC2\xA0" "breaking"), "non breaking");  // NBSP is whitespace
  EXPECT_EQ(qa_normalize("\xE6\x9D\xB1\xE4\xBA\xAC\xE3\x80\x82"), "\xE6\x9D\xB1\xE4\xBA\xAC");  // 東京。
  // invalid UTF-8 is passed through, never a crash
  EXPECT_EQ(qa_normalize("A\xFF\xC3"), "a\xFF\xC3");
}

TEST(RepsMetrics, TokenF1AndExactMatch) {
  EXPECT_DOUBLE_EQ(qa_f1("Quill", "Quill"), 1.0);
  EXPECT_NEAR(qa_f1("the river Quill", "Quill"), 2.0 / 3.0, 1e-12);  // p 1/2, r 1
  EXPECT_NEAR(qa_f1("Quill Quill", "Quill"), 2.0 / 3.0, 1e-12);      // multiset overlap
  EXPECT_DOUBLE_EQ(qa_f1("", "Quill"), 0.0);
  EXPECT_DOUBLE_EQ(qa_f1("The", "a"), 0.0);  // both normalise to nothing
  EXPECT_DOUBLE_EQ(qa_f1("Dravenmoor", "Quill"), 0.0);
  EXPECT_NEAR(qa_f1("Orlan Vesk Jr", "Orlan Vesk"), 0.8, 1e-12);
  EXPECT_DOUBLE_EQ(qa_f1_max("The river Quill.", {"Quill", "river Quill"}), 1.0);
  EXPECT_TRUE(qa_exact("  The QUILL! ", "quill"));
  EXPECT_FALSE(qa_exact("Quill river", "river Quill"));
  EXPECT_TRUE(qa_exact_any("\xE2\x80\x9CQuill\xE2\x80\x9D", {"Lake Quill", "Quill"}));
  EXPECT_DOUBLE_EQ(qa_f1("caf\xC3\xA9", "CAF\xC3\x89"), 1.0);
}

TEST(RepsMetrics, AggregationPerHopAndLength) {
  auto mk = [](std::string id, int hops, int64_t bucket, std::string ans) {
    QaExample e;
    e.id = id;
    e.hops = hops;
    e.length_bucket = bucket;
    e.answer = ans;
    return e;
  };
  std::vector<QaExample> ex = {mk("a", 2, 2048, "Quill"), mk("b", 2, 8192, "Orlan Vesk"), mk("c", 3, 8192, "Dravenmoor"),
                               mk("d", 3, 2048, "Kesh")};
  std::map<std::string, std::string> pred = {{"a", "the Quill"}, {"b", "Orlan"}, {"c", "Quill"}};
  QaReport r = qa_evaluate(ex, pred);
  EXPECT_EQ(r.all.n, 4);
  EXPECT_EQ(r.all.missing, 1);
  EXPECT_NEAR(r.all.f1(), 100.0 * (1.0 + 2.0 / 3.0) / 4.0, 1e-9);
  EXPECT_NEAR(r.all.em(), 25.0, 1e-9);
  EXPECT_NEAR(r.by_hops[2].f1(), 100.0 * (1.0 + 2.0 / 3.0) / 2.0, 1e-9);
  EXPECT_EQ(r.by_hops[3].f1(), 0.0);
  EXPECT_EQ(r.by_length[2048].n, 2);
  EXPECT_NEAR(r.by_length[8192].f1(), 100.0 / 3.0, 1e-9);
  json j = qa_report_json(r, true);
  EXPECT_EQ(j["n"], 4);
  EXPECT_EQ(j["by_hops"]["2"]["n"], 2);
  EXPECT_EQ(j["by_length"]["8192"]["n"], 2);
  EXPECT_EQ(j["by_hops_length"]["3/2048"]["missing"], 1);
  EXPECT_EQ(j["examples"].size(), 4u);
  // length key without a bucket: power of two above the token count
  QaExample e = mk("e", 0, 0, "x");
  e.context_tokens = 3000;
  EXPECT_EQ(qa_length_key(e), 4096);
  e.context_tokens = 10;
  EXPECT_EQ(qa_length_key(e), 1024);
}

// ---------------------------------------------------------------- JSON extraction

TEST(RepsJson, ExtractsFromMessyOutput) {
  auto ok = [](const std::string& t, const std::string& answer) {
    JsonExtract e = json_extract(t);
    EXPECT_EQ(e.reject, PathReject::None) << t;
    if (e.reject == PathReject::None) {
      EXPECT_EQ(e.value.value("answer", "?"), answer) << t;
    }
  };
  ok(R"({"reasoning": "r", "answer": "Quill"})", "Quill");
  ok("```json\n{\"reasoning\": \"r\", \"answer\": \"Quill\"}\n```", "Quill");
  ok("Sure! Here you go:\n```\n{\"reasoning\": \"r\", \"answer\": \"Quill\"}\n```\nHope this helps.", "Quill");
  ok("The answer follows. {\"reasoning\": \"r\", \"answer\": \"Quill\"} Done.", "Quill");
  ok("{\"reasoning\": \"line one\nline two\ttab\", \"answer\": \"Quill\"}", "Quill");    // raw control chars
  ok(R"({"reasoning": "[Excerpt 1] \`x\` and \'y\'", "answer": "Quill"})", "Quill");      // invalid escapes
  ok(R"({"reasoning": "a } b { c \" } ", "answer": "Quill"})", "Quill");                 // braces in strings
  ok(R"({"note": 1} then {"reasoning": "r", "answer": "Quill"})", "Quill");              // prefers one with answer
  ok(R"(bad {x} then {"reasoning": "r", "answer": "Quill"})", "Quill");
  ok(R"(I write { for sets. {"reasoning": "r", "answer": "Quill"})", "Quill");  // a stray '{' before the JSON
  ok(R"({"reasoning": "r", "answer": "Quill", "extra": {"nested": [1, 2, {"a": "}"}]}})", "Quill");
}

TEST(RepsJson, RejectsMalformedWithAReason) {
  EXPECT_EQ(json_extract("").reject, PathReject::NoJson);
  EXPECT_EQ(json_extract("The answer is Quill.").reject, PathReject::NoJson);
  EXPECT_EQ(json_extract("}}}} ]]").reject, PathReject::NoJson);
  EXPECT_EQ(json_extract(R"({"reasoning": "[Excerpt 1] `Dravenmoor lies on)").reject, PathReject::TruncatedJson);
  EXPECT_EQ(json_extract("```json\n{\"reasoning\": \"r\", \"ans").reject, PathReject::TruncatedJson);
  EXPECT_EQ(json_extract("{").reject, PathReject::TruncatedJson);
  EXPECT_EQ(json_extract("{not json at all}").reject, PathReject::InvalidJson);
  EXPECT_EQ(json_extract("{'reasoning': 'r', 'answer': 'Quill'}").reject, PathReject::InvalidJson);
  EXPECT_EQ(json_extract(R"({"reasoning": "r", "answer": "Quill",})").reject, PathReject::InvalidJson);
  // an object without "answer" is extracted; the path filter names what is missing
  const std::vector<std::string> golds = {"Quill"};
  EXPECT_EQ(filter_path(R"({"reasoning": "r"})", golds, "").reject, PathReject::MissingAnswer);
  EXPECT_EQ(filter_path(R"({"answer": "Quill"})", golds, "").reject, PathReject::MissingReasoning);
  EXPECT_EQ(filter_path(R"({"reasoning": "r", "answer": ["Quill"]})", golds, "").reject, PathReject::BadAnswer);
  EXPECT_EQ(filter_path(R"({"reasoning": "r", "answer": "  "})", golds, "").reject, PathReject::BadAnswer);
  EXPECT_EQ(filter_path(R"({"reasoning": ["r"], "answer": "Quill"})", golds, "").reject, PathReject::BadReasoning);
}

TEST(RepsJson, NeverThrowsOnRandomInput) {
  const std::string alphabet = "{}[]\":,\\` \nabc01\x80\xC3\xFF";
  Rng rng(3);
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 3000; i++) {
    std::string s;
    const int n = int(rng.below(200));
    for (int k = 0; k < n; k++) s += alphabet[rng.below(alphabet.size())];
    EXPECT_NO_THROW(filter_path(s, {"abc"}, "abc"));
  }
  // adversarial sizes stay fast: 200K opening braces, 200K balanced pairs
  EXPECT_EQ(json_extract(std::string(200000, '{')).reject, PathReject::TruncatedJson);
  std::string pairs;
  for (int i = 0; i < 100000; i++) pairs += "{}";
  EXPECT_EQ(filter_path(pairs, {"abc"}, "abc").reject, PathReject::MissingAnswer);  // "{}" parses
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0);
}

// ---------------------------------------------------------------- quotes, faithfulness, path filter

TEST(RepsFaithfulness, QuoteExtraction) {
  Quotes q = quotes_extract("[Excerpt 1] `Orlan Vesk was born in Dravenmoor` so [Excerpt 1] shows it; "
                            "[Excerpt 2]: `Dravenmoor lies on the river Quill.` and [Excerpt 12]\n`x`");
  ASSERT_EQ(q.spans.size(), 3u);
  EXPECT_EQ(q.spans[0], "Orlan Vesk was born in Dravenmoor");
  EXPECT_EQ(q.spans[1], "Dravenmoor lies on the river Quill.");
  EXPECT_EQ(q.spans[2], "x");
  EXPECT_EQ(q.malformed, 0);
  EXPECT_EQ(quotes_extract("[Excerpt 3] says so").malformed, 1);      // never quoted
  EXPECT_EQ(quotes_extract("[Excerpt 1] `unterminated").malformed, 1);
  EXPECT_EQ(quotes_extract("[Excerpt] `x`").malformed, 1);            // no number
  EXPECT_EQ(quotes_extract("no quotes here").spans.size(), 0u);
}

TEST(RepsFaithfulness, NormalisedSubstring) {
  const std::string ctx = qa_normalize(
      "\xE2\x80\x9C" "Orlan Vesk,\xE2\x80\x9D she said, \xE2\x80\x9Cwas born in the town of Dravenmoor.\xE2\x80\x9D "
      "The Caf\xC3\xA9 du Nord stood by THE river\xC2\xA0Quill.");
  EXPECT_TRUE(quote_faithful("Orlan Vesk she said was born in the town of Dravenmoor", ctx));
  EXPECT_TRUE(quote_faithful("\"Orlan Vesk,\" she said, \"was born in a town of Dravenmoor.\"", ctx));  // articles dropped
  EXPECT_TRUE(quote_faithful("CAF\xC3\x89 DU NORD stood by the river Quill", ctx));
  EXPECT_FALSE(quote_faithful("Orlan Vesk was born in Dravenmoor", ctx));  // paraphrase
  EXPECT_FALSE(quote_faithful("the river Quill flows", ctx));
  EXPECT_FALSE(quote_faithful("...", ctx));  // normalises to nothing
}

TEST(RepsFilter, PathVerdicts) {
  const std::string ctx = qa_normalize("Orlan Vesk was born in the town of Dravenmoor. Rain fell. "
                                       "Dravenmoor lies on the river Quill.");
  const std::vector<std::string> golds = {"Quill", "river Quill"};
  auto path = [](const std::string& reasoning, const std::string& answer) {
    return json{{"reasoning", reasoning}, {"answer", answer}}.dump();
  };
  const std::string good = "[Excerpt 1] `Orlan Vesk was born in the town of Dravenmoor.` [Excerpt 2] "
                           "`Dravenmoor lies on the river Quill` so the river is Quill.";
  PathVerdict v = filter_path(path(good, "The river Quill."), golds, ctx);
  EXPECT_EQ(v.reject, PathReject::None) << v.detail;
  EXPECT_EQ(v.quotes, 2);
  EXPECT_DOUBLE_EQ(v.f1, 1.0);
  EXPECT_TRUE(v.em);  // "river quill" equals the alias after normalisation
  EXPECT_FALSE(filter_path(path(good, "Quill river"), golds, ctx).em);
  EXPECT_EQ(filter_path(path(good, "Dravenmoor"), golds, ctx).reject, PathReject::WrongAnswer);
  EXPECT_EQ(filter_path(path(good, "Quill river"), golds, ctx).reject, PathReject::None);  // token F1 is order-free
  EXPECT_EQ(filter_path(path("It is Quill.", "Quill"), golds, ctx).reject, PathReject::NoQuotes);
  FilterOptions lax;
  lax.min_quotes = 0;
  EXPECT_EQ(filter_path(path("It is Quill.", "Quill"), golds, ctx, lax).reject, PathReject::None);
  EXPECT_EQ(filter_path(path("[Excerpt 1] `Orlan Vesk was born in Kesh`", "Quill"), golds, ctx).reject,
            PathReject::UnfaithfulQuote);
  EXPECT_EQ(filter_path(path("[Excerpt 1] `Rain fell` [Excerpt 2] says", "Quill"), golds, ctx).reject,
            PathReject::MalformedQuote);
  EXPECT_EQ(filter_path(path("[Excerpt 1] `Rain fell` [Excerpt 2] `!!`", "Quill"), golds, ctx).reject,
            PathReject::EmptyQuote);
  std::string many;
  for (int i = 1; i <= 11; i++) many += fmt::format("[Excerpt {}] `Rain fell` ", i);
  EXPECT_EQ(filter_path(path(many, "Quill"), golds, ctx).reject, PathReject::TooManyQuotes);
  many = many.substr(0, many.rfind("[Excerpt 11]"));
  EXPECT_EQ(filter_path(path(many, "Quill"), golds, ctx).reject, PathReject::None);  // 10 is allowed
}

TEST(RepsFilter, SamplesReportAndErrors) {
  QaExample ex;
  ex.id = "q1";
  ex.question = "Which river?";
  ex.answer = "Quill";
  ex.paragraphs = {{0, "t", "Dravenmoor lies on the river Quill.", true}};
  QaExample ex2 = ex;
  ex2.id = "q2";
  const std::string good = json{{"reasoning", "[Excerpt 1] `Dravenmoor lies on the river Quill`"}, {"answer", "Quill"}}.dump();
  std::vector<SampleRecord> s = {{"q1", 0, good, 0.7, 1, ""}, {"q1", 1, "garbage", 0.7, 2, ""},
                                 {"q1", 2, "{\"reasoning\": \"[Excerpt 1] `x", 0.7, 3, ""},
                                 {"q1", 3, json{{"reasoning", "r"}, {"answer", "Kesh"}}.dump(), 0.7, 4, ""}};
  FilterResult r = filter_samples({ex, ex2}, s);
  EXPECT_EQ(r.report.samples, 4);
  EXPECT_EQ(r.report.kept, 1);
  EXPECT_EQ(r.report.parsed, 2);
  EXPECT_EQ(r.report.questions_with_kept, 1);
  EXPECT_EQ(r.report.questions_with_sample, 1);
  json j = filter_report_json(r.report);
  EXPECT_EQ(j["rejected"]["no_json"], 1);
  EXPECT_EQ(j["rejected"]["truncated_json"], 1);
  EXPECT_EQ(j["rejected"]["wrong_answer"], 1);
  EXPECT_EQ(j["rejected"]["unfaithful_quote"], 0);
  EXPECT_EQ(j["rejected"].size(), size_t(kPathRejectCount - 1));
  ASSERT_EQ(r.kept.size(), 1u);
  EXPECT_EQ(r.kept[0]["path"], 0);
  EXPECT_EQ(r.kept[0]["answer"], "Quill");
  s.push_back({"q1", 0, "dup", 0.7, 5, "s.jsonl:5"});
  EXPECT_NE(error_of([&] { filter_samples({ex}, s); }).find("s.jsonl:5 (id 'q1', path 0): duplicate sample"), std::string::npos);
  EXPECT_NE(error_of([&] { filter_samples({ex}, {{"nope", 0, "", 0.7, 1, ""}}); }).find("id 'nope'"), std::string::npos);
}

// ---------------------------------------------------------------- judge

TEST(RepsJudge, RatingParser) {
  EXPECT_EQ(rating_parse("Coherent and complete.\nRating: [[85]]").score, 85);
  EXPECT_EQ(rating_parse("rating:[[ 100 ]]").score, 100);
  EXPECT_EQ(rating_parse("RATING [[1]]").score, 1);
  EXPECT_EQ(rating_parse("Format: Rating: [[5]] ... my verdict: Rating: [[70]]").score, 70);  // the last wins
  EXPECT_EQ(rating_parse("Rating: [[0]]").reject, RatingReject::OutOfRange);
  EXPECT_EQ(rating_parse("Rating: [[101]]").reject, RatingReject::OutOfRange);
  EXPECT_EQ(rating_parse("Rating: [[85.5]]").reject, RatingReject::Malformed);
  EXPECT_EQ(rating_parse("Rating: [[ninety]]").reject, RatingReject::Malformed);
  EXPECT_EQ(rating_parse("Rating: [[]]").reject, RatingReject::Malformed);
  EXPECT_EQ(rating_parse("Rating: [[-5]]").reject, RatingReject::Malformed);
  EXPECT_EQ(rating_parse("Rating: [[99999999999999]]").reject, RatingReject::Malformed);
  EXPECT_EQ(rating_parse("Rating: [[85").reject, RatingReject::Malformed);
  EXPECT_EQ(rating_parse("I'd give it 85/100").reject, RatingReject::NoRating);
  EXPECT_EQ(rating_parse("Rating: 85").reject, RatingReject::NoRating);
  EXPECT_EQ(rating_parse("").reject, RatingReject::NoRating);
  EXPECT_STREQ(rating_reject_name(RatingReject::OutOfRange), "rating_out_of_range");
}

TEST(RepsJudge, SelectStopsAfterThreePerfectKeepsFirstBest) {
  using S = std::vector<std::optional<int>>;
  JudgeSelection s = judge_select(S{90, 100, std::nullopt, 100, 100, 100, 100});
  EXPECT_EQ(s.best, 1);  // ties: the first 100
  EXPECT_EQ(s.best_score, 100);
  EXPECT_EQ(s.judged, 5);  // stopped right after the third 100
  EXPECT_TRUE(s.stopped_early);
  s = judge_select(S{80, 95, 95, std::nullopt});
  EXPECT_EQ(s.best, 1);
  EXPECT_EQ(s.judged, 4);
  EXPECT_FALSE(s.stopped_early);
  s = judge_select(S{100, 100, 100});  // the third 100 is the last path: not "early"
  EXPECT_EQ(s.best, 0);
  EXPECT_FALSE(s.stopped_early);
  s = judge_select(S{std::nullopt, std::nullopt});
  EXPECT_EQ(s.best, -1);
  EXPECT_EQ(judge_select(S{}).judged, 0);
  EXPECT_EQ(judge_select(S{100, 100, 50}, 2).judged, 2);
  EXPECT_TRUE(judge_should_stop(S{100, 7, 100, 100}));
  EXPECT_FALSE(judge_should_stop(S{100, 100, std::nullopt}));
}

TEST(RepsJudge, PromptsCarryContextAndFormat) {
  QaExample ex;
  ex.question = "Which river runs through the birthplace of Orlan Vesk?";
  ex.paragraphs = {{0, "ca01", "Orlan Vesk was born in Dravenmoor.", true}};
  const std::string p = reps_sample_prompt(ex);
  EXPECT_NE(p.find(qa_context(ex)), std::string::npos);
  EXPECT_NE(p.find(ex.question), std::string::npos);
  EXPECT_NE(p.find("[Excerpt k] `quoted text`"), std::string::npos);
  EXPECT_NE(p.find("{\"reasoning\": \"...\", \"answer\": \"...\"}"), std::string::npos);
  const std::string j = reps_judge_prompt(ex, "[Excerpt 1] `x`", "Quill");
  EXPECT_NE(j.find("Rating: [[score]]"), std::string::npos);
  EXPECT_NE(j.find("Quill"), std::string::npos);
}

// The completion prompt is exactly the start of the reading exercise tools/reps_render_docs.py
// makes of the same question (what the base model was pretrained on), up to the answer.
TEST(RepsPrompt, CompletionPromptIsTheReadingExercisesPrefix) {
  TempDir tmp("reps_completion");
  json e = {{"id", "1hop__x"}, {"question", "Where was Orlan Vesk born?"}, {"answer", "Dravenmoor"},
            {"paragraphs", {{{"idx", 0}, {"title", "ca01"}, {"paragraph_text", "Orlan Vesk was born in Dravenmoor."},
                             {"is_supporting", true}},
                            {{"idx", 1}, {"title", "cb02"}, {"paragraph_text", "It rained \u00e9t\u00e9."},
                             {"is_supporting", false}}}}};
  const std::string in = tmp.file("qa.jsonl");
  std::ofstream(in) << e.dump() << "\n";
  const std::string cmd = fmt::format("/usr/bin/python3 {}/tools/reps_render_docs.py qa {}", LONGCTX_SOURCE_DIR, in);
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  ASSERT_EQ(pclose(p), 0) << cmd;
  const std::string doc = json::parse(out)["text"].get<std::string>();
  const std::vector<QaExample> ex = qa_read(in, QaFormat::Musique);
  ASSERT_EQ(ex.size(), 1u);
  EXPECT_EQ(doc, reps_completion_prompt(ex[0]) + " Dravenmoor");
  EXPECT_TRUE(reps_completion_prompt(ex[0]).ends_with("\n\nQuestion: Where was Orlan Vesk born?\nAnswer:"));
}

// ---------------------------------------------------------------- readers

TEST(RepsData, ReadsMusiqueAndLongBench) {
  TempDir tmp("reps_readers");
  const fs::path& d = tmp.path;
  json m = {{"id", "3hop1__1_2_3"}, {"question", "Q?"}, {"answer", "A"}, {"answer_aliases", {"a1"}},
            {"answerable", true}, {"question_decomposition", json::array()},
            {"paragraphs", {{{"idx", 0}, {"title", "T0"}, {"paragraph_text", "p0"}, {"is_supporting", false}},
                            {{"idx", 1}, {"title", "T1"}, {"paragraph_text", "p1"}, {"is_supporting", true}}}}};
  json lb = {{"_id", "lb1"}, {"input", "Who?"}, {"context", "long text"}, {"answers", {"X", "Y"}},
             {"dataset", "hotpotqa"}, {"length", 2}};
  write_text(d / "mixed.jsonl", m.dump() + "\n\n" + lb.dump() + "\n");
  std::vector<QaExample> ex = qa_read((d / "mixed.jsonl").string());
  ASSERT_EQ(ex.size(), 2u);
  EXPECT_EQ(ex[0].hops, 3);  // from the id
  EXPECT_EQ(ex[0].paragraphs[1].is_supporting, true);
  EXPECT_EQ(qa_golds(ex[0]), (std::vector<std::string>{"A", "a1"}));
  EXPECT_EQ(qa_context(ex[0]), "Passage 1: T0\np0\n\nPassage 2: T1\np1");
  EXPECT_TRUE(ex[0].extra.contains("question_decomposition"));
  EXPECT_EQ(ex[1].dataset, "hotpotqa");
  EXPECT_EQ(qa_golds(ex[1]), (std::vector<std::string>{"X", "Y"}));
  EXPECT_EQ(qa_context(ex[1]), "long text");
  // round trip
  qa_write((d / "out.jsonl").string(), ex);
  std::vector<QaExample> back = qa_read((d / "out.jsonl").string());
  EXPECT_EQ(qa_to_json(back[0]).dump(), qa_to_json(ex[0]).dump());
  EXPECT_EQ(back[0].hops, 3);
}

TEST(RepsData, BadLinesNameFileLineAndField) {
  TempDir tmp("reps_bad");
  const fs::path& d = tmp.path;
  const std::string f = (d / "x.jsonl").string();
  auto err = [&](const std::string& content) {
    write_text(f, content);
    return error_of([&] { qa_read(f); });
  };
  const std::string ok = R"({"question": "Q", "answer": "A", "paragraphs": []})";
  EXPECT_NE(err(ok + "\n{not json\n").find(f + ":2: not valid JSON"), std::string::npos);
  EXPECT_NE(err(R"({"answer": "A", "paragraphs": []})").find(f + ":1: missing field \"question\""), std::string::npos);
  EXPECT_NE(err(R"({"question": "Q", "paragraphs": []})").find("missing field \"answer\""), std::string::npos);
  EXPECT_NE(err(R"({"question": "Q", "answer": "A", "paragraphs": {}})").find("\"paragraphs\" must be a list"),
            std::string::npos);
  EXPECT_NE(err(R"({"question": "Q", "answer": "A", "paragraphs": [{"title": "t"}]})")
                .find(f + ":1: paragraphs[0]: missing field \"paragraph_text\""),
            std::string::npos);
  EXPECT_NE(err(R"({"input": "Q", "context": "c", "answers": []})").find("\"answers\" is empty"), std::string::npos);
  EXPECT_NE(err(R"({"text": "hello"})").find("neither MuSiQue"), std::string::npos);
  EXPECT_NE(err("[1, 2]").find("expected a JSON object"), std::string::npos);
  EXPECT_NE(err("\n\n").find("no examples"), std::string::npos);
  EXPECT_NE(error_of([&] { qa_read((d / "missing.jsonl").string()); }).find("cannot open"), std::string::npos);
  // sample records
  write_text(f, R"({"id": "q", "path": 0, "text": "t", "temperature": 0.7, "seed": 1})" "\n"
                R"({"id": "q", "path": -1, "text": "t", "temperature": 0.7, "seed": 1})" "\n");
  EXPECT_NE(error_of([&] { sample_read(f); }).find(f + ":2: field \"path\" must be an integer >= 0"), std::string::npos);
  write_text(f, R"({"id": "q", "path": 0, "text": "t", "seed": 1})");
  EXPECT_NE(error_of([&] { sample_read(f); }).find(f + ":1: missing field \"temperature\""), std::string::npos);
  SampleRecord s{"q7", 3, "raw \"text\"\n", 0.7, 12345678901ull, ""};
  SampleRecord b = sample_from_json(sample_to_json(s), "x");
  EXPECT_EQ(b.id, s.id);
  EXPECT_EQ(b.path, 3);
  EXPECT_EQ(b.text, s.text);
  EXPECT_EQ(b.seed, s.seed);
}

// ---------------------------------------------------------------- synth (no corpus needed)

TEST(RepsSynth, InvariantsOnEveryQuestion) {
  const std::vector<SynthSplit> splits = synth_generate(fake_documents(), small_options(), approx_tokens);
  ASSERT_EQ(splits.size(), 4u);
  EXPECT_EQ(splits[0].name, "train");
  EXPECT_EQ(splits[3].name, "test_unseen");
  std::set<int> hops;
  std::set<int64_t> lens;
  for (const SynthSplit& s : splits)
    for (const QaExample& ex : s.examples) {
      check_example(ex, approx_tokens);
      hops.insert(ex.hops);
      lens.insert(ex.length_bucket);
    }
  EXPECT_EQ(hops, (std::set<int>{2, 3, 4}));
  EXPECT_EQ(lens, (std::set<int64_t>{1024, 2048, 4096}));
}

TEST(RepsSynth, DeterministicBySeed) {
  const std::vector<Document> docs = fake_documents();
  SynthOptions o = small_options();
  o.train = 6;
  o.test_unseen = 3;
  auto dump = [&](uint64_t seed) {
    o.seed = seed;
    std::string out;
    for (const SynthSplit& s : synth_generate(docs, o, approx_tokens))
      for (const QaExample& ex : s.examples) out += qa_to_json(ex).dump() + "\n";
    return out;
  };
  const std::string a = dump(5);
  EXPECT_EQ(a, dump(5));
  EXPECT_NE(a, dump(6));
}

TEST(RepsSynth, UnseenSplitSharesNoNamesOrPhrasings) {
  const std::vector<SynthSplit> splits = synth_generate(fake_documents(), small_options(), approx_tokens);
  std::set<std::string> seen_names, seen_words, seen_templates, unseen_templates;
  for (int s = 0; s < 3; s++)
    for (const QaExample& ex : splits[s].examples) {
      seen_templates.insert(ex.extra["question_template"].get<std::string>());
      for (const std::string& n : synth_entity_names(ex)) {
        seen_names.insert(n);
        for (const std::string& w : qa_tokens(qa_normalize(n))) seen_words.insert(w);
      }
    }
  const std::set<std::string> kind_words = {"works", "mills", "press", "foundry", "brothers"};
  for (const QaExample& ex : splits[3].examples) {
    const std::string tmpl = ex.extra["question_template"];
    unseen_templates.insert(tmpl);
    EXPECT_EQ(seen_templates.count(tmpl), 0u) << tmpl;
    for (const std::string& n : synth_entity_names(ex)) {
      EXPECT_EQ(seen_names.count(n), 0u) << n;
      for (const std::string& w : qa_tokens(qa_normalize(n))) EXPECT_EQ(seen_words.count(w), 0u) << w << " in " << n;
    }
    // no phrase of a seen question template (with its entity slot) occurs in an unseen one
    for (const std::string& t : seen_templates) EXPECT_EQ(tmpl.find(t), std::string::npos);
  }
  EXPECT_GE(unseen_templates.size(), 5u);
  // names are unique across all questions (no entity reused between questions)
  std::set<std::string> all;
  size_t total = 0;
  for (const SynthSplit& s : splits)
    for (const QaExample& ex : s.examples) {
      const auto n = synth_entity_names(ex);
      total += n.size();
      all.insert(n.begin(), n.end());
    }
  EXPECT_EQ(all.size(), total);
}

TEST(RepsSynth, BadOptionsAreErrors) {
  SynthOptions o = small_options();
  o.min_hops = 3;
  o.max_hops = 2;
  EXPECT_NE(error_of([&] { synth_generate(fake_documents(), o, approx_tokens); }).find("hops"), std::string::npos);
  o = small_options();
  o.lengths = {1 << 20};
  EXPECT_NE(error_of([&] { synth_generate(fake_documents(2, 3), o, approx_tokens); }).find("shorter than"),
            std::string::npos);
  EXPECT_NE(error_of([&] { synth_generate({}, small_options(), approx_tokens); }).find("no source documents"),
            std::string::npos);
}

// ---------------------------------------------------------------- synth on the Brown corpus

TEST(RepsBrown, SynthOnRealProse) {
  const char* dir = std::getenv("LONGCTX_BROWN_DIR");
  if (!dir || !*dir) GTEST_SKIP() << "set LONGCTX_BROWN_DIR to the Brown corpus folder to run this test";
  const std::vector<Document> docs = corpus_read({dir}, CorpusFormat::Brown);
  SynthOptions o;
  o.train = 6;
  o.dev = 0;
  o.test = 0;
  o.test_unseen = 4;
  o.lengths = {2048, 65536};
  const std::vector<SynthSplit> splits = synth_generate(docs, o, approx_tokens);
  // invented names never occur in the corpus
  std::string all_text;
  for (const Document& d : docs) all_text += d.text + "\n";
  for (const SynthSplit& s : splits)
    for (const QaExample& ex : s.examples) {
      check_example(ex, approx_tokens);
      for (const std::string& n : synth_entity_names(ex)) EXPECT_EQ(count_word(all_text, n), 0) << n;
    }
}

// ---------------------------------------------------------------- CLI

TEST(RepsCli, HelpForEverySubcommand) {
  for (const char* c : {"reps", "reps synth", "reps sample", "reps filter", "reps judge", "reps sft", "reps score",
                        "reps stats", "eval"}) {
    CliRun r = run_cli(std::string(c) + " --help");
    EXPECT_EQ(r.code, 0) << c << "\n" << r.out;
    EXPECT_NE(r.out.find("Usage"), std::string::npos) << r.out;
  }
}

TEST(RepsCli, SynthFilterScoreEndToEnd) {
  TempDir tmp("reps_cli");
  const fs::path& d = tmp.path;
  fs::create_directories(d / "src");
  const std::vector<Document> docs = fake_documents(6, 30);
  for (size_t i = 0; i < docs.size(); i++) write_text(d / "src" / fmt::format("doc{}.txt", i), docs[i].text);
  CliRun r = run_cli(fmt::format("reps synth --input {} --format text --out {} --train 5 --dev 2 --test 2 "
                                 "--test-unseen 3 --lengths 1K,2K --seed 9 --paragraph-words 80",
                                 (d / "src").string(), (d / "out").string()));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("approx: whitespace words x 1.3"), std::string::npos) << r.out;
  for (const char* f : {"train.jsonl", "dev.jsonl", "test.jsonl", "test_unseen.jsonl", "stats.json"})
    EXPECT_TRUE(fs::exists(d / "out" / f)) << f;
  json stats = json::parse(std::ifstream(d / "out" / "stats.json"));
  EXPECT_EQ(stats["train"]["n"], 5);
  EXPECT_EQ(stats["test_unseen"]["n"], 3);
  const std::string test = (d / "out" / "test.jsonl").string();
  std::vector<QaExample> ex = qa_read(test);
  ASSERT_EQ(ex.size(), 2u);

  // samples: a faithful correct path built from the planted facts, a wrong one, garbage
  std::string quotes;
  for (int h = 0; h < ex[0].hops; h++)
    quotes += fmt::format("[Excerpt {}] `{}` ", h + 1, ex[0].extra["facts"][h]["sentence"].get<std::string>());
  const std::string good = json{{"reasoning", quotes}, {"answer", ex[0].answer}}.dump();
  const std::string samples = (d / "samples.jsonl").string();
  write_text(samples, sample_to_json({ex[0].id, 0, "```json\n" + good + "\n```", 0.7, 1, ""}).dump() + "\n" +
                          sample_to_json({ex[0].id, 1, "I think it is Kesh", 0.7, 2, ""}).dump() + "\n" +
                          sample_to_json({ex[1].id, 0, json{{"reasoning", quotes}, {"answer", "Kesh"}}.dump(), 0.7, 3, ""})
                              .dump() + "\n");
  r = run_cli(fmt::format("reps filter --data {} --samples {} --out {} --report {}", test, samples,
                          (d / "kept.jsonl").string(), (d / "report.json").string()));
  ASSERT_EQ(r.code, 0) << r.out;
  json rep = json::parse(std::ifstream(d / "report.json"));
  EXPECT_EQ(rep["samples"], 3);
  EXPECT_EQ(rep["kept"], 1);
  EXPECT_EQ(rep["rejected"]["no_json"], 1);
  EXPECT_EQ(rep["rejected"]["wrong_answer"], 1);

  const std::string preds = (d / "preds.jsonl").string();
  write_text(preds, json{{"id", ex[0].id}, {"prediction", ex[0].answer}}.dump() + "\n");
  r = run_cli(fmt::format("reps score --data {} --predictions {} --out {}", test, preds, (d / "m.json").string()));
  ASSERT_EQ(r.code, 0) << r.out;
  json m = json::parse(std::ifstream(d / "m.json"));
  EXPECT_EQ(m["n"], 2);
  EXPECT_EQ(m["missing"], 1);
  EXPECT_DOUBLE_EQ(m["qa_f1"].get<double>(), 50.0);
  r = run_cli(fmt::format("reps stats --data {}", test));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\"supporting_paragraphs\""), std::string::npos) << r.out;

  // errors name the file and line, or the flag
  write_text(samples, sample_to_json({ex[0].id, 0, "x", 0.7, 1, ""}).dump() + "\n{\"id\": \n");
  EXPECT_CLI_ERROR(run_cli(fmt::format("reps filter --data {} --samples {} --out {}", test, samples,
                                       (d / "k.jsonl").string())),
                   samples + ":2: not valid JSON");
  write_text(samples, R"({"id": "nope", "path": 0, "text": "x", "temperature": 0.7, "seed": 1})");
  EXPECT_CLI_ERROR(run_cli(fmt::format("reps filter --data {} --samples {} --out {}", test, samples,
                                       (d / "k.jsonl").string())),
                   samples + ":1 (id 'nope', path 0): no question with this id");
  write_text(preds, R"({"id": "x"})");
  EXPECT_CLI_ERROR(run_cli(fmt::format("reps score --data {} --predictions {}", test, preds)),
                   preds + ":1: missing field \"prediction\"");
  EXPECT_CLI_ERROR(run_cli(fmt::format("reps synth --input {} --format text --out {} --lengths 2K,big",
                                       (d / "src").string(), (d / "o2").string())),
                   "--lengths: 'big' is not a token count");
  EXPECT_CLI_ERROR(run_cli(fmt::format("reps stats --data {} --format squad", test)), "unknown data format 'squad'");
  EXPECT_CLI_ERROR(run_cli(fmt::format("reps stats --data {}/none.jsonl", d.string())), "cannot open");
}
