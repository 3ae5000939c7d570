"""Runs across processes started by ``torchrun`` (one node or many; SLURM through torchrun).

torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE`` and the rendezvous
(``MASTER_ADDR``, ``MASTER_PORT``) in each process's environment. :func:`ranks` reads them;
a command splits its inputs with :meth:`Ranks.share` (every process lists the same inputs in
the same order, so each file goes to exactly one rank), each rank runs on ``cuda:LOCAL_RANK``
or on its share of the CPU's threads, and :meth:`Ranks.total` adds the ranks' counts up (a
process group on gloo, or NCCL on CUDA devices), so that rank 0 prints one summary."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

__all__ = ["Ranks", "ranks"]


@dataclass
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    backend: str | None = None  #: the process group's, once :meth:`start` has run

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, items: list) -> list:
        """This rank's items: every ``world``-th one from its rank on."""
        return items[self.rank :: self.world]

    def device(self, device: torch.device) -> torch.device:
        """This rank's device: ``cuda`` becomes ``cuda:LOCAL_RANK``; a CPU run's threads are the
        machine's divided by the processes on this node."""
        if not self.distributed:
            return device
        if device.type == "cuda":
            if device.index is not None:
                raise ValueError(f"--device {device}: under torchrun each process takes cuda:LOCAL_RANK; give "
                                 "--device cuda or auto")  # fmt: skip
            count = torch.cuda.device_count()
            if self.local_rank >= count:
                raise ValueError(f"this node runs {self.local_world} processes and has {count} CUDA device(s); "
                                 f"use --nproc_per_node={count} or less")  # fmt: skip
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        if device.type == "cpu":
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // self.local_world))
        return device

    def start(self, device: torch.device) -> None:
        """Join the process group (NCCL on CUDA devices, gloo otherwise)."""
        if not self.distributed or self.backend is not None:
            return
        import torch.distributed as dist

        self.backend = "nccl" if device.type == "cuda" else "gloo"
        self._device = torch.device("cpu")
        if self.backend == "nccl":
            self._device = torch.device("cuda", self.local_rank % torch.cuda.device_count())
            torch.cuda.set_device(self._device)
        if not dist.is_initialized():
            dist.init_process_group(self.backend)

    def gather(self, value) -> list:
        """Every rank's ``value`` (picklable), in rank order; ``[value]`` alone."""
        if not self.distributed:
            return [value]
        import torch.distributed as dist

        values = [None] * self.world
        dist.all_gather_object(values, value)
        return values

    def total(self, *counts: int) -> list[list[int]]:
        """Every rank's ``counts``, in rank order (one collective)."""
        if not self.distributed:
            return [list(counts)]
        import torch.distributed as dist

        mine = torch.tensor(counts, dtype=torch.int64, device=self._device)
        every = [torch.zeros_like(mine) for _ in range(self.world)]
        dist.all_gather(every, mine)
        return [t.cpu().tolist() for t in every]

    def stop(self) -> None:
        if self.backend is not None:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self.backend = None


def ranks(environ=None) -> Ranks:
    """The processes of this run from torchrun's variables; one process without them."""
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local_rank = int(env.get("LOCAL_RANK", str(rank)))
        local_world = int(env.get("LOCAL_WORLD_SIZE", str(world)))
    except ValueError as error:
        raise ValueError(f"torchrun's RANK / WORLD_SIZE / LOCAL_RANK are not numbers: {error}") from None
    if world <= 1:
        return Ranks()
    if not 0 <= rank < world:
        raise ValueError(f"RANK {rank} is outside WORLD_SIZE {world}")
    return Ranks(rank, world, local_rank, max(1, local_world))
