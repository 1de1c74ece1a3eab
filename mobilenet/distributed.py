"""Data-parallel plumbing: read what torchrun sets, start the process group, and a local launcher for tests.

Training is one code path: a single process is a world of size 1. Under ``torchrun`` the environment variables
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` select DDP, with gloo on CPU and NCCL on CUDA.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """Where this process sits: its rank among ``size`` processes, and the device it trains on."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # this world's setup() started the process group, so its teardown() ends it

    @property
    def main(self) -> bool:
        """Rank 0, the only process that logs, prints and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def setup(device: str | None = None) -> World:
    """Joins the process group when launched by torchrun (``WORLD_SIZE`` > 1), else returns a world of one.

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``None`` (CUDA when available). Under DDP on CUDA each process takes the
            GPU of its ``LOCAL_RANK``.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    kind = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda":
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device(kind)
    owns = size > 1 and not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return World(rank, size, local_rank, dev, owns)


def teardown(world: World) -> None:
    """Leaves the process group if ``world``'s setup started it (a caller that joined first keeps it: the
    reproduction trains many runs in one group)."""
    if world.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def any_true(flag: bool, world: World) -> bool:
    """True on every rank when ``flag`` is true on any rank, so that all ranks stop at the same step."""
    if not world.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=world.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def sum_tensor(t: torch.Tensor, world: World) -> torch.Tensor:
    """The element-wise sum of ``t`` over all ranks (``t`` itself in a single process)."""
    if world.distributed:
        t = t.to(world.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu()


def broadcast(obj: Any, world: World) -> Any:
    """Rank 0's ``obj`` on every rank (e.g. the output directory that rank 0 chose)."""
    if not world.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def free_port() -> int:
    """A TCP port that nothing listens on right now, for a local rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_local(fn: Callable, world_size: int, *args) -> None:
    """Runs ``fn(*args)`` in ``world_size`` fresh processes on this machine with the variables torchrun would set.

    The same as ``torchrun --standalone --nproc_per_node=world_size`` for a Python function; ``fn`` and ``args``
    must be picklable. Raises if any process fails.
    """
    import torch.multiprocessing as mp

    port = free_port()
    mp.start_processes(_worker, args=(world_size, port, fn, args), nprocs=world_size, join=True,
                       start_method="spawn")


def _worker(rank: int, world_size: int, port: int, fn: Callable, args: tuple) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size),
                       "LOCAL_WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    fn(*args)
