// `longctx eval`: long-context QA evaluation (DESIGN.md §4 step 6). Greedy decoding of the
// LongRePS prompt for every question (a local checkpoint through the batched engine, or an
// OpenAI-compatible endpoint), the answer taken from the reply's JSON (reps_prediction), then
// LongBench qa_f1 and EM overall, per hop count and per context length, and a plot of F1 vs
// context length. Generations are appended to OUT/generations.jsonl like `reps sample` writes
// them, so an interrupted evaluation resumes.
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "cli/commands.h"
#include "cli/gnuplot.h"
#include "cli/reps_options.h"  // ModelFlags, parse_qa_format, write_json
#include "reps/filter.h"       // reps_prediction
#include "reps/qa_metrics.h"   // qa_evaluate, qa_report_json

namespace fs = std::filesystem;

namespace longctx {

namespace {

using nlohmann::json;

// F1 and EM (×100) vs context length, one line per hop count besides the overall ones.
void plot_f1_vs_length(const QaReport& r, const std::string& dir, const std::string& title, const std::string& png) {
  const fs::path dat = fs::path(dir) / "f1_vs_length.dat";
  {
    std::ofstream f(dat);
    LCX_CHECK(f, "cannot write '{}'", dat.string());
    f << "# length f1 em n\n";
    for (const auto& [len, g] : r.by_length) f << len << " " << g.f1() << " " << g.em() << " " << g.n << "\n";
    for (const auto& [hops, _] : r.by_hops) {
      f << "\n\n# hops " << hops << "\n";
      for (const auto& [key, g] : r.by_hops_length)
        if (key.first == hops) f << key.second << " " << g.f1() << " " << g.em() << " " << g.n << "\n";
    }
  }
  const fs::path gp_path = fs::path(dir) / "f1_vs_length.gp";
  std::ofstream gp(gp_path);
  gp << "set terminal pngcairo size 800,500 font 'sans,10'\n"
     << "set output " << gp_quote(png) << "\n"
     << "set title " << gp_quote(title) << "\n"
     << "set xlabel 'context length (tokens)'\nset ylabel 'score (x100)'\n"
     << "set logscale x 2\nset yrange [0:100]\nset key top right\nset grid\n"
     << "plot " << gp_quote(dat.string()) << " index 0 using 1:2 with linespoints lw 2 title 'qa\\_f1', "
     << gp_quote(dat.string()) << " index 0 using 1:3 with linespoints lw 2 dt 2 title 'EM'";
  int block = 1;
  for (const auto& [hops, _] : r.by_hops)
    gp << ", " << gp_quote(dat.string()) << " index " << block++ << " using 1:2 with linespoints title "
       << gp_quote(hops ? fmt::format("qa_f1, {} hops", hops) : std::string("qa_f1, hops unknown"));
  gp << "\n";
  gp.close();
  run_gnuplot(gp_path, png);
}

}  // namespace

void register_eval(CLI::App& app) {
  struct Args {
    std::string data, out, format = "auto", title;
    SampleOptions o;
    ModelFlags model;
    int64_t limit = 0;
    bool no_plot = false;
  };
  auto a = std::make_shared<Args>();
  a->o.n = 1;
  a->o.temperature = 0;  // greedy
  a->o.max_tokens = 128;
  auto* cmd = app.add_subcommand(
      "eval",
      "Long-context QA evaluation: greedy decoding (local checkpoint or endpoint), LongBench qa_f1 and EM per hop "
      "count and context length; writes OUT/{generations.jsonl,predictions.jsonl,metrics.json,f1_vs_length.png}");
  cmd->add_option("--data", a->data, "Questions: MuSiQue JSONL (e.g. reps synth output) or LongBench JSONL")->required();
  cmd->add_option("--format", a->format, "Data format: auto | musique | longbench")->capture_default_str();
  cmd->add_option("--out", a->out, "Output folder (generations already there are reused)")->required();
  a->model.add(cmd);
  cmd->add_option("--max-tokens", a->o.max_tokens, "New tokens per answer")->capture_default_str();
  cmd->add_option("--max-quotes", a->o.max_quotes, "Excerpts the prompt allows")->capture_default_str();
  cmd->add_option("--limit", a->limit, "Only the first N questions (0 = all)")->capture_default_str();
  cmd->add_option("--title", a->title, "Plot title (default: the data file)");
  cmd->add_flag("--chat", a->o.chat, "Wrap the prompt in longctx serve's chat template (models fine-tuned by reps sft)");
  cmd->add_flag("--completion", a->o.completion,
                "Plain reading prompt (passages, then 'Question: ...\\nAnswer:'; the answer is the reply's first "
                "line): a base model's reading, before any SFT")
      ->excludes("--chat");
  cmd->add_flag("--no-plot", a->no_plot, "Skip the PNG (no gnuplot needed)");
  cmd->add_flag("--quiet", a->o.quiet, "Print nothing but errors");
  cmd->callback([a] {
    LCX_CHECK(a->limit >= 0, "--limit must be >= 0, got {}", a->limit);
    std::unique_ptr<SampleBackend> backend = a->model.backend("eval");
    std::vector<QaExample> ex = qa_read(a->data, parse_qa_format(a->format));
    std::set<std::string> ids;
    for (const QaExample& e : ex) ids.insert(e.id);
    if (a->limit > 0 && a->limit < int64_t(ex.size())) ex.resize(size_t(a->limit));
    fs::create_directories(a->out);
    const std::string gen = a->out + "/generations.jsonl";
    const SampleReport sr = sample_run(ex, ids, gen, *backend, a->o);
    std::map<std::string, std::string> pred;
    {
      std::ofstream f(a->out + "/predictions.jsonl");
      LCX_CHECK(f, "cannot write '{}/predictions.jsonl'", a->out);
      for (const SampleRecord& s : sample_read(gen)) {
        pred[s.id] = reps_prediction(s.text);
        f << json{{"id", s.id}, {"prediction", pred[s.id]}}.dump(-1, ' ', false, json::error_handler_t::replace)
          << "\n";
      }
    }
    const QaReport r = qa_evaluate(ex, pred);
    json j = qa_report_json(r, true);
    j["data"] = a->data;
    j["model"] = a->model.local.ckpt.empty() ? a->model.ep.url : a->model.local.ckpt;
    j["skipped"] = sr.skipped;
    j["generation_seconds"] = sr.seconds;
    write_json(a->out + "/metrics.json", j);
    if (!a->no_plot)
      plot_f1_vs_length(r, a->out, a->title.empty() ? fs::path(a->data).filename().string() : a->title,
                        a->out + "/f1_vs_length.png");
    if (a->o.quiet) return;
    fmt::print("{} questions ({} skipped): qa_f1 {:.2f}  EM {:.2f}\n", r.all.n, sr.skipped.size(), r.all.f1(),
               r.all.em());
    for (const auto& [h, g] : r.by_hops) fmt::print("  {} hops: n {:>4}  qa_f1 {:6.2f}  EM {:6.2f}\n", h, g.n, g.f1(), g.em());
    for (const auto& [l, g] : r.by_length)
      fmt::print("  length {:>6}: n {:>4}  qa_f1 {:6.2f}  EM {:6.2f}\n", l, g.n, g.f1(), g.em());
  });
}

}  // namespace longctx
