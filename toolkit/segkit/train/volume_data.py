"""The data of a 3D run (``train.patch_size`` set): cached volumes, random patches, whole volumes.

A volume dataset (:class:`segkit.data.volume.VolumeDataset`, e.g. ``msd``) is preprocessed once
into a :class:`~segkit.data.volume_cache.VolumeCache` (normalised, memory-mapped arrays), so a
run reads patches without holding the dataset in memory. Training draws ``patches_per_epoch``
random patches per epoch (one per training case when 0), each from the case ``index % cases``,
placed on foreground with probability ``train.foreground_fraction`` (nnU-Net's oversampling),
reproducible from ``(seed, epoch, index)`` like every 2D item; a batch is augmented on the
training device (:mod:`segkit.data.augment3d`). Validation and test items are whole volumes,
which the trainer predicts by sliding windows (:mod:`segkit.inference.sliding_window`).

Items are ``(image (C, X, Y, Z) float32, mask (1, X, Y, Z) float32 label values, index)``,
the 3D form of the 2D ``(image (C, H, W), mask (1, H, W), index)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from segkit.config import RunConfig
from segkit.data.augment3d import augment_volumes
from segkit.data.augment_presets import volume_settings
from segkit.data.patches import PatchDataset, PatchSampler, check_patch_size
from segkit.data.volume import VolumeDataset
from segkit.data.volume_cache import VolumeCache
from segkit.errors import ConfigError, DataError
from segkit.train.assemble import DataParts
from segkit.train.model_input import check_run_input, input_dims
from segkit.train.sampling import EpochBatchSampler, EpochSampler, SeededItems

__all__ = ["VolumeView", "AugmentedBatches", "VolumeParts", "build_volume_data", "is_volume_run",
           "volume_cache_for", "volume_cache_of", "data_preprocessing"]


def is_volume_run(config: RunConfig) -> bool:
    """A run that trains a 3D model on patches of volumes: ``train.patch_size`` of three numbers
    (:func:`~segkit.train.model_input.input_dims` owns the rule)."""
    return input_dims(config) == 3


class VolumeView(Dataset):
    """Whole cached volumes of some cases: item ``i`` is case ``cases[i]``."""

    def __init__(self, cache: Any, cases: Sequence[str], display_channel: int = 0) -> None:
        self.cache, self.cases = cache, [str(c) for c in cases]
        self.display_channel = display_channel
        self.index = pd.DataFrame({"item": self.cases, "case": self.cases, "has_lesion": True})

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        case = self.cases[i]
        image = torch.from_numpy(np.array(self.cache.image(case), dtype=np.float32))
        mask = torch.from_numpy(np.array(self.cache.label(case), dtype=np.float32))[None]
        return image, mask


class AugmentedBatches:
    """A training loader whose batches are moved to ``device`` and augmented there, seeded per (seed, epoch)."""

    def __init__(self, loader: DataLoader, sampler: EpochBatchSampler, device: torch.device, seed: int,
                 settings: Any) -> None:
        self.loader, self.sampler, self.device, self.seed, self.settings = loader, sampler, device, seed, settings

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:

        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + self.sampler.epoch) % (2**63))
        non_blocking = self.device.type == "cuda"
        for images, masks, indices in self.loader:
            images = images.to(self.device, non_blocking=non_blocking)
            masks = masks.to(self.device, non_blocking=non_blocking)
            if not self.settings.is_identity:
                images, masks = augment_volumes(images, masks, generator, self.settings)
            yield images, masks, indices


def _collate_volumes(batch: list[tuple[torch.Tensor, torch.Tensor, int]]) -> tuple[torch.Tensor, ...]:
    images, masks, indices = zip(*batch, strict=True)
    return torch.stack(images), torch.stack(masks), torch.tensor(indices)


@dataclass
class VolumeParts(DataParts):
    """:class:`~segkit.train.assemble.DataParts` of a 3D run, with its volume cache and each split's item cases."""

    cache: Any = None
    cases: dict[str, list[str]] = field(default_factory=dict)


def _split_cases(dataset: Any, split: pd.Series) -> dict[str, list[str]]:
    """The cases of each split, in the dataset's order (a volume's slices all share one split)."""
    frame = pd.DataFrame({"case": dataset.index["case"].astype(str).to_numpy(), "split": split.to_numpy()})
    per_case = frame.drop_duplicates("case")
    return {name: per_case.loc[per_case["split"] == name, "case"].tolist() for name in ("train", "val", "test")}


def build_volume_data(config: RunConfig, dataset: Any, split: pd.Series, cache: Any, *, device: torch.device,
                      rank: int = 0, world_size: int = 1) -> VolumeParts:
    """Patch loader for training, whole-volume loaders for validation and test, from ``cache``."""

    t = config.train
    by_split = _split_cases(dataset, split)
    if config.split.by == "none":  # nothing held out: validate on the training cases
        by_split["val"] = list(by_split["train"])
    for name in ("train", "val"):
        if not by_split[name]:
            raise DataError(f"the {name} split is empty: the dataset has {len(dataset.cases_table)} volumes. "
                            "Use more data or change the split fractions.")
    sampler = PatchSampler(tuple(t.patch_size), t.foreground_fraction)
    check_patch_size(sampler.patch_size, {case: cache.shape(case) for case in cache})  # the whole dataset's
    count = t.patches_per_epoch or len(by_split["train"])
    if t.batch_size > -(-count // world_size):
        raise ConfigError(f"train.batch_size {t.batch_size} is more than the {count} patches of an epoch"
                          + (f" ({-(-count // world_size)} per process)" if world_size > 1 else "")
                          + "; use a smaller --batch-size or a larger train.patches_per_epoch.")
    patches = PatchDataset(cache, by_split["train"], sampler, count, seed=t.seed)  # addressed by (index, seed)
    train_batches = EpochBatchSampler(EpochSampler(count, t.seed, shuffle=True, rank=rank, world_size=world_size),
                                      t.batch_size, drop_single=True)
    train_loader = DataLoader(patches, batch_sampler=train_batches, num_workers=t.workers,
                              collate_fn=_collate_volumes, persistent_workers=t.workers > 0)
    views: dict[str, Any] = {"train": patches}
    loaders: dict[str, Any] = {"train": AugmentedBatches(train_loader, train_batches, device, t.seed,
                                                         volume_settings(t.augment))}
    samplers: dict[str, Any] = {"train": train_batches}
    cases = {"train": patches.item_cases}
    display = int(getattr(dataset, "display_channel", 0))
    for name in ("val", "test"):
        if not by_split[name]:
            continue
        view = VolumeView(cache, by_split[name], display)
        batches = EpochBatchSampler(EpochSampler(len(view), t.seed, shuffle=False, rank=rank, world_size=world_size), 1)
        views[name], samplers[name], cases[name] = view, batches, view.cases
        loaders[name] = DataLoader(SeededItems(view), batch_sampler=batches, collate_fn=_collate_volumes)
    return VolumeParts(dataset, split, views, loaders, samplers, cache, cases)


def volume_cache_for(config: RunConfig, dataset: Any, say: Any, *, quiet: bool = False) -> Any:
    """The preprocessed, memory-mapped cache of ``dataset``'s volumes (built or reused); checks the run fits 3D."""

    check_run_input(config, dataset)
    if int(config.dataset.params.get("context", 0)):
        raise ConfigError("dataset.context (2.5D slices as channels) does not apply to a 3D run, which sees the "
                          "volume itself: leave dataset.context out, or train.patch_size for a 2.5D run.")
    target = config.train.target_spacing or None
    cache = volume_cache_of(dataset, target_spacing=target, quiet=quiet, note=lambda message: say(f"note: {message}"),
                            workers=config.train.preprocess_workers)
    resampled = f", resampled to {' x '.join(f'{t:g}' for t in target)} mm" if target else ""
    say(f"volume cache: {len(dataset.cases_table)} cases{resampled} in {cache.directory}")
    return cache


def volume_cache_of(dataset: Any, *, target_spacing: Any = None, quiet: bool = False, note: Any = None,
                    workers: int = 0) -> Any:
    """The volume cache of ``dataset`` with the preprocessing 3D runs train with (built where it is missing).

    ``target_spacing``: every case resampled to it (``train.target_spacing``); None keeps each case's grid,
    the grid evaluation scores on. ``note``: where the cache's one-line notes go (a damaged file rebuilt);
    None: stderr unless ``quiet``. ``workers``: processes preprocessing cases at once (``train.preprocess_workers``;
    0: automatic, :func:`segkit.data.case_workers.plan_workers`).
    """

    return VolumeCache(dataset, target_spacing=target_spacing, progress=not quiet, note=note, workers=workers).build()


def data_preprocessing(config: RunConfig, dataset: Any, cache: Any = None) -> dict[str, Any]:
    """What a checkpoint records of how the data reached the model, beyond the 2D settings.

    A volume dataset's ``slice_axis`` and ``slice_shape`` (the padded slice), so predict slices new
    volumes as training did without the training data; for a 3D run (``cache`` given) also
    ``volume``: each channel's intensity scheme, the dataset's foreground statistics (CT) and the
    target spacing. (The window, patch and overlap, is the checkpoint's own: every run trained on
    patches records it, 2D or 3D.)
    """

    if not isinstance(dataset, VolumeDataset):
        return {}
    found: dict[str, Any] = {"slice_axis": int(dataset.slice_axis), "slice_shape": [int(s) for s in dataset.slice_shape]}
    if cache is not None:
        stats = getattr(cache, "stats", None)
        found.update({"volume": {"schemes": list(cache.settings["schemes"]),
                                 "stats": [s.to_dict() for s in stats] if stats else None,
                                 "target_spacing": cache.settings.get("target_spacing")}})
    return found
