#include "reps/qa_metrics.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>

#include "core/error.h"

namespace longctx {

namespace {

// Decodes one UTF-8 code point at s[i]; returns its length (≥ 1). An invalid byte is returned as
// cp = 0xFFFFFFFF with length 1, so it is copied through unchanged.
size_t utf8_next(std::string_view s, size_t i, uint32_t& cp) {
  const auto c = uint8_t(s[i]);
  size_t len = c < 0x80 ? 1 : (c >= 0xC2 && c <= 0xDF) ? 2 : (c >= 0xE0 && c <= 0xEF) ? 3 : (c >= 0xF0 && c <= 0xF4) ? 4 : 0;
  if (len == 0 || i + len > s.size()) {
    cp = 0xFFFFFFFFu;
    return 1;
  }
  if (len == 1) {
    cp = c;
    return 1;
  }
  cp = c & (0xFF >> (len + 1));
  for (size_t k = 1; k < len; k++) {
    const auto d = uint8_t(s[i + k]);
    if ((d & 0xC0) != 0x80) {
      cp = 0xFFFFFFFFu;
      return 1;
    }
    cp = (cp << 6) | (d & 0x3F);
  }
  return len;
}

void utf8_append(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

uint32_t lower_cp(uint32_t c) {
  if (c >= 'A' && c <= 'Z') return c + 32;
  if (c < 0xC0) return c;
  if (c <= 0xDE) return c == 0xD7 ? c : c + 0x20;                      // Latin-1 (× stays)
  if (c >= 0x100 && c <= 0x137) return c | 1;                          // Latin Extended-A pairs
  if (c >= 0x139 && c <= 0x148) return (c & 1) ? c + 1 : c;
  if (c >= 0x14A && c <= 0x177) return c | 1;
  if (c == 0x178) return 0xFF;
  if (c >= 0x179 && c <= 0x17E) return (c & 1) ? c + 1 : c;
  if (c >= 0x391 && c <= 0x3A9 && c != 0x3A2) return c + 0x20;        // Greek
  if (c == 0x386) return 0x3AC;
  if (c >= 0x388 && c <= 0x38A) return c + 37;
  if (c == 0x38C) return 0x3CC;
  if (c == 0x38E || c == 0x38F) return c + 63;
  if (c >= 0x410 && c <= 0x42F) return c + 0x20;                      // Cyrillic
  if (c >= 0x400 && c <= 0x40F) return c + 0x50;
  return c;
}

bool is_space_cp(uint32_t c) {
  return c == ' ' || (c >= 0x09 && c <= 0x0D) || c == 0x1C || c == 0x1D || c == 0x1E || c == 0x1F ||
         c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
         c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

bool is_punct_cp(uint32_t c) {
  if (c < 0x80) return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) || (c >= 0x5B && c <= 0x60) ||
                       (c >= 0x7B && c <= 0x7E);  // Python string.punctuation
  return c == 0xA1 || c == 0xA7 || c == 0xAB || c == 0xB6 || c == 0xB7 || c == 0xBB || c == 0xBF ||
         (c >= 0x2010 && c <= 0x2027) || (c >= 0x2030 && c <= 0x205E) || (c >= 0x3001 && c <= 0x3003) ||
         (c >= 0x3008 && c <= 0x3011) || (c >= 0x3014 && c <= 0x301F) || (c >= 0xFF01 && c <= 0xFF0F) ||
         (c >= 0xFF1A && c <= 0xFF20) || (c >= 0xFF3B && c <= 0xFF40) || (c >= 0xFF5B && c <= 0xFF65);
}

}  // namespace

std::string qa_normalize(std::string_view s) {
  std::string lowered;  // lowercase, punctuation dropped, every whitespace → ' '
  lowered.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    uint32_t cp;
    const size_t len = utf8_next(s, i, cp);
    if (cp == 0xFFFFFFFFu) lowered += s[i];  // invalid byte: keep
    else if (is_space_cp(cp)) lowered += ' ';
    else if (!is_punct_cp(cp)) utf8_append(lowered, lower_cp(cp));
    i += len;
  }
  std::string out;
  out.reserve(lowered.size());
  size_t i = 0;
  while (i < lowered.size()) {
    while (i < lowered.size() && lowered[i] == ' ') i++;
    size_t j = i;
    while (j < lowered.size() && lowered[j] != ' ') j++;
    if (j > i) {
      std::string_view w(lowered.data() + i, j - i);
      if (w != "a" && w != "an" && w != "the") {
        if (!out.empty()) out += ' ';
        out += w;
      }
    }
    i = j;
  }
  return out;
}

std::vector<std::string> qa_tokens(std::string_view normalized) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < normalized.size()) {
    size_t j = normalized.find(' ', i);
    if (j == std::string_view::npos) j = normalized.size();
    if (j > i) out.emplace_back(normalized.substr(i, j - i));
    i = j + 1;
  }
  return out;
}

double qa_f1(std::string_view prediction, std::string_view gold) {
  const std::vector<std::string> p = qa_tokens(qa_normalize(prediction)), g = qa_tokens(qa_normalize(gold));
  if (p.empty() || g.empty()) return 0.0;
  std::unordered_map<std::string, int> count;
  for (const std::string& t : g) count[t]++;
  int same = 0;
  for (const std::string& t : p) {
    auto it = count.find(t);
    if (it != count.end() && it->second > 0) {
      it->second--;
      same++;
    }
  }
  if (same == 0) return 0.0;
  const double precision = double(same) / double(p.size()), recall = double(same) / double(g.size());
  return 2 * precision * recall / (precision + recall);
}

bool qa_exact(std::string_view prediction, std::string_view gold) {
  return qa_normalize(prediction) == qa_normalize(gold);
}

double qa_f1_max(std::string_view prediction, const std::vector<std::string>& golds) {
  double best = 0;
  for (const std::string& g : golds) best = std::max(best, qa_f1(prediction, g));
  return best;
}

bool qa_exact_any(std::string_view prediction, const std::vector<std::string>& golds) {
  for (const std::string& g : golds)
    if (qa_exact(prediction, g)) return true;
  return false;
}

int64_t qa_length_key(const QaExample& ex) {
  if (ex.length_bucket > 0) return ex.length_bucket;
  int64_t tokens = ex.context_tokens;
  if (tokens <= 0) {
    const std::string ctx = qa_context(ex);
    int64_t words = 0;
    bool in_word = false;
    for (char c : ctx) {
      const bool sp = c == ' ' || c == '\n' || c == '\t' || c == '\r';
      if (!sp && !in_word) words++;
      in_word = !sp;
    }
    tokens = int64_t(std::ceil(double(words) * 1.3));
  }
  int64_t key = 1024;
  while (key < tokens) key *= 2;
  return key;
}

QaReport qa_evaluate(const std::vector<QaExample>& examples, const std::map<std::string, std::string>& predictions) {
  QaReport r;
  for (const QaExample& ex : examples) {
    QaScore s;
    s.id = ex.id;
    s.hops = ex.hops;
    s.length_key = qa_length_key(ex);
    auto it = predictions.find(ex.id);
    if (it == predictions.end()) {
      s.missing = true;
    } else {
      const std::vector<std::string> golds = qa_golds(ex);
      s.f1 = qa_f1_max(it->second, golds);
      s.em = qa_exact_any(it->second, golds);
    }
    for (QaGroup* g : {&r.all, &r.by_hops[s.hops], &r.by_length[s.length_key], &r.by_hops_length[{s.hops, s.length_key}]}) {
      g->n++;
      g->missing += s.missing;
      g->f1_sum += s.f1;
      g->em_sum += s.em ? 1.0 : 0.0;
    }
    r.scores.push_back(std::move(s));
  }
  return r;
}

namespace {
nlohmann::json group_json(const QaGroup& g) {
  auto round2 = [](double x) { return std::round(x * 100.0) / 100.0; };
  return {{"n", g.n}, {"missing", g.missing}, {"qa_f1", round2(g.f1())}, {"em", round2(g.em())}};
}
}  // namespace

nlohmann::json qa_report_json(const QaReport& r, bool per_example) {
  nlohmann::json j = group_json(r.all);
  j["by_hops"] = nlohmann::json::object();
  for (const auto& [h, g] : r.by_hops) j["by_hops"][h ? std::to_string(h) : "unknown"] = group_json(g);
  j["by_length"] = nlohmann::json::object();
  for (const auto& [l, g] : r.by_length) j["by_length"][std::to_string(l)] = group_json(g);
  j["by_hops_length"] = nlohmann::json::object();
  for (const auto& [k, g] : r.by_hops_length)
    j["by_hops_length"][fmt::format("{}/{}", k.first ? std::to_string(k.first) : "unknown", k.second)] = group_json(g);
  if (per_example) {
    j["examples"] = nlohmann::json::array();
    for (const QaScore& s : r.scores)
      j["examples"].push_back({{"id", s.id}, {"hops", s.hops}, {"length", s.length_key}, {"f1", s.f1}, {"em", s.em},
                               {"missing", s.missing}});
  }
  return j;
}

std::map<std::string, std::string> qa_predictions_read(const std::string& path) {
  std::map<std::string, std::string> out;
  jsonl_for_each(path, [&](const nlohmann::json& j, const std::string& where) {
    LCX_CHECK(j.is_object(), "{}: expected a JSON object, got {}", where, j.type_name());
    LCX_CHECK(j.contains("id"), "{}: missing field \"id\"", where);
    const std::string id = j["id"].is_string() ? j["id"].get<std::string>() : j["id"].dump();
    const nlohmann::json* p = nullptr;
    for (const char* k : {"prediction", "answer", "pred"})
      if (!p && j.contains(k)) p = &j[k];
    LCX_CHECK(p != nullptr, "{}: missing field \"prediction\"", where);
    LCX_CHECK(p->is_string(), "{}: field \"prediction\" must be a string, got {}", where, p->type_name());
    LCX_CHECK(!out.count(id), "{}: duplicate prediction for id '{}'", where, id);
    out[id] = p->get<std::string>();
  });
  return out;
}

}  // namespace longctx
