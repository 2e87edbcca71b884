// `longctx reps synth|sample|filter|judge|sft|score|stats`: LongRePS (DESIGN.md §4). synth writes
// multi-hop long-context QA planted in real prose; sample draws N reasoning paths per question (local
// checkpoint or OpenAI-compatible endpoint, resumable); filter keeps sampled reasoning paths with a correct
// answer and faithful quotes; judge rates them and keeps the best per question (resumable); sft
// fine-tunes on answers or paths (assistant tokens only, warm-up + main stage); score computes LongBench qa_f1 / EM with per-hop and per-length
// breakdowns; stats reads a MuSiQue or LongBench file and summarises it.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>

#include "cli/commands.h"
#include "cli/reps_options.h"  // ModelFlags, parse_qa_format, write_json
#include "core/error.h"
#include "core/progress.h"    // Progress
#include "data/corpus.h"          // corpus_read
#include "reps/filter.h"          // filter_samples, filter_report_json
#include "reps/judge.h"           // judge_run, judge_report_json
#include "reps/qa_data.h"         // qa_read, sample_read, qa_write
#include "reps/qa_metrics.h"      // qa_evaluate, qa_report_json
#include "reps/sample.h"          // sample_run
#include "reps/sft.h"             // sft_run
#include "reps/synth.h"           // synth_generate, synth_stats
#include "tokenizer/tokenizer.h"  // Tokenizer

namespace fs = std::filesystem;

namespace longctx {

namespace {

using nlohmann::json;

// "2048,4K,64k" → {2048, 4096, 65536}
std::vector<int64_t> parse_lengths(const std::string& s) {
  std::vector<int64_t> out;
  size_t i = 0;
  while (i <= s.size()) {
    size_t j = s.find(',', i);
    if (j == std::string::npos) j = s.size();
    std::string t = s.substr(i, j - i);
    t.erase(std::remove(t.begin(), t.end(), ' '), t.end());
    LCX_CHECK(!t.empty(), "--lengths: empty entry in '{}'", s);
    int64_t mult = 1;
    if (t.back() == 'k' || t.back() == 'K') {
      mult = 1024;
      t.pop_back();
    }
    LCX_CHECK(!t.empty() && t.find_first_not_of("0123456789") == std::string::npos && t.size() < 10,
              "--lengths: '{}' is not a token count (expected e.g. 2048 or 4K)", s.substr(i, j - i));
    out.push_back(std::stoll(t) * mult);
    i = j + 1;
  }
  return out;
}

void register_synth(CLI::App& reps) {
  struct Args {
    SynthOptions o;
    std::vector<std::string> inputs;
    std::string format = "brown", out, tokenizer, lengths = "2K,4K,8K,16K,32K,64K";
    bool quiet = false;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = reps.add_subcommand(
      "synth",
      "Generate multi-hop long-context QA (MuSiQue JSONL): invented facts planted in real prose, 2-4 hop "
      "questions, distractors; writes OUT/{train,dev,test,test_unseen}.jsonl and OUT/stats.json");
  cmd->add_option("--input", a->inputs, "Source text: the Brown corpus folder (or text/JSONL files with --format)")
      ->required();
  cmd->add_option("--format", a->format, "Source format: brown | text | jsonl | auto")->capture_default_str();
  cmd->add_option("--out", a->out, "Output folder")->required();
  cmd->add_option("--tokenizer", a->tokenizer,
                  "SentencePiece model for counting context tokens (default: whitespace words x 1.3, approximate)");
  cmd->add_option("--seed", a->o.seed, "Seed of everything random (Philox)")->capture_default_str();
  cmd->add_option("--train", a->o.train, "Questions in train.jsonl")->capture_default_str();
  cmd->add_option("--dev", a->o.dev, "Questions in dev.jsonl")->capture_default_str();
  cmd->add_option("--test", a->o.test, "Questions in test.jsonl")->capture_default_str();
  cmd->add_option("--test-unseen", a->o.test_unseen,
                  "Questions in test_unseen.jsonl (entity names and question phrasings never seen in the other splits)")
      ->capture_default_str();
  cmd->add_option("--lengths", a->lengths, "Target context lengths in tokens, one drawn per question")->capture_default_str();
  cmd->add_option("--min-hops", a->o.min_hops, "Fewest hops per question")->capture_default_str();
  cmd->add_option("--max-hops", a->o.max_hops, "Most hops per question")->capture_default_str();
  cmd->add_option("--paragraph-words", a->o.paragraph_words, "Real-text words per MuSiQue paragraph")->capture_default_str();
  cmd->add_option("--distractors-per-1k", a->o.distractors_per_1k, "Unrelated distractor facts per 1K context tokens")
      ->capture_default_str();
  cmd->add_flag("--quiet", a->quiet, "Print nothing but errors");
  cmd->callback([a] {
    a->o.lengths = parse_lengths(a->lengths);
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<Document> docs = corpus_read(a->inputs, corpus_format_parse(a->format));
    std::unique_ptr<Tokenizer> tok;
    TokenCounter count = approx_tokens;
    std::string method = "approx: whitespace words x 1.3";
    if (!a->tokenizer.empty()) {
      tok = std::make_unique<Tokenizer>(Tokenizer::load(a->tokenizer));
      Tokenizer* t = tok.get();
      count = [t](std::string_view s) { return int64_t(t->encode(s).size()); };
      method = "sentencepiece: " + a->tokenizer;
    }
    Progress progress("synth", uint64_t(a->o.train + a->o.dev + a->o.test + a->o.test_unseen), "questions", a->quiet);
    std::vector<SynthSplit> splits = synth_generate(docs, a->o, count, [&] { progress.add(1); });
    progress.finish();
    fs::create_directories(a->out);
    for (const SynthSplit& s : splits) qa_write((fs::path(a->out) / (s.name + ".jsonl")).string(), s.examples);
    json stats = synth_stats(splits);
    stats["token_count"] = method;
    stats["seed"] = a->o.seed;
    stats["source_documents"] = docs.size();
    write_json((fs::path(a->out) / "stats.json").string(), stats);
    if (a->quiet) return;
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    fmt::print("token counts: {}\n", method);
    for (const SynthSplit& s : splits) {
      const json& st = stats[s.name];
      fmt::print("{:<12} {:>5} questions  hops {}  lengths {}  context tokens {}\n", s.name, s.examples.size(),
                 st["by_hops"].dump(), st["by_length"].dump(), st["context_tokens"].dump());
    }
    fmt::print("wrote {}/{{train,dev,test,test_unseen}}.jsonl and stats.json in {:.1f} s\n", a->out, dt);
  });
}

void register_sample(CLI::App& reps) {
  struct Args {
    std::string data, out, format = "auto";
    SampleOptions o;
    ModelFlags model;
    int64_t limit = 0;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = reps.add_subcommand(
      "sample",
      "Sample N reasoning paths per question from a local checkpoint (--ckpt) or an OpenAI-compatible endpoint "
      "(--endpoint); appends {\"id\", \"path\", \"text\", \"temperature\", \"seed\"} lines to --out and resumes "
      "where an interrupted run stopped");
  cmd->add_option("--data", a->data, "Questions: MuSiQue or LongBench JSONL")->required();
  cmd->add_option("--format", a->format, "Data format: auto | musique | longbench")->capture_default_str();
  cmd->add_option("--out", a->out, "Samples JSONL (appended; paths already there are skipped)")->required();
  a->model.add(cmd);
  cmd->add_option("--n", a->o.n, "Paths per question")->capture_default_str();
  cmd->add_option("--temperature", a->o.temperature, "Sampling temperature")->capture_default_str();
  cmd->add_option("--max-tokens", a->o.max_tokens, "New tokens per path")->capture_default_str();
  cmd->add_option("--seed", a->o.seed, "Path i draws with seed + i")->capture_default_str();
  cmd->add_option("--max-quotes", a->o.max_quotes, "Excerpts the prompt allows")->capture_default_str();
  cmd->add_option("--limit", a->limit, "Only the first N questions (0 = all)")->capture_default_str();
  cmd->add_option("--fsync-every", a->o.fsync_every, "Records between fsyncs of --out")->capture_default_str();
  cmd->add_flag("--chat", a->o.chat, "Wrap the prompt in longctx serve's chat template (models fine-tuned by reps sft)");
  cmd->add_flag("--quiet", a->o.quiet, "Print nothing but errors");
  cmd->callback([a] {
    LCX_CHECK(a->limit >= 0, "--limit must be >= 0, got {}", a->limit);
    const std::vector<QaExample> all = qa_read(a->data, parse_qa_format(a->format));
    std::set<std::string> ids;
    for (const QaExample& e : all) ids.insert(e.id);
    const std::vector<QaExample> ex(all.begin(), all.begin() + long(a->limit > 0 ? std::min<int64_t>(a->limit, int64_t(all.size()))
                                                                                 : int64_t(all.size())));
    std::unique_ptr<SampleBackend> backend = a->model.backend("reps sample");
    const SampleReport r = sample_run(ex, ids, a->out, *backend, a->o);
    if (a->o.quiet) return;
    fmt::print("{} questions x {} paths: {} already done, {} sampled in {:.1f} s ({:.2f} paths/s){}\n", r.questions,
               a->o.n, r.already_done, r.written, r.seconds, r.seconds > 0 ? double(r.written) / r.seconds : 0.0,
               r.dropped_bytes ? ", a truncated last line dropped" : "");
    if (!r.skipped.empty()) {
      fmt::print("skipped {} questions:\n", r.skipped.size());
      for (size_t i = 0; i < r.skipped.size() && i < 10; i++) fmt::print("  {}\n", r.skipped[i]);
      if (r.skipped.size() > 10) fmt::print("  ... and {} more\n", r.skipped.size() - 10);
    }
  });
}

void register_filter(CLI::App& reps) {
  struct Args {
    std::string data, samples, out, report, format = "auto";
    FilterOptions o;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = reps.add_subcommand(
      "filter",
      "Filter sampled reasoning paths: JSON extraction, answer F1 = 1.0 against any gold/alias, every "
      "[Excerpt k] `quote` found in the context; writes the kept paths and a JSON report of counts per reason");
  cmd->add_option("--data", a->data, "Questions: MuSiQue or LongBench JSONL")->required();
  cmd->add_option("--format", a->format, "Data format: auto | musique | longbench")->capture_default_str();
  cmd->add_option("--samples", a->samples,
                  "Sampled paths JSONL, one per line: {\"id\", \"path\", \"text\", \"temperature\", \"seed\"}")
      ->required();
  cmd->add_option("--out", a->out, "Kept paths JSONL")->required();
  cmd->add_option("--report", a->report, "Also write the report JSON here (it is always printed)");
  cmd->add_option("--min-quotes", a->o.min_quotes, "Reject paths with fewer quotes (0 = allow none)")->capture_default_str();
  cmd->add_option("--max-quotes", a->o.max_quotes, "Reject paths with more quotes")->capture_default_str();
  cmd->callback([a] {
    LCX_CHECK(a->o.min_quotes >= 0 && a->o.max_quotes >= a->o.min_quotes,
              "reps filter: need 0 <= --min-quotes ({}) <= --max-quotes ({})", a->o.min_quotes, a->o.max_quotes);
    const std::vector<QaExample> data = qa_read(a->data, parse_qa_format(a->format));
    const std::vector<SampleRecord> samples = sample_read(a->samples);
    FilterResult r = filter_samples(data, samples, a->o);
    {
      std::ofstream f(a->out);
      LCX_CHECK(f, "cannot write '{}': {}", a->out, std::strerror(errno));
      for (const json& k : r.kept) f << k.dump() << "\n";
      LCX_CHECK(f.good(), "error writing '{}'", a->out);
    }
    const json rep = filter_report_json(r.report);
    if (!a->report.empty()) write_json(a->report, rep);
    fmt::print("{}\n", rep.dump(2));
  });
}

void register_judge(CLI::App& reps) {
  struct Args {
    std::string data, kept, out, best, report, format = "auto";
    JudgeOptions o;
    ModelFlags model;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = reps.add_subcommand(
      "judge",
      "Rate the kept paths of each question with a judge model (coherence, completeness, conciseness 1-100, "
      "\"Rating: [[score]]\"), stop after --stop-after paths score 100, keep the best path per question; judgements "
      "are appended to --out and a rerun resumes");
  cmd->add_option("--data", a->data, "Questions: MuSiQue or LongBench JSONL")->required();
  cmd->add_option("--format", a->format, "Data format: auto | musique | longbench")->capture_default_str();
  cmd->add_option("--kept", a->kept, "Kept paths JSONL from reps filter")->required();
  cmd->add_option("--out", a->out, "Judgements JSONL (appended; judgements already there are reused)")->required();
  cmd->add_option("--best", a->best, "Best path per question JSONL (the kept path + \"judge_score\")")->required();
  cmd->add_option("--report", a->report, "Also write the report JSON here (it is always printed)");
  a->model.add(cmd);
  cmd->add_option("--stop-after", a->o.stop_after, "Stop judging a question after this many scores of 100")
      ->capture_default_str();
  cmd->add_option("--max-tokens", a->o.max_tokens, "Judge output tokens")->capture_default_str();
  cmd->add_option("--temperature", a->o.temperature, "Judge sampling temperature (0 = greedy)")->capture_default_str();
  cmd->add_option("--seed", a->o.seed, "Path p is judged with seed + p")->capture_default_str();
  cmd->add_flag("--chat", a->o.chat, "Wrap the judge prompt in longctx serve's chat template");
  cmd->add_flag("--unrated-first", a->o.unrated_first,
                "A question whose judgements all fail to parse keeps its first kept path (default: drop it)");
  cmd->add_flag("--quiet", a->o.quiet, "No progress bar");
  cmd->callback([a] {
    const std::vector<QaExample> data = qa_read(a->data, parse_qa_format(a->format));
    std::vector<json> kept;
    jsonl_for_each(a->kept, [&](const json& j, const std::string&) { kept.push_back(j); });
    std::unique_ptr<SampleBackend> backend = a->model.backend("reps judge");
    const JudgeResult r = judge_run(data, kept, a->out, *backend, a->o);
    {
      std::ofstream f(a->best);
      LCX_CHECK(f, "cannot write '{}': {}", a->best, std::strerror(errno));
      for (const json& b : r.best) f << b.dump() << "\n";
      LCX_CHECK(f.good(), "error writing '{}'", a->best);
    }
    const json rep = judge_report_json(r.report);
    if (!a->report.empty()) write_json(a->report, rep);
    fmt::print("{}\n", rep.dump(2));
  });
}

void register_sft(CLI::App& reps) {
  struct Args {
    SftOptions o;
    SftStage warm{"warmup", "", 0, 1e-5f}, paths{"main", "", 0, 5e-6f};
  };
  auto a = std::make_shared<Args>();
  auto* cmd = reps.add_subcommand(
      "sft",
      "Supervised fine-tuning on chat-formatted examples, loss on the assistant reply only: an optional warm-up "
      "stage, then the main stage, each with a constant lr; writes OUT/checkpoint, OUT/metrics.jsonl, OUT/sft.json");
  cmd->add_option("--ckpt", a->o.ckpt, "Pretrained checkpoint directory")->required();
  cmd->add_option("--data", a->o.questions, "Questions (MuSiQue or LongBench JSONL) the SFT data's ids refer to")
      ->required();
  cmd->add_option("--train", a->paths.data,
                  "Main stage data: {\"id\", \"answer\", \"reasoning\"?} per line (kept/best paths; a QA file "
                  "itself = outcome supervision on the gold answer)")
      ->required();
  cmd->add_option("--steps", a->paths.steps, "Main stage optimizer steps")->required();
  cmd->add_option("--lr", a->paths.lr, "Main stage constant learning rate (paper: 5e-6 for 8B)")->capture_default_str();
  cmd->add_option("--warmup-data", a->warm.data, "Warm-up stage data (same format), run first");
  cmd->add_option("--warmup-steps", a->warm.steps, "Warm-up stage optimizer steps")->capture_default_str();
  cmd->add_option("--warmup-lr", a->warm.lr, "Warm-up constant learning rate (paper: 1e-5 for 8B)")
      ->capture_default_str();
  cmd->add_option("--out", a->o.out, "Output folder")->required();
  cmd->add_option("--device", a->o.device, "Backend: cpu | cpu_ref | cuda")->capture_default_str();
  cmd->add_option("--batch", a->o.batch, "Examples per optimizer step")->capture_default_str();
  cmd->add_option("--max-tokens", a->o.max_tokens, "Skip (and count) examples longer than this")->capture_default_str();
  cmd->add_option("--max-quotes", a->o.max_quotes, "Excerpts the prompt allows")->capture_default_str();
  cmd->add_option("--clip", a->o.clip, "Gradient-norm clip")->capture_default_str();
  cmd->add_option("--weight-decay", a->o.weight_decay, "AdamW weight decay")->capture_default_str();
  cmd->add_option("--seed", a->o.seed, "Seed of the example order")->capture_default_str();
  cmd->add_flag("--quiet", a->o.quiet, "No progress bars");
  cmd->callback([a] {
    LCX_CHECK(a->warm.data.empty() == (a->warm.steps == 0),
              "reps sft: --warmup-data and --warmup-steps go together (got {} and {})",
              a->warm.data.empty() ? "none" : a->warm.data, a->warm.steps);
    if (!a->warm.data.empty()) a->o.stages.push_back(a->warm);
    a->o.stages.push_back(a->paths);
    const SftReport r = sft_run(a->o);
    json stages = json::array();
    for (const SftStageReport& s : r.stages)
      stages.push_back({{"stage", s.name}, {"records", s.records}, {"examples", s.examples},
                        {"skipped_too_long", s.skipped_long}, {"steps", s.steps}, {"epochs", s.epochs},
                        {"target_tokens", s.target_tokens}, {"first_loss", s.first_loss}, {"last_loss", s.last_loss}});
    const json rep = {{"stages", stages}, {"seconds", r.seconds}, {"checkpoint", a->o.out + "/checkpoint"}};
    write_json(a->o.out + "/sft.json", rep);
    if (!a->o.quiet) fmt::print("{}\n", rep.dump(2));
  });
}

void register_score(CLI::App& reps) {
  struct Args {
    std::string data, predictions, out, format = "auto";
    bool per_example = false;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = reps.add_subcommand(
      "score", "LongBench qa_f1 and exact match of predictions, overall and per hop count / context length");
  cmd->add_option("--data", a->data, "Questions: MuSiQue or LongBench JSONL")->required();
  cmd->add_option("--format", a->format, "Data format: auto | musique | longbench")->capture_default_str();
  cmd->add_option("--predictions", a->predictions, "JSONL of {\"id\", \"prediction\"}")->required();
  cmd->add_option("--out", a->out, "Also write the metrics JSON here");
  cmd->add_flag("--per-example", a->per_example, "Include every example's F1/EM in the JSON");
  cmd->callback([a] {
    const QaReport r = qa_evaluate(qa_read(a->data, parse_qa_format(a->format)), qa_predictions_read(a->predictions));
    const json j = qa_report_json(r, a->per_example);
    if (!a->out.empty()) write_json(a->out, j);
    fmt::print("{}\n", j.dump(2));
  });
}

void register_stats(CLI::App& reps) {
  struct Args {
    std::string data, format = "auto";
  };
  auto a = std::make_shared<Args>();
  auto* cmd = reps.add_subcommand("stats", "Read a MuSiQue or LongBench JSONL file and summarise it (checks every line)");
  cmd->add_option("--data", a->data, "MuSiQue or LongBench JSONL")->required();
  cmd->add_option("--format", a->format, "auto | musique | longbench")->capture_default_str();
  cmd->callback([a] {
    const std::vector<QaExample> ex = qa_read(a->data, parse_qa_format(a->format));
    SynthSplit s{fs::path(a->data).stem().string(), ex};
    for (QaExample& e : s.examples)
      if (e.length_bucket == 0) e.length_bucket = qa_length_key(e);
    int64_t supporting = 0, answerable = 0;
    for (const QaExample& e : ex) {
      answerable += e.answerable;
      for (const QaParagraph& p : e.paragraphs) supporting += p.is_supporting;
    }
    json j = synth_stats({s})[s.name];
    j["answerable"] = answerable;
    j["supporting_paragraphs"] = supporting;
    fmt::print("{}\n", j.dump(2));
  });
}

}  // namespace

void register_reps(CLI::App& app) {
  auto* reps = app.add_subcommand("reps", "LongRePS: synth | sample | filter | judge | sft | score | stats (DESIGN.md §4)");
  reps->require_subcommand(1);
  register_synth(*reps);
  register_sample(*reps);
  register_filter(*reps);
  register_judge(*reps);
  register_sft(*reps);
  register_score(*reps);
  register_stats(*reps);
}

}  // namespace longctx
