"""Conformance checks for the extension kinds: ``augmentation`` (batch transforms) and ``volume_format``.

Part of :mod:`segkit.components.conformance` (and :mod:`segkit.testing`); the contracts are in
docs/architecture.md. Checked by duck typing, so this module imports no stage of segkit.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from segkit.errors import DataError

__all__ = ["check_augmentation", "check_volume_format"]


def _seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def check_augmentation(transform: Any, batch: int = 4) -> None:
    """A ``train.transforms`` augmentation: on a random batch of each dimension it declares (``dims``), it keeps
    shapes, dtypes and device, gives finite images, never invents label values, and draws all its randomness
    from the generator it is given (the same seed, the same output)."""
    assert callable(transform), f"an augmentation builds a callable, got {type(transform).__name__}"
    dims = tuple(getattr(transform, "dims", (2, 3)))
    assert dims and set(dims) <= {2, 3}, f"dims must name 2 and/or 3 spatial dimensions, got {dims!r}"
    for spatial in dims:
        size = (8, 12, 10)[:spatial] if spatial == 3 else (12, 10)
        images = torch.randn(batch, 2, *size, generator=_seeded(1))
        labels = torch.randint(0, 3, (batch, 1, *size), generator=_seeded(2)).float()
        outputs = []
        for _ in range(2):
            out = transform(images.clone(), labels.clone(), _seeded(7))
            assert isinstance(out, tuple) and len(out) == 2, f"{spatial}D: return (images, labels), got {type(out)}"
            out_images, out_labels = out
            for what, before, after in (("images", images, out_images), ("labels", labels, out_labels)):
                assert (after.shape, after.dtype, after.device) == (before.shape, before.dtype, before.device), (
                    f"{spatial}D: {what} {after.dtype} {tuple(after.shape)} returned for {before.dtype} "
                    f"{tuple(before.shape)}")
            assert torch.isfinite(out_images).all(), f"{spatial}D: the images hold NaN or infinite values"
            assert set(out_labels.unique().tolist()) <= set(labels.unique().tolist()), (
                f"{spatial}D: labels {sorted(set(out_labels.unique().tolist()))} appeared from {{0, 1, 2}}; labels "
                "are resampled by nearest neighbour or left alone")
            outputs.append(out)
        assert torch.equal(outputs[0][0], outputs[1][0]) and torch.equal(outputs[0][1], outputs[1][1]), (
            f"{spatial}D: two calls with equally seeded generators differ; draw every random number from the "
            "generator given (resumed runs must augment the same way)")


def check_volume_format(volume_format: Any) -> None:
    """A volume format: a :class:`~segkit.data.volume_formats.VolumeFormat` with lower-case suffixes that start
    with a dot, its own ``read`` and ``write_like``, and a DataError naming the file for one that is missing."""
    bases = {cls.__name__: cls for cls in type(volume_format).__mro__}
    assert "VolumeFormat" in bases, (
        f"a volume format builds a segkit.data.volume_formats.VolumeFormat, got {type(volume_format).__name__}")
    suffixes = volume_format.suffixes
    assert suffixes and all(isinstance(s, str) and s.startswith(".") and s == s.lower() and len(s) > 1
                            for s in suffixes), f"suffixes must be lower-case names' endings such as '.nii.gz', got {suffixes!r}"
    for method in ("read", "write_like"):
        assert getattr(type(volume_format), method) is not getattr(bases["VolumeFormat"], method), (
            f"{type(volume_format).__name__} must implement {method}")
    try:
        volume_format.check_available()
    except Exception:  # noqa: BLE001 - a missing optional library: the rest cannot be checked here
        return
    with tempfile.TemporaryDirectory() as folder:
        missing = Path(folder) / f"missing{suffixes[0]}"
        try:
            volume_format.read(missing)
        except DataError as error:
            assert "missing" in str(error), f"reading a missing file: the DataError must name the file, got {error}"
        else:
            raise AssertionError(f"reading the missing file {missing.name} must raise segkit.errors.DataError")
