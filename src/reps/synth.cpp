#include "reps/synth.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <unordered_set>

#include "core/error.h"
#include "core/rng.h"

namespace longctx {

using nlohmann::json;

int64_t approx_tokens(std::string_view text) {
  int64_t words = 0;
  bool in_word = false;
  for (char c : text) {
    const bool sp = c == ' ' || c == '\n' || c == '\t' || c == '\r';
    if (!sp && !in_word) words++;
    in_word = !sp;
  }
  return int64_t(std::ceil(double(words) * 1.3));
}

namespace {

enum EType { kPerson, kTown, kRiver, kLake, kProvince, kCompany, kMountain, kTypes };

// A relation between two entity kinds: fact sentences ({a} subject, {b} object, bare names) and
// noun phrases for "the {b} of {x}" in questions ({x}: a mention of the subject). The unseen
// phrasings are used only by test_unseen.
struct Relation {
  const char* name;
  EType from, to;
  std::vector<const char*> facts, np_seen, np_unseen;
};

const std::vector<Relation>& relations() {
  static const std::vector<Relation> r = {
      {"student_of", kPerson, kPerson, {"{a} studied under {b}.", "{a} was a pupil of {b}."},
       {"the teacher of {x}", "the person {x} studied under"}, {"the mentor of {x}"}},
      {"born_in", kPerson, kTown, {"{a} was born in the town of {b}.", "{a} was born in {b}."},
       {"the birthplace of {x}", "the town where {x} was born"}, {"the home town of {x}"}},
      {"works_at", kPerson, kCompany, {"{a} worked for many years at {b}.", "{a} was employed by {b}."},
       {"the employer of {x}", "the company {x} worked for"}, {"the firm that employed {x}"}},
      {"hq_in", kCompany, kTown, {"{a} has its headquarters in {b}.", "The head office of {a} is in {b}."},
       {"the town where {x} has its headquarters", "the seat of {x}"}, {"the home base of {x}"}},
      {"lies_on", kTown, kRiver, {"{a} lies on the river {b}.", "The river {b} runs through {a}."},
       {"the river that runs through {x}", "the river on which {x} lies"}, {"the stream flowing past {x}"}},
      {"in_province", kTown, kProvince, {"{a} is a town in the province of {b}.", "{a} belongs to the province of {b}."},
       {"the province containing {x}", "the province in which {x} lies"}, {"the region that includes {x}"}},
      {"flows_into", kRiver, kLake, {"The river {a} flows into Lake {b}.", "The river {a} empties into Lake {b}."},
       {"the lake into which {x} flows", "the lake fed by {x}"}, {"the lake at the mouth of {x}"}},
      {"capital", kProvince, kTown, {"The capital of {a} is {b}.", "{b} is the capital of {a}."},
       {"the capital of {x}", "the chief town of {x}"}, {"the seat of government of {x}"}},
      {"below", kLake, kMountain, {"Lake {a} lies at the foot of the {b} Mountains.", "The {b} Mountains rise above Lake {a}."},
       {"the mountain range above {x}", "the mountains beside {x}"}, {"the peaks overlooking {x}"}},
      {"founded_by", kCompany, kPerson, {"{a} was founded by {b}.", "{b} founded {a}."},
       {"the founder of {x}", "the person who founded {x}"}, {"the person who established {x}"}},
      {"mayor", kTown, kPerson, {"The mayor of {a} is {b}.", "{b} serves as mayor of {a}."},
       {"the mayor of {x}", "the person who is mayor of {x}"}, {"the person governing {x}"}},
  };
  return r;
}

// Question wrappers: {wh} is "Who" for a person answer, else "What"; {np} the nested phrase.
const std::vector<const char*> kWrapSeen = {"{Wh} is {np}?", "Name {np}.", "Give the name of {np}."};
const std::vector<const char*> kWrapUnseen = {"According to the passages, {wh} is {np}?",
                                              "Which name belongs to {np}?", "Tell me {np}."};

// Name styles: disjoint syllable inventories for seen splits and test_unseen.
struct NameStyle {
  std::vector<const char*> onsets, vowels, codas, town, river, lake, province, company, mountain;
};
const NameStyle kSeenStyle = {
    {"b", "d", "g", "k", "l", "m", "n", "r", "s", "t", "v", "br", "dr", "gr", "tr", "st", "th", "f", "h"},
    {"a", "e", "i", "o", "u", "ae", "ea"},
    {"", "", "n", "l", "r", "s", "k", "th", "nd", "rn", "st"},
    {"moor", "holm", "ford", "wick", "stead", "by", "thorpe"},
    {"", "en", "ar"},
    {"el", "wyn", "mere"},
    {"ia", "land", "mark"},
    {"Works", "Mills", "Press", "Foundry", "Brothers"},
    {"", "an", "or"}};
const NameStyle kUnseenStyle = {
    {"z", "zh", "x", "j", "q", "kw", "tl", "ts", "ch", "y"},
    {"ai", "ou", "ei", "oa", "ui", "io"},
    {"", "", "x", "z", "q", "ng", "tz"},
    {"grad", "zar", "heim", "quay", "polis"},
    {"ix", "oz", ""},
    {"ova", "uin", "ax"},
    {"istan", "ovia", "eia"},
    {"Syndicate", "Holdings", "Guild", "Cooperative"},
    {"ek", "uz", ""}};

std::string capitalize(std::string s) {
  if (!s.empty() && s[0] >= 'a' && s[0] <= 'z') s[0] = char(s[0] - 32);
  return s;
}

template <class T>
const T& pick(Rng& rng, const std::vector<T>& v) {
  return v[rng.below(v.size())];
}

// Invents names of every kind; each invented word (lowercased) is new: not in the source text
// and not used before (across all splits, so split name sets are disjoint).
struct NameGen {
  const std::unordered_set<std::string>* corpus_words;
  std::unordered_set<std::string>* used;

  std::string root(Rng& rng, const NameStyle& st, int min_syl, int max_syl) {
    const int n = min_syl + int(rng.below(uint64_t(max_syl - min_syl + 1)));
    std::string s;
    for (int i = 0; i < n; i++) {
      s += pick(rng, st.onsets);
      s += pick(rng, st.vowels);
      if (i == n - 1 || rng.below(3) == 0) s += pick(rng, st.codas);
    }
    return s;
  }
  bool fresh(const std::string& word) const {
    std::string w = word;
    for (char& c : w) c = char(std::tolower(uint8_t(c)));
    return w.size() >= 4 && !used->count(w) && !corpus_words->count(w);
  }
  void take(const std::string& word) {
    std::string w = word;
    for (char& c : w) c = char(std::tolower(uint8_t(c)));
    used->insert(w);
  }
  // One invented word: root + suffix, retried until fresh.
  std::string word(Rng& rng, const NameStyle& st, const std::vector<const char*>& suffixes, int min_syl, int max_syl) {
    for (int attempt = 0; attempt < 1000; attempt++) {
      std::string w = capitalize(root(rng, st, min_syl, max_syl) + pick(rng, suffixes));
      if (fresh(w)) {
        take(w);
        return w;
      }
    }
    fail("reps synth: ran out of fresh invented names (too many questions for the name inventory)");
  }
  std::string name(Rng& rng, const NameStyle& st, EType t) {
    static const std::vector<const char*> none = {""};
    switch (t) {
      case kPerson: return word(rng, st, none, 2, 2) + " " + word(rng, st, none, 1, 2);
      case kTown: return word(rng, st, st.town, 1, 2);
      case kRiver: return word(rng, st, st.river, 1, 2);
      case kLake: return word(rng, st, st.lake, 1, 2);
      case kProvince: return word(rng, st, st.province, 1, 2);
      case kCompany: return word(rng, st, none, 2, 2) + " " + pick(rng, st.company);
      case kMountain: return word(rng, st, st.mountain, 1, 2);
      default: return "";
    }
  }
};

// How a question or sub-question mentions an entity by name.
std::string mention(EType t, const std::string& n) {
  switch (t) {
    case kRiver: return "the river " + n;
    case kLake: return "Lake " + n;
    case kProvince: return "the province of " + n;
    case kMountain: return "the " + n + " Mountains";
    default: return n;
  }
}

std::vector<std::string> aliases(EType t, const std::string& n) {
  switch (t) {
    case kTown: return {"town of " + n};
    case kRiver: return {"river " + n, n + " River"};
    case kLake: return {"Lake " + n};
    case kProvince: return {"province of " + n};
    case kMountain: return {n + " Mountains"};
    default: return {};
  }
}

std::string replace_all(std::string s, std::string_view from, std::string_view to) {
  for (size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size())) s.replace(p, from.size(), to);
  return s;
}

struct Entity {
  EType type;
  std::string name;
};
struct Fact {
  int subj, rel, obj, variant;
  bool supporting;
  std::string sentence;
  int paragraph = -1;
};

// Brown (or any) text cut into paragraphs, with token counts.
struct Para {
  uint32_t doc;
  std::string text;
  int64_t words, tokens;
};

struct Source {
  std::vector<Para> paras;
  std::vector<std::string> titles;  // per document
  std::unordered_set<std::string> words;  // lowercase words of the whole text
};

Source source_build(const std::vector<Document>& docs, const TokenCounter& count) {
  Source s;
  for (uint32_t d = 0; d < docs.size(); d++) {
    std::string title = docs[d].source;
    const size_t slash = title.find_last_of('/');
    if (slash != std::string::npos) title = title.substr(slash + 1);
    s.titles.push_back(title);
    const std::string& t = docs[d].text;
    size_t i = 0;
    while (i < t.size()) {
      size_t j = t.find("\n\n", i);
      if (j == std::string::npos) j = t.size();
      std::string p = t.substr(i, j - i);
      std::replace(p.begin(), p.end(), '\n', ' ');
      const size_t a = p.find_first_not_of(' '), b = p.find_last_not_of(' ');
      if (a != std::string::npos) {
        p = p.substr(a, b - a + 1);
        int64_t words = 0;
        std::string w;
        for (size_t k = 0; k <= p.size(); k++) {
          const char c = k < p.size() ? p[k] : ' ';
          if (std::isalpha(uint8_t(c))) {
            w += char(std::tolower(uint8_t(c)));
          } else if (!w.empty()) {
            s.words.insert(w);
            w.clear();
          }
          if (c == ' ' && k > 0 && p[k - 1] != ' ') words++;
        }
        const int64_t tok = count(p);
        s.paras.push_back(Para{d, std::move(p), words, tok});
      }
      i = j + 2;
    }
  }
  return s;
}

// Positions in `text` where a sentence may be inserted: the start, after ". " / "? " / "! ", the end.
std::vector<size_t> sentence_starts(const std::string& text) {
  std::vector<size_t> pos{0};
  for (size_t i = 2; i < text.size(); i++)
    if (text[i - 1] == ' ' && (text[i - 2] == '.' || text[i - 2] == '?' || text[i - 2] == '!') &&
        std::isupper(uint8_t(text[i])))
      pos.push_back(i);
  pos.push_back(text.size());
  return pos;
}

void plant(std::string& text, const std::string& sentence, Rng& rng) {
  const std::vector<size_t> pos = sentence_starts(text);
  const size_t p = pos[rng.below(pos.size())];
  if (p == text.size()) text += (text.empty() ? "" : " ") + sentence;
  else text.insert(p, sentence + " ");
}

struct Generator {
  const Source& src;
  const SynthOptions& opt;
  const TokenCounter& count;
  NameGen names;

  // A chain of `hops` relations from a random start kind; retried until every step has a relation.
  std::vector<int> chain_relations(Rng& rng, int hops, EType& start) {
    const auto& R = relations();
    const std::vector<EType> starts = {kPerson, kCompany, kTown, kProvince, kRiver};
    for (;;) {
      start = pick(rng, starts);
      EType t = start;
      std::vector<int> rels;
      for (int h = 0; h < hops; h++) {
        std::vector<int> out;
        for (int r = 0; r < int(R.size()); r++)
          if (R[r].from == t) out.push_back(r);
        if (out.empty()) break;
        rels.push_back(pick(rng, out));
        t = R[rels.back()].to;
      }
      if (int(rels.size()) == hops) return rels;
    }
  }

  QaExample make(Rng& rng, const std::string& split, int index, bool unseen) {
    const auto& R = relations();
    const NameStyle& style = unseen ? kUnseenStyle : kSeenStyle;
    const int hops = opt.min_hops + int(rng.below(uint64_t(opt.max_hops - opt.min_hops + 1)));
    const int64_t target = opt.lengths[rng.below(opt.lengths.size())];

    std::vector<Entity> ents;
    std::vector<Fact> facts;
    std::vector<std::pair<int, int>> has_fact;  // (entity, relation) pairs already stated
    auto new_entity = [&](EType t) {
      ents.push_back(Entity{t, names.name(rng, style, t)});
      return int(ents.size()) - 1;
    };
    auto add_fact = [&](int subj, int rel, bool supporting) {
      const int obj = new_entity(R[rel].to);
      const int variant = int(rng.below(R[rel].facts.size()));
      std::string s = replace_all(replace_all(R[rel].facts[variant], "{a}", ents[subj].name), "{b}", ents[obj].name);
      facts.push_back(Fact{subj, rel, obj, variant, supporting, std::move(s)});
      has_fact.push_back({subj, rel});
      return obj;
    };
    auto stated = [&](int e, int rel) { return std::find(has_fact.begin(), has_fact.end(), std::pair{e, rel}) != has_fact.end(); };

    // the chain
    EType start_type;
    const std::vector<int> rels = chain_relations(rng, hops, start_type);
    std::vector<int> chain{new_entity(start_type)};
    for (int r : rels) chain.push_back(add_fact(chain.back(), r, true));
    // distractors: a parallel chain along the same relations from another entity of the same kind
    int p = new_entity(start_type);
    for (int r : rels) p = add_fact(p, r, false);
    // side facts about the chain's entities (relations the question does not follow)
    for (int e : chain) {
      if (rng.below(2)) continue;
      std::vector<int> out;
      for (int r = 0; r < int(R.size()); r++)
        if (R[r].from == ents[e].type && !stated(e, r)) out.push_back(r);
      if (!out.empty()) add_fact(e, pick(rng, out), false);
    }
    // unrelated facts, about one per 1K tokens of context
    const int64_t n_random = std::max<int64_t>(1, opt.distractors_per_1k * target / 1024);
    for (int64_t i = 0; i < n_random; i++) {
      const int r = int(rng.below(R.size()));
      add_fact(new_entity(R[r].from), r, false);
    }

    // the question: nested noun phrases, innermost = the start entity's mention
    std::string np = "{e}", tmpl_key;
    for (int h = 0; h < hops; h++) {
      const auto& nps = unseen ? R[rels[h]].np_unseen : R[rels[h]].np_seen;
      np = replace_all(pick(rng, nps), "{x}", np);
    }
    const auto& wraps = unseen ? kWrapUnseen : kWrapSeen;
    const bool who = ents[chain.back()].type == kPerson;
    std::string tmpl = replace_all(replace_all(replace_all(pick(rng, wraps), "{Wh}", who ? "Who" : "What"), "{wh}",
                                               who ? "who" : "what"),
                                   "{np}", np);
    const std::string start_mention = mention(ents[chain[0]].type, ents[chain[0]].name);
    std::string question = replace_all(tmpl, "{e}", start_mention);
    if (question.rfind("the ", 0) == 0) question[0] = 'T';

    // the filler: consecutive paragraphs from a random place, cut into MuSiQue paragraphs
    int64_t fact_tokens = 0;
    for (const Fact& f : facts) fact_tokens += count(f.sentence) + 1;
    struct Chunk {
      uint32_t doc;
      std::string text;
      int64_t words = 0;
    };
    std::vector<Chunk> chunks;
    int64_t est = fact_tokens;
    const size_t n = src.paras.size();
    size_t at = rng.below(n), used = 0;
    while (est < target) {
      LCX_CHECK(used < n, "reps synth: the source text ({} paragraphs) is shorter than a {}-token context", n, target);
      const Para& para = src.paras[at];
      if (chunks.empty() || chunks.back().doc != para.doc || chunks.back().words >= opt.paragraph_words) {
        chunks.push_back(Chunk{para.doc, "", 0});
        est += 8;  // "Passage k: title\n"
      }
      Chunk& c = chunks.back();
      if (!c.text.empty()) c.text += "\n";
      c.text += para.text;
      c.words += para.words;
      est += para.tokens + 1;
      at = (at + 1) % n;
      used++;
    }

    // plant: chain facts in distinct paragraphs when there are enough, the rest anywhere
    std::vector<int> order(chunks.size());
    for (size_t i = 0; i < order.size(); i++) order[i] = int(i);
    for (size_t i = order.size(); i > 1; i--) std::swap(order[i - 1], order[rng.below(i)]);
    int next_distinct = 0;
    std::vector<size_t> fact_order(facts.size());
    for (size_t i = 0; i < facts.size(); i++) fact_order[i] = i;
    for (size_t i = fact_order.size(); i > 1; i--) std::swap(fact_order[i - 1], fact_order[rng.below(i)]);
    for (size_t fi : fact_order) {
      Fact& f = facts[fi];
      if (f.supporting && next_distinct < int(order.size())) f.paragraph = order[next_distinct++];
      else f.paragraph = int(rng.below(chunks.size()));
      plant(chunks[f.paragraph].text, f.sentence, rng);
    }

    QaExample ex;
    ex.id = fmt::format("{}hop__synth_{}_{:06d}", hops, split, index);
    ex.question = question;
    ex.answer = ents[chain.back()].name;
    ex.answer_aliases = aliases(ents[chain.back()].type, ex.answer);
    ex.answerable = true;
    ex.dataset = "synth";
    ex.hops = hops;
    ex.length_bucket = target;
    for (size_t i = 0; i < chunks.size(); i++)
      ex.paragraphs.push_back(QaParagraph{int(i), src.titles[chunks[i].doc], std::move(chunks[i].text), false});
    json decomposition = json::array(), jfacts = json::array();
    for (const Fact& f : facts) {
      if (f.supporting) ex.paragraphs[f.paragraph].is_supporting = true;
      jfacts.push_back({{"subject", ents[f.subj].name}, {"relation", R[f.rel].name}, {"object", ents[f.obj].name},
                        {"sentence", f.sentence}, {"supporting", f.supporting}, {"paragraph_idx", f.paragraph}});
    }
    for (int h = 0; h < hops; h++) {
      const Fact& f = facts[h];  // chain facts were added first, in hop order
      const auto& nps = unseen ? R[f.rel].np_unseen : R[f.rel].np_seen;  // unseen phrasings stay unseen
      const std::string sub_np = replace_all(nps[0], "{x}", mention(ents[f.subj].type, ents[f.subj].name));
      decomposition.push_back({{"id", h},
                               {"question", fmt::format("{} is {}?", ents[f.obj].type == kPerson ? "Who" : "What", sub_np)},
                               {"answer", ents[f.obj].name},
                               {"paragraph_support_idx", f.paragraph}});
    }
    ex.context_tokens = count(qa_context(ex));
    ex.extra["question_decomposition"] = std::move(decomposition);
    ex.extra["facts"] = std::move(jfacts);
    ex.extra["split"] = split;
    ex.extra["question_template"] = tmpl;
    return ex;
  }
};

}  // namespace

std::vector<SynthSplit> synth_generate(const std::vector<Document>& documents, const SynthOptions& opt,
                                       const TokenCounter& count, const std::function<void()>& on_question) {
  LCX_CHECK(!documents.empty(), "reps synth: no source documents");
  LCX_CHECK(opt.min_hops >= 1 && opt.max_hops >= opt.min_hops && opt.max_hops <= 8,
            "reps synth: hops must satisfy 1 <= min ({}) <= max ({}) <= 8", opt.min_hops, opt.max_hops);
  LCX_CHECK(!opt.lengths.empty(), "reps synth: no context lengths given");
  for (int64_t l : opt.lengths) LCX_CHECK(l >= 256 && l <= (1 << 24), "reps synth: context length {} is out of range [256, 16M]", l);
  LCX_CHECK(opt.train >= 0 && opt.dev >= 0 && opt.test >= 0 && opt.test_unseen >= 0, "reps synth: negative split size");
  LCX_CHECK(opt.train + opt.dev + opt.test + opt.test_unseen > 0, "reps synth: every split size is 0");
  LCX_CHECK(opt.paragraph_words >= 1, "reps synth: --paragraph-words must be >= 1");
  const Source src = source_build(documents, count);
  LCX_CHECK(!src.paras.empty(), "reps synth: the source documents hold no text");
  std::unordered_set<std::string> used;
  Generator g{src, opt, count, NameGen{&src.words, &used}};
  const std::pair<const char*, int> plan[] = {{"train", opt.train}, {"dev", opt.dev}, {"test", opt.test}, {"test_unseen", opt.test_unseen}};
  std::vector<SynthSplit> out;
  for (int s = 0; s < 4; s++) {
    Rng rng(opt.seed * 0x9E3779B97F4A7C15ull + uint64_t(s) + 1);
    SynthSplit sp{plan[s].first, {}};
    for (int i = 0; i < plan[s].second; i++) {
      sp.examples.push_back(g.make(rng, sp.name, i, s == 3));
      if (on_question) on_question();
    }
    out.push_back(std::move(sp));
  }
  return out;
}

json synth_stats(const std::vector<SynthSplit>& splits) {
  json j = json::object();
  for (const SynthSplit& s : splits) {
    json by_hops = json::object(), by_len = json::object();
    std::vector<int64_t> toks;
    for (const QaExample& ex : s.examples) {
      const std::string h = std::to_string(ex.hops), l = std::to_string(ex.length_bucket);
      by_hops[h] = by_hops.value(h, 0) + 1;
      by_len[l] = by_len.value(l, 0) + 1;
      toks.push_back(ex.context_tokens);
    }
    std::sort(toks.begin(), toks.end());
    json ct = json::object();
    if (!toks.empty()) {
      double sum = 0;
      for (int64_t t : toks) sum += double(t);
      ct = {{"min", toks.front()}, {"p50", toks[toks.size() / 2]}, {"mean", std::round(sum / double(toks.size()))},
            {"max", toks.back()}};
    }
    j[s.name] = {{"n", s.examples.size()}, {"by_hops", by_hops}, {"by_length", by_len}, {"context_tokens", ct}};
  }
  return j;
}

std::vector<std::string> synth_entity_names(const QaExample& ex) {
  std::vector<std::string> out;
  auto it = ex.extra.find("facts");
  if (it == ex.extra.end()) return out;
  for (const json& f : *it) {
    out.push_back(f.value("subject", ""));
    out.push_back(f.value("object", ""));
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

}  // namespace longctx
