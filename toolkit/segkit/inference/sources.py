"""Where a predictor's models come from: run directories, ``.pt`` checkpoints and segkit ``.onnx`` exports.

:func:`load_predictor` turns sources into one :class:`~segkit.inference.predictor.Predictor` (several make
an ensemble), each model with the preprocessing its checkpoint or export records (:func:`load_member`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from segkit.data.intensity import NORMALIZE
from segkit.device import select_device
from segkit.errors import CheckpointError
from segkit.inference.memory_format import prefer_channels_last
from segkit.inference.onnx_file import load_onnx_predictor
from segkit.inference.predictor import Member, Predictor
from segkit.labels import Labels
from segkit.runs.checkpoint import (
    build_model_from_checkpoint,
    load_checkpoint,
    resolve_checkpoint,
)

__all__ = ["SOURCE_SUFFIXES", "is_source", "load_member", "load_predictor", "checkpoint_context",
           "checkpoint_normalize"]

SOURCE_SUFFIXES: tuple[str, ...] = (".pt", ".onnx")
"""Files that hold a model: a segkit checkpoint (``.pt``) or a segkit ONNX export (``.onnx``)."""

def is_source(path: str | os.PathLike[str]) -> bool:
    """True for a run directory (holds ``config.toml`` or ``checkpoints/``), a ``segkit cv`` directory
    (holds ``cv.json``) or a ``.pt`` / ``.onnx`` file."""
    path = Path(path)
    if path.is_dir():
        return any((path / name).exists() for name in ("config.toml", "checkpoints", "cv.json"))
    return path.suffix.lower() in SOURCE_SUFFIXES and path.is_file()



def _checkpoint_member(path: Path, device: torch.device, registry: Any | None) -> Member:

    payload = load_checkpoint(path, map_location="cpu")
    model = prefer_channels_last(build_model_from_checkpoint(payload, registry).to(device), device)
    preprocessing = payload.get("preprocessing", {})
    config = payload["config"]
    in_channels = preprocessing.get("in_channels") or config["model"].get("in_channels")

    def run(images: torch.Tensor) -> torch.Tensor:
        return model(images)

    return Member(
        name=config["model"]["name"],
        source=str(path),
        image_size=int(preprocessing.get("image_size") or 0),
        in_channels=int(in_channels) if in_channels is not None else None,
        threshold=float(preprocessing.get("threshold", config.get("metrics", {}).get("threshold", 0.5))),
        run=run,
        device=device,
        info={"epoch": payload.get("epoch"), "config": config, "model": model, "preprocessing": preprocessing},
        context=checkpoint_context(config, path),
        normalize=checkpoint_normalize(config, path),
        labels=Labels.from_dict(preprocessing.get("labels")),
    )


def checkpoint_context(config: dict[str, Any], source: str | os.PathLike[str] = "checkpoint") -> int:
    """The 2.5D context ``k`` a run was trained with: ``[dataset] context``, 0 when absent."""
    value = (config.get("dataset") or {}).get("context", 0) or 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CheckpointError(f"{str(source)!r} records the dataset context {value!r}; expected an integer >= 0.")
    return int(value)


def checkpoint_normalize(config: dict[str, Any], source: str | os.PathLike[str] = "checkpoint") -> str:
    """The intensity normalisation a run was trained with: ``[dataset] normalize``, ``none`` when absent."""

    value = (config.get("dataset") or {}).get("normalize", "none")
    if value not in NORMALIZE:
        raise CheckpointError(f"{str(source)!r} records the dataset normalize {value!r}; expected one of "
                              f"{', '.join(NORMALIZE)}.")
    return str(value)


def load_member(source: str | os.PathLike[str], checkpoint: str = "best", device: torch.device | None = None,
                registry: Any | None = None) -> list[Member]:
    """The model(s) of one source: a run directory, a ``.pt`` checkpoint or a segkit ``.onnx`` export."""

    path = Path(source)
    if path.suffix.lower() == ".onnx":

        return load_onnx_predictor(path).members
    if path.is_dir() and not is_source(path):
        raise CheckpointError(f"{str(path)!r} is not a segkit run directory (no config.toml, no checkpoints/).")
    if not path.exists():
        raise CheckpointError(f"run directory or checkpoint {str(path)!r} does not exist.")
    return [_checkpoint_member(resolve_checkpoint(path, checkpoint), device or torch.device("cpu"), registry)]


def load_predictor(
    sources: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    checkpoint: str = "best",
    device: str = "auto",
    tta: bool = False,
    *,
    threshold: float | None = None,
    batch_size: int | None = None,
    registry: Any | None = None,
) -> Predictor:
    """A predictor from run directories, ``.pt`` checkpoints and ``.onnx`` exports; several make an ensemble.

    ``checkpoint`` (``best``, ``last`` or a ``.pt`` path) picks the file of a run
    directory. ONNX exports run on the CPU with onnxruntime whatever ``device`` says.
    """

    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    if not sources:
        raise CheckpointError("no model given: name a run directory, a .pt checkpoint or a .onnx export.")
    target = select_device(device)
    members = [m for source in sources for m in load_member(source, checkpoint, target, registry)]
    return Predictor(members, tta=tta, threshold=threshold, batch_size=batch_size)
