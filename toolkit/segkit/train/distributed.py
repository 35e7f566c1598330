"""Data-parallel training: process group, model wrapping and exact metric reduction.

With one process every method is a no-op. Under ``torchrun`` (or
``segkit run --nproc-per-node N``) the environment variables ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` select the process; gradients are averaged by
DistributedDataParallel, and loss sums and per-image metric counts are gathered
from every process, so pooled and per-case metrics are exact, not averages of
averages.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist

from segkit.errors import ConfigError

__all__ = ["DistContext"]


class DistContext:
    """Who this process is in a data-parallel run, and the collective operations it needs."""

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0, initialized: bool = False) -> None:
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.initialized = initialized

    @classmethod
    def from_environment(cls, device_kind: str) -> DistContext:
        """Join the process group torchrun describes in the environment, if any."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        if not dist.is_initialized():
            backend = "nccl" if device_kind == "cuda" else "gloo"
            if backend == "nccl":
                if local_rank >= torch.cuda.device_count():

                    raise ConfigError(
                        f"process {local_rank} on this machine has no GPU of its own: {torch.cuda.device_count()} "
                        "GPU(s) here. Start at most one process per GPU (--nproc-per-node), or use --device cpu."
                    )
                torch.cuda.set_device(local_rank)
            dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
        return cls(rank, world_size, local_rank, initialized=True)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        model = model.to(device)
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [device.index if device.index is not None else self.local_rank] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    @contextlib.contextmanager
    def no_sync(self, model: torch.nn.Module, skip: bool) -> Iterator[None]:
        """Skip the gradient all-reduce on accumulation steps that do not step the optimizer."""
        if self.active and skip and hasattr(model, "no_sync"):
            with model.no_sync():
                yield
        else:
            yield

    def sum_scalars(self, total: torch.Tensor, count: int) -> tuple[float, int]:
        """Sum a device scalar and a count over processes."""
        if not self.active:
            return float(total.item()), count
        packed = torch.stack([total.double(), torch.tensor(float(count), dtype=torch.float64, device=total.device)])
        dist.all_reduce(packed)
        return float(packed[0].item()), int(packed[1].item())

    def gather_accumulator(self, accumulator: Any) -> Any:
        """Every process's per-image counts (and cases) merged into one accumulator on every rank."""
        if not self.active:
            return accumulator
        counts, cases = accumulator.state()
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, (counts.cpu(), cases))
        all_counts = torch.cat([c for c, _ in gathered]).to(counts.device)
        # A rank with no items (one validation volume, two processes) has no case ids to give: it must not drop
        # the others' (every per-case score, the monitored val_dice_case among them, would be missing).
        missing = any(c is None and len(n) for n, c in gathered) or all(c is None for _, c in gathered)
        all_cases = None if missing else [case for _, c in gathered for case in c or []]
        merged = accumulator.empty_like()
        merged.load_state((all_counts, all_cases))
        return merged

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any rank."""
        if not self.active:
            return flag
        value = torch.tensor([1.0 if flag else 0.0])
        dist.all_reduce(value)
        return bool(value.item() > 0)

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def close(self) -> None:
        if self.initialized and dist.is_initialized():
            dist.destroy_process_group()
