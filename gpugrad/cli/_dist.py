"""``gpugrad train --distributed`` and the MPI/NCCL lines of ``gpugrad info``.

Under ``mpiexec -n N gpugrad train --distributed``: ``--batch-size`` stays the *global* batch
(each rank takes ``batch_size / N`` of it, from the same per-epoch permutation), so a run and its
checkpoints mean the same thing for any N and ``--resume`` may change N. The model is wrapped in
``DataParallel``; the running loss and the epoch's loss and accuracy are summed over ranks; rank
0 alone prints, shows the progress bar and writes ``--save``/``--json`` (other ranks' stdout is
discarded). ``--device cuda`` (or ``auto`` with GPUs) means ``cuda:<local_rank>``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from .common import CliError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--distributed", action="store_true",
                        help="data-parallel over the ranks of mpiexec -n N (MPI; NCCL on GPUs); "
                        "--batch-size is the global batch, rank 0 prints and writes files")


def setup(args: argparse.Namespace) -> None:
    """Join the MPI world and fit ``args`` to this rank (device, output, files)."""
    if not getattr(args, "distributed", False):
        args.world = None
        return
    import gpugrad as gg
    from gpugrad import distributed as dist

    w = args.world = dist.init()
    if args.device in ("cuda", "gpu") or (args.device == "auto" and gg.cuda.is_available()):
        count = gg.cuda.device_count()
        if w.local_rank >= count:
            _fail(w, f"rank {w.rank} is local rank {w.local_rank} on its node and needs "
                  f"cuda:{w.local_rank}, but only {count} CUDA device(s) are present; launch "
                  "at most one rank per GPU")
        args.device = f"cuda:{w.local_rank}"
    if w.rank != 0:  # one progress bar, one log, one writer
        args.no_progress = True
        args.save = None
        args.json = None
        sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - lives to exit
    if w.size == 1:
        print("--distributed: not launched by mpiexec (or with -n 1): training as one rank")
    else:
        transport = dist.gpu_transport() if args.device.startswith("cuda") else "MPI"
        print(f"distributed: {w.size} ranks ({transport} all-reduce); rank 0 prints and saves")


def _fail(w: Any, message: str) -> None:
    """An error only this rank sees: end every rank now rather than leave them waiting."""
    if w.size == 1:
        raise CliError(message)
    sys.stderr.write(f"gpugrad train: error: {message}\n")
    sys.stderr.flush()
    w.MPI.COMM_WORLD.Abort(2)


def loader_args(args: argparse.Namespace) -> dict[str, Any]:
    """The DataLoader's batch size and shard: this rank's part of the global batch."""
    w = args.world
    if w is None or w.size == 1:
        return {"batch_size": args.batch_size}
    if args.batch_size % w.size:
        raise CliError(f"--batch-size {args.batch_size} is the global batch and must divide "
                       f"evenly over the {w.size} ranks")
    return {"batch_size": args.batch_size // w.size, "rank": w.rank, "world_size": w.size}


def wrap(args: argparse.Namespace, model: Any) -> Any:
    if args.world is None or args.world.size == 1:
        return model
    from gpugrad.distributed import DataParallel

    # the training loop keeps no .grad across steps, so a compiled step may write the gradients
    # straight into the buckets
    return DataParallel(model, gradient_as_bucket_view=bool(getattr(args, "compile", False)))


def _sum_over_ranks(args: argparse.Namespace, values: list[float]) -> list[float]:
    import gpugrad as gg
    from gpugrad import distributed as dist

    if args.world is None or args.world.size == 1:
        return values
    return dist.all_reduce(gg.tensor(values, dtype="float64", device="cpu"), "sum").tolist()


def running_loss(args: argparse.Namespace, loss_sum: Any, seen: int) -> float:
    """The mean loss so far over every rank's samples (the same value, hence the same
    divergence decision, on every rank)."""
    total, count = _sum_over_ranks(args, [loss_sum.item(), float(seen)])
    return total / count


def epoch_metrics(args: argparse.Namespace, loss_sum: Any, correct: Any,
                  seen: int) -> tuple[float, float]:
    """The epoch's mean training loss and accuracy over every rank's samples."""
    total, hits, count = _sum_over_ranks(args, [loss_sum.item(), float(correct.item()),
                                                float(seen)])
    return total / count, hits / count


def info() -> dict[str, Any]:
    """MPI and NCCL availability and versions (for ``gpugrad info``)."""
    from gpugrad import distributed as dist
    from gpugrad.backend import nccl

    ok, detail = nccl.status()
    return {"mpi": dist.mpi_info(),
            "nccl": {"available": ok, "version" if ok else "reason": detail}}


def print_info(d: dict[str, Any]) -> None:
    mpi, nccl = d["mpi"], d["nccl"]
    if mpi["available"]:
        print(f"MPI: {mpi['library']} (MPI {mpi['standard']}, mpi4py {mpi['mpi4py']})")
    else:
        print(f"MPI: unavailable: {mpi['reason']}")
    print(f"NCCL: {nccl['version']}" if nccl["available"]
          else f"NCCL: unavailable: {nccl['reason']}")
