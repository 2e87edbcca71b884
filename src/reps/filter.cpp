#include "reps/filter.h"

#include <algorithm>
#include <set>
#include <unordered_map>

#include "core/error.h"
#include "reps/qa_metrics.h"

namespace longctx {

using nlohmann::json;

const char* path_reject_name(PathReject r) {
  switch (r) {
    case PathReject::None: return "kept";
    case PathReject::NoJson: return "no_json";
    case PathReject::TruncatedJson: return "truncated_json";
    case PathReject::InvalidJson: return "invalid_json";
    case PathReject::MissingAnswer: return "missing_answer";
    case PathReject::MissingReasoning: return "missing_reasoning";
    case PathReject::BadAnswer: return "bad_answer";
    case PathReject::BadReasoning: return "bad_reasoning";
    case PathReject::WrongAnswer: return "wrong_answer";
    case PathReject::NoQuotes: return "no_quotes";
    case PathReject::TooManyQuotes: return "too_many_quotes";
    case PathReject::MalformedQuote: return "malformed_quote";
    case PathReject::EmptyQuote: return "empty_quote";
    case PathReject::UnfaithfulQuote: return "unfaithful_quote";
  }
  return "?";
}

namespace {

// End (one past the closing '}') of the object starting at text[start] == '{', or npos when it
// never closes. String- and escape-aware.
size_t match_object(std::string_view text, size_t start) {
  int depth = 0;
  bool in_str = false;
  for (size_t i = start; i < text.size(); i++) {
    const char c = text[i];
    if (in_str) {
      if (c == '\\') i++;
      else if (c == '"') in_str = false;
    } else if (c == '"') {
      in_str = true;
    } else if (c == '{') {
      depth++;
    } else if (c == '}') {
      if (--depth == 0) return i + 1;
    }
  }
  return std::string_view::npos;
}

// Escapes raw control characters inside strings and drops the backslash of invalid escapes
// (\` \' \_ ...), the two most common ways model output breaks otherwise sound JSON.
std::string json_repair(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 16);
  bool in_str = false;
  for (size_t i = 0; i < s.size(); i++) {
    const char c = s[i];
    if (!in_str) {
      if (c == '"') in_str = true;
      out += c;
      continue;
    }
    if (c == '"') {
      in_str = false;
      out += c;
    } else if (c == '\\' && i + 1 < s.size()) {
      const char n = s[i + 1];
      if (std::string_view("\"\\/bfnrtu").find(n) != std::string_view::npos) {
        out += c;
        out += n;
      } else {
        out += n;  // invalid escape: keep the character only
      }
      i++;
    } else if (uint8_t(c) < 0x20) {
      switch (c) {
        case '\n': out += "\\n"; break;
        case '\t': out += "\\t"; break;
        case '\r': out += "\\r"; break;
        default: out += fmt::format("\\u{:04x}", int(c));
      }
    } else {
      out += c;
    }
  }
  return out;
}

json try_parse(std::string_view s) {
  json j = json::parse(s.begin(), s.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    const std::string r = json_repair(s);
    j = json::parse(r, nullptr, false);
  }
  return (!j.is_discarded() && j.is_object()) ? j : json();
}

}  // namespace

JsonExtract json_extract(std::string_view text) {
  // regions: fenced bodies first, then the whole text
  std::vector<std::string_view> regions;
  for (size_t p = text.find("```"); p != std::string_view::npos;) {
    size_t body = text.find('\n', p + 3);
    if (body == std::string_view::npos) break;
    body++;
    const size_t end = text.find("```", body);
    regions.push_back(text.substr(body, end == std::string_view::npos ? std::string_view::npos : end - body));
    if (end == std::string_view::npos) break;
    p = text.find("```", end + 3);
  }
  regions.push_back(text);

  JsonExtract r;
  bool any_open = false, any_unclosed = false;
  json first_object;
  int attempts = 0;
  constexpr int kMaxAttempts = 64;  // bounds the work on adversarial brace soup
  for (std::string_view region : regions) {
    for (size_t s = region.find('{'); s != std::string_view::npos && attempts < kMaxAttempts;
         s = region.find('{', s + 1)) {
      any_open = true;
      attempts++;
      const size_t e = match_object(region, s);
      if (e == std::string_view::npos) {  // a stray '{' in prose, or output cut short: try the next one
        any_unclosed = true;
        continue;
      }
      json j = try_parse(region.substr(s, e - s));
      if (j.is_object()) {
        if (j.contains("answer")) {
          r.value = std::move(j);
          return r;
        }
        if (first_object.is_null()) first_object = std::move(j);
      }
    }
  }
  if (first_object.is_object()) {
    r.value = std::move(first_object);
    return r;
  }
  r.reject = !any_open ? PathReject::NoJson : any_unclosed ? PathReject::TruncatedJson : PathReject::InvalidJson;
  return r;
}

std::string reps_prediction(std::string_view text) {
  const JsonExtract x = json_extract(text);
  if (x.reject == PathReject::None && x.value.contains("answer")) {
    const nlohmann::json& a = x.value["answer"];
    if (a.is_string()) return a.get<std::string>();
    if (a.is_number()) return a.dump();
  }
  size_t b = 0;
  for (;;) {  // the first line with something on it
    const size_t e = std::min(text.find('\n', b), text.size());
    std::string_view line = text.substr(b, e - b);
    const size_t l = line.find_first_not_of(" \t\r"), r = line.find_last_not_of(" \t\r");
    if (l != std::string_view::npos) return std::string(line.substr(l, r - l + 1));
    if (e == text.size()) return "";
    b = e + 1;
  }
}

Quotes quotes_extract(std::string_view t) {
  Quotes q;
  std::set<std::string> quoted_numbers;
  size_t i = 0;
  while ((i = t.find("[Excerpt", i)) != std::string_view::npos) {
    size_t p = i + 8;
    while (p < t.size() && t[p] == ' ') p++;
    const size_t num_start = p;
    while (p < t.size() && t[p] >= '0' && t[p] <= '9') p++;
    const std::string num(t.substr(num_start, p - num_start));
    while (p < t.size() && t[p] == ' ') p++;
    if (num.empty() || p >= t.size() || t[p] != ']') {  // "[Excerpt" not followed by "k]"
      q.malformed++;
      i = p;
      continue;
    }
    p++;
    if (p < t.size() && t[p] == ':') p++;
    while (p < t.size() && (t[p] == ' ' || t[p] == '\n' || t[p] == '\t')) p++;
    if (p < t.size() && t[p] == '`') {
      const size_t end = t.find('`', p + 1);
      if (end == std::string_view::npos) {  // unterminated quote
        q.malformed++;
        break;
      }
      q.spans.emplace_back(t.substr(p + 1, end - p - 1));
      quoted_numbers.insert(num);
      i = end + 1;
    } else {
      // a bare "[Excerpt k]" referring back to an earlier quote is fine; one never quoted is not
      if (!quoted_numbers.count(num)) q.malformed++;
      i = p;
    }
  }
  return q;
}

bool quote_faithful(std::string_view quote, std::string_view normalized_context) {
  const std::string nq = qa_normalize(quote);
  return !nq.empty() && normalized_context.find(nq) != std::string_view::npos;
}

PathVerdict filter_path(std::string_view raw, const std::vector<std::string>& golds,
                        std::string_view normalized_context, const FilterOptions& opt) {
  PathVerdict v;
  JsonExtract ex = json_extract(raw);
  if (ex.reject != PathReject::None) {
    v.reject = ex.reject;
    return v;
  }
  const json& j = ex.value;
  if (!j.contains("answer")) return v.reject = PathReject::MissingAnswer, v;
  if (!j.contains("reasoning")) return v.reject = PathReject::MissingReasoning, v;
  const json& a = j["answer"];
  if (a.is_string()) v.answer = a.get<std::string>();
  else if (a.is_number()) v.answer = a.dump();
  if (v.answer.find_first_not_of(" \t\n\r") == std::string::npos) return v.reject = PathReject::BadAnswer, v;
  if (!j["reasoning"].is_string()) return v.reject = PathReject::BadReasoning, v;
  v.reasoning = j["reasoning"].get<std::string>();
  v.parsed = true;
  v.f1 = qa_f1_max(v.answer, golds);
  v.em = qa_exact_any(v.answer, golds);
  if (v.f1 < 1.0) return v.reject = PathReject::WrongAnswer, v;
  const Quotes q = quotes_extract(v.reasoning);
  v.quotes = int(q.spans.size());
  if (v.quotes < opt.min_quotes) return v.reject = PathReject::NoQuotes, v;
  if (v.quotes > opt.max_quotes) return v.reject = PathReject::TooManyQuotes, v;
  if (q.malformed > 0) return v.reject = PathReject::MalformedQuote, v;
  for (const std::string& s : q.spans) {
    if (qa_normalize(s).empty()) {
      v.detail = s;
      return v.reject = PathReject::EmptyQuote, v;
    }
    if (!quote_faithful(s, normalized_context)) {
      v.detail = s;
      return v.reject = PathReject::UnfaithfulQuote, v;
    }
  }
  return v;
}

FilterResult filter_samples(const std::vector<QaExample>& examples, const std::vector<SampleRecord>& samples,
                            const FilterOptions& opt) {
  FilterResult res;
  FilterReport& r = res.report;
  std::unordered_map<std::string, size_t> index;
  for (size_t i = 0; i < examples.size(); i++) index.emplace(examples[i].id, i);
  std::unordered_map<size_t, std::string> norm_ctx;  // normalised contexts, computed once each
  std::set<std::pair<std::string, int>> seen;
  std::vector<char> has_sample(examples.size(), 0), has_kept(examples.size(), 0);
  for (size_t k = 0; k < samples.size(); k++) {
    const SampleRecord& s = samples[k];
    auto it = index.find(s.id);
    const std::string where = s.where.empty() ? fmt::format("sample {}", k + 1) : s.where;
    LCX_CHECK(it != index.end(), "{} (id '{}', path {}): no question with this id in the data", where, s.id, s.path);
    LCX_CHECK(seen.insert({s.id, s.path}).second, "{} (id '{}', path {}): duplicate sample", where, s.id, s.path);
    const QaExample& ex = examples[it->second];
    auto nc = norm_ctx.find(it->second);
    if (nc == norm_ctx.end()) nc = norm_ctx.emplace(it->second, qa_normalize(qa_context(ex))).first;
    PathVerdict v = filter_path(s.text, qa_golds(ex), nc->second, opt);
    r.samples++;
    has_sample[it->second] = 1;
    if (v.parsed) {
      r.parsed++;
      r.f1_sum += v.f1;
      r.em += v.em;
      r.answer_correct += v.f1 >= 1.0;
    }
    r.rejected[int(v.reject)]++;
    if (v.reject != PathReject::None) continue;
    r.kept++;
    has_kept[it->second] = 1;
    res.kept.push_back(json{{"id", s.id}, {"path", s.path}, {"temperature", s.temperature}, {"seed", s.seed},
                            {"answer", v.answer}, {"reasoning", v.reasoning}, {"f1", v.f1}, {"em", v.em},
                            {"quotes", v.quotes}, {"text", s.text}});
  }
  r.questions = int64_t(examples.size());
  for (size_t i = 0; i < examples.size(); i++) {
    r.questions_with_sample += has_sample[i];
    r.questions_with_kept += has_kept[i];
  }
  return res;
}

json filter_report_json(const FilterReport& r) {
  json rej = json::object();
  for (int i = 1; i < kPathRejectCount; i++) rej[path_reject_name(PathReject(i))] = r.rejected[i];
  return json{{"samples", r.samples},
              {"kept", r.kept},
              {"parsed", r.parsed},
              {"answer_correct", r.answer_correct},
              {"em", r.em},
              {"mean_f1", r.parsed ? r.f1_sum / double(r.parsed) : 0.0},
              {"questions", r.questions},
              {"questions_with_sample", r.questions_with_sample},
              {"questions_with_kept", r.questions_with_kept},
              {"rejected", rej}};
}

}  // namespace longctx
