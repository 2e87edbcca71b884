// `longctx plot`: render loss and throughput curves of one or more runs (metrics.jsonl) to PNG
// with gnuplot.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/gnuplot.h"
#include "core/error.h"

namespace fs = std::filesystem;

namespace longctx {

void register_plot(CLI::App& app) {
  auto* cmd = app.add_subcommand("plot", "Plot loss and throughput curves from metrics.jsonl files to a PNG");
  struct Opts {
    std::vector<std::string> metrics, labels;
    std::string out = "loss.png", title = "longctx training";
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("metrics", o->metrics, "metrics.jsonl files (one per run)")->required()->check(CLI::ExistingFile);
  cmd->add_option("--label", o->labels, "Label per run (default: the file's directory name)");
  cmd->add_option("--out", o->out, "Output PNG")->capture_default_str();
  cmd->add_option("--title", o->title, "Plot title")->capture_default_str();
  cmd->callback([o] {
    LCX_CHECK(o->labels.empty() || o->labels.size() == o->metrics.size(),
              "--label given {} times for {} metrics files", o->labels.size(), o->metrics.size());
    fs::path tmp = fs::temp_directory_path() / fmt::format("longctx-plot-{}", ::getpid());
    fs::create_directories(tmp);
    std::string train_plot, val_plot, tps_plot;
    for (size_t r = 0; r < o->metrics.size(); r++) {
      const std::string& path = o->metrics[r];
      std::string label = o->labels.empty() ? fs::absolute(path).parent_path().filename().string()
                                            : o->labels[r];
      std::ifstream in(path);
      std::ofstream tr(tmp / fmt::format("train{}.dat", r)), va(tmp / fmt::format("val{}.dat", r));
      std::string line;
      int lineno = 0, rows = 0;
      while (std::getline(in, line)) {
        lineno++;
        if (line.empty()) continue;
        nlohmann::json j;
        try {
          j = nlohmann::json::parse(line);
        } catch (const nlohmann::json::exception&) {
          fail("{}:{}: not a JSON object", path, lineno);
        }
        if (!j.contains("loss") || !j.contains("tokens")) continue;  // skipped steps etc.
        tr << j["tokens"].get<double>() << ' ' << j["loss"].get<double>() << ' '
           << j.value("tokens_per_s", 0.0) << ' ' << j["step"].get<double>() << '\n';
        if (j.contains("val_loss"))
          va << j["tokens"].get<double>() << ' ' << j["val_loss"].get<double>() << '\n';
        rows++;
      }
      LCX_CHECK(rows > 0, "{}: no training rows (expected lines with \"loss\" and \"tokens\")", path);
      auto sep = [](std::string& s) { if (!s.empty()) s += ", "; };
      std::string lt = fmt::format("linecolor {} ", r + 1);
      sep(train_plot);
      train_plot += fmt::format("{} using 1:2 with lines {} dashtype 2 title {}",
                                gp_quote((tmp / fmt::format("train{}.dat", r)).string()), lt,
                                gp_quote(label + " train"));
      sep(val_plot);
      val_plot += fmt::format("{} using 1:2 with linespoints {} linewidth 2 title {}",
                              gp_quote((tmp / fmt::format("val{}.dat", r)).string()), lt,
                              gp_quote(label + " val"));
      sep(tps_plot);
      tps_plot += fmt::format("{} using 4:3 with lines {} title {}",
                              gp_quote((tmp / fmt::format("train{}.dat", r)).string()), lt,
                              gp_quote(label));
    }
    std::ofstream gp(tmp / "plot.gp");
    gp << "set terminal pngcairo size 1200,500 font 'sans,10'\n"
       << "set output " << gp_quote(o->out) << "\n"
       << "set multiplot layout 1,2 title " << gp_quote(o->title) << "\n"
       << "set grid\nset key top right\n"
       << "set xlabel 'tokens'\nset ylabel 'loss (nats/token)'\nset title 'loss'\n"
       << "plot " << train_plot << ", " << val_plot << "\n"
       << "set xlabel 'step'\nset ylabel 'tokens/s'\nset title 'throughput'\n"
       << "plot " << tps_plot << "\n"
       << "unset multiplot\n";
    gp.close();
    run_gnuplot(tmp / "plot.gp", o->out);
    fs::remove_all(tmp);
  });
}

}  // namespace longctx
