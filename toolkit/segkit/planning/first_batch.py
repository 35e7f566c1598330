"""The last check of ``segkit plan`` before it writes: the planned run's first batch, end to end.

A plan is written only once its own run would start: the dataset built with the planned parameters
(2.5D context, normalisation, cache, the cases), the planned split made, the training loader's first
batch read through the planned transforms (the 2D patch crop, augmentation), pushed through the
planned model and loss, and one validation item predicted as validation predicts it (by sliding
windows for a run on patches). What fails here would have stopped ``segkit run`` on the plan; it stops
``segkit plan`` instead, saying what and why, with nothing written.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from segkit.config import resolve_config, validate_config
from segkit.errors import ConfigError, SegkitError
from segkit.inference.sliding_window import SlidingWindowInferer
from segkit.runs.window import WindowSettings
from segkit.train import assemble
from segkit.train.deep_supervision import supervised_loss
from segkit.train.volume_data import is_volume_run

__all__ = ["check_first_batch"]


def check_first_batch(document: dict[str, dict[str, Any]], registry: Any, planner_name: str) -> None:
    """Run the first training batch and one validation item of the plan ``document`` on the CPU; a
    :class:`ConfigError` naming the planner and the failure when the run would not start."""
    try:
        _first_batch(document, registry)
    except (SegkitError, RuntimeError, ValueError) as error:
        what = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"planner {planner_name!r} planned a run that fails on its first batch ({what}); nothing "
                          "was written. Please report it with the dataset's fingerprint (segkit inspect).") from None


def _first_batch(document: dict[str, dict[str, Any]], registry: Any) -> None:

    config = validate_config(resolve_config(None, document), registry)
    config.train.workers = 0
    dataset = assemble.build_dataset(config, registry)
    labels = assemble.fill_labels(config, dataset, registry)
    assemble.fill_model_defaults(config, dataset, registry)
    torch.manual_seed(0)
    model = assemble.build_model(config, registry)
    loss_fn = assemble.build_loss(config, registry)
    if is_volume_run(config):  # the volume cache is the run's first work, not the plan's: random patches
        shape = (config.train.batch_size, int(config.model.params.get("in_channels", 1)), *config.train.patch_size)
        images = torch.rand(shape)
        masks = torch.randint(0, labels.classes, (shape[0], 1, *shape[2:])).float()
        validation = images[:1]
    else:
        parts = assemble.build_data(config, dataset, assemble.make_split(config, dataset), loader="workers")
        parts.samplers["train"].set_epoch(1)
        images, masks, _ = next(iter(parts.loaders["train"]))
        validation = parts.views["val"][0][0][None]
    model.train()
    outputs = model(images)
    loss, _ = supervised_loss(loss_fn, outputs, labels.loss_target(masks))
    if not math.isfinite(float(loss.detach())):
        raise ValueError(f"the loss of the first batch is {float(loss.detach())}")
    loss.backward()

    model.eval()
    window = WindowSettings.from_train(config.train)
    with torch.inference_mode():
        logits = model(validation) if window is None else SlidingWindowInferer(window)(model, validation)
    if logits.shape[0] != validation.shape[0] or tuple(logits.shape[2:]) != tuple(validation.shape[2:]):
        raise ValueError(f"the model maps a validation item {tuple(validation.shape)} to {tuple(logits.shape)}")
