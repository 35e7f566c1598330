"""What a model's output channels mean: the label values, their names, and the output mode.

A dataset's masks hold label values ``0 .. C-1`` (0 is background); binary data has
``C = 2`` (background and lesion). How a model's logits encode them is the **mode**:

- ``binary``: one channel, ``sigmoid(logit) >= threshold`` is lesion (``C = 2`` only).
- ``multiclass``: ``C`` channels (channel 0 is background), softmax over channels; a pixel
  takes the label of its largest logit.
- ``multilabel``: ``C - 1`` channels, one sigmoid per foreground label, so labels may
  overlap; a label is present where its probability is at or above the threshold.
  With **regions** (nnU-Net's region-based training) each channel is a named set of label
  values instead, e.g. ``whole = [1, 2, 3]``, ``core = [2, 3]``: regions overlap where
  their sets share values, so one label map in the masks trains nested structures.

:class:`Labels` turns masks into the target a loss of that mode expects, and logits and
masks into one boolean mask per foreground label, from which every metric is counted.

A mask pixel holding :data:`IGNORE` (a dataset's ``ignore_label``, or outside its region of
interest) neither trains nor scores: :func:`neutral_outputs` makes a loss see nothing there,
and the metrics count only :func:`valid_pixels`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from segkit.errors import ConfigError

__all__ = ["first_largest", "MODES", "BINARY_NAMES", "IGNORE", "Labels", "check_classes", "check_regions", "label_names",
           "resolve_labels", "valid_pixels", "neutral_outputs"]

IGNORE = 255
"""The mask value of pixels that neither train nor score; label values stay below it."""
NEUTRAL_LOGIT = 30.0
"""How sure the logits :func:`neutral_outputs` puts on ignored pixels are: a loss there is ~0 (exp(-30))."""

MODES: tuple[str, ...] = ("binary", "multiclass", "multilabel")
BINARY_NAMES: tuple[str, str] = ("background", "lesion")
"""The label names of binary data."""


def check_classes(classes: Any, where: str) -> int:
    """``classes`` (the number of label values, background included) as an int >= 2."""
    if isinstance(classes, bool) or not isinstance(classes, int) or not 2 <= classes <= 256:
        raise ConfigError(f"{where}: classes must be an integer from 2 to 256 (masks are 8-bit), the number of label "
                          f"values in the masks including background 0 (2 for binary masks), got {classes!r}")
    return classes


def label_names(classes: int, labels: Sequence[str] | Mapping[Any, str] | None, where: str) -> tuple[str, ...]:
    """The names of label values ``0 .. classes-1``.

    ``labels`` is a list of ``classes`` names (index = label value), a table from label value
    to name (values not named keep ``class_<v>``; 0 is ``background`` unless named), or None
    (binary: background, lesion; else background, class_1, ...).
    """
    if labels is None:
        return BINARY_NAMES if classes == 2 else ("background", *(f"class_{v}" for v in range(1, classes)))
    if isinstance(labels, Mapping):
        names = ["background", *(f"class_{v}" for v in range(1, classes))]
        for key, name in labels.items():
            try:
                value = int(key)
            except (TypeError, ValueError):
                value = -1
            if not 0 <= value < classes:
                raise ConfigError(f"{where}: labels names the label value {key!r}, but the masks hold values 0..{classes - 1} "
                                  f"(classes = {classes}); use keys between 0 and {classes - 1}")
            names[value] = str(name)
    elif isinstance(labels, Sequence) and not isinstance(labels, str):
        names = [str(name) for name in labels]
        if len(names) != classes:
            raise ConfigError(f"{where}: labels lists {len(names)} names but classes = {classes}; give one name per "
                              f"label value 0..{classes - 1}, background first")
    else:
        raise ConfigError(f"{where}: labels must be a list of names (one per label value, background first) or a table "
                          f"from label value to name, got {labels!r}")
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: label names must differ, got {names}")
    return tuple(names)


def first_largest(values: torch.Tensor, dim: int = 1, dtype: torch.dtype = torch.long) -> torch.Tensor:
    """The index of the largest value along ``dim`` (the first of equal ones), as ``torch.argmax`` gives it, in
    ``dtype`` (uint8 holds up to 256 channels).

    One pass per channel over contiguous planes: torch's ``argmax`` along the channels of ``(N, K, ...)`` reduces
    across a large stride, which on a 2-core CPU took 3.5 s for a 4x128x512x400 slab of logits where this takes
    0.33 s.
    """
    best = values.select(dim, 0).clone()
    index = torch.zeros(best.shape, dtype=dtype, device=values.device)
    for k in range(1, values.shape[dim]):
        candidate = values.select(dim, k)
        index.masked_fill_(candidate > best, k)
        torch.maximum(best, candidate, out=best)
    return index


@dataclass(frozen=True)
class Labels:
    """The label names of a dataset (``names[v]`` for label value ``v``) and the output ``mode``.

    ``regions`` (multilabel only): ``(name, label values)`` pairs, one output channel each;
    without them each foreground label is its own output.

    Shape conventions:
        - masks: ``(N, 1, H, W)`` float holding label values ``0 .. C-1``.
        - logits: ``(N, out_channels, H, W)``.
        - :meth:`class_masks` / :meth:`truth_masks`: ``(N, K, H, W)`` bool, one per entry of
          :attr:`foreground` (the ``C - 1`` foreground labels in label order, or the regions).
        - Volumes: the same with ``D, H, W`` in place of ``H, W``.
    """

    names: tuple[str, ...] = BINARY_NAMES
    mode: str = "binary"
    regions: tuple[tuple[str, tuple[int, ...]], ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"unknown output mode {self.mode!r}; use one of {', '.join(MODES)}")
        if len(self.names) < 2:
            raise ConfigError(f"labels need background and at least one foreground label, got {list(self.names)}")
        if self.mode == "binary" and len(self.names) != 2:
            raise ConfigError(f"mode 'binary' predicts one label, but the dataset has {len(self.names) - 1} foreground "
                              f"labels ({', '.join(self.names[1:])}); use mode 'multiclass' (softmax) or 'multilabel' "
                              "(a sigmoid per label)")
        if self.regions and self.mode != "multilabel":
            raise ConfigError(f"regions overlap, so they need mode 'multilabel' (a sigmoid per region), not {self.mode!r}")
        for name, values in self.regions:
            if not values or any(not 1 <= v < len(self.names) for v in values):
                raise ConfigError(f"region {name!r} holds the label values {list(values)}; a region is a non-empty set "
                                  f"of foreground label values 1..{len(self.names) - 1} ({', '.join(self.names[1:])})")

    @property
    def classes(self) -> int:
        """Label values, background included (``C``)."""
        return len(self.names)

    @property
    def foreground(self) -> tuple[str, ...]:
        """What is scored and predicted: the names of the foreground labels ``1 .. C-1``, or of the regions."""
        return tuple(name for name, _ in self.regions) if self.regions else self.names[1:]

    @property
    def several(self) -> bool:
        """Whether there is more than one foreground label (or region) to score."""
        return len(self.foreground) > 1

    @property
    def out_channels(self) -> int:
        """Channels of the model's output: 1 (binary), ``C`` (multiclass), ``C - 1`` or one per region (multilabel)."""
        return {"binary": 1, "multiclass": self.classes, "multilabel": len(self.foreground)}[self.mode]

    @property
    def is_binary(self) -> bool:
        return self.mode == "binary"

    @property
    def masks_per_label(self) -> bool:
        """Whether predictions come as ``(K, H, W)`` masks (several labels, or a softmax) rather than one ``(H, W)``."""
        return self.several or self.mode == "multiclass"

    def _label_values(self, like: torch.Tensor) -> torch.Tensor:
        """The foreground label values ``1 .. C-1`` as ``(1, C-1, 1, ...)`` with ``like``'s spatial dimensions (2D or
        3D), on ``like``'s device (and float dtype)."""
        dtype = like.dtype if like.is_floating_point() else None
        return torch.arange(1, self.classes, device=like.device, dtype=dtype).view(1, -1, *[1] * (like.ndim - 2))

    def loss_target(self, masks: torch.Tensor) -> torch.Tensor:
        """The target a loss of this mode takes: masks as they are (binary, multiclass), one channel per label or
        region (multilabel)."""
        if self.mode != "multilabel":
            return masks
        return self.truth_masks(masks).to(masks.dtype)

    def truth_masks(self, masks: torch.Tensor) -> torch.Tensor:
        """``(N, K, H, W)`` bool: where each foreground label (or region) is, from label-value masks ``(N, 1, H, W)``."""
        if self.regions:
            values = masks.round()
            return torch.cat([torch.isin(values, torch.tensor(region, dtype=values.dtype, device=values.device))
                              for _, region in self.regions], dim=1)
        if self.classes == 2:
            return masks > 0.5
        return (masks - self._label_values(masks)).abs() < 0.5

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-channel probabilities: sigmoid (binary, multilabel) or softmax over channels (multiclass)."""
        logits = logits.float()
        return torch.softmax(logits, dim=1) if self.mode == "multiclass" else torch.sigmoid(logits)

    def masks_from_probabilities(self, probabilities: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
        """``(N, K, H, W)`` bool predicted foreground labels from :meth:`probabilities`."""
        if self.mode == "multiclass":
            winner = first_largest(probabilities, dim=1).unsqueeze(1)
            return winner == self._label_values(winner)
        return probabilities >= threshold

    def class_masks(self, logits: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
        """``(N, K, H, W)`` bool predicted foreground labels from logits."""
        if self.mode == "binary":
            return torch.sigmoid(logits.detach().float()) >= threshold
        return self.masks_from_probabilities(self.probabilities(logits.detach()), threshold)

    def label_map(self, class_masks: torch.Tensor) -> torch.Tensor:
        """``(N, H, W)`` int64 label values from ``(N, K, H, W)`` masks; where labels overlap the highest wins."""
        out = torch.zeros((class_masks.shape[0], *class_masks.shape[2:]), dtype=torch.long, device=class_masks.device)
        for k in range(class_masks.shape[1]):  # a later (higher) label overwrites: one pass per label
            out.masked_fill_(class_masks[:, k].bool(), k + 1)
        return out

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"names": list(self.names), "mode": self.mode}
        if self.regions:
            data["regions"] = {name: list(values) for name, values in self.regions}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Labels:
        """The labels a checkpoint recorded; binary when it recorded none (runs from before multi-class)."""
        if not data:
            return cls()
        regions = tuple((str(k), tuple(int(v) for v in values)) for k, values in (data.get("regions") or {}).items())
        return cls(tuple(str(n) for n in data.get("names", BINARY_NAMES)), str(data.get("mode", "binary")), regions)


def check_regions(regions: Any) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """``task.regions`` (a table from region name to a list of label values) as ``(name, values)`` pairs."""
    if not regions:
        return ()
    if not isinstance(regions, Mapping) or not all(
            isinstance(values, (list, tuple)) and values and all(isinstance(v, int) and not isinstance(v, bool)
                                                                  for v in values) for values in regions.values()):
        raise ConfigError(f"task.regions must be a table from a region's name to the label values it holds, e.g. "
                          f"{{whole = [1, 2, 3], core = [2, 3]}}; got {regions!r}")
    return tuple((str(name), tuple(sorted(set(values)))) for name, values in regions.items())


def resolve_labels(dataset: Any, mode: str = "auto", regions: Any = None) -> Labels:
    """The labels of ``dataset`` (its ``labels`` attribute, else binary) in ``mode``; ``auto`` is multilabel with
    ``regions``, else binary for two label values and multiclass for more."""
    names = tuple(getattr(dataset, "labels", None) or BINARY_NAMES)
    checked = check_regions(regions)
    if mode == "auto":
        mode = "multilabel" if checked else "binary" if len(names) == 2 else "multiclass"
    return Labels(names, mode, checked)


def valid_pixels(masks: torch.Tensor) -> torch.Tensor:
    """Where ``masks`` (label values, any shape) hold a label, not :data:`IGNORE`: a bool tensor of that shape."""
    return masks != IGNORE


def neutral_outputs(outputs: Any, masks: torch.Tensor, labels: Labels) -> tuple[Any, torch.Tensor]:
    """Outputs and masks with every ignored pixel made neutral for any loss: the mask set to background and the
    logits to a confident background (``-30`` per sigmoid channel; for a softmax, ``+30`` on background and
    ``-30`` elsewhere), so a pixel-wise loss there is about 0 and no gradient flows from it.

    ``outputs`` is logits ``(N, K, *spatial)`` or a deep-supervision tuple of them at decreasing sizes (the valid
    pixels are brought to each size by nearest neighbour); ``masks`` ``(N, 1, *spatial)`` label values.
    """
    valid = valid_pixels(masks)
    clean = torch.where(valid, masks, torch.zeros_like(masks))

    def neutral(logits: torch.Tensor) -> torch.Tensor:
        here = valid
        if tuple(logits.shape[2:]) != tuple(masks.shape[2:]):
            here = torch.nn.functional.interpolate(valid.float(), size=logits.shape[2:], mode="nearest") > 0.5
        fill = torch.full((1, logits.shape[1], *[1] * (logits.ndim - 2)), -NEUTRAL_LOGIT, dtype=logits.dtype,
                          device=logits.device)
        if labels.mode == "multiclass":
            fill[:, 0] = NEUTRAL_LOGIT
        return torch.where(here, logits, fill)

    if isinstance(outputs, (tuple, list)):
        return type(outputs)(neutral(o) for o in outputs), clean
    return neutral(outputs), clean
