"""Data-parallel jobs: ``resources.gpus: N`` runs the job in N processes, one per device.

The process that runs the job is rank 0: it keeps the caller's sink, writes every checkpoint,
metric and artifact, and builds the report. It starts ranks 1..N-1 as spawned processes that run
the same stages on their share of each batch and write nothing. They meet through a file store
in the job's directory (no port to agree on) and talk over NCCL on CUDA devices, gloo on the CPU.

Each global batch (``batch_size`` rows, the same order on every rank: the RNG is seeded alike)
is cut ``rank::world``; ``DistributedDataParallel`` averages the gradients, so N ranks take the
steps one process takes on the same global batch. Validation is sharded and summed. Every
decision that must be the same everywhere (stop, checkpoint, diverged) is rank 0's, broadcast
every ``SYNC_STEPS`` steps. Batch-norm statistics are per rank (no SyncBatchNorm), as in most
data-parallel recipes: within noise of the single-process run, not bit-identical to it.

A rank that fails writes its error to ``tmp/rank-<r>.error``; rank 0's next collective then
fails, and the job ends with that rank's error (its type kept: out of memory stays
``out_of_memory``).
"""

from __future__ import annotations

import json
import multiprocessing
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from core.errors import CancelledError, DistilleryError, SpecError

SYNC_STEPS = 8  # steps between the ranks' agreements on stop / checkpoint / divergence
TIMEOUT = timedelta(minutes=10)  # a collective waiting this long means a rank is gone


@dataclass(frozen=True)
class Ranks:
    """This process's place in a data-parallel job: ``rank`` of ``world``."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.parallel:
            dist.barrier()

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` summed over the ranks (in place, returned)."""
        if self.parallel:
            dist.all_reduce(values)
        return values

    def agree(self, flags: list[bool], device: torch.device) -> list[bool]:
        """Rank 0's ``flags``, on every rank."""
        if not self.parallel:
            return flags
        t = torch.tensor([int(f) for f in flags], device=device)
        dist.broadcast(t, src=0)
        return [bool(v) for v in t.tolist()]


SINGLE = Ranks()


def world_size(spec: Any) -> int:
    return max(1, int(spec.resources.gpus))


def check_parallel(spec: Any, device: torch.device) -> None:
    """Refuse a data-parallel job that cannot run as asked, naming what is missing."""
    world = world_size(spec)
    if world == 1:
        return
    if device.type == "cuda" and torch.cuda.device_count() < world:
        raise SpecError(f"resources.gpus is {world}, but this worker sees {torch.cuda.device_count()} GPU(s)")
    sizes = {"distill.batch_size": spec.distill.batch_size}
    for i, t in enumerate(spec.all_teachers):
        if t.needs_training:
            sizes[f"teacher{'' if i == 0 else f's[{i - 1}]'}.train.batch_size"] = t.train.batch_size
    for name, size in sizes.items():
        if size % world:
            raise SpecError(
                f"{name} is {size}: a data-parallel job cuts each batch into resources.gpus={world} "
                "equal shares, so it must be a multiple of it"
            )


def rank_device(device: torch.device, rank: int) -> torch.device:
    return torch.device("cuda", rank) if device.type == "cuda" else device


def _join(device: torch.device, store_path: Path, rank: int, world: int) -> None:
    if device.type == "cuda":
        torch.cuda.set_device(rank)
    store = dist.FileStore(str(store_path), world)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=TIMEOUT)


def _error_file(out_dir: Path, rank: int) -> Path:
    return out_dir / "tmp" / f"rank-{rank}.error"


def _ready_file(out_dir: Path, rank: int) -> Path:
    return out_dir / "tmp" / f"rank-{rank}.ready"


def _helper(rank: int, world: int, store_path: str, request: dict[str, Any]) -> None:
    """Ranks 1..N-1: the same stages on their share, writing nothing but an error, if one."""
    from core.runner import JobRun
    from core.sink import Sink
    from core.spec import parse_spec

    out = Path(request["out_dir"])
    device = torch.device(request["device"])
    torch.set_num_threads(request["threads"])
    try:
        _ready_file(out, rank).touch()  # imported and alive: rank 0 may join now
        _join(device, Path(store_path), rank, world)
        run = JobRun(
            parse_spec(request["spec"]),
            out,
            Path(request["data_root"]),
            rank_device(device, rank),
            Sink(),
            request["memory_budget"],
            ranks=Ranks(rank, world),
        )
        run.run()
    except CancelledError:
        pass
    except BaseException as e:
        kind = e.type if isinstance(e, DistilleryError) else "internal"
        message = str(e) if isinstance(e, DistilleryError) else f"{type(e).__name__}: {e}"
        _error_file(out, rank).write_text(json.dumps({"type": kind, "message": f"rank {rank}: {message}"}))
        raise SystemExit(1) from None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


class Launch:
    """Starts the helper ranks and joins rank 0 (this process) to them; ``close`` ends them."""

    def __init__(self, request: dict[str, Any], world: int) -> None:
        self.out = Path(request["out_dir"])
        self.world = world
        (self.out / "tmp").mkdir(parents=True, exist_ok=True)
        for rank in range(1, world):
            _error_file(self.out, rank).unlink(missing_ok=True)
            _ready_file(self.out, rank).unlink(missing_ok=True)
        self.store = self.out / "tmp" / f"rendezvous-{uuid.uuid4().hex}"
        ctx = multiprocessing.get_context("spawn")  # CUDA cannot be forked; nothing is inherited
        self.helpers: list[BaseProcess] = []
        request = {**request, "threads": torch.get_num_threads()}
        for rank in range(1, world):
            proc = ctx.Process(
                target=_helper, args=(rank, world, str(self.store), request), name=f"distillery-rank-{rank}"
            )
            proc.start()
            self.helpers.append(proc)
        self._wait_ready()
        _join(torch.device(request["device"]), self.store, 0, world)

    def _wait_ready(self) -> None:
        """Until every helper has started; a helper that died first fails the job with its error
        (the rendezvous itself would only time out)."""
        while not all(_ready_file(self.out, rank).exists() for rank in range(1, self.world)):
            dead = [p for p in self.helpers if not p.is_alive()]
            if dead:
                error = self.helper_error()
                self.close(failed=True)
                raise error or DistilleryError(f"{dead[0].name} ended with status {dead[0].exitcode}")
            time.sleep(0.05)

    def helper_error(self) -> DistilleryError | None:
        """The first error a helper rank wrote, waiting a moment for it to be written."""
        deadline = time.monotonic() + 5
        while True:
            for rank in range(1, self.world):
                path = _error_file(self.out, rank)
                if path.exists():
                    try:
                        found = json.loads(path.read_text())
                    except (OSError, ValueError):
                        continue
                    error = DistilleryError(found["message"])
                    error.type = found["type"]
                    return error
            if time.monotonic() > deadline or all(not p.is_alive() for p in self.helpers):
                return None
            time.sleep(0.1)

    def close(self, *, failed: bool) -> None:
        # no barrier: the helpers leave once the last stage is trained, while rank 0 still reports
        if dist.is_initialized():
            dist.destroy_process_group()
        for proc in self.helpers:
            proc.join(timeout=None if not failed else 10)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=10)
        self.store.unlink(missing_ok=True)
