"""What a run says about itself: seeding every generator, the software versions, the batch in words."""

from __future__ import annotations

import platform
import random

import numpy as np
import torch

from segkit import __version__
from segkit.config import RunConfig

__all__ = ["seed_everything", "versions", "batch_description"]


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's generators from ``seed``."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def versions() -> dict[str, str]:
    """segkit's, torch's, smp's and Python's versions, for summary.json.

    smp's version comes from its installed metadata: importing smp (and timm) costs most of a second, which a run
    of another model would pay only to write this line.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        smp = version("segmentation-models-pytorch")
    except PackageNotFoundError:
        smp = "not installed"
    return {"segkit": __version__, "torch": torch.__version__, "smp": smp, "python": platform.python_version()}


def batch_description(config: RunConfig, world_size: int) -> str:
    """``batch 4 per process x 2 processes = global batch 8`` (times accumulation steps where used)."""
    t = config.train
    accumulate = f" x {t.accumulate} accumulation steps" if t.accumulate > 1 else ""
    if world_size == 1:
        return f"batch {t.batch_size}" + (f"{accumulate} = effective batch {t.batch_size * t.accumulate}" if accumulate else "")
    return (f"batch {t.batch_size} per process x {world_size} processes{accumulate} = global batch "
            f"{t.batch_size * world_size * t.accumulate}")
