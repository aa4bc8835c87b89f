"""Data parallel under ``torchrun`` / ``accelerate launch``: which process this is, and the few collectives an
evaluation loop needs to merge its shares (lm-eval's ``all_gather`` / ``gather_object`` / ``barrier``).

The launchers set ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (and ``MASTER_ADDR`` / ``MASTER_PORT``) in every
process; `DataParallel.from_env` reads them. With one process nothing is imported and every collective is the
identity. With several, the collectives run on a ``gloo`` group (CPU tensors over TCP): they only move a count
per task and the per-document metrics, so the model's own device (CPU, ``cuda:LOCAL_RANK``) does not matter and
any backend works, llama.cpp and servers included. If the process group is already initialized (e.g. by
``accelerate.Accelerator``), a gloo group over the same ranks is made beside it; otherwise this module initializes
it (``env://``) and destroys it at exit.

>>> ranks = DataParallel.from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}, connect=False)
>>> ranks.rank, ranks.world_size, ranks.device_for("cuda"), ranks.device_for("cpu")
(1, 2, 'cuda:1', 'cpu')
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Optional

# Ranks wait for each other only at the end of a request type (their shares are padded to equal counts), but a
# share can take hours: lm-eval's hf model waits a year; a day is plenty and still ends a hung job.
GATHER_TIMEOUT = timedelta(hours=24)
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")

__all__ = ["GATHER_TIMEOUT", "DataParallel"]


@dataclass
class DataParallel:
    """This process's place among ``world_size`` processes (``rank``; ``local_rank`` on its node), and the gloo
    group of the collectives (None with one process, or before `connect`)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    group: Any = field(default=None, repr=False)
    owns_default_group: bool = field(default=False, repr=False)

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None, connect: bool = True) -> DataParallel:
        """The launcher's variables (none set: one process); ``connect``: join the group now when several."""
        env = os.environ if environ is None else environ
        values = {}
        for name in LAUNCH_VARIABLES:
            text = env.get(name)
            try:
                values[name] = int(text) if text not in (None, "") else None
            except ValueError:
                raise ValueError(f"the launcher's {name} must be an integer, got {text!r}") from None
        world_size = 1 if values["WORLD_SIZE"] is None else values["WORLD_SIZE"]
        rank = 0 if values["RANK"] is None else values["RANK"]
        local_rank = rank if values["LOCAL_RANK"] is None else values["LOCAL_RANK"]
        if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
            raise ValueError(f"inconsistent launcher variables: RANK={rank}, WORLD_SIZE={world_size}")
        ranks = cls(rank=rank, world_size=world_size, local_rank=local_rank)
        if connect and world_size > 1:
            ranks.connect()
        return ranks

    def device_for(self, device: Any) -> Any:
        """``"cuda"`` without an index becomes ``cuda:LOCAL_RANK`` with several processes (one replica per GPU);
        anything else is kept."""
        if self.world_size > 1 and isinstance(device, str) and device.strip() == "cuda":
            return f"cuda:{self.local_rank}"
        return device

    def connect(self) -> None:
        """Join (or make) the process group, and make the gloo group of the collectives."""
        if self.group is not None or self.world_size == 1:
            return
        import torch.distributed as dist

        if not dist.is_initialized():
            missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
            if missing:
                raise RuntimeError(
                    f"WORLD_SIZE={self.world_size} but {' and '.join(missing)} unset: start the processes with "
                    "torchrun or accelerate launch"
                )
            dist.init_process_group(backend="gloo", rank=self.rank, world_size=self.world_size, timeout=GATHER_TIMEOUT)
            self.owns_default_group = True
            atexit.register(self.close)
        if (dist.get_rank(), dist.get_world_size()) != (self.rank, self.world_size):
            raise RuntimeError(
                f"the process group has rank {dist.get_rank()} of {dist.get_world_size()}, the launcher says "
                f"{self.rank} of {self.world_size}"
            )
        self.group = dist.group.WORLD if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")

    def all_gather(self, tensor: Any) -> Any:
        """Every rank's ``tensor`` concatenated along the first axis (a scalar counts as one element), in rank
        order, on ``tensor``'s device (as ``accelerate``'s ``gather``)."""
        if self.world_size == 1:
            return tensor
        import torch
        import torch.distributed as dist

        self.connect()
        local = tensor.detach().cpu().reshape(-1) if tensor.dim() == 0 else tensor.detach().cpu()
        parts = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(parts, local.contiguous(), group=self.group)
        return torch.cat(parts).to(tensor.device)

    def gather_object(self, obj: Any, dst: int = 0) -> Optional[list]:
        """Every rank's ``obj`` (picklable) in rank order on rank ``dst``; None on the others."""
        if self.world_size == 1:
            return [obj]
        import torch.distributed as dist

        self.connect()
        out: Optional[list] = [None] * self.world_size if self.rank == dst else None
        dist.gather_object(obj, out, dst=dst, group=self.group)
        return out

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            self.connect()
            dist.barrier(group=self.group)

    def close(self) -> None:
        """Destroy the process group if this object made it (at exit too); idempotent."""
        if self.owns_default_group:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self.owns_default_group, self.group = False, None
