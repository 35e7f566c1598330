"""Settings a 3D run cannot use, refused at assembly: before its volume cache is built or its run directory written.

A run with ``train.patch_size`` trains a model on patches of volumes and validates it on whole volumes by sliding
windows. These checks read the model (built on PyTorch's ``meta`` device: shapes without storage) and the
dataset's headers (each case's shape and spacing), so what would otherwise fail deep inside the first epoch, or
after minutes of preprocessing, is one line that says what would work:

- a model whose spatial dimensions differ from the patch's (``smp_unet``, a 2D model, given three numbers);
- a ``model.in_channels`` other than the volumes' channels;
- a patch too small for the network's stages (a norm layer left with one voxel at the deepest stage): the
  smallest patch that works is named;
- a ``train.window_overlap`` whose sliding windows would predict a voxel more than
  :data:`~segkit.inference.volume_limits.MAX_WINDOW_REPEATS` times on average;
- a case whose preprocessing (resampling to ``train.target_spacing``) or whole-volume validation does not
  fit in memory: the smallest target spacing that fits is named.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from segkit import memory
from segkit.config import RunConfig
from segkit.data.preprocess import resampled_shape, smallest_target_spacing
from segkit.data.volume import VolumeDataset
from segkit.errors import ConfigError, SegkitError
from segkit.inference.volume_limits import check_windows
from segkit.train.model_input import check_model_input, check_run_input, input_dims

__all__ = ["check_patch_run", "smallest_working_patch"]

#: A norm layer's refusal of a single value: batch norm ("Expected more than 1 value per channel when training")
#: and instance norm ("Expected more than 1 spatial element when training").
_ONE_VALUE = "Expected more than 1"


def _meta_model(config: RunConfig, registry: Any) -> torch.nn.Module | None:
    """The run's model on the meta device, in training mode; None when it cannot be built there."""
    try:
        with torch.device("meta"):
            model = registry.build("model", config.model.name, **config.model.params)
    except SegkitError:
        raise  # a parameter the model itself refuses: the same error the run would end in, before any work
    except Exception:  # a model that needs real storage to build: its checks are left to the run
        return None
    return model.train()


def _norm_refusal(model: torch.nn.Module, channels: int, patch: Sequence[int], batch: int) -> str | None:
    """A norm layer's message when ``model`` cannot train on ``batch`` patches of ``patch``; None when it can (or
    fails for another reason, which the run reports)."""
    try:
        model(torch.empty((batch, channels, *patch), device="meta"))
    except (ValueError, RuntimeError) as error:
        return str(error).strip().splitlines()[0] if _ONE_VALUE in str(error) else None
    return None


def smallest_working_patch(model: torch.nn.Module, channels: int, patch: Sequence[int],
                           batch: int) -> tuple[int, ...] | None:
    """The smallest patch at least ``patch`` along each axis that ``model`` trains on (None when none up to four
    times its total downsampling, or 64 times ``patch``, does).

    With the model's ``size_multiples`` (its total downsampling per axis, as unet3d and the MONAI models give it)
    the candidates are multiples of them, smallest first; otherwise ``patch`` doubled until it works.
    """
    multiples = tuple(int(m) for m in getattr(model, "size_multiples", ()) or ())
    if len(multiples) == len(patch):
        base = [max(-(-int(p) // m) * m, m) for p, m in zip(patch, multiples, strict=True)]
        candidates = sorted({tuple(max(b, k * m) for b, k, m in zip(base, ks, multiples, strict=True))
                             for ks in itertools.product(range(1, 5), repeat=len(patch))},
                            key=lambda c: (math.prod(c), max(c) - min(c), c))
    else:
        candidates = [tuple(int(p) * 2**j for p in patch) for j in range(1, 7)]
    return next((c for c in candidates if _norm_refusal(model, channels, c, batch) is None), None)


def _check_stages(model: torch.nn.Module, config: RunConfig, channels: int) -> None:
    """The model's stages against ``train.patch_size`` (its dimensions are :func:`check_model_input`'s)."""
    patch = tuple(int(p) for p in config.train.patch_size)
    name = config.model.name
    batch = max(1, min(int(config.train.batch_size), 2))
    refusal = _norm_refusal(model, channels, patch, batch)
    if refusal is None:
        return
    smallest = smallest_working_patch(model, channels, patch, batch)
    multiples = getattr(model, "size_multiples", None)
    stages = f" (its stages downsample by {'x'.join(map(str, multiples))})" if multiples else ""
    fix = (f"the smallest patch that works is {list(smallest)}; use train.patch_size = {list(smallest)} or larger"
           if smallest is not None else "use a larger train.patch_size")
    raise ConfigError(f"model {name!r} cannot train on patches of {'x'.join(map(str, patch))}{stages}: its deepest "
                      f"stage is left with a single voxel ({refusal.rstrip('.')}); {fix}, or a model with fewer "
                      "stages (model.stages).")


def _validation_bytes(voxels: int, channels: int, classes: int) -> int:
    """One whole validation volume: its sliding-window prediction (:func:`segkit.memory.volume_inference_bytes`)
    with the float32 mask the loader gives and the loss's probabilities and one-hot target on the volume."""
    return memory.volume_inference_bytes(voxels, None, channels, classes) + memory.FLOAT32 * voxels * (1 + 2 * classes)


def _check_volumes(config: RunConfig, dataset: Any, classes: int, device: Any = None) -> None:
    """Sliding windows and memory over every case (any may validate), from the shapes and spacings of the headers.

    Preprocessing and the loaded validation volume are host memory; the validation's sliding windows run on the
    training ``device`` (host memory too on a CPU).
    """

    t = config.train
    patch = tuple(int(p) for p in t.patch_size)
    target = tuple(float(s) for s in t.target_spacing) or None
    cases = [(str(row.case), tuple(int(n) for n in row.shape), tuple(float(s) for s in row.spacing))
             for row in dataset.cases_table.itertuples(index=False)]
    for case, shape, spacing in cases:
        grid = resampled_shape(shape, spacing, target) if target else shape
        check_windows(grid, patch, t.window_overlap, what=f"case {case!r}"
                      + (" resampled to train.target_spacing" if target else ""))
    on_gpu = getattr(device, "type", "cpu") == "cuda"
    for memory_of in (("host", None), ("GPU", device)) if on_gpu else (("both", None),):
        _check_case_memory(cases, target, len(dataset.channel_names), classes, *memory_of)


def _case_bytes(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float] | None, channels: int,
                classes: int, part: str) -> float:
    """What one case needs on the run's grid: ``host`` preprocessing it into the cache and loading it whole for
    validation, ``GPU`` the validation's sliding windows and loss, ``both`` (a CPU run) the most of either."""

    source = int(np.prod(shape, dtype=np.float64))
    grid = int(np.prod(resampled_shape(shape, spacing, target), dtype=np.float64)) if target else None
    loaded = memory.FLOAT32 * (grid or source) * (channels + 1)  # the validation loader's image and mask
    host = max(memory.volume_preprocess_bytes(source, grid, channels), loaded)
    validation = _validation_bytes(grid or source, channels, classes)
    return {"host": host, "GPU": validation}.get(part, max(host, validation))


def _check_case_memory(cases: Sequence[tuple[str, tuple[int, ...], tuple[float, ...]]],
                       target: tuple[float, ...] | None, channels: int, classes: int, part: str, device: Any) -> None:
    """A refusal naming the largest case and the smallest target spacing that fits when its ``part`` does not fit."""

    needed, case, shape, spacing = max(((_case_bytes(shape, spacing, target, channels, classes, part), case, shape,
                                         spacing) for case, shape, spacing in cases), key=lambda found: found[0])
    if needed <= memory.available_bytes(device):
        return
    coarser = smallest_target_spacing(target or spacing, lambda s: _case_bytes(shape, spacing, s, channels, classes,
                                                                                part), device)
    size = "x".join(map(str, resampled_shape(shape, spacing, target) if target else shape))
    work = {"host": "preprocessed and loaded whole", "GPU": "validated whole on the GPU"}.get(
        part, "preprocessed and validated whole")
    what = (f"case {case!r} ({'x'.join(map(str, shape))} voxels of {_mm(spacing)}"
            + (f", {size} once resampled to train.target_spacing = {_mm(target)}" if target else "")
            + f", {channels} channel(s)), {work},")
    if coarser is None:
        fits = "not even a much coarser train.target_spacing fits"
    else:
        fits = (f"the smallest train.target_spacing that fits is {_mm(coarser)}"
                + ("" if target else " (the cases are used at their own spacing now)"))
    memory.require_memory(needed, what, fits, device)


def _mm(spacing: Sequence[float]) -> str:
    return "[" + ", ".join(f"{float(s):.4g}" for s in spacing) + "] mm"


def check_patch_run(config: RunConfig, dataset: Any, registry: Any, labels: Any, device: Any = None) -> None:
    """Refuse, before any work, the settings of a run with ``train.patch_size`` that cannot work (module docstring).

    Call once the model's channels and classes are filled in (``fill_labels``, ``fill_model_defaults``);
    ``device`` is the training device (validation's memory is counted there).
    """

    check_run_input(config, dataset)
    volumes = isinstance(dataset, VolumeDataset) and input_dims(config) == 3
    channels = len(dataset.channel_names) if volumes else int(getattr(dataset, "in_channels", 1) or 1)
    chosen = config.model.params.get("in_channels")
    stacked = int(config.dataset.params.get("context", 0) or 0)  # 2.5D context: refused for volumes further on
    if volumes and not stacked and chosen is not None and int(chosen) != channels:
        raise ConfigError(f"model.in_channels = {chosen} but the volumes of dataset {config.dataset.name!r} have "
                          f"{channels} channel(s) ({', '.join(dataset.channel_names)}); leave model.in_channels out "
                          "and segkit sets it.")
    model = _meta_model(config, registry)
    if model is not None:
        check_model_input(model, config, dataset)
        _check_stages(model, config, int(chosen or channels))
    if volumes:
        _check_volumes(config, dataset, int(labels.out_channels), device)
