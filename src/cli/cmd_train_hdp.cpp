// `mpirun -np N longctx train --hdp …`: the flags of HDP training on the `train` command and the
// multi-process run (src/dist/hdp_train.h).
#include <memory>

#include "cli/commands.h"
#include "core/error.h"
#include "dist/hdp_train.h"
#ifdef LONGCTX_HAVE_NCCL
#include "dist/comm_nccl.h"  // comm_nccl_init
#endif

namespace longctx {

std::function<bool(const TrainOptions&)> add_train_hdp(CLI::App* cmd) {
  auto o = std::make_shared<HdpOptions>();
  auto on = std::make_shared<bool>(false);
  auto scheduler = std::make_shared<std::string>("balance");
  auto timeout = std::make_shared<double>(120);
  auto g = cmd->add_option_group("HDP", "Hybrid data parallelism over MPI ranks (ByteScale); run under mpirun");
  g->add_flag("--hdp", *on, "Train with HDP: every rank one process of `mpirun -np N longctx train --hdp`");
  const std::vector<CLI::Option*> hdp_opts{
      g->add_option("--scheduler", *scheduler, "HDP placement: static | naive | balance | balance-pp")->capture_default_str(),
      g->add_option("--capacity", o->capacity, "C: tokens per rank per micro-batch")->capture_default_str(),
      g->add_option("--step-tokens", o->step_tokens, "Global batch: tokens per step (default ranks·C)"),
      g->add_option("--max-len", o->max_len, "Longest sequence; longer documents are cut (default ranks·C)"),
      g->add_option("--cost", o->cost_path, "Cost model JSON from `longctx bench profile` (default: time ∝ tokens)"),
      g->add_flag("--zero1", o->zero1, "ZeRO-1: shard the AdamW state over ranks"),
      g->add_flag("--remote-loader", o->remote_loader, "Rank 0 plans and sends each rank only its slices"),
      g->add_option("--comm-timeout", *timeout, "Seconds a rank waits for another before aborting the job")->capture_default_str(),
  };
  return [=](const TrainOptions& t) {
    if (!*on) {
      for (const CLI::Option* opt : hdp_opts)
        LCX_CHECK(opt->count() == 0, "{} needs --hdp", opt->get_name());
      return false;
    }
    LCX_CHECK(t.chunk == 0, "--chunk trains a long sequence in one process; with --hdp it spans "
              "several ranks instead (--capacity)");
    o->train = t;
    o->scheduler = scheduler_from_string(*scheduler);
#ifdef LONGCTX_HAVE_MPI
    std::unique_ptr<Comm> mpi = comm_mpi_init(nullptr, nullptr, *timeout);
    std::unique_ptr<Comm> nccl;  // GPU ranks: one device each; destroyed before MPI
    Comm* comm = mpi.get();
    try {
      if (backend_get(t.backend.c_str()).device) {
#ifdef LONGCTX_HAVE_NCCL
        nccl = comm_nccl_init(*mpi, *timeout);  // selects this rank's GPU before any allocation
        comm = nccl.get();
#else
        fail("--hdp --device {}: this longctx was built without NCCL (the GPU communicator); "
             "rebuild with CUDA, MPI and NCCL, or use --device cpu", t.backend);
#endif
      }
      const TrainResult r = hdp_train(*comm, *o, mpi.get());
      if (comm->rank() == 0)
        fmt::print("trained {} steps on {} ranks (HDP, {}, {}), {:.0f} tokens/s{}\n", r.steps_done,
                   comm->size(), *scheduler, comm->name(), r.tokens_per_s,
                   r.val_losses.empty() ? "" : fmt::format(", final val_loss {:.4f}", r.val_losses.back()));
    } catch (const std::exception& e) {  // one rank's error ends every rank, not a hang
      comm->abort(fmt::format("error: {}", e.what()));
    }
    return true;
#else
    fail("--hdp: this longctx was built without MPI (install libopenmpi-dev and rebuild)");
#endif
  };
}

}  // namespace longctx
