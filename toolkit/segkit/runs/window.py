"""The window settings of a patch-trained model, in one typed form from config to checkpoint to ONNX and back.

A run with ``train.patch_size`` trains on patches (two numbers: 2D patches of images at their own
size; three: 3D patches of volumes) and is used on whole images or volumes by sliding windows of
that size (:mod:`segkit.inference.sliding_window`). :class:`WindowSettings` is that pair, patch and
overlap, read once from wherever it is recorded and checked there:

- the run's configuration (:meth:`WindowSettings.from_train`),
- a checkpoint's ``preprocessing`` (:meth:`~WindowSettings.to_record` / :meth:`~WindowSettings.from_record`,
  the keys ``patch_size`` and ``window_overlap``; checkpoints written before segkit recorded them there
  fall back to their configuration's ``train`` section),
- an ONNX or TorchScript export's metadata strings (:meth:`~WindowSettings.to_metadata` /
  :meth:`~WindowSettings.from_metadata`).

A run without a patch (a 2D model on whole, optionally resized images) has no window: ``None``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from segkit.errors import CheckpointError

__all__ = ["WindowSettings", "DEFAULT_OVERLAP"]

DEFAULT_OVERLAP = 0.5
"""The overlap of neighbouring windows when a record names none (nnU-Net's)."""


def _valid_patch(patch: Any) -> bool:
    return (isinstance(patch, (list, tuple)) and len(patch) in (2, 3)
            and all(isinstance(p, int) and not isinstance(p, bool) and p >= 1 for p in patch))


def _valid_overlap(overlap: Any) -> bool:
    return (isinstance(overlap, (int, float)) and not isinstance(overlap, bool) and math.isfinite(overlap)
            and 0 <= overlap < 1)


@dataclass(frozen=True)
class WindowSettings:
    """A patch size (2 or 3 spatial sizes, in the data's axis order) and the overlap of neighbouring windows.

    ``dims`` is 2 for a 2D model trained on patches of images, 3 for a 3D model trained on patches of volumes.
    """

    patch_size: tuple[int, ...]
    overlap: float = DEFAULT_OVERLAP

    def __post_init__(self) -> None:
        if not _valid_patch(self.patch_size):
            raise ValueError(f"patch_size must be 2 or 3 whole numbers >= 1, got {self.patch_size!r}")
        if not _valid_overlap(self.overlap):
            raise ValueError(f"overlap must be a number in [0, 1), got {self.overlap!r}")
        object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
        object.__setattr__(self, "overlap", float(self.overlap))

    @property
    def dims(self) -> int:
        """Spatial dimensions of the window: 2 or 3."""
        return len(self.patch_size)

    def describe(self) -> str:
        """``64x64 windows, overlap 0.5``."""
        return f"{'x'.join(map(str, self.patch_size))} windows, overlap {self.overlap:g}"

    # --- the run's configuration ----------------------------------------------------------------------

    @classmethod
    def from_train(cls, train: Any) -> WindowSettings | None:
        """The window of a run's ``[train]`` settings (a :class:`~segkit.config.TrainSettings` or its dict); None
        without a patch. The configuration is validated before this is called, so values are trusted here."""
        get = train.get if isinstance(train, Mapping) else (lambda key, default=None: getattr(train, key, default))
        patch = get("patch_size") or []
        if not patch:
            return None
        return cls(tuple(patch), get("window_overlap", DEFAULT_OVERLAP))

    # --- checkpoints ----------------------------------------------------------------------------------

    def to_record(self) -> dict[str, Any]:
        """The checkpoint's form: ``{"patch_size": [...], "window_overlap": x}`` (merged into ``preprocessing``)."""
        return {"patch_size": list(self.patch_size), "window_overlap": self.overlap}

    @classmethod
    def from_record(cls, preprocessing: Mapping[str, Any] | None, config: Mapping[str, Any] | None = None,
                    source: Any = "checkpoint") -> WindowSettings | None:
        """The window a checkpoint records; None for a whole-image model; a :class:`CheckpointError` for values
        that are not a window (an edited or damaged file), naming ``source``.

        ``preprocessing`` holds it since segkit recorded it there; older checkpoints have it only in their
        configuration's ``train`` section (``config``).
        """
        record = dict(preprocessing or {})
        if not record.get("patch_size"):
            record = dict((config or {}).get("train") or {})
        patch = record.get("patch_size")
        if not patch:
            return None
        overlap = record.get("window_overlap", DEFAULT_OVERLAP)
        if not _valid_patch(patch) or not _valid_overlap(overlap):
            raise CheckpointError(f"{str(source)!r} records the patch size {patch!r} and window overlap {overlap!r}; "
                                  "expected 2 or 3 whole numbers >= 1 and a number in [0, 1). The file was edited "
                                  "or damaged; use the run's own checkpoint or train it again.")
        return cls(tuple(patch), overlap)

    # --- export metadata (strings) --------------------------------------------------------------------

    def to_metadata(self) -> dict[str, str]:
        """The export metadata's form: ``patch_size`` as a JSON list, ``window_overlap`` as a number."""
        return {"patch_size": json.dumps(list(self.patch_size)), "window_overlap": repr(self.overlap)}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str], source: Any = "export") -> WindowSettings | None:
        """The window an export's metadata records; None for a whole-image model; a :class:`CheckpointError` for
        text that is not a window (edited metadata)."""
        text = metadata.get("patch_size")
        if not text:
            return None
        try:
            patch = json.loads(text)
            overlap = float(metadata.get("window_overlap") or DEFAULT_OVERLAP)
        except (ValueError, TypeError):
            patch, overlap = None, None
        if not _valid_patch(patch) or not _valid_overlap(overlap):
            raise CheckpointError(f"{str(source)!r} has the window metadata patch_size {text!r}, window_overlap "
                                  f"{metadata.get('window_overlap')!r} that segkit cannot use; the file's metadata "
                                  "was edited. Export the run again with 'segkit export'.")
        return cls(tuple(patch), overlap)  # type: ignore[arg-type]
