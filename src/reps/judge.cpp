#include "reps/judge.h"

#include <cctype>

namespace longctx {

const char* rating_reject_name(RatingReject r) {
  switch (r) {
    case RatingReject::None: return "ok";
    case RatingReject::NoRating: return "no_rating";
    case RatingReject::Malformed: return "malformed_rating";
    case RatingReject::OutOfRange: return "rating_out_of_range";
  }
  return "?";
}

namespace {
bool ieq_prefix(std::string_view s, size_t at, std::string_view word) {
  if (at + word.size() > s.size()) return false;
  for (size_t k = 0; k < word.size(); k++)
    if (std::tolower(uint8_t(s[at + k])) != word[k]) return false;
  return true;
}
size_t skip_spaces(std::string_view s, size_t p) {
  while (p < s.size() && (s[p] == ' ' || s[p] == '\t')) p++;
  return p;
}
}  // namespace

Rating rating_parse(std::string_view t) {
  Rating best{0, RatingReject::NoRating};
  for (size_t i = 0; i < t.size(); i++) {
    if (!ieq_prefix(t, i, "rating")) continue;
    size_t p = skip_spaces(t, i + 6);
    if (p < t.size() && t[p] == ':') p = skip_spaces(t, p + 1);
    if (!(p + 1 < t.size() && t[p] == '[' && t[p + 1] == '[')) continue;
    p = skip_spaces(t, p + 2);
    const size_t close = t.find("]]", p);
    Rating r{0, RatingReject::Malformed};
    if (close != std::string_view::npos) {
      size_t e = close;
      while (e > p && (t[e - 1] == ' ' || t[e - 1] == '\t')) e--;
      std::string_view num = t.substr(p, e - p);
      bool digits = !num.empty() && num.size() <= 6;
      for (char c : num) digits &= c >= '0' && c <= '9';
      if (digits) {
        const int v = std::stoi(std::string(num));
        r = v >= 1 && v <= 100 ? Rating{v, RatingReject::None} : Rating{0, RatingReject::OutOfRange};
      }
    }
    best = r;  // the last rating in the text wins
  }
  return best;
}

JudgeSelection judge_select(const std::vector<std::optional<int>>& scores, int stop_after) {
  JudgeSelection s;
  int perfect = 0;
  for (size_t i = 0; i < scores.size(); i++) {
    s.judged = int(i) + 1;
    if (scores[i] && (s.best < 0 || *scores[i] > s.best_score)) {
      s.best = int(i);
      s.best_score = *scores[i];
    }
    if (scores[i] && *scores[i] == 100 && ++perfect >= stop_after) {
      s.stopped_early = i + 1 < scores.size();
      break;
    }
  }
  return s;
}

bool judge_should_stop(const std::vector<std::optional<int>>& scores_so_far, int stop_after) {
  int perfect = 0;
  for (const auto& s : scores_so_far) perfect += s && *s == 100;
  return perfect >= stop_after;
}

}  // namespace longctx
