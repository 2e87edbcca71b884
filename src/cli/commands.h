// Each `longctx <command>` lives in its own file src/cli/cmd_<command>.cpp and registers its
// subcommand (flags, --help text, callback) on the root app.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>

namespace longctx {

void register_train(CLI::App& app);     // cmd_train.cpp
void register_generate(CLI::App& app);  // cmd_generate.cpp
void register_data(CLI::App& app);      // cmd_data.cpp
void register_bench(CLI::App& app);     // cmd_bench.cpp
void register_plot(CLI::App& app);      // cmd_plot.cpp
void register_plan(CLI::App& app);      // cmd_plan.cpp
void register_simulate(CLI::App& app);  // cmd_simulate.cpp
void register_serve(CLI::App& app);     // cmd_serve.cpp
void register_reps(CLI::App& app);      // cmd_reps.cpp
void register_eval(CLI::App& app);      // cmd_eval.cpp

struct TrainOptions;
// cmd_train_hdp.cpp: adds the HDP flags (--hdp, --scheduler, --zero1, …) to `train`; the returned
// function runs HDP training when --hdp was given (true), else checks no HDP flag was (false).
std::function<bool(const TrainOptions&)> add_train_hdp(CLI::App* train);

}  // namespace longctx
