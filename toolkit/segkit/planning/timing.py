"""A few real training steps of a planned run, timed on this machine.

The run's configuration is completed as ``segkit run`` completes it (labels, loss mode, model
channels), its model, loss and optimizer are built, and steps (forward, loss, backward, optimizer
step) run on random inputs of the planned batch and shape: the model's cost, not data loading.
One warm-up step is not timed; then steps run until about ``seconds`` have passed (at least two).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from segkit.planning.contract import StepTiming

__all__ = ["time_training_steps", "MAX_TIMED_STEPS"]

MAX_TIMED_STEPS = 10


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_training_steps(document: dict[str, dict[str, Any]], dataset: Any, registry: Any, device_name: str,
                        batch_size: int, shape: tuple[int, ...], seconds: float = 2.0) -> StepTiming:
    """Time training steps of ``document``'s model and loss on ``batch_size`` random inputs of ``shape``."""
    from segkit.config import resolve_config, validate_config
    from segkit.train.assemble import build_loss, build_model, fill_labels, fill_model_defaults
    from segkit.train.deep_supervision import supervised_loss
    from segkit.train.device import autocast_dtype, select_device
    from segkit.train.schedule import build_optimizer

    config = validate_config(resolve_config(None, document), registry)
    labels = fill_labels(config, dataset, registry)
    fill_model_defaults(config, dataset, registry)
    device = select_device(device_name)
    torch.manual_seed(0)
    model = build_model(config, registry).to(device).train()
    loss_fn = build_loss(config, registry).to(device)
    optimizer = build_optimizer(model.parameters(), config.train)
    channels = int(config.model.params.get("in_channels", dataset.in_channels))
    images = torch.rand((batch_size, channels, *shape), device=device)
    masks = torch.randint(0, labels.classes, (batch_size, 1, *shape), device=device).float()
    target = labels.loss_target(masks)
    dtype = autocast_dtype(device, config.train.amp, config.train.amp_dtype)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> float:
        _sync(device)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss, _ = supervised_loss(loss_fn, model(images), target)
        loss.backward()
        optimizer.step()
        _sync(device)
        return time.perf_counter() - start

    step()  # warm-up: allocations, kernel choice
    timed = [step()]
    started = time.perf_counter()
    while len(timed) < 2 or (time.perf_counter() - started < seconds and len(timed) < MAX_TIMED_STEPS):
        timed.append(step())
    peak = int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None
    return StepTiming(statistics.median(timed), len(timed), batch_size, tuple(shape), peak)
