// LongRePS consistency judge, the model-free part (DESIGN.md §4 step 4): parsing the judge's
// "Rating: [[score]]" and the selection rule "stop after 3 paths score 100; keep the best path,
// ties to the first". Pure functions; `reps judge` (sampling the judge) builds on them.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace longctx {

enum class RatingReject { None = 0, NoRating, Malformed, OutOfRange };
const char* rating_reject_name(RatingReject r);  // "ok", "no_rating", "malformed_rating", "rating_out_of_range"

// The last "Rating: [[N]]" in `text` ("rating" case-insensitive, spaces allowed around and
// inside the brackets). N must be an integer 1–100: "[[85.5]]", "[[ninety]]", "[[]]" are
// Malformed, "[[0]]" and "[[101]]" OutOfRange, no "Rating:" followed by "[[" is NoRating.
struct Rating {
  int score = 0;  // 1..100 when reject == None
  RatingReject reject = RatingReject::None;
};
Rating rating_parse(std::string_view text);

// Paths are judged in order; `scores[i]` is the rating of path i (nullopt: unparsable, never
// selected). Judging stops right after the `stop_after`-th score of 100 (later paths are not
// judged). best = the highest score among judged paths, the first one on ties; -1 when none
// parsed. judged = how many paths were (or would be) judged.
struct JudgeSelection {
  int best = -1;
  int best_score = 0;
  int judged = 0;
  bool stopped_early = false;
};
JudgeSelection judge_select(const std::vector<std::optional<int>>& scores, int stop_after = 3);
// True when judging may stop now, given the scores so far (the same rule, for a sampling loop).
bool judge_should_stop(const std::vector<std::optional<int>>& scores_so_far, int stop_after = 3);

}  // namespace longctx
