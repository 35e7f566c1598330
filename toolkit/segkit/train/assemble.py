"""Assembling a run from its configuration: dataset and splits, loaders, model, loss, metrics."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from segkit.components.params import signature_parameters
from segkit.config import (
    AUTO_LOSS,
    ComponentSpec,
    RunConfig,
    resolve_monitor,
    task_loss,
)
from segkit.data import build_transform, make_splits
from segkit.data.batch_transforms import build_transforms
from segkit.data.image_patches import WithPatchCrop
from segkit.data.modality import WithModalityDropout, modality_dropout_for
from segkit.device import use_channels_last
from segkit.errors import ConfigError, DataError
from segkit.labels import Labels, resolve_labels
from segkit.train.device_loader import device_loaders
from segkit.train.footprint import check_training_fits, training_footprint
from segkit.train.init_from import load_initial_weights
from segkit.train.loop import Trainer
from segkit.train.model_input import check_model_input
from segkit.train.sampling import EpochBatchSampler, EpochSampler, SeededItems
from segkit.train.schedule import build_optimizer, build_scheduler

__all__ = [
    "DataParts",
    "build_data",
    "is_image_patch_run",
    "train_transform",
    "batch_sampler",
    "build_model",
    "build_loss",
    "build_metrics",
    "build_trainer",
    "fill_labels",
    "fill_dataset_defaults",
    "fill_model_defaults",
    "fill_monitor",
]


@dataclass
class DataParts:
    """The dataset, its split, and one loader per non-empty split."""

    dataset: Any
    split: pd.Series
    views: dict[str, Any]
    loaders: dict[str, Any]
    samplers: dict[str, EpochBatchSampler]


def build_dataset(config: RunConfig, registry: Any) -> Any:
    """The whole dataset named in the config; an empty one is a :class:`DataError`."""
    dataset = registry.build("dataset", config.dataset.name, **config.dataset.params)
    if len(dataset) == 0:
        raise DataError(f"dataset {config.dataset.name!r} has no items. Check --data-root and the dataset's parameters.")
    return dataset


def make_split(config: RunConfig, dataset: Any, existing: pd.Series | None = None) -> pd.Series:
    """The train/val/test assignment: reused when resuming, else made by case from the config."""
    if existing is not None:
        return existing

    s = config.split
    return make_splits(
        dataset.index,
        val_fraction=s.val_fraction,
        test_fraction=s.test_fraction,
        split_by=s.by,
        folds=s.folds or None,
        fold=s.fold if s.folds else None,
        seed=s.seed,
    )


def _collate(batch: list[tuple[torch.Tensor, torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    images, masks, indices = zip(*batch, strict=True)
    shapes = {tuple(image.shape) for image in images}
    if len(shapes) > 1:
        raise DataError(
            f"images of different sizes in one batch ({', '.join(str(s) for s in sorted(shapes)[:3])}): "
            "set --image-size so every image is resized to the same size."
        )
    return torch.stack(images), torch.stack(masks), torch.tensor(indices)


def is_image_patch_run(config: RunConfig) -> bool:
    """A 2D model trained on patches of images at their own size: ``train.patch_size`` of two numbers."""
    return len(config.train.patch_size) == 2


def batch_sampler(view: Any, settings: Any, *, train: bool, rank: int = 0, world_size: int = 1) -> EpochBatchSampler:
    """The batches of one split, for either loader path: shuffled with foreground oversampling (and no
    last batch of a single item) when training, in order without it for validation and test. A run on 2D
    patches validates whole images of any size, one at a time."""
    items = EpochSampler(len(view), settings.seed, shuffle=train, rank=rank, world_size=world_size)
    fraction = settings.foreground_fraction if train else 0.0
    lesion = view.index["has_lesion"].astype(bool).tolist() if fraction > 0 else None
    size = 1 if len(settings.patch_size) == 2 and not train else settings.batch_size
    return EpochBatchSampler(items, size, lesion=lesion, foreground_fraction=fraction, drop_single=train)


def train_transform(config: RunConfig, dataset: Any, dropout: Any = None) -> Any:
    """The training split's per-item transform: the 2D patch crop (a run on patches), the augmentation preset
    (after the resize to ``train.image_size`` when set), then modality dropout wraps them."""

    t = config.train
    transform = build_transform(t.augment, t.image_size or None, train=True)
    if is_image_patch_run(config):

        transform = WithPatchCrop(t.patch_size, t.foreground_fraction, transform)
    return WithModalityDropout(dropout, transform) if dropout is not None else transform


def build_data(
    config: RunConfig,
    dataset: Any,
    split: pd.Series,
    *,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
    loader: str = "workers",
    device: torch.device | None = None,
) -> DataParts:
    """Views with the run's transforms and reproducible loaders for train and val (and test).

    ``loader``: ``"workers"`` (a DataLoader, albumentations per item) or ``"device"`` (the
    decoded dataset kept on ``device``, augmented per batch there; see
    :mod:`segkit.train.device_loader`). Both draw their batches from the same samplers.
    """

    t = config.train
    image_size = t.image_size or None
    dropout = modality_dropout_for(t.modality_dropout, dataset)
    if loader == "workers" and t.workers > 0 and getattr(dataset, "cache", False):
        # Fill the cache once here: forked workers then share it, instead of each worker
        # caching only the items the shuffle happens to send it.
        for i in range(len(dataset)):
            dataset.read(i)
    views, loaders, samplers = {}, {}, {}
    for name in ("train", "val", "test"):
        positions = [i for i, value in enumerate(split.tolist()) if value == name]
        if name == "val" and config.split.by == "none":  # nothing held out: validate on the training items
            positions = [i for i, value in enumerate(split.tolist()) if value == "train"]
        if not positions:
            if name in ("train", "val"):
                raise DataError(f"the {name} split is empty: the dataset has {dataset.index['case'].nunique()} cases. "
                                "Use more data or change the split fractions.")
            continue
        transform = train_transform(config, dataset, dropout) if name == "train" else build_transform("none", image_size)
        view = dataset.subset(positions, transform=transform)
        views[name] = view
        sampler = batch_sampler(view, t, train=name == "train", rank=rank, world_size=world_size)
        samplers[name] = sampler
        if loader == "device":
            continue
        loaders[name] = DataLoader(
            SeededItems(view),
            batch_sampler=sampler,
            num_workers=t.workers,
            collate_fn=_collate,
            pin_memory=pin_memory,
            persistent_workers=t.workers > 0,
        )
    per_process = math.ceil(len(views["train"]) / world_size)
    if t.batch_size > per_process:
        raise ConfigError(
            f"train.batch_size {t.batch_size} is larger than the training set ({len(views['train'])} items"
            + (f", {per_process} per process" if world_size > 1 else "")
            + "). Use a smaller --batch-size."
        )
    if loader == "device":

        loaders = device_loaders(config, dataset, views, samplers, device or torch.device("cpu"), rank=rank,
                                 dropout=dropout)
    return DataParts(dataset, split, views, loaders, samplers)


def fill_labels(config: RunConfig, dataset: Any, registry: Any) -> Labels:
    """Resolve ``task.mode`` from the dataset's labels, the loss ``auto`` to the task's loss, and give the model
    its output channels and the loss its mode (unless the user set them), so the config is complete; the run's
    :class:`~segkit.labels.Labels`.

    A loss without a ``mode`` parameter is binary only: with several labels that is a :class:`ConfigError`.
    """
    labels = resolve_labels(dataset, config.task.mode, config.task.regions)
    config.task.mode = labels.mode
    if config.loss.name == AUTO_LOSS:
        name = task_loss(labels.is_binary)
        config.loss = ComponentSpec(name, registry.get("loss", name).check_params(config.loss.params))
    model_params = {p.name for p in signature_parameters(registry.get("model", config.model.name).load())}
    if "classes" in model_params:
        classes = config.model.params.setdefault("classes", labels.out_channels)
        if classes != labels.out_channels:
            raise ConfigError(
                f"model.classes = {classes}, but mode {labels.mode!r} on a dataset with {labels.classes} label values "
                f"({', '.join(labels.names)}) needs {labels.out_channels} output channel(s). Leave model.classes out "
                "and segkit sets it.")
    loss_params = {p.name for p in signature_parameters(registry.get("loss", config.loss.name).load())}
    if "mode" in loss_params:
        mode = config.loss.params.setdefault("mode", labels.mode)
        if mode != labels.mode:
            raise ConfigError(f"loss.mode = {mode!r} but the run's mode is {labels.mode!r} (task.mode); leave "
                              "loss.mode out and segkit sets it.")
    elif not labels.is_binary:
        raise ConfigError(
            f"loss {config.loss.name!r} is binary only, and this run predicts {len(labels.foreground)} labels "
            f"({', '.join(labels.foreground)}). Use a loss with a mode, e.g. --loss ce_dice (cross-entropy + Dice, "
            "as nnU-Net trains), ce, smp_dice, jaccard, focal, tversky or lovasz.")
    return labels


def fill_model_defaults(config: RunConfig, dataset: Any, registry: Any) -> None:
    """Give the model the dataset's channel count unless the user set one, so the config is complete.

    Its output channels (``classes``) come from :func:`fill_labels`.
    """
    names = {p.name for p in signature_parameters(registry.get("model", config.model.name).load())}
    if "in_channels" in names and "in_channels" not in config.model.params:
        config.model.params["in_channels"] = int(dataset.in_channels)


def fill_dataset_defaults(config: RunConfig, registry: Any) -> None:
    """Write the dataset's defaults into its parameters, so ``config.toml`` lists what the data was read with.

    ``None`` defaults are left out: TOML has no null, and leaving them out means the same.
    """
    parameters = registry.get("dataset", config.dataset.name).parameters()
    for param in parameters:
        if not param.required and param.default is not None and param.name not in config.dataset.params:
            config.dataset.params[param.name] = param.default


def fill_monitor(config: RunConfig, dataset: Any) -> None:
    """Resolve ``metrics.monitor = "auto"``: per-case Dice when the dataset's cases hold several items, else pooled."""

    cases = dataset.index["case"]
    config.metrics.monitor = resolve_monitor(config.metrics.monitor, config.metrics.names, cases.nunique() < len(cases))


def check_memory(config: RunConfig, dataset: Any, registry: Any, device: torch.device) -> None:
    """A :class:`ConfigError` when one training step clearly needs more memory than ``device`` has free.

    The images' size is the 2D ``train.patch_size``, else ``train.image_size`` or the first item's (read without
    2.5D context).
    """

    size = config.train.image_size
    if is_image_patch_run(config):
        height, width = config.train.patch_size
    else:
        height, width = (size, size) if size else np.asarray(dataset.read_raw(0)[0]).shape[:2]
    channels = int(config.model.params.get("in_channels", dataset.in_channels))
    built: list[torch.nn.Module] = []

    def build() -> torch.nn.Module:
        built.append(build_model(config, registry))
        return built[0]

    footprint = training_footprint(build, channels, int(height), int(width))
    if built:  # the model on the meta device, built once for its footprint; None were it to need real storage
        check_model_input(built[0], config, dataset)
    check_training_fits(footprint, config.train.batch_size, (int(height), int(width)), device, config.model.name)


def check_volume_memory(config: RunConfig, dataset: Any, registry: Any, device: torch.device) -> None:
    """:func:`check_memory` for a 3D run: one step on ``train.batch_size`` patches of ``train.patch_size``."""

    patch = tuple(int(p) for p in config.train.patch_size)
    channels = int(config.model.params.get("in_channels", len(getattr(dataset, "channel_names", ())) or 1))
    footprint = training_footprint(lambda: build_model(config, registry), channels, patch[1], patch[2],
                                   depth=patch[0])
    check_training_fits(footprint, config.train.batch_size, patch, device, config.model.name)


def build_model(config: RunConfig, registry: Any) -> torch.nn.Module:
    return registry.build("model", config.model.name, **config.model.params)


def build_loss(config: RunConfig, registry: Any) -> torch.nn.Module:
    return registry.build("loss", config.loss.name, **config.loss.params)


def build_metrics(config: RunConfig, registry: Any) -> dict[str, Any]:
    return {name: registry.build("metric", name) for name in config.metrics.names}


def build_trainer(
    config: RunConfig,
    registry: Any,
    loaders: dict[str, Any],
    samplers: dict[str, Any],
    cases: dict[str, list[str]],
    device: torch.device,
    *,
    steps_per_epoch: int,
    dist: Any = None,
    progress: bool = True,
    labels: Labels | None = None,
    initialise: bool = True,
) -> Any:
    """A :class:`~segkit.train.loop.Trainer` with the model (seeded, on ``device``, channels-last where ``train.channels_last`` says),
    loss, metrics, optimizer and a schedule of ``steps_per_epoch`` optimizer steps per epoch.

    With ``train.init_from`` (and ``initialise``: not when resuming, whose checkpoint replaces the weights) the
    model starts from that run's weights; ``trainer.init_report`` says what was loaded."""

    torch.manual_seed(config.train.seed)
    model = build_model(config, registry)
    report = None
    if config.train.init_from and initialise:

        report = load_initial_weights(model, config.train.init_from, config.model.name)
    model = model.to(device)
    if use_channels_last(config.train.channels_last, device, model):
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model.parameters(), config.train)
    scheduler = build_scheduler(optimizer, config.train, steps_per_epoch)
    transforms = build_transforms(config.train.transforms, registry, dims=getattr(model, "spatial_dims", 2))
    trainer = Trainer(config, model, build_loss(config, registry), build_metrics(config, registry), loaders, samplers,
                      cases, device, optimizer, scheduler, dist=dist, progress=progress, labels=labels,
                      transforms=transforms)
    trainer.init_report = report
    return trainer
