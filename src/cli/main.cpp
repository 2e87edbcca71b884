// longctx: train and serve long-context SWAT language models.
#include <cstdio>

#include "cli/commands.h"
#include "core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"longctx: train and serve long-context language models (SWAT, ByteScale HDP, LongRePS)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "longctx 0.1.0");
  longctx::register_train(app);
  longctx::register_generate(app);
  longctx::register_data(app);
  longctx::register_bench(app);
  longctx::register_plot(app);
  longctx::register_plan(app);
  longctx::register_simulate(app);
  longctx::register_serve(app);
  longctx::register_reps(app);
  longctx::register_eval(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const longctx::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
