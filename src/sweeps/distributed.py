"""Data-parallel training over several processes: GPUs of one machine (`compute.processes`), or the nodes of a
Databricks cluster (TorchDistributor). Processes join through accelerate; gradients meet in DDP; rank 0 alone
tracks, reports and saves.

Launchers set RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT (torchrun, `accelerate launch`,
TorchDistributor); `launch` starts such processes itself when a run asks for `compute.processes` > 1.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Ranks:
    """This process's place among the run's processes."""

    rank: int = 0
    world: int = 1
    local: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Ranks:
        return cls(
            rank=int(os.environ.get("RANK", 0)),
            world=int(os.environ.get("WORLD_SIZE", 1)),
            local=int(os.environ.get("LOCAL_RANK", 0)),
        )


SINGLE = Ranks()


def join(device: str) -> tuple[Ranks, str]:
    """Join the process group when this is one of several processes; this rank's device (`cuda:LOCAL_RANK`
    on GPUs). A single process is returned as it is."""
    ranks = Ranks.from_env()
    if ranks.world == 1:
        return ranks, device
    import torch
    from accelerate import PartialState

    if "OMP_NUM_THREADS" not in os.environ:  # the machine's cores, shared by its processes
        threads = max(1, torch.get_num_threads() // int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)
    state = PartialState(cpu=device == "cpu")
    return ranks, str(state.device)


def leave() -> None:
    """Tear the process group down (the last call of a rank)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def parallel(module: torch.nn.Module, ranks: Ranks, device: str) -> torch.nn.Module:
    """`module` as DDP when there are several processes, else itself."""
    if ranks.world == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [int(device.split(":")[1])] if device.startswith("cuda:") else None
    return DistributedDataParallel(module, device_ids=ids)


def gather(value: Any, ranks: Ranks) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank."""
    if ranks.world == 1:
        return [value]
    import torch.distributed as dist

    out: list[Any] = [None] * ranks.world
    dist.all_gather_object(out, value)
    return out


def from_main(value: Any, ranks: Ranks) -> Any:
    """Rank 0's `value` on every rank (a decision only rank 0 can take, such as a prune)."""
    if ranks.world == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean(value: float, ranks: Ranks, device: str) -> float:
    """The mean of a number over the ranks."""
    if ranks.world == 1:
        return value
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor) / ranks.world


def any_rank(flag: bool, ranks: Ranks, device: str) -> bool:
    """True on every rank when `flag` is true on one."""
    if ranks.world == 1:
        return flag
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([int(flag)], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def barrier(ranks: Ranks) -> None:
    if ranks.world > 1:
        import torch.distributed as dist

        dist.barrier()


@contextmanager
def local_first(ranks: Ranks) -> Iterator[None]:
    """The block runs on each machine's first process, then on its others (a cache filled once per machine)."""
    if ranks.local != 0:
        barrier(ranks)
    yield
    if ranks.local == 0:
        barrier(ranks)


def launch(function: Callable[..., Any], args: tuple, processes: int) -> Any:
    """Run `function(*args)` in `processes` new processes on this machine, joined as torchrun --standalone
    joins them; rank 0's return value. A failing rank stops the others and its error is raised here."""
    import uuid

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=processes,
        run_id=f"sweeps-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",
        max_restarts=0,
        monitor_interval=0.2,
        start_method="spawn",
    )
    try:
        return elastic_launch(config, function)(*args)[0]
    except SignalException as stop:  # SIGTERM or SIGINT: the ranks have been stopped; stop as one process would
        raise KeyboardInterrupt(f"signal {stop.sigval}") from None
    except ChildFailedError as failed:
        rank, failure = failed.get_first_failure()
        message = failure.message  # the rank's error file: a dict with its traceback, else a line
        if isinstance(message, dict):
            message = message.get("extraInfo", {}).get("py_callstack") or message.get("message")
        raise RuntimeError(f"rank {rank} of {processes} failed:\n{message}") from None
